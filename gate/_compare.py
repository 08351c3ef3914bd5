"""``gate compare``: the gate's verdict over traces that already exist, selected from a store instead of generated.

Three uses share this path: two versions' traces picked by selectors (trace name, LoggedModel, run, tags,
a time window), a gate session recorded in shards by several jobs (gathered here, after checking every shard
landed whole), and the stored baseline of ``gate run --baseline-from``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gate._assemble import build_verdict, fingerprint
from gate._config import DEFAULT_TRACKING_URI, GateConfig, TraceSelector, load_config
from gate._dataset import Case, case_id_for, load_cases
from gate._errors import ConfigError, RunError
from gate._evaluate import evaluate
from gate._runner import VARIANTS, Call, CallResult
from gate._scoring import ScorerStats, score_rows
from gate._select import Collected, Paired, Selection, collect, pair_rows, selection_for
from gate._traces import TAG_PREFIX, TraceRow, open_store, prepare_environment, resolve_tracking_uri
from gate._verdict import ComparisonReport, SelectionReport, Verdict
from gate.scorers import Scorer, build_scorers

__all__ = [
    "CompareOptions",
    "StoredScoring",
    "compare",
    "load_stored_baseline",
    "parse_selector_flags",
    "recorded_runs",
]

SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class CompareOptions:
    """What the command line decides about a comparison."""

    config_path: Path
    session: str | None = None
    baseline: Mapping[str, str] | None = None  # KEY=VALUE flags
    candidate: Mapping[str, str] | None = None
    since: str | None = None
    pair_by: str | None = None
    simulate: bool = False
    tracking_uri: str | None = None


def parse_selector_flags(flag: str, pairs: Sequence[str]) -> dict[str, str]:
    """``--baseline trace_name=app_v1 --baseline tag.env=prod`` → ``{"trace_name": "app_v1", "tag.env": "prod"}``."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"usage: {flag} {pair}: expected KEY=VALUE, e.g. trace_name=app_v1, tag.env=prod, since=1h"
            )
        out[key.strip()] = value
    return out


def _selector(raw: Mapping[str, str], where: str) -> TraceSelector:
    from pydantic import ValidationError

    from gate._config import describe_error, format_loc

    fields: dict[str, Any] = {"tags": {}, "metadata": {}}
    for key, value in raw.items():
        if key.startswith(("tag.", "tags.")):
            fields["tags"][key.split(".", 1)[1]] = value
        elif key.startswith("metadata."):
            fields["metadata"][key.split(".", 1)[1]] = value
        else:
            fields[key] = value
    try:
        return TraceSelector.model_validate(fields)
    except ValidationError as exc:
        raise ConfigError(
            [
                f"{where}{'.' + format_loc(tuple(e['loc'])) if e['loc'] else ''}: {describe_error(e)}"
                for e in exc.errors()
            ]
        ) from None


def _selectors(options: CompareOptions, config: GateConfig) -> dict[str, TraceSelector]:
    """Each version's selector: --session, else flags over the config's ``traces:``, with --since for both."""
    selectors: dict[str, TraceSelector] = {}
    for variant in VARIANTS:
        flags = options.baseline if variant == "baseline" else options.candidate
        seat = config.variant(variant)
        configured = seat.traces if seat else None
        if options.session is not None:
            selector = TraceSelector(session=options.session)
        elif flags:
            selector = _selector(flags, f"--{variant}")
        elif configured is not None:
            selector = configured
        else:
            raise ConfigError(
                f"{options.config_path}: {variant}.traces: gate compare needs a selector for each version: "
                f"'traces:' under {variant} in the config, --{variant} KEY=VALUE, or --session S"
            )
        if options.since is not None:
            selector = _selector({**_flat(selector), "since": options.since}, "--since")
        selectors[variant] = selector
    return selectors


def _flat(selector: TraceSelector) -> dict[str, str]:
    out = {k: str(v) for k, v in selector.model_dump(exclude_defaults=True, exclude={"tags", "metadata"}).items()}
    out.update({f"tag.{k}": v for k, v in selector.tags.items()})
    out.update({f"metadata.{k}": v for k, v in selector.metadata.items()})
    return out


def _experiment_id(store: Any, name: str | None) -> str:
    if name is None:
        return str(store.experiment_id)
    found = store.client.get_experiment_by_name(name)
    if found is None:
        raise RunError(f"no experiment named '{name}' at {store.tracking_uri}; check the selector's 'experiment'")
    return str(found.experiment_id)


