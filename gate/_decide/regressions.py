"""Per-case views of the trace rows: paired samples for the statistics, and cases the candidate made worse."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gate._decide.stats import PairedSample
from gate._traces.rows import TraceRow

__all__ = ["Regression", "Unpaired", "find_regressions", "paired_sample", "unpaired_cases", "unpaired_sample"]


@dataclass(frozen=True)
class Regression:
    """A case the candidate made worse by a per-case rule, with the traces that show it."""

    case_id: str
    rule: str
    detail: str
    golden: bool
    baseline_trace_ids: tuple[str, ...]
    candidate_trace_ids: tuple[str, ...]


@dataclass(frozen=True)
class Unpaired:
    """Cases that have rows for only one version (reported, never silently dropped)."""

    baseline_only: tuple[str, ...]
    candidate_only: tuple[str, ...]


def _by_case(rows: Sequence[TraceRow], variant: str) -> dict[str, list[TraceRow]]:
    grouped: dict[str, list[TraceRow]] = {}
    for row in sorted((r for r in rows if r.variant == variant), key=lambda r: r.repeat):
        grouped.setdefault(row.case_id, []).append(row)
    return grouped


def paired_sample(rows: Sequence[TraceRow], metric: str) -> PairedSample:
    """Per-case values of ``metric`` for the cases where both versions have at least one value."""
    base, cand = _by_case(rows, "baseline"), _by_case(rows, "candidate")
    baseline: list[list[float]] = []
    candidate: list[list[float]] = []
    for case_id in sorted(base.keys() & cand.keys()):
        b = [v for r in base[case_id] if (v := r.values.get(metric)) is not None]
        c = [v for r in cand[case_id] if (v := r.values.get(metric)) is not None]
        if b and c:
            baseline.append(b)
            candidate.append(c)
    return PairedSample(baseline, candidate)


def unpaired_sample(rows: Sequence[TraceRow], metric: str) -> PairedSample:
    """Every trace's value of ``metric``, per version, as independent groups of one (no shared cases)."""
    values = {
        v: [[value] for r in rows if r.variant == v and (value := r.values.get(metric)) is not None]
        for v in ("baseline", "candidate")
    }
    return PairedSample(values["baseline"], values["candidate"], paired=False)


def unpaired_cases(rows: Sequence[TraceRow]) -> Unpaired:
    """The case ids present in only one version."""
    base, cand = set(_by_case(rows, "baseline")), set(_by_case(rows, "candidate"))
    return Unpaired(tuple(sorted(base - cand)), tuple(sorted(cand - base)))


def _trace_ids(rows: Sequence[TraceRow]) -> tuple[str, ...]:
    return tuple(r.trace_id for r in rows if r.trace_id)


def _pass_to_fail(b: list[TraceRow], c: list[TraceRow], score: str) -> bool:
    """A 0/1 score that passed on every baseline repeat and failed on every candidate repeat."""
    before = [r.values.get(score) for r in b]
    after = [r.values.get(score) for r in c]
    return bool(before) and bool(after) and all(v == 1 for v in before) and all(v == 0 for v in after)


def find_regressions(
    rows: Sequence[TraceRow], golden: frozenset[str] = frozenset(), scores: Sequence[str] = ()
) -> list[Regression]:
    """Cases the candidate made worse on every repeat: OK → ERROR, or a 0/1 score pass → fail. Golden first."""
    base, cand = _by_case(rows, "baseline"), _by_case(rows, "candidate")
    found = []
    for case_id in sorted(base.keys() & cand.keys()):
        b, c = base[case_id], cand[case_id]
        for score in scores:
            if _pass_to_fail(b, c, score):
                found.append(
                    Regression(
                        case_id,
                        f"{score}_pass_to_fail",
                        f"{score} passed on {len(b)} baseline runs, failed on all {len(c)} candidate runs",
                        case_id in golden,
                        _trace_ids(b),
                        _trace_ids(c),
                    )
                )
        if all(not r.values.get("error") for r in b) and all(r.values.get("error") for r in c):
            found.append(
                Regression(
                    case_id,
                    "ok_to_error",
                    f"OK on {len(b)} baseline runs, ERROR on all {len(c)} candidate runs",
                    case_id in golden,
                    _trace_ids(b),
                    _trace_ids(c),
                )
            )
    return sorted(found, key=lambda r: (not r.golden, r.case_id))
