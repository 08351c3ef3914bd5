"""Paired statistics over cases: a seeded case bootstrap for any aggregation, and an exact McNemar test.

Cases are the unit of resampling: each bootstrap replicate draws cases with replacement and keeps
every repeat of both versions of each drawn case together, so per-case difficulty (shared by the two
versions) cancels out of the delta, and the interval reflects how much the answer depends on which
cases happened to be in the dataset. A replicate is one row of case weights, so every aggregation,
percentiles included, is computed for all replicates at once from one sort (docs/design/statistics.md).

numpy is imported where it is used: ``gate validate`` and ``--dry-run`` import this module but compute nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    Floats = NDArray[np.float64]

__all__ = [
    "DEFAULT_RESAMPLES",
    "ClusteredQuantile",
    "ClusteredRate",
    "Estimate",
    "PairedSample",
    "beta_binomial_count",
    "beta_binomial_order_bounds",
    "betainc",
    "bootstrap",
    "clopper_pearson",
    "clustered_quantile_bounds",
    "clustered_rate_bounds",
    "mcnemar_exact",
    "quantile_bounds",
]

DEFAULT_RESAMPLES = 2000
SMOOTH_PERCENTILES = True  # False: the plain percentile in the bootstrap, as before (bench/power.py compares both)
KERNEL_REACH = 8.5  # spreads from q beyond which the smoothed percentile's normal kernel is taken as 0 (or 1)
BLOCK_CELLS = 2_000_000  # cells of one (replicates × calls) matrix: bounds the bootstrap's memory (16 MB each)


@dataclass(frozen=True)
class PairedSample:
    """Per-case values of one metric: ``baseline[i]`` and ``candidate[i]`` belong to the same case.

    With ``paired=False`` (traces that share no cases, e.g. production traffic of two versions) each
    group is one trace, the two lists may differ in length, and each version is resampled on its own.
    """

    baseline: Sequence[Sequence[float]]
    candidate: Sequence[Sequence[float]]
    paired: bool = True

    @property
    def n_pairs(self) -> int:
        """Cases with values for both versions; unpaired, the smaller of the two trace counts."""
        return len(self.baseline) if self.paired else min(len(self.baseline), len(self.candidate))


@dataclass(frozen=True)
class Estimate:
    """Bootstrap intervals (one-sided at ``confidence`` each way) of the candidate value and of the change."""

    candidate: tuple[float, float]
    delta: tuple[float, float]
    delta_pct: tuple[float, float] | None  # None when the baseline is 0 in some replicate


def _normal_cdf(x: Floats) -> Floats:
    """Φ(x) elementwise (Abramowitz & Stegun 7.1.26 for erf: absolute error below 1.5e-7; numpy has no erf)."""
    import numpy as np

    z = np.abs(x) / math.sqrt(2)
    t = 1 / (1 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1 - poly * np.exp(-z * z)
    cdf: Floats = 0.5 * (1 + np.sign(x) * erf)
    return cdf


def _weighted_aggregate(
    values: Floats, case_of: NDArray[np.intp], weights: Floats, aggregation: str, smooth: bool = False
) -> Floats:
    """Aggregate ``values`` (one per call, ``case_of`` its case) under each row of case ``weights``.

    ``smooth``: a percentile (median included) is the kernel quantile estimator of Sheather & Marron (1990) — a
    weighted average of all order statistics, the i-th of n weighted by the normal probability of ((i-1)/n, i/n]
    around q with standard deviation √(q(1-q)/(n+1)): the Harrell-Davis (1982) estimator's weights with the beta
    replaced by the normal of the same mean and spread. It estimates the same percentile with less variance than
    the one or two order statistics the plain definition uses (docs/design/statistics.md)."""
    import numpy as np

    # A block of replicates at a time: (replicates × calls) matrices of 2,000 × 10,000 calls would take ~160 MB each.
    block = max(1, BLOCK_CELLS // max(len(values), 1))
    if weights.shape[0] > block:
        parts = [
            _weighted_aggregate(values, case_of, weights[start : start + block], aggregation, smooth)
            for start in range(0, weights.shape[0], block)
        ]
        joined: Floats = np.concatenate(parts)
        return joined
    w = weights[:, case_of]  # (replicates, calls)
    if aggregation in ("mean", "rate"):
        means: Floats = (w @ values) / w.sum(axis=1)
        return means
    if aggregation == "sum":
        sums: Floats = w @ values
        return sums
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    cumulative = np.cumsum(w[:, order], axis=1)
    total = cumulative[:, -1:]
    if aggregation == "min":
        q = 0.0
    elif aggregation == "max":
        q = 1.0
    elif aggregation == "median":
        q = 0.5
    else:
        q = float(aggregation[1:]) / 100
    if smooth and 0 < q < 1:
        n = total  # calls in each replicate: (replicates, 1)
        spread = np.sqrt(q * (1 - q) / (n + 1))
        below = _normal_cdf(-q / spread)  # the kernel's mass outside [0, 1] is left out, and the rest rescaled
        # Only the order statistics within KERNEL_REACH spreads of q in some replicate carry weight: the mass outside
        # that window of columns is below Φ(-KERNEL_REACH) < 1e-17 in every row, under a double's resolution of 1.
        first = int((cumulative < (q - KERNEL_REACH * spread) * n).sum(axis=1).min())
        stop = len(ordered) - int((cumulative > (q + KERNEL_REACH * spread) * n).sum(axis=1).min())
        upto = _normal_cdf((cumulative[:, first:stop] / n - q) / spread)
        before = below if first == 0 else _normal_cdf((cumulative[:, first - 1 : first] / n - q) / spread)
        mass = np.diff(upto, axis=1, prepend=before)
        whole = _normal_cdf((1 - q) / spread)[:, 0] - below[:, 0]  # Φ at the last column, where cumulative = n
        smoothed: Floats = (mass @ ordered[first:stop]) / whole
        return smoothed
    # Linear interpolation between weighted ranks, matching the unweighted definition at unit weights.
    position = q * (total - 1)  # 0-based rank of the quantile in the weighted sample
    low = np.floor(position)
    frac = position - low
    low_index = (cumulative <= low).sum(axis=1)
    high_index = (cumulative <= low + 1).sum(axis=1)
    last = len(ordered) - 1
    low_value = ordered[np.minimum(low_index, last)]
    high_value = ordered[np.minimum(high_index, last)]
    quantiles: Floats = low_value + (high_value - low_value) * frac[:, 0]
    return quantiles


def _flatten(groups: Sequence[Sequence[float]]) -> tuple[Floats, NDArray[np.intp]]:
    import numpy as np

    values = np.fromiter((v for g in groups for v in g), dtype=np.float64)
    case_of = np.fromiter((i for i, g in enumerate(groups) for _ in g), dtype=np.intp)
    return values, case_of


def bootstrap(
    sample: PairedSample,
    aggregation: str,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    unit: Literal["case", "call"] = "case",
    smooth: bool | None = None,
    few_cases: bool = True,
) -> Estimate:
    """Intervals for the candidate's aggregate and its change from baseline, by a paired case bootstrap.

    Each bound of an interval is one-sided at ``confidence``: the true value lies above ``low`` with
    that confidence, and below ``high`` with that confidence. ``unit="call"``: the cases are kept as they are and
    each case's calls are resampled within it (a stratified bootstrap, rescaled: see ``call_weights``), for
    intervals about this dataset's cases rather than the app's inputs; a case with one call then adds no spread.
    ``smooth``: percentiles by the smoothed estimator (``_weighted_aggregate``) or, False, the plain one; None
    follows ``SMOOTH_PERCENTILES``. ``few_cases``: about the app, correct the interval for few cases (below); False
    reads the resamples at the asked level, as for 0/1 metrics, whose per-case values are too discrete for it.
    """
    if sample.n_pairs == 0:
        raise ValueError("no paired cases")
    import numpy as np

    rng = np.random.default_rng(seed)

    def case_weights(n: int) -> Floats:
        drawn: Floats = rng.multinomial(n, np.full(n, 1 / n), size=resamples).astype(np.float64)
        return drawn

    def call_weights(groups: Sequence[Sequence[float]]) -> Floats:
        # Rescaled within each case (Rao & Wu 1988, McCarthy & Snowden 1985): m - 1 draws from a case's m runs, each
        # weighing m / (m - 1), so that every case keeps its weight and the bootstrap variance of a mean is unbiased
        # (m draws would shrink it by (m - 1) / m: 20% at 5 runs). A case run once keeps its one run.
        parts = [
            rng.multinomial(len(g) - 1, np.full(len(g), 1 / len(g)), size=resamples) * (len(g) / (len(g) - 1))
            if len(g) > 1
            else np.ones((resamples, 1))
            for g in groups
            if len(g)
        ]
        drawn: Floats = np.concatenate(parts, axis=1).astype(np.float64)
        return drawn

    base_values, base_case = _flatten(sample.baseline)
    cand_values, cand_case = _flatten(sample.candidate)
    if unit == "call":
        base_weights, cand_weights = call_weights(sample.baseline), call_weights(sample.candidate)
        base_case, cand_case = np.arange(len(base_values)), np.arange(len(cand_values))
    else:
        base_weights = case_weights(len(sample.baseline))
        # Paired: the same draw of cases for both versions, so per-case difficulty cancels out of the delta.
        cand_weights = base_weights if sample.paired else case_weights(len(sample.candidate))
    # Percentiles by the smoothed estimator: the same percentile under a change of scale, less noise between
    # replicates and between runs; a change confined to calls beyond it leaks in (docs/design/statistics.md).
    smoothed = SMOOTH_PERCENTILES if smooth is None else smooth

    def with_estimate(weights: Floats) -> Floats:  # a last row of unit weights: the estimate (for the t interval)
        stacked: Floats = np.vstack([weights, np.ones((1, weights.shape[1]))])
        return stacked

    base = _weighted_aggregate(base_values, base_case, with_estimate(base_weights), aggregation, smoothed)
    cand = _weighted_aggregate(cand_values, cand_case, with_estimate(cand_weights), aggregation, smoothed)
    alpha = 1 - confidence
    # About the app (cases resampled), few cases: the percentile interval is too narrow, so it is read at the expanded
    # level (Hesterberg 2015). About this dataset the runs are rescaled instead (call_weights) and MIN_RUNS applies.
    units = sample.n_pairs if sample.paired else min(len(sample.baseline), len(sample.candidate))
    corrected = unit == "case" and few_cases
    if corrected:
        reach = expanded_reach(alpha, units)
    else:
        reach = -NormalDist().inv_cdf(alpha) if alpha > 0 else math.inf
    read = NormalDist().cdf(-reach)
    # Where the resamples cannot show the level, the interval is extended to `reach` bootstrap standard errors from
    # the estimate (Student's t interval when corrected): beyond the cases, where the level is surer than 1 - 2^-n (no
    # resample lies beyond the most extreme case, and every case lies on one side of the truth in 2^-n of samples);
    # beyond the resamples, where fewer than one resample is expected past the level (the adaptive loop's first looks
    # decide at 99.99999%: 2,000 resamples read there give their most extreme one, about 3 standard errors); and for
    # a mean or a sum at any level, whose small-sample interval is the t interval, narrower than which a bootstrap of
    # a few skewed cases should not be (docs/design/statistics.md, "Few cases").
    extended = (corrected and (2.0**-units > alpha or aggregation in ("mean", "sum"))) or read * resamples < 1

    def interval(x: Floats) -> tuple[float, float]:
        lo, hi = (float(v) for v in np.quantile(x[:-1], [read, 1 - read]))
        if extended and (sd := float(np.std(x[:-1], ddof=1))) > 0:
            lo, hi = min(lo, float(x[-1]) - reach * sd), max(hi, float(x[-1]) + reach * sd)
        return lo, hi

    pct = None
    if np.all(base != 0):
        pct = interval((cand - base) / np.abs(base) * 100)
    return Estimate(candidate=interval(cand), delta=interval(cand - base), delta_pct=pct)


def mcnemar_exact(baseline: Sequence[float], candidate: Sequence[float]) -> float:
    """Two-sided exact McNemar p-value for paired 0/1 outcomes (a binomial test on the discordant pairs)."""
    worse = sum(1 for b, c in zip(baseline, candidate, strict=True) if b == 0 and c == 1)
    better = sum(1 for b, c in zip(baseline, candidate, strict=True) if b == 1 and c == 0)
    discordant = worse + better
    if discordant == 0:
        return 1.0
    k = min(worse, better)
    tail = sum(math.comb(discordant, i) for i in range(k + 1)) / 2**discordant
    return float(min(1.0, 2 * tail))


def _binom_tail_ge(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space so large n stays finite."""
    if k <= 0:
        return 1.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    base = math.lgamma(n + 1)
    return math.fsum(
        math.exp(base - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q)
        for i in range(k, n + 1)
    )