def recorded_runs(store: Any, session: str) -> list[Any]:
    """The MLflow runs a gate session created (one per version, per shard)."""
    return list(
        store.client.search_runs(
            [store.experiment_id], filter_string=f"tags.`{TAG_PREFIX}session` = '{session}'", max_results=10_000
        )
    )


@dataclass
class StoredScoring:
    """Scores each page as it is read, reusing scores the gate already logged."""

    scorers: list[Scorer]
    cases: Mapping[str, Case]  # the dataset, by case id and by inputs id, for expectations
    session: str
    concurrency: int
    stats: dict[str, ScorerStats]

    @classmethod
    def of(cls, scorers: list[Scorer], cases: Sequence[Case], label: str, session: Any) -> StoredScoring:
        """For a running gate session: its scorers, cases and stats."""
        return cls(scorers, _dataset_index(cases), label, session.config.run.concurrency, session.scorer_stats)

    def __call__(self, rows: list[TraceRow], traces: dict[str, Any], found: dict[str, Case]) -> list[TraceRow]:
        known = {
            case_id: self.cases.get(case_id) or self.cases.get(case_id_for(case.inputs)) or case
            for case_id, case in found.items()
        }
        return score_rows(self.scorers, rows, traces, known, self.session, self.concurrency, self.stats, reuse=True)


def _dataset_index(cases: Sequence[Case]) -> dict[str, Case]:
    index = {case_id_for(c.inputs): c for c in cases}
    index.update({c.id: c for c in cases})
    return index


def _check_shards(runs: Sequence[Any], session: str, config: GateConfig, cases: Sequence[Case]) -> dict[str, Any]:
    """Every shard of both versions finished, with the dataset and targets the config names; the runs to use."""
    by_slot: dict[tuple[str, str], list[Any]] = {}
    totals = set()
    for run in runs:
        tags = run.data.tags
        shard = tags.get(f"{TAG_PREFIX}shard", "1/1")
        totals.add(shard.split("/")[1])
        by_slot.setdefault((tags.get(f"{TAG_PREFIX}variant", "?"), shard), []).append(run)
    if len(totals) > 1:
        raise RunError(f"session {session} mixes shard counts ({', '.join(sorted(totals))}); one session, one split")
    total = int(next(iter(totals), "1"))
    chosen: dict[str, Any] = {}
    missing, unfinished = [], []
    for index in range(1, total + 1):
        for variant in VARIANTS:
            shard = f"{index}/{total}"
            finished = [r for r in by_slot.get((variant, shard), []) if r.info.status == "FINISHED"]
            if finished:  # a re-run shard: its latest finished run counts
                chosen[f"{variant}:{shard}"] = max(finished, key=lambda r: r.info.start_time)
            elif by_slot.get((variant, shard)):
                states = sorted({r.info.status for r in by_slot[(variant, shard)]})
                unfinished.append(f"{shard} {variant} ({', '.join(states)})")
            else:
                missing.append(f"{shard} {variant}")
    if missing or unfinished:
        parts = []
        if missing:
            parts.append(f"no run recorded for shard {', '.join(missing)}")
        if unfinished:
            parts.append(
                f"not finished: shard {', '.join(unfinished)} (still running, killed, or its traces did not match)"
            )
        raise RunError(f"session {session} is incomplete: {'; '.join(parts)}; a gathered verdict would miss cases")
    if cases:
        prints = fingerprint(config, list(cases))
        for key, run in sorted(chosen.items()):
            seat = key.split(":")[0]
            tags = run.data.tags
            if (then := tags.get(f"{TAG_PREFIX}fingerprint.dataset")) not in (None, prints["dataset"]):
                raise RunError(
                    f"session {session}: shard {key} ran on another dataset (fingerprint {then}, now "
                    f"{prints['dataset']}); gather with the dataset the shards ran on"
                )
            if (then := tags.get(f"{TAG_PREFIX}fingerprint.target")) not in (None, prints[seat]):
                raise RunError(
                    f"session {session}: shard {key} ran another target or run settings (fingerprint {then}, "
                    f"now {prints[seat]})"
                )
    return chosen


