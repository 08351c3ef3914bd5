"""Score traces with the configured scorers, concurrently, and write each score back as an MLflow assessment.

Scoring reads traces that already exist: it never calls the app. Judges' own LLM calls run with tracing
off, so they neither appear as traces of the app nor count towards its tokens.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from gate._config.dataset import Case
from gate._json import json_safe
from gate._metrics import root_output
from gate._secrets import redact
from gate._traces.rows import TraceRow
from gate.scorers import Score, ScoreInput, Scorer

__all__ = ["SOURCE_PREFIX", "ScorerStats", "score_rows", "stored_score"]

SOURCE_PREFIX = "gate:"  # assessment source ids the gate owns: gate:<scorer name>
VALUE_KEY = "gate.value"  # assessment metadata: the numeric score, so stored scores can be reused as they were


def _gate_feedback(trace: Any, name: str) -> list[Any]:
    """The valid assessments the gate logged on this trace for scorer ``name``, oldest first."""
    return [
        a
        for a in (getattr(trace.info, "assessments", None) or [])
        if a.name == name and getattr(a.source, "source_id", "") == f"{SOURCE_PREFIX}{name}" and a.valid is not False
    ]


def stored_score(trace: Any, name: str) -> float | None:
    """The value the gate last logged on this trace for scorer ``name``, or None."""
    mine = [a for a in _gate_feedback(trace, name) if VALUE_KEY in (getattr(a, "metadata", None) or {})]
    if not mine:
        return None
    try:
        value = json.loads(mine[-1].metadata[VALUE_KEY])
    except ValueError:
        return None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass
class ScorerStats:
    """How one scorer fared over the traces it was given."""

    scored: int = 0
    missing: int = 0
    first_error: str | None = None
    judge_input_tokens: int = 0
    judge_output_tokens: int = 0
    assessments_written: int = 0


def _write_assessment(trace: Any, scorer: Scorer, score: Score, session: str) -> bool:
    """Log the score on its trace once: skip when the gate already wrote this value, override when it changed."""
    import mlflow
    from mlflow.entities import AssessmentSource

    source = AssessmentSource(source_type=score.source_type, source_id=f"{SOURCE_PREFIX}{scorer.name}")
    value = json_safe(score.raw if score.raw is not None else score.value)
    mine = _gate_feedback(trace, scorer.name)
    metadata = {"gate.session": session, VALUE_KEY: json.dumps(score.value)}
    if mine:
        latest = mine[-1]
        if getattr(latest, "value", None) == value and getattr(latest, "rationale", None) == score.rationale:
            return False
        mlflow.override_feedback(
            trace_id=trace.info.trace_id,
            assessment_id=latest.assessment_id,
            value=value,
            rationale=score.rationale,
            source=source,
            metadata=metadata,
        )
        return True
    mlflow.log_feedback(
        trace_id=trace.info.trace_id,
        name=scorer.name,
        value=value,
        rationale=score.rationale,
        source=source,
        metadata=metadata,
    )
    return True


def score_rows(
    scorers: Sequence[Scorer],
    rows: Sequence[TraceRow],
    traces: Mapping[str, Any],
    cases: Mapping[str, Case],
    session: str,
    concurrency: int,
    stats: dict[str, ScorerStats],
    reuse: bool = False,
) -> list[TraceRow]:
    """Add each scorer's value to every row that has a trace; update ``stats``; write assessments.

    ``reuse``: a score the gate already logged on the trace is taken as it is (gathering shards, reusing a
    baseline: the scorers are the same, by fingerprint) instead of asking a judge again.
    """
    if not scorers:
        return list(rows)
    import mlflow

    def work(row: TraceRow, scorer: Scorer) -> tuple[Score, bool]:
        trace = traces[row.trace_id or ""]
        case = cases[row.case_id]
        if reuse and (stored := stored_score(trace, scorer.name)) is not None:
            return Score(stored, source_type=scorer.source_type), False
        data = ScoreInput(case.inputs, root_output(getattr(trace.data, "spans", None) or []), case.expectations, trace)
        with mlflow.tracing.context(enabled=False):  # a judge's own LLM call is not a trace of the app
            try:
                score = scorer(data)
            except Exception as exc:  # noqa: BLE001 - a failing scorer is a missing value, reported below
                score = Score(None, error=f"{type(exc).__name__}: {exc}", source_type=scorer.source_type)
            written = score.value is not None and _write_assessment(trace, scorer, score, session)
        return score, written

    tasks = [(row, scorer) for row in rows if row.trace_id and not row.values.get("error") for scorer in scorers]
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="gate-score") as pool:
        outcomes = list(pool.map(lambda task: work(*task), tasks))
    extra: dict[str | None, dict[str, float | None]] = {}
    for (row, scorer), (score, written) in zip(tasks, outcomes, strict=True):
        stat = stats.setdefault(scorer.name, ScorerStats())
        extra.setdefault(row.trace_id, {})[scorer.name] = score.value
        stat.judge_input_tokens += int(score.usage.get("input_tokens", 0))
        stat.judge_output_tokens += int(score.usage.get("output_tokens", 0))
        if score.value is None:
            stat.missing += 1
            if score.error and stat.first_error is None:
                stat.first_error = redact(score.error)
        else:
            stat.scored += 1
            stat.assessments_written += written
    return [replace(row, values={**row.values, **extra.get(row.trace_id, {})}) for row in rows]
