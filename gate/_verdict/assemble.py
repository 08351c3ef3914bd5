"""The verdict, built once from a frozen record of what a command gathered; nothing patches it afterwards.

``gate run``, ``gate compare`` and ``gate score`` each fill a ``Gathered`` (rows, call results, problems, spend,
scorer stats, where each version's traces came from) and call ``build_verdict``, a pure function: the status and
exit code come from ``gate._decide.status.decide``, the one rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate._config.dataset import Case
from gate._config.fingerprint import fingerprint
from gate._config.schema import VARIANTS, GateConfig, Variant
from gate._decide.checks import CheckResult
from gate._decide.evaluate import Evaluation
from gate._decide.status import decide, first_errors
from gate._json import json_safe
from gate._secrets import redact, redact_uri, secret_values
from gate._store.recording import WriterChoice
from gate._traces.rows import CallResult, TraceRow, spent_usd
from gate._traces.scoring import ScorerStats
from gate._verdict.schema import (
    CaseReport,
    CaseSide,
    CheckReport,
    ComparisonReport,
    DatasetReport,
    MlflowReport,
    RegressionReport,
    ScorerReport,
    SelectionReport,
    SourceReport,
    SpendReport,
    VariantReport,
    Verdict,
)
from gate._version import __version__

__all__ = ["Gathered", "StoreInfo", "VersionSource", "build_verdict"]


@dataclass(frozen=True)
class VersionSource:
    """Where one version's traces came from."""

    target: str | None  # the module:function called (None when stored traces were selected)
    mlflow_run_id: str | None
    calls: int  # calls this command made of this version (0 for stored traces)
    selection: SelectionReport | None = None
    source: SourceReport | None = None  # the code's git source (gate run in a git repository)
    identity: dict[str, Any] = field(default_factory=dict)  # kind, and an endpoint's/prompt's/model's particulars


@dataclass(frozen=True)
class StoreInfo:
    """Where the traces are."""

    tracking_uri: str
    experiment_id: str
    session: str
    writer: WriterChoice | None = None


@dataclass(frozen=True)
class Gathered:
    """Everything a command gathered, frozen: the one input of ``build_verdict``."""

    config: GateConfig
    config_path: Path
    endpoint: str
    cases: Sequence[Case]  # in report order
    results: Sequence[CallResult]  # the calls the rows stand for
    rows: Sequence[TraceRow]
    problems: Sequence[str]
    evaluation: Evaluation
    versions: Mapping[Variant, VersionSource]
    store: StoreInfo
    stopped_because: str
    calls_made: int  # measured calls this command made, both versions
    rounds: int
    repeats: int
    timing: Mapping[str, Any]
    warmup_calls: int = 0
    scorer_stats: Mapping[str, ScorerStats] = field(default_factory=dict)
    comparison: ComparisonReport | None = None
    include_cases: bool = True  # per-case reports (not for unpaired stored traces)
    report_only: bool = False  # --report-only, or a shard: a failing exit 1 becomes 0
    dataset: Mapping[str, Any] | None = None  # where the cases came from (gate._run.prepare.gather_cases)


def build_verdict(gathered: Gathered) -> Verdict:
    """The verdict of a gathered command: status and exit code from ``decide``, reports from the data."""
    g = gathered
    config, results, rows = g.config, g.results, g.rows
    variants = {
        v: VariantReport(
            label=config.label(v),
            target=g.versions[v].target,
            kind=g.versions[v].identity.get("kind"),
            url=g.versions[v].identity.get("url"),
            prompt=g.versions[v].identity.get("prompt"),
            prompt_version=g.versions[v].identity.get("prompt_version"),
            model=g.versions[v].identity.get("model"),
            prompts=g.versions[v].identity.get("prompts"),
            source=g.versions[v].source,
            selection=g.versions[v].selection,
            mlflow_run_id=g.versions[v].mlflow_run_id,
            calls=g.versions[v].calls,
            traces=sum(row.trace_id is not None for row in rows if row.variant == v),
            errors=sum(1 for row in rows if row.variant == v and row.values.get("error")),
            retries=sum(r.attempts - 1 for r in results if r.call.variant == v),
            first_errors=[redact(e) for e in first_errors([r for r in results if r.call.variant == v])],
        )
        for v in VARIANTS
    }
    decision = decide(results, g.problems, g.evaluation, config.run.max_error_rate, report_only=g.report_only)
    evaluation = g.evaluation
    scores = [s.name for s in config.scorers]
    return Verdict(
        status=decision.status,
        exit_code=decision.exit_code,
        report_only=decision.report_only,
        reason=decision.reason,
        error=redact(decision.error) if decision.error else None,
        gate_version=__version__,
        config=str(g.config_path),
        endpoint=g.endpoint,
        variants=variants,
        metrics=evaluation.metrics,
        checks=[_check_report(c) for c in evaluation.checks],
        confidence=config.confidence,
        confidence_per_look=None if evaluation.look_confidence is None else round(evaluation.look_confidence, 4),
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
            calls=g.calls_made,
            warmup_calls=g.warmup_calls,
            rounds=g.rounds,
            repeats_per_case=g.repeats,
            cost_usd=spent_usd(rows),
            stopped_because=g.stopped_because,
        ),
        fingerprint=fingerprint(config, list(g.cases)),
        cases=case_reports(rows, g.cases, scores) if g.include_cases else [],
        distributions=distributions(rows, scores),
        scorers={
            s.name: ScorerReport(type=s.type, **vars(g.scorer_stats.get(s.name, ScorerStats()))) for s in config.scorers
        },
        comparison=g.comparison,
        dataset=DatasetReport.model_validate(g.dataset) if g.dataset else None,
        mlflow=MlflowReport(
            tracking_uri=redact_uri(g.store.tracking_uri),
            experiment=config.experiment,
            experiment_id=g.store.experiment_id,
            session=g.store.session,
            trace_writer=g.store.writer.writer if g.store.writer else None,
            trace_writer_reason=g.store.writer.reason if g.store.writer else None,
        ),
        timing=dict(g.timing),
    )


MAX_CASES = 1000
CASE_METRICS = ("latency_ms", "total_tokens", "response_chars")


def case_reports(rows: Sequence[TraceRow], cases: Sequence[Case], scores: Sequence[str]) -> list[CaseReport]:
    """Both versions of every case side by side, in dataset order."""
    metrics = [*CASE_METRICS, *scores]
    grouped: dict[tuple[str, str], list[TraceRow]] = {}
    for row in sorted(rows, key=lambda r: r.repeat):
        grouped.setdefault((row.case_id, row.variant), []).append(row)
    secrets = secret_values()  # once, not once per output: reading the environment is not cheap

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
            output=redact(output, secrets) if output else output,
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


def _check_report(check: CheckResult) -> CheckReport:
    return CheckReport(**{**vars(check), "message": redact(check.message), "suspects": list(check.suspects)})
