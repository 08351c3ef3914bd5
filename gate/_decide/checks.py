"""Compare the two versions' metrics and decide each check; pure functions over plain values.

Two rules live here. ``evaluate_check`` compares point estimates (used for counts over cases, where
there is nothing to sample). ``decide_check`` is the gate's rule for per-trace metrics: it fails only
when the paired bootstrap shows, at the configured confidence, that a bound is broken, passes only
when it shows the bound holds, and is ``inconclusive`` in between (docs/design/statistics.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from gate._config.schema import CheckConfig
from gate._decide.stats import (
    Estimate,
    PairedSample,
    bootstrap,
    clopper_pearson,
    clustered_quantile_bounds,
    clustered_rate_bounds,
    mcnemar_exact,
    mover_difference,
    mover_ratio,
    quantile_bounds,
)
from gate._metrics import metric_info, split_metric_key

__all__ = [
    "MIN_CASES",
    "MIN_RUNS",
    "UNIT_OF",
    "CheckResult",
    "Population",
    "decide_check",
    "evaluate_check",
    "evaluate_checks",
    "rate_change_bounds",
    "zero_one_rate",
]

# The fewest cases a case-bootstrap interval is decided on. With n cases a resample repeats one case throughout with
# probability n^(1-n): 11% at 3 cases, 1.6% at 4, 0.16% at 5, so below 5 the 5% tail of the bootstrap distribution
# is made of such degenerate resamples; and the percentile interval is too narrow by about sqrt((n-1)/n) besides
# (Hesterberg 2015, "What teachers should know about the bootstrap"). Measured: identical versions with one case
# failed a p95 +5% check in 44.5% of runs, three cases 38.5%, five 19.5% (bench/few_cases.py on the branch
# stats-few-cases); below MIN_CASES such checks are now inconclusive and say so.
MIN_CASES = 5
# The same for a check about this dataset (about: dataset), whose bootstrap resamples each case's runs (m - 1 draws
# of its m runs, rescaled: stats.bootstrap): a resample repeats one run throughout with probability m^(2-m), a third
# at 3 runs, 0.8% at 5. Measured (bench/populations.py, one look, 10 cases, a p95 change exactly at its bound): 4.9%
# false fails at 5 runs, 8.1% at 3 (11.5% at 3 before the rescaling); below MIN_RUNS runs of every case such checks
# are inconclusive.
MIN_RUNS = 5

CheckStatus = Literal["pass", "fail", "warn", "inconclusive", "missing"]
Decision = Literal["pass", "fail", "inconclusive"]
# What a check's interval speaks about (docs/design/statistics.md, "Which population an interval is about"):
# app: the cases are a sample of the app's inputs (the case is the unit); dataset: these cases as they are, their
# runs the sample (about: dataset); traffic: unpaired traces, each one draw from a version's traffic; case: a
# per-case check, each case on its own runs.
Population = Literal["app", "dataset", "traffic", "case"]
UNIT_OF: dict[str, str] = {
    "app": "cases as the unit",
    "dataset": "calls as the unit: this dataset's cases",
    "traffic": "traces as the unit (unpaired)",
    "case": "each case's runs",
}


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
    ci_low: float | None = None
    ci_high: float | None = None
    ci_of: Literal["candidate", "delta", "delta_pct"] | None = None
    p_value: float | None = None
    n_pairs: int | None = None
    on_inconclusive: Literal["fail", "warn", "pass"] | None = None
    default: bool = False  # added by the gate (GateConfig.default_checks), not written in the config
    comparable: bool = True  # False: a time-sensitive metric of versions not measured together (evaluate)
    slice: str | None = None  # the cases it was decided on, when not all: "tag=refund" (evaluate)
    needs_cases: int | None = None  # undecidable from this few cases: the minimum (repeats cannot help)
    leans: Literal["pass", "fail"] | None = None  # an inconclusive check: the point estimate's side of the bound
    suspects: tuple[str, ...] = ()  # a per-case check's cases flagged at its last look, for confirmation runs
    population: Population | None = None  # what its interval speaks about; None: no interval (a count, a point rule)


def _level(confidence: float) -> str:
    """A confidence level as a reader needs it: "95%", "99.56%" at a strict early look, never a rounded "100%"."""
    pct = confidence * 100
    if pct >= 99.995:
        return ">99.99%"
    return f"{pct:.2f}".rstrip("0").rstrip(".") + "%"


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


def _describe_change(check: CheckConfig, baseline: float | None, candidate: float) -> str:
    """``latency_ms/p95 rose 18.3% (812.0 → 960.5 ms)``."""
    metric, aggregation = split_metric_key(check.metric)
    unit = "" if aggregation == "share" else metric_info(metric).unit
    suffix = f" {unit}" if unit else ""
    if baseline is None:
        return f"{check.metric} is {_fmt(candidate)}{suffix}"
    delta = candidate - baseline
    numbers = f"({_fmt(baseline)} → {_fmt(candidate)}{suffix})"
    if delta == 0:
        return f"{check.metric} unchanged {numbers}"
    direction = "rose" if delta > 0 else "fell"
    if baseline != 0:
        return f"{check.metric} {direction} {abs(delta) / abs(baseline) * 100:.1f}% {numbers}"
    return f"{check.metric} {direction} by {_fmt(abs(delta))} {numbers}"


def evaluate_check(check: CheckConfig, baseline: float | None, candidate: float | None) -> CheckResult:
    """Decide one check from the two aggregated values."""
    bounds = check.bounds()
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
    verdict = "; ".join(broken) if broken else f"within {_limits(bounds)}"
    head = _describe_change(check, baseline, candidate)
    return CheckResult(
        check.metric,
        status,
        check.severity,
        baseline,
        candidate,
        delta,
        delta_pct,
        bounds,
        f"{head}, {verdict}",
    )


def evaluate_checks(
    checks: Sequence[CheckConfig],
    baseline: Mapping[str, float | None],
    candidate: Mapping[str, float | None],
) -> list[CheckResult]:
    """Decide every check from the per-variant metric values."""
    return [evaluate_check(check, baseline.get(check.metric), candidate.get(check.metric)) for check in checks]


def _interval_for(name: str, est: Estimate) -> tuple[Literal["candidate", "delta", "delta_pct"], tuple[float, float]]:
    if name in ("at_most", "at_least"):
        return "candidate", est.candidate
    if name in ("max_increase", "max_decrease") or est.delta_pct is None:
        return "delta", est.delta
    return "delta_pct", est.delta_pct


def _bound_decision(name: str, limit: float, est: Estimate) -> Decision:
    """Decide one bound from one-sided interval ends: fail or pass only when the data show it."""
    if name in ("at_most", "at_least"):
        lo, hi = est.candidate
        if name == "at_least":  # at_least L is at_most -L on the negated value
            lo, hi, limit = -hi, -lo, -limit
    else:
        of, (lo, hi) = _interval_for(name, est)
        if of == "delta" and name.endswith("_pct"):
            limit = 0.0  # a baseline of 0: only "no change in that direction" is meaningful
        if name.startswith("max_decrease"):  # a decrease bound is an increase bound on the negated change
            lo, hi = -hi, -lo
    return "fail" if lo > limit else "pass" if hi <= limit else "inconclusive"


def _leaning(
    name: str, limit: float, est: Estimate, point: float | None
) -> tuple[Literal["pass", "fail"], float] | None:
    """Where an undecided bound leans (the point estimate's side of the limit) and about how many times the data
    would narrow its interval enough to decide, were it to narrow as 1/√n (between-case spread does not narrow with
    repeats: then more cases are needed). None when the point sits on the limit or is unknown."""
    of, (lo, hi) = _interval_for(name, est)
    if point is None or not all(map(math.isfinite, (lo, hi, point))):
        return None
    if of == "delta" and name.endswith("_pct"):
        limit = 0.0
    if name == "at_least" or name.startswith("max_decrease"):  # to the at_most form, as _bound_decision
        lo, hi, point = -hi, -lo, -point
        limit = -limit if name == "at_least" else limit
    if point < limit and hi > point:
        return "pass", ((hi - point) / (limit - point)) ** 2
    if point > limit and point > lo:
        return "fail", ((point - lo) / (point - limit)) ** 2
    return None


def _sample_size(sample: PairedSample) -> str:
    if sample.paired:
        return f"{sample.n_pairs} cases"
    return f"unpaired: {len(sample.baseline)} and {len(sample.candidate)} traces"


def zero_one_rate(metric: str, aggregation: str, sample: PairedSample) -> bool:
    """A rate of 0/1 outcomes: a binary metric's, or a scorer's whose every value is 0 or 1."""
    if aggregation not in ("rate", "mean"):
        return False
    if metric_info(metric).binary:
        return True
    return aggregation == "rate" and all(v in (0.0, 1.0) for g in (*sample.baseline, *sample.candidate) for v in g)


def _rate(groups: Sequence[Sequence[float]]) -> float:
    values = [v for g in groups for v in g]
    return sum(values) / len(values)


def _rate_bounds(groups: Sequence[Sequence[float]], population: Population, confidence: float) -> tuple[float, float]:
    """One-sided bounds of a 0/1 rate: cases as the unit about the app (Korn-Graubard), else every call a trial."""
    if population == "app":
        clustered = clustered_rate_bounds(groups, confidence)
        return clustered.low, clustered.high
    values = [v for g in groups for v in g]
    return clopper_pearson(round(sum(values)), len(values), confidence)


def rate_change_bounds(sample: PairedSample, population: Population, confidence: float, est: Estimate) -> Estimate:
    """``est`` with each end of a 0/1 rate's change and relative change the more cautious of its bootstrap and the
    MOVER intervals from each version's own rate bounds (docs/design/statistics.md, "Few cases").

    The bootstrap collapses for rates: no failure seen in either version gives [0, 0], which would "show" any
    max_increase held, and a ratio of a handful of events is too narrow (10% false fails at its bound on 10 cases).
    The difference takes Newcombe's (1998) hybrid score interval, the ratio MOVER-R, both from each rate's bounds at
    its effective size about the app, or every call (about this dataset) or trace (unpaired traffic) a trial; where
    some resample lost every baseline failure the bootstrap has no ratio and MOVER-R decides alone.
    """
    base = (_rate(sample.baseline), *_rate_bounds(sample.baseline, population, confidence))
    cand = (_rate(sample.candidate), *_rate_bounds(sample.candidate, population, confidence))
    low, high = mover_difference(cand, base)
    est = replace(est, delta=(min(est.delta[0], low), max(est.delta[1], high)))
    if base[0] > 0:
        low, high = (100 * (end - 1) for end in mover_ratio(cand, base))
        pct = est.delta_pct or (low, high)
        est = replace(est, delta_pct=(min(pct[0], low), max(pct[1], high)))
    return est


def decide_check(
    check: CheckConfig,
    sample: PairedSample,
    baseline: float | None,
    candidate: float | None,
    confidence: float,
    on_inconclusive: Literal["fail", "warn", "pass"],
    seed: int = 0,
    cases: int | None = None,
) -> CheckResult:
    """Decide a check on a per-trace metric from the paired per-case values of both versions.

    ``cases``: the cases the run holds for both versions, with values for this metric or not yet (a case whose calls
    errored so far has none); None: those of ``sample``. Too few cases is final only when the run has no more."""
    point = evaluate_check(check, baseline, candidate)
    policy = check.on_inconclusive or on_inconclusive
    if point.status == "missing":
        return replace(point, n_pairs=sample.n_pairs, on_inconclusive=policy)
    if sample.n_pairs == 0:
        message = (
            f"{check.metric}: no case has values for both versions; a check without paired data cannot pass"
            if sample.paired
            else f"{check.metric}: a version has no values; a check without data cannot pass"
        )
        return replace(point, status="missing", message=message, n_pairs=0, on_inconclusive=policy)
    metric, aggregation = split_metric_key(check.metric)
    population: Population = "traffic" if not sample.paired else "dataset" if check.about == "dataset" else "app"
    unit_note = UNIT_OF[population]
    est = bootstrap(
        sample,
        aggregation,
        confidence=confidence,
        seed=seed,
        unit="call" if population == "dataset" else "case",
        smooth=None if check.percentile == "smoothed" else False,
        # 0/1 metrics are not held to the few-case rules (MIN_CASES, the expanded interval): per case they take a
        # handful of values, whose resamples pile up on atoms (docs/design/statistics.md, "Few cases")
        few_cases=not (metric_info(metric).binary or aggregation == "rate"),
    )
    if metric_info(metric).binary and aggregation in ("rate", "mean"):
        # A bootstrap interval collapses to [0, 0] when no error was seen, and a single failing case
        # vanishes from a third of resamples; the exact binomial interval does neither. About the app its unit is
        # the case: repeats of one case are not independent calls (Korn-Graubard effective sample size, stats.py).
        outcomes = [v for values in sample.candidate for v in values]
        if population == "app":
            clustered = clustered_rate_bounds(sample.candidate, confidence)
            low, high = clustered.low, clustered.high
            if clustered.mixed:
                unit_note += f", design effect {clustered.design_effect:.1f}"
        else:  # about these cases (or unpaired traces): every call an independent trial
            low, high = clopper_pearson(round(sum(outcomes)), len(outcomes), confidence)
        if not any(outcomes):
            high = 0.0 if point.bound.get("at_most") == 0 else high  # "at most 0" asks that none be seen
        if all(outcomes):
            low = 1.0 if point.bound.get("at_least") == 1 else low
        est = replace(est, candidate=(low, high))
    if zero_one_rate(metric, aggregation, sample):
        est = rate_change_bounds(sample, population, confidence, est)
        if _rate(sample.candidate) == 0 and point.bound.get("max_increase") == 0:
            # "no rise" with no failure seen in the candidate: read as at_most 0 is
            est = replace(est, delta=(est.delta[0], min(est.delta[1], 0.0)))
    elif aggregation.startswith("p") or aggregation in ("median", "min", "max"):
        q = {"median": 0.5, "min": 0.0, "max": 1.0}.get(aggregation) or float(aggregation[1:]) / 100
        if population == "app":
            # Which cases lie in the tail is most of a percentile's uncertainty about the app (Woodruff's interval).
            quantile = clustered_quantile_bounds(sample.candidate, q, confidence)
            est = replace(est, candidate=(quantile.low, quantile.high))
            if quantile.design_effect > 1:
                unit_note += f", design effect {quantile.design_effect:.1f}"
        else:
            est = replace(est, candidate=quantile_bounds([v for vs in sample.candidate for v in vs], q, confidence))
    decisions = [_bound_decision(name, limit, est) for name, limit in point.bound.items()]
    decision: Decision = (
        "fail" if "fail" in decisions else "pass" if all(d == "pass" for d in decisions) else "inconclusive"
    )
    first = next(iter(point.bound))
    ci_of, (ci_low, ci_high) = _interval_for(first, est)
    p_value = None
    if metric_info(metric).binary and sample.paired:
        pairs = [
            (b, c)
            for bs, cs in zip(sample.baseline, sample.candidate, strict=True)
            for b, c in zip(bs, cs, strict=False)
        ]  # by repeat; a timed-out repeat has no pair
        p_value = mcnemar_exact([b for b, _ in pairs], [c for _, c in pairs])
    # A case bootstrap resamples cases: with fewer than MIN_CASES of them its interval is degenerate (one case: the
    # single point [x, x]) or far too narrow, so neither a pass nor a fail on it is honest, and repeats cannot help.
    bootstrapped = ci_of != "candidate" or not (
        metric_info(metric).binary or aggregation.startswith("p") or aggregation in ("median", "min", "max")
    )
    needs_cases = None
    few_yet = False  # too few cases with values so far, while the run holds enough: more runs may give them values
    if bootstrapped and population == "app" and not metric_info(metric).binary and sample.n_pairs < MIN_CASES:
        decision = "inconclusive"
        if (cases if cases is not None else sample.n_pairs) < MIN_CASES:
            needs_cases = MIN_CASES
        else:
            few_yet = True
    # About these cases the runs are the sample: too few runs of a case show too little of its spread (more will).
    runs = min(map(len, [*sample.baseline, *sample.candidate]))
    few_runs = bootstrapped and population == "dataset" and runs < MIN_RUNS
    if few_runs:
        decision = "inconclusive"
    status: CheckStatus
    if decision == "pass":
        status = "pass"
    elif decision == "fail":
        status = "fail" if check.severity == "error" else "warn"
    else:
        status = "inconclusive"
    unit = "%" if ci_of == "delta_pct" else ""
    sign = "+" if ci_of != "candidate" else ""
    interval = f"{ci_of} in [{ci_low:{sign}.4g}{unit}, {ci_high:{sign}.4g}{unit}] at {_level(confidence)}"
    # What the interval is about; a design effect belongs to the candidate's value (a rate's, a percentile's).
    interval += f", {unit_note if ci_of == 'candidate' else UNIT_OF[population]}"
    if ci_of != "candidate" and check.percentile == "plain":
        interval += ", the plain percentile"  # the bootstrap's default smooths it (docs/design/statistics.md)
    limits = _limits(point.bound)
    tail = {
        "pass": f"within {limits} ({interval})",
        "fail": f"limit {limits} broken ({interval})",
        "inconclusive": f"limit {limits}: inconclusive ({interval}, {_sample_size(sample)})",
    }[decision]
    leans = None
    if decision == "inconclusive" and needs_cases is None and not few_runs and not few_yet:
        point_value = {"candidate": point.candidate, "delta": point.delta, "delta_pct": point.delta_pct}[ci_of]
        if (leaning := _leaning(first, point.bound[first], est, point_value)) is not None:
            leans, factor = leaning
            tail += f"; leans {leans}: about {factor:.1f}× the calls might decide it, or more cases"
    if few_runs:
        tail = (
            f"limit {limits}: cannot be decided about this dataset from {runs} run{'s' if runs != 1 else ''} of a "
            f"case: its runs are the sample (about: dataset); needs {MIN_RUNS} or more runs of every case"
        )
    if few_yet:
        tail = (
            f"limit {limits}: only {sample.n_pairs} of {cases} cases have values from both versions so far (the "
            f"others' calls failed); the case bootstrap needs at least {MIN_CASES}: more runs may give them values"
        )
    if needs_cases is not None:
        tail = (
            f"limit {limits}: cannot be decided from {sample.n_pairs} case{'s' if sample.n_pairs != 1 else ''}: "
            f"the case bootstrap needs at least {MIN_CASES} (more repeats cannot stand in for cases); add cases"
        )
    return replace(
        point,
        status=status,
        message=f"{_describe_change(check, baseline, point.candidate or 0.0)}, {tail}",
        ci_low=ci_low,
        ci_high=ci_high,
        ci_of=ci_of,
        p_value=p_value,
        n_pairs=sample.n_pairs,
        on_inconclusive=policy,
        needs_cases=needs_cases,
        leans=leans,
        population=population,
    )
