"""Per-case checks: is any single case worse by more than a bound, with the multiplicity over cases handled.

A check over all cases reads a regression confined to 3 of 40 cases as sampling noise (the case bootstrap is
right to: the mean moved little). ``per_case: true`` on a check with a ``max_increase_pct`` / ``max_decrease_pct``
bound asks another question: does *some* case change by more than the bound? Each case is decided from its own
repeats, on the log scale (a ratio bound is a difference of logs; latency, tokens and cost are right-skewed):

- d_i = mean(log candidate) - mean(log baseline) of case i (the log of the ratio of geometric means);
- the within-case noise s² is pooled over every case and both versions (the versions differ by a scale shift, the
  cases by their level: neither changes the spread of logs), with Σ (runs - 1) degrees of freedom, so one case's
  few repeats borrow the precision of all;
- one-sided Student t statistics against the bound, t_i = (d_i - log(1 + bound)) / (s √(1/n_b + 1/n_c)).

**Fail** when the Benjamini-Hochberg step-up procedure (1995) at α = 1 - confidence finds at least one case beyond
the bound: those cases are named, with their traces, among the verdict's regressions. When no case changed (A/A),
BH keeps the chance of any false fail at α, as the familywise correction would, and it finds a few bad cases among
many with more power than Bonferroni; the t statistics share s, which keeps them positively dependent (Benjamini &
Yekutieli 2001), where BH holds. **Pass** when every case's upper bound, simultaneous over the m cases
(Bonferroni: each at α/m), is inside the bound. Otherwise **inconclusive**, and adaptive repeats add runs to every
case.

**Screen, then confirm** (an adaptive run that can pay for it). Ten runs a case at CV 0.3 hold too little
information to find 3 bad cases among 40 nine times in ten (a single decision at 10 runs: 89.8%), and more runs of
every case would spend most calls where nothing changed. So the last look does not decide a fail itself: it flags
the cases whose one-sided p against the bound is at most ``SCREEN_P`` (at most ``MAX_SUSPECTS``, smallest p first),
the loop runs those cases ``cap`` more times each (both versions, interleaved), and the check fails when a flagged
case is beyond the bound on the new runs alone: Student t with the noise pooled over the new runs only, Bonferroni
over the k flagged cases at α₂ = α minus the levels the earlier looks spent (a union bound). Because the new runs
are independent of the selection, a flagged case that did not change fails with probability at most α₂ / k, and
no more than α₂ for all of them (the replication design of two-stage screens, e.g. Skol et al. 2006). A case not
confirmed leaves the check inconclusive; the pass rule is the last look's, unchanged. docs/design/statistics.md
has the measured rates.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from gate._config.schema import CheckConfig
from gate._decide.checks import CheckResult, evaluate_check
from gate._decide.regressions import Regression
from gate._decide.sequential import look_confidence, schedule
from gate._decide.stats import betainc
from gate._metrics import metric_info, split_metric_key
from gate._traces.rows import TraceRow

__all__ = ["MAX_SUSPECTS", "SCREEN_P", "confirm_alpha", "decide_per_case", "look_alpha", "looks", "t_sf"]

SCREEN_P = 0.05  # the one-sided p at the last look that flags a case for confirmation runs
MAX_SUSPECTS = 10  # cases re-run at most (smallest p first): bounds the confirmation's cost


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def _t_quantile(p: float, df: float) -> float:
    """The t with P(T > t) = 1 - p (p > 0.5), by bisection."""
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > 1 - p:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        if t_sf(mid, df) > 1 - p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def looks(first: int, cap: int) -> tuple[int, ...]:
    """The runs per case at which an adaptive run (``first`` runs per case in its first round, at most ``cap``)
    decides per-case checks: the adaptive loop's own looks (gate/_decide/sequential.py), from 2 runs a case on (one
    run says nothing about the noise within a case).

    Deciding after every round at 5% gave a case that sits at the bound up to nine chances to look beyond it
    (measured: 17-23% false fails at a nominal 5%, bench/per_case.py).
    """
    return schedule(first, cap, least=2)


def look_alpha(alpha: float, look: tuple[int, int, int] | None) -> float | None:
    """The error level to decide at, at ``look`` = (runs per case now, runs in the first round, cap) of an adaptive
    run; None when this is not one of ``looks``. ``look`` None: a single decision (gate compare, gate score), at
    ``alpha``.

    Each look decides at the level of the repeated confidence intervals over ``looks`` (an O'Brien-Fleming-shaped
    boundary, gate/_decide/sequential.py): strict at the early looks, close to ``alpha`` at the last. Each case's
    t statistic over the looks is the group-sequential one that boundary is computed for; Benjamini-Hochberg over
    the cases at each look's level. bench/per_case.py measures the false fails across all looks at the hardest null.
    """
    if look is None:
        return alpha
    runs, first, cap = look
    if runs < cap and runs not in looks(first, cap):
        return None
    return 1 - look_confidence(1 - alpha, runs, first, cap, least=2)


def confirm_alpha(alpha: float, first: int, cap: int) -> float:
    """The error level left for the confirmation runs: ``alpha`` less what the looks before the cap spent (the sum
    of their levels: a union bound over the stages)."""
    spent = sum(look_alpha(alpha, (runs, first, cap)) or 0.0 for runs in looks(first, cap) if runs < cap)
    return alpha - spent


@dataclass(frozen=True)
class _Case:
    case_id: str
    baseline: tuple[TraceRow, ...]
    candidate: tuple[TraceRow, ...]
    logs_b: tuple[float, ...]
    logs_c: tuple[float, ...]

    @property
    def diff(self) -> float:
        return sum(self.logs_c) / len(self.logs_c) - sum(self.logs_b) / len(self.logs_b)

    @property
    def scale(self) -> float:
        return math.sqrt(1 / len(self.logs_b) + 1 / len(self.logs_c))


def _cases(rows: Sequence[TraceRow], metric: str) -> tuple[list[_Case], list[str]]:
    """Cases with a positive value of ``metric`` in both versions; and the cases that have none in one."""
    grouped: dict[str, dict[str, list[TraceRow]]] = {}
    for row in rows:
        grouped.setdefault(row.case_id, {}).setdefault(row.variant, []).append(row)
    cases, lacking = [], []
    for case_id in sorted(grouped):
        sides = grouped[case_id]
        if "baseline" not in sides or "candidate" not in sides:
            continue  # unpaired cases are reported by the verdict's unpaired_cases
        logs = {
            v: tuple(math.log(x) for r in sides[v] if (x := r.values.get(metric)) is not None and x > 0)
            for v in ("baseline", "candidate")
        }
        if not logs["baseline"] or not logs["candidate"]:
            lacking.append(case_id)
            continue
        cases.append(
            _Case(case_id, tuple(sides["baseline"]), tuple(sides["candidate"]), logs["baseline"], logs["candidate"])
        )
    return cases, lacking


def _pooled_sd(cases: Sequence[_Case]) -> tuple[float, int]:
    squares, df = 0.0, 0
    for case in cases:
        for logs in (case.logs_b, case.logs_c):
            mean = sum(logs) / len(logs)
            squares += sum((x - mean) ** 2 for x in logs)
            df += len(logs) - 1
    return (math.sqrt(squares / df) if df else math.nan), df


def _bh(p_values: Sequence[float], alpha: float) -> list[int]:
    """Indices the Benjamini-Hochberg step-up procedure rejects at ``alpha``."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    k = max((rank for rank, i in enumerate(order, 1) if p_values[i] <= rank * alpha / m), default=0)
    return sorted(order[:k])