def _results_of(rows: Sequence[TraceRow], cases: Mapping[str, Case]) -> list[CallResult]:
    """The calls the rows stand for (a stored ERROR trace is a failed call)."""
    known = dict(cases)
    results = []
    for row in rows:
        case = known.get(row.case_id)
        if case is None:
            case = known[row.case_id] = Case(row.case_id, {})
        error = "the stored trace is in state ERROR" if row.values.get("error") else None
        results.append(CallResult(Call(row.variant, case, row.repeat), error))  # type: ignore[arg-type]
    return results


def compare(options: CompareOptions) -> Verdict:
    """Select, pair, score and decide; raise ``ConfigError``/``RunError`` for exits 2/3."""
    from gate._gate import Prepared, _endpoint, _Session

    started, started_at = time.monotonic(), datetime.now(timezone.utc).isoformat(timespec="seconds")
    config = load_config(options.config_path)
    if options.pair_by is not None:
        config = config.model_copy(update={"pair_by": options.pair_by})
    if options.session is not None and not SESSION_ID.fullmatch(options.session):
        raise ConfigError(f"usage: --session {options.session!r}: use letters, digits, '.', '_' and '-' (≤ 100)")
    selectors = _selectors(options, config)
    dataset = load_cases(config, options.config_path) if (config.dataset or config.cases) else []
    prepare_environment()
    with _endpoint(config, options.simulate) as endpoint:  # judges may need the simulator
        tracking_uri = resolve_tracking_uri(options.tracking_uri, config.tracking_uri, DEFAULT_TRACKING_URI)
        store = open_store(tracking_uri, config.experiment)
        chosen_runs: dict[str, Any] = {}
        if options.session is not None:
            runs = recorded_runs(store, options.session)
            if runs:
                chosen_runs = _check_shards(runs, options.session, config, dataset)
        label = options.session or f"compare-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
        stats: dict[str, ScorerStats] = {}
        scoring = StoredScoring(
            build_scorers(config.scorers, [options.config_path.resolve().parent, Path.cwd()]),
            _dataset_index(dataset),
            label,
            config.run.concurrency,
            stats,
        )
        now_s = time.time()
        collected = Collected()
        selections: dict[str, Selection] = {}
        for variant, selector in selectors.items():
            experiment_id = _experiment_id(store, selector.experiment)
            selections[variant] = selection_for(selector, variant, experiment_id, now_s)
            collect(
                store.client,
                selections[variant],
                tracking_uri,
                config.pricing,
                collected,
                scoring,
                need_traces=bool(scoring.scorers),
            )
            if not collected.found.get(variant):
                raise RunError(
                    f"no {variant} traces match {selections[variant].filter_string} in experiment "
                    f"{experiment_id} at {store.tracking_uri}; check the selector (and the time window)"
                )
        if chosen_runs:
            keep = {run.info.run_id for run in chosen_runs.values()}
            collected.seen = [s for s in collected.seen if s.run_id in keep]  # a re-run shard's older traces
        paired = pair_rows(collected.seen, config.pair_by)
        problems = _coverage(paired, dataset, chosen_runs, collected) if options.session is not None else []
        cases = _cases_for(paired, dataset, collected)
        by_id = {c.id: c for c in cases}
        session = _Session(config, Prepared(config, cases, {}), store, label, {}, None)
        session.results = _results_of(paired.rows, by_id)
        session.rows, session.problems = paired.rows, problems
        session.repeats = 1 + max((r.repeat for r in paired.rows), default=0)
        session.scorers = scoring.scorers
        session.scorer_stats = stats
        golden = frozenset(c.id for c in dataset if c.golden)
        evaluation = evaluate(config, paired.rows, golden, paired=paired.pair_by != "none")
    why = f"compared {len(paired.rows)} stored traces; the app was not called"
    verdict = build_verdict(session, evaluation, options, endpoint, why, started, started_at)  # type: ignore[arg-type]
    shards = sorted({key.split(":")[1] for key in chosen_runs}, key=lambda s: int(s.split("/")[0]))
    return verdict.model_copy(
        update={
            "spend": verdict.spend.model_copy(update={"calls": 0}) if verdict.spend else None,
            "cases": verdict.cases if paired.pair_by != "none" else [],
            "variants": {
                v: report.model_copy(
                    update={
                        "target": None,
                        "calls": 0,
                        "mlflow_run_id": next(iter(sorted(collected.runs.get(v, set()))), None),
                        "selection": SelectionReport(
                            experiment_id=selections[v].experiment_id,
                            filter=selections[v].filter_string,
                            traces=collected.found.get(v, 0),
                            more_than_max=collected.more_than_max.get(v, False),
                        ),
                    }
                )
                for v, report in (verdict.variants or {}).items()
            },
            "comparison": ComparisonReport(
                baseline_source="stored",
                candidate_source="stored",
                pair_by=paired.pair_by,
                why=paired.why,
                shards=shards if len(shards) > 1 else [],
            ),
        }
    )


