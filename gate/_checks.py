"""Compare the two versions' metrics and decide each check; pure functions over plain values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from gate._config import CheckConfig
from gate._metrics import METRICS, parse_metric_key

__all__ = ["CheckResult", "evaluate_check", "evaluate_checks"]

CheckStatus = Literal["pass", "fail", "warn", "missing"]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check, with the numbers that decided it."""

    metric: str
    status: CheckStatus
    severity: Literal["error", "warn"]
    baseline: float | None
    candidate: float | None
    delta: float | None
    delta_pct: float | None
    bound: dict[str, float]
    message: str


def _fmt(value: float) -> str:
    """A measured value: one decimal from 100 up, two below, three significant digits under 1."""
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.1f}"
    if abs(value) >= 1:
        text = f"{value:.2f}"
        return text[:-1] if text.endswith("0") else text
    return f"{value:.3g}"


def _lim(value: float) -> str:
    """A configured limit, as the user wrote it."""
    return f"{value:g}"


def _violations(bounds: Mapping[str, float], base: float, cand: float) -> list[str]:
    """The bounds that the pair (baseline, candidate) breaks, each described with its limit."""
    delta = cand - base
    out = []
    for name, limit in bounds.items():
        if name == "at_most" and cand > limit:
            out.append(f"limit ≤ {_lim(limit)}")
        elif name == "at_least" and cand < limit:
            out.append(f"limit ≥ {_lim(limit)}")
        elif name == "max_increase" and delta > limit:
            out.append(f"limit +{_lim(limit)}")
        elif name == "max_decrease" and -delta > limit:
            out.append(f"limit -{_lim(limit)}")
        elif name in ("max_increase_pct", "max_decrease_pct"):
            sign = 1 if name == "max_increase_pct" else -1
            change = sign * delta
            if base == 0:
                broken = change > 0  # any change from zero is an infinite relative change
            else:
                broken = change / abs(base) * 100 > limit
            if broken:
                out.append(f"limit {'+' if sign > 0 else '-'}{_lim(limit)}%")
    return out


def _limits(bounds: Mapping[str, float]) -> str:
    parts = {
        "at_most": "≤ {}",
        "at_least": "≥ {}",
        "max_increase": "+{}",
        "max_decrease": "-{}",
        "max_increase_pct": "+{}%",
        "max_decrease_pct": "-{}%",
    }
    return ", ".join(parts[name].format(_lim(limit)) for name, limit in bounds.items())


def evaluate_check(check: CheckConfig, baseline: float | None, candidate: float | None) -> CheckResult:
    """Decide one check from the two aggregated values."""
    bounds = check.bounds()
    metric, _ = parse_metric_key(check.metric)
    unit = METRICS[metric].unit
    if candidate is None or (baseline is None and any(not name.startswith("at_") for name in bounds)):
        missing = [v for v, value in (("baseline", baseline), ("candidate", candidate)) if value is None]
        return CheckResult(
            check.metric,
            "missing",
            check.severity,
            baseline,
            candidate,
            None,
            None,
            bounds,
            f"{check.metric}: no data for {' and '.join(missing)}; a check without data cannot pass",
        )
    delta = None if baseline is None else candidate - baseline
    delta_pct = None if baseline in (None, 0) or delta is None else delta / abs(baseline) * 100
    broken = _violations(bounds, baseline if baseline is not None else candidate, candidate)
    status: CheckStatus = "pass" if not broken else ("fail" if check.severity == "error" else "warn")
    numbers = (
        f"({_fmt(baseline)} → {_fmt(candidate)}{' ' + unit if unit else ''})"
        if baseline is not None
        else f"({_fmt(candidate)}{' ' + unit if unit else ''})"
    )
    if delta is None:
        movement = "is"
    elif delta_pct is not None:
        movement = (
            f"{'rose' if delta > 0 else 'fell' if delta < 0 else 'held'} {abs(delta_pct):.1f}%"
            if delta
            else "unchanged"
        )
    else:
        movement = (
            f"{'rose' if delta > 0 else 'fell' if delta < 0 else 'unchanged'} by {_fmt(abs(delta))}"
            if delta
            else "unchanged"
        )
    verdict = "; ".join(broken) if broken else f"within {_limits(bounds)}"
    return CheckResult(
        check.metric,
        status,
        check.severity,
        baseline,
        candidate,
        delta,
        delta_pct,
        bounds,
        f"{check.metric} {movement} {numbers}, {verdict}",
    )


def evaluate_checks(
    checks: Sequence[CheckConfig],
    baseline: Mapping[str, float | None],
    candidate: Mapping[str, float | None],
) -> list[CheckResult]:
    """Decide every check from the per-variant metric values."""
    return [evaluate_check(check, baseline.get(check.metric), candidate.get(check.metric)) for check in checks]
