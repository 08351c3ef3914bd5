"""From trace rows to decided checks: point metrics, paired statistics and per-case regressions (pure)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from gate._config.dataset import Case
from gate._config.schema import BOUNDS, VARIANTS, CheckConfig, GateConfig, TradeOffCondition, Variant
from gate._decide.checks import CheckResult, decide_check, evaluate_check, rate_change_bounds, zero_one_rate
from gate._decide.per_case import decide_per_case
from gate._decide.regressions import (
    Regression,
    Unpaired,
    find_regressions,
    paired_sample,
    unpaired_cases,
    unpaired_sample,
)
from gate._decide.sequential import look_confidence
from gate._decide.stats import bootstrap
from gate._metrics import SUMMARY_KEYS, compute_metrics, metric_info, split_metric_key
from gate._traces.rows import TraceRow

__all__ = ["TIME_SENSITIVE", "Evaluation", "evaluate", "undecided"]

# Metrics that depend on when they were measured (provider load, network, the machine): comparable only between
# traces recorded together, which is what interleaving the versions gives.
TIME_SENSITIVE = frozenset({"latency_ms", "ttft_ms"})


@dataclass(frozen=True)
class Evaluation:
    """Everything the verdict says about the data."""

    metrics: dict[Variant, dict[str, float | None]]
    checks: list[CheckResult]
    regressions: list[Regression]
    unpaired: Unpaired
    n_cases: int
    look_confidence: float | None = None  # what checks over all cases were decided at, in an adaptive run
    suspects: frozenset[str] = frozenset()  # cases per-case checks flagged for confirmation runs (none run yet)


def _metric_keys(config: GateConfig) -> list[str]:
    keys = list(SUMMARY_KEYS) + [f"{s.name}/mean" for s in config.scorers]
    keys += [
        c.metric
        for c in config.checks
        if c.metric not in keys and not metric_info(split_metric_key(c.metric)[0]).per_case
    ]
    return keys


def evaluate(
    config: GateConfig,
    rows: Sequence[TraceRow],
    golden: frozenset[str],
    seed: int = 0,
    paired: bool = True,
    not_together: str | None = None,
    look: tuple[int, int, int] | None = None,
    cases: Sequence[Case] = (),
    confirm: bool = False,
    confirmation: Sequence[TraceRow] | None = None,
) -> Evaluation:
    """Compute metrics for both versions and decide every check.

    ``paired=False`` is for traces of two versions that share no cases (``gate compare`` over production
    traffic): each version's traces are resampled on their own, and per-case rules do not apply.
    ``not_together`` says why the versions' traces were not recorded together (a stored baseline): checks of
    ``TIME_SENSITIVE`` metrics are then inconclusive and not comparable, whatever their numbers say, since a change
    in the provider's speed between the two recordings would read as the candidate's. ``look``: (runs per case so
    far, runs in the first round, the cap) in an adaptive run: checks are then decided at the per-look confidence
    that keeps every look together at ``config.confidence`` (gate/_decide/sequential.py; per-case checks spend
    their error across their own looks instead).
    ``cases`` give the tags and inputs that ``where:`` and ``per_slice:`` select cases by.
    ``confirm``: the run can pay for confirmation runs, so per-case checks flag suspects at their last look
    (``Evaluation.suspects``); ``confirmation``: the rows of those runs, which only per-case checks read
    (gate/_decide/per_case.py). ``rows`` never hold them: every other number is over the screening's balanced runs.
    """
    keys = _metric_keys(config)
    metrics = {v: compute_metrics([r.values for r in rows if r.variant == v], keys) for v in VARIANTS}
    regressions = find_regressions(rows, golden, [s.name for s in config.scorers]) if paired else []
    unpaired = unpaired_cases(rows) if paired else Unpaired((), ())
    n_cases = _both_versions(rows)
    confidence = look_confidence(config.confidence, *look) if look is not None else config.confidence
    context = _Context(config, golden, paired, look, seed, metrics, confidence, confirm, confirmation)
    # Per-case checks first: the cases they find are regressions, which cases_regressed checks count.
    decided: dict[int, CheckResult] = {}
    for index, check in enumerate(config.checks):
        if check.per_case and paired:
            decided[index], found = _sliced(check, index, rows, cases, regressions, context)
            known = {(r.case_id, r.rule) for r in regressions}
            regressions += [r for r in found if (r.case_id, r.rule) not in known]
    regressions.sort(key=lambda r: (not r.golden, r.case_id))
    checks = []
    defaults = config.default_checks()
    for index, check in enumerate([*config.checks, *defaults]):
        checks.append(
            decided[index] if index in decided else _sliced(check, index, rows, cases, regressions, context)[0]
        )
    for position in range(len(checks) - len(defaults), len(checks)):  # only a decided rise fails a default check
        added = checks[position]
        status = "pass" if added.status == "inconclusive" else added.status
        message = f"default check (guard_errors: true; add an error/rate check to set your own): {added.message}"
        checks[position] = dataclasses.replace(added, status=status, message=message, default=True)
    if not_together is not None:
        checks = [_not_comparable(c, not_together) if _time_sensitive(c) else c for c in checks]
    suspects = frozenset(case for c in checks for case in c.suspects) if confirmation is None else frozenset()
    return Evaluation(
        metrics, checks, regressions, unpaired, n_cases, confidence if look is not None else None, suspects
    )


@dataclass(frozen=True)
class _Context:
    config: GateConfig
    golden: frozenset[str]
    paired: bool
    look: tuple[int, int, int] | None
    seed: int
    metrics: dict[Variant, dict[str, float | None]]  # over every case: what an unsliced check compares
    confidence: float  # what a check over all cases is decided at in this look
    confirm: bool = False  # per-case checks may flag suspects at their last look
    confirmation: Sequence[TraceRow] | None = None  # the rows of the confirmation runs, when they ran


def slices(check: CheckConfig, cases: Sequence[Case]) -> list[tuple[str | None, frozenset[str]]]:
    """The slices of cases a check is decided on: (name, case ids); one unnamed slice of every case by default."""
    if not check.where and not check.per_slice:
        return [(None, frozenset())]
    chosen = [c for c in cases if _matches(c, check.where or {})]
    where = ", ".join(f"{k}={v}" for k, v in (check.where or {}).items())
    if not check.per_slice:
        return [(where, frozenset(c.id for c in chosen))]
    groups: dict[str, set[str]] = {}
    for case in chosen:
        if check.per_slice == "tags":
            for tag in case.tags:
                groups.setdefault(f"tag={tag}", set()).add(case.id)
        else:
            name = check.per_slice.removeprefix("inputs.")
            if name in case.inputs:
                groups.setdefault(f"{check.per_slice}={_text(case.inputs[name])}", set()).add(case.id)
    prefix = f"{where}, " if where else ""
    return [(f"{prefix}{name}", frozenset(ids)) for name, ids in sorted(groups.items())] or [
        (f"{prefix}{check.per_slice}", frozenset())
    ]


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _matches(case: Case, where: dict[str, str]) -> bool:
    for key, value in where.items():
        if key == "tag":
            if value not in case.tags:
                return False
        elif _text(case.inputs.get(key.removeprefix("inputs."))) != value:
            return False
    return True


_RANK = {"fail": 0, "warn": 1, "missing": 2, "inconclusive": 3, "pass": 4}


def _sliced(
    check: CheckConfig,
    index: int,
    rows: Sequence[TraceRow],
    cases: Sequence[Case],
    regressions: Sequence[Regression],
    context: _Context,
) -> tuple[CheckResult, list[Regression]]:
    """A check decided on each of its slices (each at the confidence Bonferroni leaves it); the worst decides."""
    chosen = slices(check, cases)
    # Per-case checks spend their error across their own looks (per_case.py); the others decide every look at the
    # per-look confidence that keeps all looks together at the configured one (sequential.py).
    alpha = (1 - (context.config.confidence if check.per_case else context.confidence)) / len(chosen)
    results: list[tuple[CheckResult, list[Regression]]] = []
    for name, ids in chosen:
        if name is None:
            results.append(_decide(check, index, rows, regressions, 1 - alpha, context, whole=True))
            continue
        mine = [r for r in rows if r.case_id in ids]
        if not mine:
            result = dataclasses.replace(
                evaluate_check(check, None, None),
                status="missing",
                message=f"{check.metric} [{name}]: no case in this slice has traces; check the tags or inputs",
                slice=name,
            )
            results.append((result, []))
            continue
        result, found = _decide(check, index, mine, [r for r in regressions if r.case_id in ids], 1 - alpha, context)
        results.append((dataclasses.replace(result, message=f"[{name}] {result.message}", slice=name), found))
    worst, _ = min(results, key=lambda pair: _RANK[pair[0].status])
    if len(results) > 1:
        counts = Counter(r.status for r, _ in results)
        tally = ", ".join(f"{n} {status}" for status, n in sorted(counts.items(), key=lambda kv: _RANK[kv[0]]))
        worst = dataclasses.replace(
            worst, message=f"{worst.message}; worst of {len(results)} slices ({tally}), each at {1 - alpha:.4g}"
        )
    return worst, [r for _, found in results for r in found]


def _points(
    check: CheckConfig, rows: Sequence[TraceRow], context: _Context, whole: bool
) -> tuple[float | None, float | None]:
    """Both versions' value of the check's metric over these rows."""
    if whole and check.metric in context.metrics["baseline"]:
        return context.metrics["baseline"].get(check.metric), context.metrics["candidate"].get(check.metric)
    b, c = (compute_metrics([r.values for r in rows if r.variant == v], [check.metric]) for v in VARIANTS)
    return b.get(check.metric), c.get(check.metric)


def _decide(
    check: CheckConfig,
    index: int,
    rows: Sequence[TraceRow],
    regressions: Sequence[Regression],
    confidence: float,
    context: _Context,
    whole: bool = False,
) -> tuple[CheckResult, list[Regression]]:
    """One check on these rows (``whole``: every row, whose metrics the context holds)."""
    config, paired = context.config, context.paired
    metric, aggregation = split_metric_key(check.metric)
    if check.per_case and paired:
        baseline, candidate = _points(check, rows, context, whole)
        mine = {r.case_id for r in rows}
        confirmation = None if context.confirmation is None else [r for r in context.confirmation if r.case_id in mine]
        return decide_per_case(
            check,
            rows,
            baseline,
            candidate,
            confidence,
            config.on_inconclusive,
            context.golden,
            context.look,
            context.confirm,
            confirmation,
        )
    if (metric_info(metric).per_case or check.per_case) and not paired:
        result = evaluate_check(check, None, None)
        why = f"{check.metric}: counts cases made worse, which needs the same cases in both versions (pair_by)"
        return dataclasses.replace(result, status="missing", message=why), []
    if metric_info(metric).per_case:
        n_cases = len(
            {r.case_id for r in rows if r.variant == "baseline"} & {r.case_id for r in rows if r.variant == "candidate"}
        )
        count = float(len({r.case_id for r in regressions}))  # cases, not rules: one case may break several
        value = count if aggregation == "count" else (count / n_cases if n_cases else math.nan)
        return evaluate_check(check, None, None if math.isnan(value) else value), []
    sample = paired_sample(rows, metric) if paired else unpaired_sample(rows, metric)
    baseline, candidate = _points(check, rows, context, whole)
    note = None
    if check.trade_off is not None:
        # Two decisions (the condition, then the check under the bounds it selects) share the error: half each.
        confidence = 1 - (1 - confidence) / 2
        applied, note = _trade_off(check.trade_off.when, rows, paired, confidence, context.seed + index)
        chosen = check.trade_off.bounds() if applied else check.bounds()
        check = check.model_copy(update={**dict.fromkeys(BOUNDS), **chosen, "trade_off": None})
    result = decide_check(
        check,
        sample,
        baseline,
        candidate,
        confidence,
        config.on_inconclusive,
        seed=context.seed + index,
        cases=_both_versions(rows) if paired else None,
    )
    if note is not None:
        result = dataclasses.replace(result, message=f"{result.message}; {note}")
    return result, []


def _trade_off(
    when: TradeOffCondition, rows: Sequence[TraceRow], paired: bool, confidence: float, seed: int
) -> tuple[bool, str]:
    """Whether the other metric is shown (one-sided, at ``confidence``) to have changed as much as the trade-off
    asks, and a note saying which bounds applied and why."""
    metric, aggregation = split_metric_key(when.metric)
    sample = paired_sample(rows, metric) if paired else unpaired_sample(rows, metric)
    fell = when.fell_pct_at_least is not None
    amount = when.fell_pct_at_least if fell else when.rose_pct_at_least
    wanted = f"{when.metric} {'fell' if fell else 'rose'} {amount:g}% or more"
    if sample.n_pairs == 0:
        return False, f"trade-off not applied: no data for {when.metric}"
    est = bootstrap(sample, aggregation, confidence=confidence, seed=seed)
    if zero_one_rate(metric, aggregation, sample):  # a rate's change is not shown on its bootstrap alone
        est = rate_change_bounds(sample, "app" if paired else "traffic", confidence, est)
    change = est.delta_pct
    if change is None:
        return False, f"trade-off not applied: {when.metric} has a baseline of 0, so no % change"
    low, high = change
    shown = high <= -(amount or 0) if fell else low >= (amount or 0)
    edge = f"at most {high:+.1f}%" if fell else f"at least {low:+.1f}%"
    if shown:
        return True, f"trade-off applied: {wanted} (its change is {edge} at {confidence:.1%})"
    return False, f"trade-off not applied: not shown that {wanted} (its change is {edge} at {confidence:.1%})"


def _both_versions(rows: Sequence[TraceRow]) -> int:
    """The cases with rows of both versions, whatever their values (a failed call's row has none for most metrics)."""
    baseline = {r.case_id for r in rows if r.variant == "baseline"}
    return len(baseline & {r.case_id for r in rows if r.variant == "candidate"})


def _time_sensitive(check: CheckResult) -> bool:
    return split_metric_key(check.metric)[0] in TIME_SENSITIVE and check.status != "missing"


def _not_comparable(check: CheckResult, why: str) -> CheckResult:
    message = f"{check.metric}: not comparable: {why}; as measured: {check.message}"
    return dataclasses.replace(check, status="inconclusive", comparable=False, message=message)


def undecided(evaluation: Evaluation) -> list[CheckResult]:
    """Checks that more repeats could still decide."""
    return [
        c
        for c in evaluation.checks
        if c.status == "inconclusive" and not c.default and c.comparable and c.needs_cases is None
    ]