def _geo(logs: Sequence[float]) -> float:
    return math.exp(sum(logs) / len(logs))


def _edge(bound: str, limit: float) -> tuple[float, float]:
    """The bound on the log scale, and the side of it a regression is on (+1: above)."""
    if bound == "max_increase_pct":
        return math.log1p(limit / 100), 1.0
    return (math.log1p(-limit / 100) if limit < 100 else -math.inf), -1.0  # a fall below 1 - limit%


def _regression(check: CheckConfig, bound: str, limit: float, case: _Case, golden: frozenset[str]) -> Regression:
    metric, _ = split_metric_key(check.metric)
    change = math.expm1(case.diff) * 100
    verb = "rose" if change >= 0 else "fell"
    limit_text = f"+{limit:g}%" if bound == "max_increase_pct" else f"-{limit:g}%"
    b, c = _geo(case.logs_b), _geo(case.logs_c)
    return Regression(
        case.case_id,
        f"{check.metric}_per_case_{bound}",
        f"{metric} {verb} {abs(change):.0f}% ({b:.4g} → {c:.4g} {metric_info(metric).unit}".rstrip()
        + f", geometric means of {len(case.logs_b)} and {len(case.logs_c)} runs), limit {limit_text}",
        case.case_id in golden,
        tuple(r.trace_id for r in case.baseline if r.trace_id),
        tuple(r.trace_id for r in case.candidate if r.trace_id),
    )


