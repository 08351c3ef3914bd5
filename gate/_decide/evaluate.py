"""From trace rows to decided checks: point metrics, paired statistics and per-case regressions (pure)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from gate._config.schema import VARIANTS, GateConfig, Variant
from gate._decide.checks import CheckResult, decide_check, evaluate_check
from gate._decide.per_case import decide_per_case
from gate._decide.regressions import (
    Regression,
    Unpaired,
    find_regressions,
    paired_sample,
    unpaired_cases,
    unpaired_sample,
)
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
) -> Evaluation:
    """Compute metrics for both versions and decide every check.

    ``paired=False`` is for traces of two versions that share no cases (``gate compare`` over production
    traffic): each version's traces are resampled on their own, and per-case rules do not apply.
    ``not_together`` says why the versions' traces were not recorded together (a stored baseline): checks of
    ``TIME_SENSITIVE`` metrics are then inconclusive and not comparable, whatever their numbers say, since a change
    in the provider's speed between the two recordings would read as the candidate's. ``look``: (runs per case so
    far, runs in the first round, the cap) in an adaptive run, for checks that spend their error across looks.
    """
    keys = _metric_keys(config)
    metrics = {v: compute_metrics([r.values for r in rows if r.variant == v], keys) for v in VARIANTS}
    regressions = find_regressions(rows, golden, [s.name for s in config.scorers]) if paired else []
    unpaired = unpaired_cases(rows) if paired else Unpaired((), ())
    n_cases = len(
        {r.case_id for r in rows if r.variant == "baseline"} & {r.case_id for r in rows if r.variant == "candidate"}
    )
    # Per-case checks first: the cases they find are regressions, which cases_regressed checks count.
    per_case: dict[int, CheckResult] = {}
    for index, check in enumerate(config.checks):
        if check.per_case and paired:
            per_case[index], found = decide_per_case(
                check,
                rows,
                metrics["baseline"].get(check.metric),
                metrics["candidate"].get(check.metric),
                config.confidence,
                config.on_inconclusive,
                golden,
                look,
            )
            known = {(r.case_id, r.rule) for r in regressions}
            regressions += [r for r in found if (r.case_id, r.rule) not in known]
    regressions.sort(key=lambda r: (not r.golden, r.case_id))
    checks = []
    defaults = config.default_checks()
    for index, check in enumerate([*config.checks, *defaults]):
        metric, aggregation = split_metric_key(check.metric)
        if index in per_case:
            checks.append(per_case[index])
            continue
        if (metric_info(metric).per_case or check.per_case) and not paired:
            result = evaluate_check(check, None, None)
            why = f"{check.metric}: counts cases made worse, which needs the same cases in both versions (pair_by)"
            checks.append(dataclasses.replace(result, status="missing", message=why))
            continue
        if metric_info(metric).per_case:
            count = float(len({r.case_id for r in regressions}))  # cases, not rules: one case may break several
            value = count if aggregation == "count" else (count / n_cases if n_cases else math.nan)
            checks.append(evaluate_check(check, None, None if math.isnan(value) else value))
            continue
        sample = paired_sample(rows, metric) if paired else unpaired_sample(rows, metric)
        checks.append(
            decide_check(
                check,
                sample,
                metrics["baseline"].get(check.metric),
                metrics["candidate"].get(check.metric),
                config.confidence,
                config.on_inconclusive,
                seed=seed + index,
            )
        )
    for position in range(len(checks) - len(defaults), len(checks)):  # only a decided rise fails a default check
        added = checks[position]
        status = "pass" if added.status == "inconclusive" else added.status
        message = f"default check (guard_errors: true; add an error/rate check to set your own): {added.message}"
        checks[position] = dataclasses.replace(added, status=status, message=message, default=True)
    if not_together is not None:
        checks = [_not_comparable(c, not_together) if _time_sensitive(c) else c for c in checks]
    return Evaluation(metrics, checks, regressions, unpaired, n_cases)


def _time_sensitive(check: CheckResult) -> bool:
    return split_metric_key(check.metric)[0] in TIME_SENSITIVE and check.status != "missing"


def _not_comparable(check: CheckResult, why: str) -> CheckResult:
    message = f"{check.metric}: not comparable: {why}; as measured: {check.message}"
    return dataclasses.replace(check, status="inconclusive", comparable=False, message=message)


def undecided(evaluation: Evaluation) -> list[CheckResult]:
    """Checks that more repeats could still decide."""
    return [c for c in evaluation.checks if c.status == "inconclusive" and not c.default and c.comparable]