def clopper_pearson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Exact one-sided bounds at ``confidence`` each for a binomial rate with ``k`` successes in ``n``."""
    if n <= 0:
        raise ValueError("no trials")
    alpha = 1 - confidence

    # lower: the p at which seeing k or more has probability alpha; upper: seeing k or fewer has alpha.
    # At k = 0 and k = n the tails are single terms, (1 - p)^n and p^n, so the bounds have closed forms.
    if k == 0:
        lower = 0.0
    elif k == n:
        lower = alpha ** (1 / n)
    else:
        lower = _bisect(lambda p: _binom_tail_ge(k, n, p) - alpha)
    if k == n:
        upper = 1.0
    elif k == 0:
        upper = 1 - alpha ** (1 / n)
    else:
        upper = _bisect(lambda p: alpha - (1 - _binom_tail_ge(k + 1, n, p)))
    return lower, upper


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) for a, b > 0, by its continued fraction (modified Lentz).

    The fraction converges fast for x below (a + 1) / (a + b + 2); above that point the symmetry
    I_x(a, b) = 1 - I_{1-x}(b, a) is used instead.
    """
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - betainc(b, a, 1.0 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 10_000):
        for coefficient in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),  # even step
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),  # odd step
        ):
            d = 1.0 + coefficient * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + coefficient / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * fraction / a