def _confirm(
    check: CheckConfig, flagged: Sequence[str], rows: Sequence[TraceRow], alpha: float, golden: frozenset[str]
) -> tuple[list[Regression], str]:
    """The flagged cases decided on their confirmation runs alone: the ones shown beyond the bound, and why."""
    metric, _ = split_metric_key(check.metric)
    name = f"{check.metric} per case"
    wanted = set(flagged)
    cases, _ = _cases([r for r in rows if r.case_id in wanted], metric)
    k = len(flagged)
    sd, df = _pooled_sd(cases) if cases else (math.nan, 0)
    shown = ", ".join(flagged[:5]) + (" …" if k > 5 else "")
    flagged_text = f"{k} case{'s' if k != 1 else ''} flagged at the last look ({shown})"
    if df == 0 or not sd > 0:
        return [], f"{name}: {flagged_text}; their confirmation runs give no noise estimate, so not confirmed"
    found: dict[str, Regression] = {}
    for bound, limit in check.bounds().items():
        if bound not in ("max_increase_pct", "max_decrease_pct"):
            continue
        edge, sign = _edge(bound, float(limit))
        for case in cases:
            p = t_sf(sign * (case.diff - edge) / (sd * case.scale), df)
            if p <= alpha / k:  # Bonferroni over the flagged cases
                found.setdefault(case.case_id, _regression(check, bound, float(limit), case, golden))
    runs = sum(len(c.logs_b) + len(c.logs_c) for c in cases)
    if found:
        named = ", ".join(sorted(found)[:5]) + (" …" if len(found) > 5 else "")
        return list(found.values()), (
            f"{name}: {len(found)} of {flagged_text} confirmed beyond the bound on {runs} new runs alone "
            f"({named}; each at {alpha / k:.2g}: {alpha:.2g} over the {k} flagged)"
        )
    return [], f"{name}: {flagged_text}, none confirmed on {runs} new runs alone (each at {alpha / k:.2g})"


