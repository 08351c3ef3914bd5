"""``gate score``: re-score the stored traces of an earlier session without calling the app again."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from gate._assemble import build_verdict, fingerprint
from gate._config import DEFAULT_TRACKING_URI, GateConfig, load_config
from gate._dataset import Case, load_cases
from gate._errors import RunError
from gate._evaluate import evaluate
from gate._gate import Prepared, RunOptions, _endpoint, _search_path, _Session
from gate._runner import Call, CallResult
from gate._scoring import score_rows
from gate._traces import TAG_PREFIX, match_traces, open_store, prepare_environment, resolve_tracking_uri
from gate._verdict import Verdict
from gate.scorers import build_scorers

__all__ = ["score_session"]


def _check_comparable(store: Any, config: GateConfig, cases: list[Case], run_ids: dict[str, str | None]) -> None:
    """The session's traces must come from the dataset and targets the config names now (exit 3 if not)."""
    now = fingerprint(config, cases)
    recorded = {v: store.client.get_run(run_id).data.tags for v, run_id in run_ids.items() if run_id}
    datasets = {tags.get(f"{TAG_PREFIX}fingerprint.dataset") for tags in recorded.values()} - {None}
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


def score_session(options: RunOptions, session_id: str) -> Verdict:
    """Fetch the session's traces, score them with the current scorers, and decide the checks again."""
    started, started_at = time.monotonic(), datetime.now(timezone.utc).isoformat(timespec="seconds")
    config = load_config(options.config_path)
    cases = load_cases(config, options.config_path)
    by_id = {c.id: c for c in cases}
    prepare_environment()
    with _endpoint(config, options.simulate) as endpoint:  # judges may need the simulator
        tracking_uri = resolve_tracking_uri(options.tracking_uri, config.tracking_uri, DEFAULT_TRACKING_URI)
        store = open_store(tracking_uri, config.experiment)
        traces = store.fetch_traces(session_id)
        if not traces:
            raise RunError(
                f"no traces tagged gate.session = {session_id} in experiment '{config.experiment}' at "
                f"{store.tracking_uri}; the session id is in the verdict of the run (mlflow.session)"
            )
        latest: dict[tuple[str, str, int], CallResult] = {}
        run_ids: dict[str, str | None] = {}
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
        rows, problems = match_traces(traces, results, config.pricing)
        session = _Session(config, Prepared(config, cases, {}), store, session_id, {}, None)
        session.results, session.problems = results, problems
        session.rounds = 0
        session.repeats = 1 + max(r.call.repeat for r in results)
        session.scorers = build_scorers(config.scorers, _search_path(options))
        session.rows = score_rows(
            session.scorers,
            rows,
            {t.info.trace_id: t for t in traces},
            by_id,
            session_id,
            config.run.concurrency,
            session.scorer_stats,
        )
        evaluation = evaluate(config, session.rows, frozenset(c.id for c in cases if c.golden))
    why = f"re-scored {len(traces)} stored traces; the app was not called"
    verdict = build_verdict(session, evaluation, options, endpoint, why, started, started_at)
    spend = (
        verdict.spend.model_copy(update={"calls": 0, "repeats_per_case": session.repeats}) if verdict.spend else None
    )
    return verdict.model_copy(
        update={
            "spend": spend,
            "variants": {
                v: report.model_copy(update={"mlflow_run_id": run_ids.get(v)})
                for v, report in (verdict.variants or {}).items()
            },
        }
    )
