"""Assemble the verdict from a finished session, and decide its status and exit code (pure but for closing runs)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from gate import __version__
from gate._checks import CheckResult
from gate._config import GateConfig
from gate._dataset import Case
from gate._errors import RunError
from gate._evaluate import Evaluation
from gate._runner import VARIANTS, CallResult
from gate._scoring import ScorerStats
from gate._secrets import redact
from gate._traces import TAG_PREFIX, TraceRow, redact_uri
from gate._verdict import (
    CaseReport,
    CaseSide,
    CheckReport,
    MlflowReport,
    RegressionReport,
    ScorerReport,
    SpendReport,
    VariantReport,
    Verdict,
    json_safe,
)

if TYPE_CHECKING:
    from gate._gate import RunOptions, _Session

__all__ = ["build_verdict", "code_digest", "decide", "fingerprint"]


def _first_errors(results: list[CallResult], limit: int = 3) -> list[str]:
    seen: list[str] = []
    for result in results:
        if result.error and result.error not in seen:
            seen.append(result.error)
        if len(seen) == limit:
            break
    return seen


def fingerprint(config: GateConfig, cases: list[Case]) -> dict[str, str]:
    """Hashes of what must match for two sets of traces to be comparable.

    The dataset hash covers case ids and inputs (what produced the traces), not expectations: those only feed
    scorers, and re-scoring with new expectations is what ``gate score`` is for.
    """

    def digest(value: Any) -> str:
        return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]

    dataset = digest([[c.id, c.inputs] for c in cases])
    run = digest(config.run.model_dump(include={"timeout_s", "autolog"}))
    return {
        "dataset": dataset,
        "run": run,
        "baseline": digest([config.target("baseline"), dataset, run]),
        "candidate": digest([config.target("candidate"), dataset, run]),
        "scorers": digest([s.model_dump(mode="json") for s in config.scorers]),
    }


def code_digest(target: Any) -> str:
    """A hash of the target function's source, so a reused baseline is known to be the same code.

    Only the function itself: a change in what it calls (helpers, prompt files, packages) is not seen.
    """
    import inspect

    try:
        source = inspect.getsource(target)
    except (OSError, TypeError):  # built-ins, C functions, some callables: fall back to the qualified name
        source = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def build_verdict(
    session: _Session,
    evaluation: Evaluation,
    options: RunOptions,
    endpoint: str,
    stopped_because: str,
    started: float,
    started_at: str,
) -> Verdict:
    """Close the session's MLflow runs and assemble the verdict from everything the session gathered."""
    config, store, run_ids = session.config, session.store, session.run_ids
    results, rows, problems = session.results, session.rows, session.problems
    failed = all(r.error for r in results)
    for v in VARIANTS:
        if v in run_ids:
            # gate.traces: what `gate compare --session` must find again when it gathers shards
            traces = sum(1 for row in rows if row.variant == v and row.trace_id)
            store.client.set_tag(run_ids[v], f"{TAG_PREFIX}traces", str(traces))
            store.finish_run(run_ids[v], evaluation.metrics[v], "FAILED" if failed or problems else "FINISHED")
    variants = {
        v: VariantReport(
            label=config.label(v),
            target=config.target(v),
            mlflow_run_id=run_ids.get(v),
            calls=sum(r.call.variant == v for r in results),
            traces=sum(row.trace_id is not None for row in rows if row.variant == v),
            errors=sum(1 for row in rows if row.variant == v and row.values.get("error")),
            retries=sum(r.attempts - 1 for r in results if r.call.variant == v),
            first_errors=[redact(e) for e in _first_errors([r for r in results if r.call.variant == v])],
        )
        for v in VARIANTS
    }
    status, exit_code, reason, error = decide(results, problems, evaluation, config.run.max_error_rate)
    return Verdict(
        status=status,
        exit_code=exit_code,
        reason=reason,
        error=redact(error) if error else None,
        gate_version=__version__,
        config=str(options.config_path),
        endpoint=endpoint,
        variants=variants,
        metrics=evaluation.metrics,
        checks=[_check_report(c) for c in evaluation.checks],
        confidence=config.confidence,
        regressions=[
            RegressionReport(
                **{
                    **vars(r),
                    "baseline_trace_ids": list(r.baseline_trace_ids),
                    "candidate_trace_ids": list(r.candidate_trace_ids),
                }
            )
            for r in evaluation.regressions[:20]
        ],
        unpaired_cases={
            "baseline_only": list(evaluation.unpaired.baseline_only),
            "candidate_only": list(evaluation.unpaired.candidate_only),
        },
        spend=SpendReport(
            calls=len(results),
            warmup_calls=session.warmup_calls,
            rounds=session.rounds,
            repeats_per_case=session.repeats,
            cost_usd=session.cost(),
            stopped_because=stopped_because,
        ),
        fingerprint=fingerprint(config, session.prepared.cases),
        cases=case_reports(rows, session.prepared.cases, [s.name for s in config.scorers]),
        distributions=distributions(rows, [s.name for s in config.scorers]),
        scorers={
            s.name: ScorerReport(type=s.type, **vars(session.scorer_stats.get(s.name, ScorerStats())))
            for s in config.scorers
        },
        mlflow=MlflowReport(
            tracking_uri=redact_uri(store.tracking_uri),
            experiment=config.experiment,
            experiment_id=store.experiment_id,
            session=session.session,
            trace_writer=getattr(getattr(store, "writer", None), "writer", None),
            trace_writer_reason=getattr(getattr(store, "writer", None), "reason", None),
        ),
        timing={"started_at": started_at, "total_s": round(time.monotonic() - started, 3)},
    )


