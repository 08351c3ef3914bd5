"""``gate compare``: the gate's verdict over traces that already exist, selected from a store instead of generated.

Three uses share this path: two versions' traces picked by selectors (trace name, LoggedModel, run, tags,
a time window), a gate session recorded in shards by several jobs (gathered here, after checking every shard
landed whole), and the stored baseline of ``gate run --baseline-from``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gate._commands.plan import SESSION_ID
from gate._config.dataset import Case
from gate._config.reader import format_loc
from gate._config.schema import DEFAULT_TRACKING_URI, VARIANTS, GateConfig, TraceSelector, describe_error, load_config
from gate._decide.evaluate import evaluate
from gate._errors import ConfigError, RunError
from gate._run.endpoint import model_endpoint
from gate._run.prepare import gather_cases, search_path
from gate._store.store import TAG_PREFIX, Store, open_store, prepare_environment, resolve_tracking_uri
from gate._traces.scoring import ScorerStats
from gate._traces.select import Collected, Paired, Selection, collect, pair_rows, recorded_apart, selection_for
from gate._traces.sqlite_direct import DirectReader, direct_reader
from gate._traces.stored import StoredScoring, check_shards, dataset_index, recorded_runs, results_of
from gate._verdict.assemble import Gathered, StoreInfo, VersionSource, build_verdict
from gate._verdict.schema import ComparisonReport, SelectionReport, Verdict
from gate.scorers import build_scorers

__all__ = ["SESSION_ID", "CompareOptions", "compare", "parse_selector_flags"]


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
    report_only: bool = False


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
        keys = [*TraceSelector.model_fields, "tag.KEY", "metadata.KEY"]
        keys.remove("tags")
        keys.remove("metadata")
        problems = []
        for e in exc.errors():
            loc = tuple(e["loc"])
            # --since is its own flag; --baseline KEY=VALUE names a selector key: say so, not the config's keys
            place = where if where == f"--{loc[0] if loc else ''}" else f"{where}.{format_loc(loc)}" if loc else where
            problems.append(f"{place}: {describe_error(e, keys)}")
        raise ConfigError(problems) from None


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


@dataclass(frozen=True)
class _DirectStore:
    """A SQLite store read by the direct reader: what ``compare`` needs of a ``Store``, MLflow not imported."""

    tracking_uri: str
    experiment_id: str
    reader: DirectReader
    client: None = None


def _direct_store(
    tracking_uri: str, experiment: str, selectors: Mapping[str, TraceSelector], scorers: bool
) -> _DirectStore | None:
    """The store to read without MLflow, where the direct reader can read every selection; None: open MLflow's.

    Not with scorers (they take MLflow's traces), nor when the experiment does not exist or was deleted (opening
    the store says so, and how to restore a deleted one)."""
    if scorers:
        return None
    # Only which terms the selections have matters here, not their values (the experiment, the "until" instant).
    terms = [selection_for(selector, variant, "", 0.0).terms for variant, selector in selectors.items()]
    reader = direct_reader(tracking_uri, terms)
    found = reader.experiment(experiment) if reader is not None else None
    if reader is None or found is None or found[1] != "active":
        return None
    return _DirectStore(tracking_uri, found[0], reader)


def _experiment_id(store: Store | _DirectStore, name: str | None) -> str:
    if name is None:
        return str(store.experiment_id)
    if isinstance(store, _DirectStore):
        named = store.reader.experiment(name)
        found = None if named is None else named[0]
    else:
        experiment = store.client.get_experiment_by_name(name)
        found = None if experiment is None else str(experiment.experiment_id)
    if found is None:
        raise RunError(f"no experiment named '{name}' at {store.tracking_uri}; check the selector's 'experiment'")
    return found


def compare(options: CompareOptions) -> Verdict:
    """Select, pair, score and decide; raise ``ConfigError``/``RunError`` for exits 2/3."""
    started, started_at = time.monotonic(), datetime.now(timezone.utc).isoformat(timespec="seconds")
    config = load_config(options.config_path)
    if options.pair_by is not None:
        config = config.model_copy(update={"pair_by": options.pair_by})
    if options.session is not None and not SESSION_ID.fullmatch(options.session):
        raise ConfigError(f"usage: --session {options.session!r}: use letters, digits, '.', '_' and '-' (≤ 100)")
    selectors = _selectors(options, config)
    dataset, source = (
        gather_cases(config, options.config_path, options.tracking_uri)
        if (config.dataset or config.cases)
        else ([], None)
    )
    prepare_environment()
    with model_endpoint(config, options.simulate) as endpoint:  # judges may need the simulator
        tracking_uri = resolve_tracking_uri(options.tracking_uri, config.tracking_uri, DEFAULT_TRACKING_URI)
        scorers = build_scorers(config.scorers, search_path(options.config_path))
        store: Store | _DirectStore | None = _direct_store(tracking_uri, config.experiment, selectors, bool(scorers))
        if store is None:
            store = open_store(tracking_uri, config.experiment, create=False)
        chosen_runs: dict[str, Any] = {}
        if options.session is not None:
            runs = (
                store.reader.runs(store.experiment_id, f"{TAG_PREFIX}session", options.session)
                if isinstance(store, _DirectStore)
                else recorded_runs(store, options.session)
            )
            if runs:
                chosen_runs = check_shards(runs, options.session, config, dataset)
        label = options.session or f"compare-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
        stats: dict[str, ScorerStats] = {}
        scoring = StoredScoring(scorers, dataset_index(dataset), label, config.run.concurrency, stats)
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
        golden = frozenset(c.id for c in dataset if c.golden)
        apart = recorded_apart(collected.seen)
        evaluation = evaluate(
            config, paired.rows, golden, paired=paired.pair_by != "none", not_together=apart, cases=cases
        )
    shards = sorted({key.split(":")[1] for key in chosen_runs}, key=lambda s: int(s.split("/")[0]))
    versions = {
        v: VersionSource(
            target=None,
            mlflow_run_id=next(iter(sorted(collected.runs.get(v, set()))), None),
            calls=0,
            selection=SelectionReport(
                experiment_id=selections[v].experiment_id,
                filter=selections[v].filter_string,
                traces=collected.found.get(v, 0),
                counted=sum(1 for r in paired.rows if r.variant == v),
                sessions=len({s.session for s in collected.seen if s.row.variant == v and s.session}),
                more_than_max=collected.more_than_max.get(v, False),
                reader=collected.readers.get(v),
            ),
        )
        for v in VARIANTS
    }
    return build_verdict(
        Gathered(
            dataset=source,
            config=config,
            config_path=options.config_path,
            endpoint=endpoint,
            cases=cases,
            results=results_of(paired.rows, {c.id: c for c in cases}),
            rows=paired.rows,
            problems=problems,
            evaluation=evaluation,
            versions=versions,
            store=StoreInfo(store.tracking_uri, store.experiment_id, label),
            stopped_because=_what_was_compared(paired, collected),
            calls_made=0,
            rounds=0,
            repeats=1 + max((r.repeat for r in paired.rows), default=0),
            scorer_stats=stats,
            comparison=ComparisonReport(
                baseline_source="stored",
                candidate_source="stored",
                pair_by=paired.pair_by,
                why=paired.why,
                shards=shards if len(shards) > 1 else [],
            ),
            include_cases=paired.pair_by != "none",
            timing={"started_at": started_at, "total_s": round(time.monotonic() - started, 3)},
            report_only=options.report_only,
        )
    )


def _what_was_compared(paired: Paired, collected: Collected) -> str:
    """How many stored traces counted, and why any read did not (a retried call's earlier attempts, confirmation
    runs)."""
    confirming = sum(s.confirm for s in collected.seen)
    read = len(collected.seen) - confirming
    sessions = len({s.session for s in collected.seen if s.session})
    parts = [f"compared {len(paired.rows)} stored traces"]
    if sessions > 1:
        parts.append(f"from {sessions} gate sessions")
    if paired.pair_by == "case_id" and read > len(paired.rows):
        parts.append(f"{read - len(paired.rows)} earlier attempts of retried calls not counted")
    if confirming:
        parts.append(f"{confirming} confirmation runs of flagged cases not counted")
    return ", ".join(parts) + "; the app was not called"


def _cases_for(paired: Paired, dataset: Sequence[Case], collected: Collected) -> list[Case]:
    """The dataset's cases that the traces cover, in dataset order, then any others the traces name."""
    named = {r.case_id for r in paired.rows}
    index = dataset_index(dataset)
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
