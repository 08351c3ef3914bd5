"""``gate score``: re-score the stored traces of an earlier session without calling the app again."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from gate._commands.plan import SESSION_ID
from gate._config.dataset import Case
from gate._config.fingerprint import fingerprint
from gate._config.schema import DEFAULT_TRACKING_URI, VARIANTS, GateConfig, Variant, load_config
from gate._decide.evaluate import evaluate
from gate._errors import ConfigError, RunError
from gate._run.endpoint import model_endpoint
from gate._run.prepare import gather_cases, search_path
from gate._store.store import TAG_PREFIX, Store, open_store, prepare_environment, resolve_tracking_uri
from gate._traces.read import fetch_session_traces
from gate._traces.rows import Call, CallResult, match_traces
from gate._traces.scoring import ScorerStats, score_rows
from gate._traces.stored import check_shards, recorded_runs
from gate._verdict.assemble import Gathered, StoreInfo, VersionSource, build_verdict
from gate._verdict.schema import Verdict
from gate.scorers import build_scorers

__all__ = ["score_session"]


def _check_comparable(store: Store, config: GateConfig, cases: list[Case], run_ids: dict[Variant, str | None]) -> None:
    """The session's traces must come from the dataset and targets the config names now (exit 3 if not)."""
    now = fingerprint(config, cases)
    recorded = {v: store.client.get_run(run_id).data.tags for v, run_id in run_ids.items() if run_id}
    datasets = {str(d) for tags in recorded.values() if (d := tags.get(f"{TAG_PREFIX}fingerprint.dataset")) is not None}
    if datasets and datasets != {now["dataset"]}:
        raise RunError(
            "cannot re-score: the dataset's case ids or inputs changed since the session ran (fingerprint "
            f"{', '.join(sorted(datasets))} then, {now['dataset']} now); re-score with the dataset the session ran on"
        )
    changed = [
        f"{v} (fingerprint {then} then, {now[v]} now)"
        for v, tags in sorted(recorded.items())
        if (then := tags.get(f"{TAG_PREFIX}fingerprint.target")) is not None and then != now[v]
    ]
    if changed:
        raise RunError(
            f"cannot re-score: the target or run settings of {'; '.join(changed)} changed since the session ran; "
            "the traces belong to the versions the session ran"
        )


@dataclass(frozen=True)
class ScoreOptions:
    """What the command line decides about re-scoring a session."""

    config_path: Path
    session: str
    simulate: bool = False
    tracking_uri: str | None = None
    report_only: bool = False


def score_session(options: ScoreOptions) -> Verdict:
    """Fetch the session's traces, score them with the current scorers, and decide the checks again."""
    started, started_at = time.monotonic(), datetime.now(timezone.utc).isoformat(timespec="seconds")
    config = load_config(options.config_path)
    if not SESSION_ID.fullmatch(options.session):
        raise ConfigError(f"usage: --session {options.session!r}: use letters, digits, '.', '_' and '-' (≤ 100)")
    cases, source = gather_cases(config, options.config_path, options.tracking_uri)
    by_id = {c.id: c for c in cases}
    prepare_environment()
    session_id = options.session
    with model_endpoint(config, options.simulate) as endpoint:  # judges may need the simulator
        tracking_uri = resolve_tracking_uri(options.tracking_uri, config.tracking_uri, DEFAULT_TRACKING_URI)
        store = open_store(tracking_uri, config.experiment, create=False)
        traces = fetch_session_traces(store, session_id)
        if not traces:
            raise RunError(
                f"no traces tagged gate.session = {session_id} in experiment '{config.experiment}' at "
                f"{store.tracking_uri}; the session id is in the verdict of the run (mlflow.session)"
            )
        latest: dict[tuple[str, str, int], CallResult] = {}
        run_ids: dict[Variant, str | None] = {}
        unknown: set[str] = set()
        for trace in traces:
            tags = trace.info.tags
            case = by_id.get(tags.get(f"{TAG_PREFIX}case_id", ""))
            if case is None:
                unknown.add(tags.get(f"{TAG_PREFIX}case_id", "?"))
                continue
            variant = tags.get(f"{TAG_PREFIX}variant")
            if variant != "baseline" and variant != "candidate":
                continue
            state = getattr(trace.info.state, "value", trace.info.state)
            call = Call(variant, case, int(tags.get(f"{TAG_PREFIX}repeat", 0)))
            attempts = int(tags.get(f"{TAG_PREFIX}attempt", 0)) + 1
            key = (variant, case.id, call.repeat)
            if key not in latest or latest[key].attempts < attempts:  # retried attempts: the last one counts
                error = "the stored trace is in state ERROR" if state == "ERROR" else None
                latest[key] = CallResult(call, error, attempts=attempts)
            run_ids.setdefault(variant, trace.info.trace_metadata.get("mlflow.sourceRun"))
        results = list(latest.values())
        if unknown:
            raise RunError(
                f"the session has traces of {len(unknown)} cases that are not in the dataset now "
                f"(e.g. {', '.join(sorted(unknown)[:3])}); re-score with the dataset the session ran on"
            )
        _check_comparable(store, config, cases, run_ids)
        runs = recorded_runs(store, session_id)
        if runs:  # every shard of both versions finished (a killed run, a lone shard: exit 3, as compare --session)
            check_shards(runs, session_id, config, [])
        rows, problems = match_traces(traces, results, config.pricing)
        stats: dict[str, ScorerStats] = {}
        rows = score_rows(
            build_scorers(config.scorers, search_path(options.config_path)),
            rows,
            {t.info.trace_id: t for t in traces},
            by_id,
            session_id,
            config.run.concurrency,
            stats,
        )
        evaluation = evaluate(config, rows, frozenset(c.id for c in cases if c.golden), cases=cases)
    calls = {v: sum(r.call.variant == v for r in results) for v in VARIANTS}
    return build_verdict(
        Gathered(
            dataset=source,
            config=config,
            config_path=options.config_path,
            endpoint=endpoint,
            cases=cases,
            results=results,
            rows=rows,
            problems=problems,
            evaluation=evaluation,
            versions={
                v: VersionSource(target=config.target(v), mlflow_run_id=run_ids.get(v), calls=calls[v])
                for v in VARIANTS
            },
            store=StoreInfo(store.tracking_uri, store.experiment_id, session_id),
            stopped_because=f"re-scored {len(traces)} stored traces; the app was not called",
            calls_made=0,
            rounds=0,
            repeats=1 + max(r.call.repeat for r in results),
            scorer_stats=stats,
            timing={"started_at": started_at, "total_s": round(time.monotonic() - started, 3)},
            report_only=options.report_only,
        )
    )