def _cases_for(paired: Paired, dataset: Sequence[Case], collected: Collected) -> list[Case]:
    """The dataset's cases that the traces cover, in dataset order, then any others the traces name."""
    named = {r.case_id for r in paired.rows}
    index = _dataset_index(dataset)
    ordered = [c for c in dataset if c.id in named]
    known = {c.id for c in ordered}
    extra = sorted(named - known)
    ordered += [
        replace(index[cid], id=cid) if cid in index else Case(cid, collected.inputs.get(cid, {})) for cid in extra
    ]
    return ordered


def _coverage(paired: Paired, dataset: Sequence[Case], runs: Mapping[str, Any], collected: Collected) -> list[str]:
    """A gathered session must hold every case of the dataset for both versions, and every trace its runs made."""
    problems = []
    if dataset:
        for variant in VARIANTS:
            have = {r.case_id for r in paired.rows if r.variant == variant}
            lost = [c.id for c in dataset if c.id not in have]
            if lost:
                problems.append(
                    f"{len(lost)} of {len(dataset)} cases have no {variant} traces in the session "
                    f"(e.g. {', '.join(lost[:3])})"
                )
    run_of = {s.row.trace_id: s.run_id for s in collected.seen}
    for key, run in sorted(runs.items()):
        expected = run.data.tags.get(f"{TAG_PREFIX}traces")
        if expected is None:
            continue
        found = sum(1 for r in paired.rows if r.trace_id and run_of.get(r.trace_id) == run.info.run_id)
        if found != int(expected):
            problems.append(f"shard {key} recorded {expected} traces, {found} found in the store")
    return problems


def load_stored_baseline(
    store: Any, source: str, config: GateConfig, cases: Sequence[Case], scoring: Any, now_fingerprint: Mapping[str, str]
) -> tuple[list[TraceRow], str, int]:
    """The baseline rows of an earlier session (or MLflow run), if it ran what this config would run.

    Returns the rows, the run id(s) they came from, and how many traces were read. A fingerprint that
    differs (dataset, baseline target, run settings, scorers, the target's code) is an error naming it.
    """
    if re.fullmatch(r"[0-9a-f]{32}", source):
        runs = [store.client.get_run(source)]
    else:
        runs = [r for r in recorded_runs(store, source) if r.data.tags.get(f"{TAG_PREFIX}variant") == "baseline"]
    runs = [r for r in runs if r.info.status == "FINISHED"]
    if not runs:
        raise RunError(
            f"--baseline-from {source}: no finished baseline run of that session (or run id) in experiment "
            f"'{config.experiment}' at {store.tracking_uri}"
        )
    differs = []
    for run in runs:
        tags = run.data.tags
        for name, key in (
            ("dataset", "dataset"),
            ("baseline target and run settings", "target"),
            ("scorers", "scorers"),
            ("baseline code", "code"),
        ):
            then = tags.get(f"{TAG_PREFIX}fingerprint.{key}")
            now = now_fingerprint.get("baseline" if key == "target" else key)
            if then is None or now is None or then != now:
                differs.append(f"{name} ({then or 'not recorded'} then, {now or 'unknown'} now)")
    if differs:
        raise RunError(
            f"--baseline-from {source}: its baseline is not what this run would run; differs: "
            f"{'; '.join(sorted(set(differs)))}; run the full gate (both versions) instead"
        )
    collected = Collected()
    for run in runs:
        selection = Selection(
            "baseline",
            str(store.experiment_id),
            f"metadata.`mlflow.sourceRun` = '{run.info.run_id}'",
            1_000_000,
        )
        collect(store.client, selection, store.tracking_uri, config.pricing, collected, scoring, bool(scoring.scorers))
    paired = pair_rows(collected.seen, "case_id")
    wanted = {c.id for c in cases}
    rows = [r for r in paired.rows if r.case_id in wanted]
    return rows, ",".join(r.info.run_id for r in runs), collected.found.get("baseline", 0)