def decide_per_case(
    check: CheckConfig,
    rows: Sequence[TraceRow],
    baseline: float | None,
    candidate: float | None,
    confidence: float,
    on_inconclusive: str,
    golden: frozenset[str],
    look: tuple[int, int, int] | None = None,
    confirm: bool = False,
    confirmation: Sequence[TraceRow] | None = None,
) -> tuple[CheckResult, list[Regression]]:
    """Decide a ``per_case: true`` check; the cases found beyond its bound, as regressions.

    ``look``: (runs per case so far, runs in the first round, the cap) in an adaptive run, which decides at
    ``looks(first, cap)`` only, at each look's level of the repeated intervals; None for a single decision.
    ``confirm``: the run can pay for confirmation runs, so the last look flags suspects instead of deciding a fail;
    ``confirmation``: those runs' rows (the check is then decided on them, see the module's docstring).
    """
    point = evaluate_check(check, baseline, candidate)
    policy = check.on_inconclusive or on_inconclusive
    metric, _ = split_metric_key(check.metric)
    cases, lacking = _cases(rows, metric)
    name = f"{check.metric} per case"

    def result(status: str, message: str, delta_pct: float | None = None) -> CheckResult:
        broken = status == "fail" and check.severity == "warn"
        return CheckResult(
            check.metric,
            "warn" if broken else status,  # type: ignore[arg-type]
            check.severity,
            point.baseline,
            point.candidate,
            point.delta,
            delta_pct,
            point.bound,
            message,
            n_pairs=len(cases),
            on_inconclusive=policy,  # type: ignore[arg-type]
            population="case",
        )

    if not cases:
        return result("missing", f"{name}: no case has positive values for both versions; it cannot pass"), []
    sd, df = _pooled_sd(cases)
    if df == 0 or not sd > 0:
        why = "one run per case and version" if df == 0 else "no spread between runs"
        message = f"{name}: {why}, so the noise within a case is unknown; needs 2 or more runs of a case (repeats)"
        return result("inconclusive", message), []
    spend = look_alpha(1 - confidence, look)
    if spend is None:
        upcoming = next(k for k in looks(look[1], look[2]) if k > look[0]) if look is not None else 0
        return result("inconclusive", f"{name}: decided at {upcoming} runs per case (the next look)"), []
    alpha = spend
    m = len(cases)
    t_crit = _t_quantile(1 - alpha / m, df)
    screening = confirm and look is not None and look[0] >= look[2]  # the last look, with confirmation possible
    found: dict[str, Regression] = {}
    suspects: set[str] = set()
    decisions = []
    worst_pct: float | None = None
    for bound, limit in point.bound.items():
        edge, sign = _edge(bound, limit)
        # On the side of the regression: positive excess = beyond the bound.
        excess = [sign * (c.diff - edge) for c in cases]
        p_values = [t_sf(e / (sd * c.scale), df) for e, c in zip(excess, cases, strict=True)]
        within = all(e + t_crit * sd * c.scale < 0 for e, c in zip(excess, cases, strict=True))
        if screening and not within:
            picked = sorted((p, i) for i, p in enumerate(p_values) if p <= SCREEN_P)[:MAX_SUSPECTS]
            suspects.update(cases[i].case_id for _, i in picked)
            beyond = []
        else:
            beyond = _bh(p_values, alpha)
        decisions.append("fail" if beyond else "pass" if within else "inconclusive")
        worst = max(range(m), key=lambda i: sign * cases[i].diff)
        pct = math.expm1(cases[worst].diff) * 100
        worst_pct = pct if worst_pct is None or abs(pct) > abs(worst_pct) else worst_pct
        for i in beyond:
            found.setdefault(cases[i].case_id, _regression(check, bound, limit, cases[i], golden))
    status = "fail" if "fail" in decisions else "pass" if all(d == "pass" for d in decisions) else "inconclusive"
    bounds = ", ".join(f"{k} {v:g}" for k, v in point.bound.items())
    if suspects and status == "inconclusive" and look is not None:
        flagged = tuple(sorted(suspects))
        if confirmation is None:
            message = (
                f"{name}: {len(flagged)} of {m} cases flagged at the last look ({', '.join(flagged[:5])}"
                f"{' …' if len(flagged) > 5 else ''}); to be decided on confirmation runs of those cases"
            )
            return dataclasses.replace(result("inconclusive", message, worst_pct), suspects=flagged), []
        confirmed, message = _confirm(check, flagged, confirmation, confirm_alpha(1 - confidence, *look[1:]), golden)
        return dataclasses.replace(
            result("fail" if confirmed else "inconclusive", message, worst_pct), suspects=flagged
        ), confirmed
    named = ", ".join(sorted(found)[:5]) + (" …" if len(found) > 5 else "")
    if status == "fail":
        message = f"{name}: {len(found)} of {m} cases beyond {bounds} ({named})"
    elif status == "pass":
        message = f"{name}: all {m} cases within {bounds}, simultaneously (error level at this look: {alpha:.2g})"
    else:
        message = f"{name}: no case shown beyond {bounds}, but not every case shown within it yet"
    worst_text = f"; the largest change {worst_pct:+.0f}%" if worst_pct is not None else ""
    noise = f"; pooled noise of {df} degrees of freedom"
    skipped = f"; {len(lacking)} cases without values for both versions left out" if lacking else ""
    return result(status, message + worst_text + noise + skipped, worst_pct), list(found.values())