MAX_CASES = 1000
CASE_METRICS = ("latency_ms", "total_tokens", "response_chars")


def case_reports(rows: Sequence[TraceRow], cases: Sequence[Case], scores: Sequence[str]) -> list[CaseReport]:
    """Both versions of every case side by side, in dataset order."""
    metrics = [*CASE_METRICS, *scores]
    grouped: dict[tuple[str, str], list[TraceRow]] = {}
    for row in sorted(rows, key=lambda r: r.repeat):
        grouped.setdefault((row.case_id, row.variant), []).append(row)

    def side(runs: list[TraceRow] | None) -> CaseSide | None:
        if not runs:
            return None
        values: dict[str, float | None] = {}
        for name in metrics:
            seen = [v for r in runs if (v := r.values.get(name)) is not None]
            values[name] = sum(seen) / len(seen) if seen else None
        output = next((r.output for r in runs if r.output is not None), None)
        return CaseSide(
            trace_ids=[r.trace_id for r in runs if r.trace_id],
            errors=sum(1 for r in runs if r.values.get("error")),
            output=redact(output) if output else output,
            values=values,
        )

    return [
        CaseReport(
            case_id=case.id,
            inputs={k: json_safe(v) for k, v in case.inputs.items()},
            golden=case.golden,
            baseline=side(grouped.get((case.id, "baseline"))),
            candidate=side(grouped.get((case.id, "candidate"))),
        )
        for case in cases[:MAX_CASES]
    ]


def distributions(rows: Sequence[TraceRow], scores: Sequence[str]) -> dict[str, dict[Any, list[float]]]:
    """Per-trace values of the main metrics and scores, per version."""
    out: dict[str, dict[Any, list[float]]] = {}
    for name in (*CASE_METRICS, *scores):
        per_variant = {
            v: [value for r in rows if r.variant == v and (value := r.values.get(name)) is not None] for v in VARIANTS
        }
        if any(per_variant.values()):
            out[name] = per_variant
    return out


def decide(
    results: list[CallResult], problems: list[str], evaluation: Evaluation, max_error_rate: float | None = None
) -> tuple[Literal["pass", "fail", "error"], int, str | None, str | None]:
    """(status, exit code, reason, error) from the calls, the trace discrepancies and the checks.

    Missing data outranks everything: a run with no usable data, missing traces, or a check without
    values is an error (exit 3), never a pass and never a "regression". An inconclusive check counts
    as its ``on_inconclusive`` says; a regression of a golden case fails the gate.
    """
    checks = evaluation.checks
    if all(r.error for r in results):
        first = " | ".join(_first_errors(results))
        error = f"every call of both versions failed, so there is nothing to compare; first errors: {first}"
        return "error", RunError.exit_code, "run", error
    if problems:
        return "error", RunError.exit_code, "run", "traces do not match the calls made: " + "; ".join(problems)
    if max_error_rate is not None:
        for variant in VARIANTS:
            mine = [r for r in results if r.call.variant == variant]
            rate = sum(1 for r in mine if r.error) / max(len(mine), 1)
            if rate > max_error_rate:
                first = " | ".join(_first_errors([r for r in mine if r.error]))
                why = f"the {variant}'s error rate {rate:.1%} is above run.max_error_rate {max_error_rate:.1%}"
                return "error", RunError.exit_code, "run", f"error budget exhausted: {why}; first errors: {first}"
    if missing := [c.metric for c in checks if c.status == "missing"]:
        return "error", RunError.exit_code, "run", f"no data for {', '.join(missing)}; a check without data cannot pass"
    failing = [c for c in checks if c.status == "fail" or (c.status == "inconclusive" and c.on_inconclusive == "fail")]
    if failing or any(r.golden for r in evaluation.regressions):
        return "fail", 1, None, None
    return "pass", 0, None, None


def _check_report(check: CheckResult) -> CheckReport:
    return CheckReport(**{**vars(check), "message": redact(check.message)})
