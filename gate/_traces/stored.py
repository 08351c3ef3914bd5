"""Traces recorded earlier, read back as a whole: the runs of a session, its shards checked complete, a stored
baseline matched by fingerprint, and scoring that reuses the scores the gate already logged."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gate._config.dataset import Case, case_id_for
from gate._config.fingerprint import fingerprint
from gate._config.schema import VARIANTS, GateConfig, Variant
from gate._errors import RunError
from gate._store.store import TAG_PREFIX, Store
from gate._traces.rows import Call, CallResult, TraceRow
from gate._traces.scoring import ScorerStats, score_rows
from gate._traces.select import Collected, Selection, collect, pair_rows
from gate.scorers import Scorer

__all__ = [
    "StoredScoring",
    "check_shards",
    "dataset_index",
    "load_stored_baseline",
    "recorded_runs",
    "results_of",
]


def recorded_runs(store: Store, session: str) -> list[Any]:
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
    def of(
        cls, scorers: list[Scorer], cases: Sequence[Case], label: str, concurrency: int, stats: dict[str, ScorerStats]
    ) -> StoredScoring:
        """For a running gate session: its scorers, cases and stats."""
        return cls(scorers, dataset_index(cases), label, concurrency, stats)

    def __call__(self, rows: list[TraceRow], traces: dict[str, Any], found: dict[str, Case]) -> list[TraceRow]:
        known = {
            case_id: self.cases.get(case_id) or self.cases.get(case_id_for(case.inputs)) or case
            for case_id, case in found.items()
        }
        return score_rows(self.scorers, rows, traces, known, self.session, self.concurrency, self.stats, reuse=True)


def dataset_index(cases: Sequence[Case]) -> dict[str, Case]:
    index = {case_id_for(c.inputs): c for c in cases}
    index.update({c.id: c for c in cases})
    return index


def check_shards(runs: Sequence[Any], session: str, config: GateConfig, cases: Sequence[Case]) -> dict[str, Any]:
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


def results_of(rows: Sequence[TraceRow], cases: Mapping[str, Case]) -> list[CallResult]:
    """The calls the rows stand for (a stored ERROR trace is a failed call)."""
    known = dict(cases)
    results = []
    for row in rows:
        case = known.get(row.case_id)
        if case is None:
            case = known[row.case_id] = Case(row.case_id, {})
        error = "the stored trace is in state ERROR" if row.values.get("error") else None
        variant: Variant = "baseline" if row.variant == "baseline" else "candidate"
        results.append(CallResult(Call(variant, case, row.repeat), error))
    return results


def load_stored_baseline(
    store: Store,
    source: str,
    config: GateConfig,
    cases: Sequence[Case],
    scoring: StoredScoring,
    now_fingerprint: Mapping[str, str],
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