def student_t_tail(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom, t >= 0 (from the incomplete beta function)."""
    return 0.5 * betainc(df / 2, 0.5, df / (df + t * t))


def expanded_reach(alpha: float, n: int) -> float:
    """How many standard errors a one-sided ``alpha`` bound over ``n`` resampled units lies from the estimate.

    Hesterberg's (2015) expanded percentile interval: the bootstrap's spread of a mean of n units is too small by
    sqrt((n - 1) / n), and a standardized mean has Student's t tails with n - 1 degrees of freedom, not normal ones:
    sqrt(n / (n - 1)) · t_{n-1}(1 - alpha). Reading the bootstrap distribution at Φ(-reach) instead of ``alpha``
    makes the interval of a mean the t interval; it tends to alpha as n grows (4.4% for 5% at 40 units, 0.86% at 5).
    Infinite for fewer than 2 units.
    """
    if n < 2:
        return math.inf
    t = _bisect(lambda x: alpha - student_t_tail(x, n - 1), 1e6)
    return math.sqrt(n / (n - 1)) * t


def _bisect(f: Callable[[float], float], top: float = 1.0) -> float:
    """The root in (0, ``top``) of an increasing ``f``, to ~1e-18·top."""
    lo, hi = 0.0, top
    for _ in range(60):
        mid = (lo + hi) / 2
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _clopper_pearson_real(x: float, n: float, confidence: float) -> tuple[float, float]:
    """Clopper-Pearson's bounds written as beta quantiles, which also take a non-integer count ``x`` of ``n``.

    For integers they are the binomial-tail bounds of ``clopper_pearson``: P(X >= k) = I_p(k, n - k + 1).
    Needs 0 < x < n.
    """
    alpha = 1 - confidence
    lower = _bisect(lambda p: betainc(x, n - x + 1, p) - alpha)
    upper = _bisect(lambda p: betainc(x + 1, n - x, p) - (1 - alpha))
    return lower, upper


@dataclass(frozen=True)
class ClusteredRate:
    """Bounds of a 0/1 rate with cases as the unit, and the numbers behind them."""

    low: float
    high: float
    successes: int  # k: the outcomes that are 1
    calls: int  # n: the outcomes
    cases: int  # G: the cases with at least one outcome
    design_effect: float  # >= 1: how many calls are worth one independent call
    effective_calls: float  # n* = n / design_effect, at most n

    @property
    def mixed(self) -> bool:
        """Whether both outcomes were seen: only then does the case structure say anything (0 < k < n)."""
        return 0 < self.successes < self.calls


def clustered_rate_bounds(groups: Sequence[Sequence[float]], confidence: float) -> ClusteredRate:
    """One-sided bounds at ``confidence`` for a 0/1 rate whose outcomes come in cases (Korn & Graubard 1998).

    ``groups[i]`` holds the outcomes (0 or 1) of case i's repeats. The cases are taken as a sample of the
    app's inputs and the repeats as units within them, so outcomes of one case are not independent:
    Clopper-Pearson is evaluated at the effective sample size n* = n / deff, with x* = p·n* successes, where
    the design effect deff compares the between-case (linearisation) variance of the rate,
    G/(G-1) · Σ_i (y_i - p·m_i)² / n², with the variance p(1-p)/(n-1) that n independent calls would give.
    Both carry their usual small-sample factor, so one repeat per case gives deff = 1 exactly and the
    calls-level interval of ``clopper_pearson``. deff is truncated at 1 (n* at most n). When the rate is 0 or 1
    the between-case variance is 0 and says nothing about clustering: n* = n. With a single case (and a rate
    strictly between 0 and 1) the between-case variance cannot be estimated and the case counts as one call.
    """
    counts = [(round(sum(values)), len(values)) for values in groups if len(values) > 0]
    cases = len(counts)
    n = sum(m for _, m in counts)
    k = sum(y for y, _ in counts)
    if n == 0:
        raise ValueError("no trials")
    if k in (0, n):
        low, high = clopper_pearson(k, n, confidence)
        return ClusteredRate(low, high, k, n, cases, 1.0, float(n))
    # deff = [G/(G-1) · S/n⁴] / [k(n-k) / (n²(n-1))] with S = Σ (n·y_i - k·m_i)²: compared in integers, so
    # that no clustering (deff <= 1: one repeat per case, or errors spread more evenly than chance would spread
    # them) takes exactly the calls-level path.
    squares = sum((n * y - k * m) ** 2 for y, m in counts)
    numerator = cases * (n - 1) * squares
    denominator = (cases - 1) * n * n * k * (n - k)
    if cases > 1 and numerator <= denominator:
        low, high = clopper_pearson(k, n, confidence)
        return ClusteredRate(low, high, k, n, cases, 1.0, float(n))
    design_effect = float(n) if cases == 1 else numerator / denominator
    effective = n / design_effect
    low, high = _clopper_pearson_real(k / n * effective, effective, confidence)
    return ClusteredRate(low, high, k, n, cases, design_effect, effective)


Bounds = tuple[float, float, float]  # an estimate with its one-sided low and high bounds: (estimate, low, high)


def mover_difference(first: Bounds, second: Bounds) -> tuple[float, float]:
    """One-sided bounds of ``first - second`` from each quantity's own bounds (MOVER, Zou & Donner 2008).

    For two rates with score or exact bounds this is Newcombe's (1998) hybrid score interval. The two are taken as
    independent: for the same cases positively correlated, which makes the interval conservative.
    """
    (a, a_low, a_high), (b, b_low, b_high) = first, second
    return a - b - math.hypot(a - a_low, b_high - b), a - b + math.hypot(a_high - a, b - b_low)


def mover_ratio(first: Bounds, second: Bounds) -> tuple[float, float]:
    """One-sided bounds of ``first / second`` for two non-negative quantities with ``second`` > 0 (MOVER-R).

    Donner & Zou (2012), Newcombe (2016): each end solves (a - θb)² = (a - a_end)² + θ²(b - b_end)², the
    variance recovered from each quantity's own bounds, so a rate's skewed score or exact bounds carry into the
    ratio. The high end is infinite when the denominator's low bound reaches 0 (a rate of 0 is then possible).
    """
    (a, a_low, a_high), (b, b_low, b_high) = first, second
    if b <= 0:
        raise ValueError("the ratio's denominator must be positive")
    # The low end: the root of (b_high(2b - b_high)) θ² - 2ab θ + a_low(2a - a_low) = 0 below a/b, written without
    # a division by the leading coefficient (it is 0 or negative when b's high bound is twice b or more).
    c = a_low * (2 * a - a_low)
    low = 0.0 if c <= 0 else c / (a * b + math.sqrt((a * b) ** 2 - b_high * (2 * b - b_high) * c))
    lead = b_low * (2 * b - b_low)
    c = a_high * (2 * a - a_high)
    disc = (a * b) ** 2 - lead * c
    high = math.inf if lead <= 0 or disc < 0 else (a * b + math.sqrt(disc)) / lead
    return low, high


def quantile_bounds(values: Sequence[float], q: float, confidence: float) -> tuple[float, float]:
    """Distribution-free one-sided bounds at ``confidence`` for the ``q`` quantile (0..1), from order statistics.

    The bootstrap's interval for a tail percentile under-covers at realistic sizes (its 95% upper bound of a
    p95 held ~85% of the time at 40 cases × 3, p99 ~65%); these bounds hold at the stated level for
    independent calls. Where the sample is too small for a bound (p99 of 120 calls), it is infinite.
    """
    import numpy as np

    ordered = np.sort(np.asarray(values, dtype=np.float64))
    n = len(ordered)
    if n == 0:
        raise ValueError("no values")
    if q <= 0 or q >= 1:
        edge = float(ordered[0] if q <= 0 else ordered[-1])
        return (edge, math.inf) if q >= 1 else (-math.inf, edge)
    log_q, log_r = math.log(q), math.log1p(-q)
    base = math.lgamma(n + 1)
    pmf = np.array(
        [
            math.exp(base - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_q + (n - i) * log_r)
            for i in range(n + 1)
        ]
    )
    return _order_statistics_at(ordered, np.cumsum(pmf), confidence)  # X ~ Binomial(n, q)


def _order_statistics_at(ordered: Floats, cdf: Floats, confidence: float) -> tuple[float, float]:
    """The bounds of a quantile among sorted values, from the distribution of X, the count of them at or below it.

    ``cdf[j]`` = P(X <= j). Upper: the smallest order statistic x_(k) (1-based) with P(X <= k-1) >= confidence;
    lower: the largest x_(k) with P(X >= k) >= confidence, i.e. P(X <= k-1) <= 1 - confidence. Infinite where no
    order statistic will do.
    """
    import numpy as np

    n = len(ordered)
    k_high = int(np.searchsorted(cdf, confidence)) + 1
    high = float(ordered[k_high - 1]) if k_high <= n else math.inf
    k_low = int(np.searchsorted(cdf, 1 - confidence, side="right"))
    low = float(ordered[k_low - 1]) if k_low >= 1 else -math.inf
    return low, high


@dataclass(frozen=True)
class ClusteredQuantile:
    """Bounds of a percentile whose calls come in cases, and the design effect behind them."""

    low: float
    high: float
    calls: int
    cases: int
    design_effect: float  # of the indicator "at or below the percentile", >= 1
    effective_calls: float


def clustered_quantile_bounds(groups: Sequence[Sequence[float]], q: float, confidence: float) -> ClusteredQuantile:
    """One-sided bounds at ``confidence`` for the ``q`` quantile of calls that come in cases (Woodruff 1952).

    ``groups[i]`` holds case i's values. Woodruff's interval, the standard one for quantiles from cluster samples,
    reads the quantile's bounds off the empirical distribution at the bounds of the proportion of calls at or below
    it. Here that proportion is treated as ``clustered_rate_bounds`` treats a rate: the design effect of the
    indicator "at or below the sample quantile" by case measures how much the cases, not the calls, decide which
    values lie in the tail, and the distribution-free order-statistic rule of ``quantile_bounds`` is applied at the
    effective sample size n* = n / deff (the binomial tails written as incomplete beta functions, which take a
    non-integer n*), its order statistic then scaled from n* to the n calls. Each end is then widened to
    ``beta_binomial_order_bounds``'s where that reaches further (in practice the lower end): the binomial at n*
    matches the count's variance but not its skew. Without clustering (design effect 1) the bounds are exactly
    ``quantile_bounds``'s. An effective sample too small to bound the quantile at all (q^n* > 1 - confidence for
    the upper end) gives an infinite end.
    """
    import numpy as np

    groups = [g for g in groups if len(g) > 0]
    values = np.fromiter((v for g in groups for v in g), dtype=np.float64)
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    cut = float(np.quantile(values, q)) if 0 < q < 1 else 0.0
    below = (
        clustered_rate_bounds([[1.0 if v <= cut else 0.0 for v in g] for g in groups], confidence)
        if 0 < q < 1
        else None
    )
    if below is None or below.design_effect <= 1.0:
        low, high = quantile_bounds(values.tolist(), q, confidence)
        return ClusteredQuantile(low, high, n, len(groups), 1.0, float(n))
    ordered = np.sort(values)
    low, high = order_statistic_bounds(ordered, q, confidence, below.effective_calls)
    # The count of calls on one side of the quantile is skewed when a few cases hold the tail, which a binomial at
    # n* (matched in variance only) misses on the lower side; the beta-binomial count carries that skew but, with
    # its spread read off a sample that may lack the slowest inputs, misses on the upper side. Each end is the
    # more cautious of the two (docs/design/statistics.md, "Why the lower side misses").
    skewed_low, skewed_high = beta_binomial_order_bounds(
        ordered, [len(g) for g in groups], q, confidence, below.design_effect
    )
    return ClusteredQuantile(
        min(low, skewed_low), max(high, skewed_high), n, len(groups), below.design_effect, below.effective_calls
    )


def beta_binomial_order_bounds(
    ordered: Floats, sizes: Sequence[int], q: float, confidence: float, design_effect: float
) -> tuple[float, float]:
    """``quantile_bounds``'s rule with the count of calls at or below the ``q`` quantile beta-binomial by case.

    Case i's share of calls at or below the quantile varies between cases (Williams 1975): its count of m_i calls
    is beta-binomial with mean q and intra-case correlation ρ, taken from the design effect as for equal sizes,
    deff = 1 + (m̄ − 1)ρ with m̄ = Σ m_i² / n. The count over all cases is the convolution of those, and the bounds
    are the order statistics of the n calls at its tails: upper, the smallest k with P(X ≤ k − 1) ≥ confidence;
    lower, the largest k with P(X ≥ k) ≥ confidence.
    """
    import numpy as np

    n = len(ordered)
    mean_size = sum(m * m for m in sizes) / n
    if mean_size <= 1:
        return quantile_bounds(ordered.tolist(), q, confidence)
    rho = min(max((design_effect - 1) / (mean_size - 1), 1e-9), 0.999)
    return _order_statistics_at(ordered, np.cumsum(beta_binomial_count(sizes, q, rho)), confidence)


def order_statistic_bounds(ordered: Floats, q: float, confidence: float, effective: float) -> tuple[float, float]:
    """``quantile_bounds``'s rule for sorted values at an effective sample size ``effective`` (≤ their count).

    Upper: the smallest k with P(X <= k - 1) >= confidence, X ~ Binomial(n*, q); lower: the largest k with
    P(X >= k) >= confidence. With the binomial tail written as an incomplete beta function, P(X >= k) =
    I_q(k, n* - k + 1), both take a real n* and k; the order statistic is then k scaled from n* to the n values.
    At n* = n this is ``quantile_bounds`` exactly (tested).
    """
    n = len(ordered)
    alpha = 1 - confidence

    def at_least(k: float) -> float:
        return betainc(k, effective - k + 1, q)

    # Both tails are monotone in k: bisection on (0, n*].
    high = math.inf
    if q**effective <= alpha:
        k = _bisect(lambda k: 1 - at_least(k) - confidence, effective)
        high = float(ordered[min(n, math.ceil(k * n / effective)) - 1])
    low = -math.inf
    if (1 - q) ** effective <= alpha:
        k = _bisect(lambda k: confidence - at_least(k), effective)
        low = float(ordered[max(1, math.floor(k * n / effective)) - 1])
    return low, high


def beta_binomial_count(sizes: Sequence[int], p: float, rho: float) -> Floats:
    """The distribution of a sum of independent beta-binomial counts, one of ``m`` trials for each of ``sizes``.

    Each has mean ``p`` per trial and intra-case correlation ``rho`` (0 < rho < 1): Beta(a, b) with
    a = p(1 − ρ)/ρ, b = (1 − p)(1 − ρ)/ρ, so its variance is m p (1 − p) (1 + (m − 1)ρ). Returns P(X = j) for
    j = 0 … Σ m.
    """
    import numpy as np

    a, b = p * (1 - rho) / rho, (1 - p) * (1 - rho) / rho
    log_beta_ab = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    by_size: dict[int, Floats] = {}
    count: Floats = np.ones(1)
    for m in sizes:
        if m not in by_size:
            log_pmf = [
                math.lgamma(m + 1)
                - math.lgamma(i + 1)
                - math.lgamma(m - i + 1)
                + math.lgamma(i + a)
                + math.lgamma(m - i + b)
                - math.lgamma(m + a + b)
                - log_beta_ab
                for i in range(m + 1)
            ]
            pmf = np.exp(np.array(log_pmf))
            by_size[m] = pmf / pmf.sum()
        count = np.convolve(count, by_size[m])
    return count
