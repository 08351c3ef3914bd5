"""Before any call: which checks the dataset and the repeat cap are too small to decide (gate validate, --dry-run).

Four limits, each from the method that decides the check (docs/design/statistics.md):
- a case-bootstrap interval needs ``MIN_CASES`` cases (checks.py): more repeats cannot stand in for cases;
- a check ``about: dataset`` resamples each case's runs instead and needs ``MIN_RUNS`` of every case;
- an ``at_most: p`` bound on a 0/1 rate passes, with no failure seen, only from n calls with (1 - p)^n ≤ α
  (Clopper-Pearson): 149 calls for ``at_most: 0.02`` at 95%; ``at_least: p`` alike with p^n ≤ α;
- an ``at_most`` bound on a percentile q passes only from n calls with q^n ≤ α (the order-statistic bound needs
  the sample's largest value to lie above the quantile): 59 calls for p95, 299 for p99.
"""

from __future__ import annotations

import math

from gate._config.schema import CheckConfig, GateConfig
from gate._decide.checks import MIN_CASES, MIN_RUNS
from gate._metrics import metric_info, split_metric_key

__all__ = ["calls_needed", "too_small"]


def calls_needed(share: float, alpha: float) -> int:
    """The fewest calls n with share^n ≤ alpha (share in (0, 1))."""
    return math.ceil(math.log(alpha) / math.log(share) - 1e-9)


def _bootstrapped(check: CheckConfig) -> bool:
    metric, aggregation = split_metric_key(check.metric)
    info = metric_info(metric)
    if info.per_case or check.per_case or info.binary:
        return False
    absolute = set(check.bounds()) <= {"at_most", "at_least"}
    quantile = aggregation.startswith("p") or aggregation in ("median", "min", "max")
    return not (absolute and quantile)


def too_small(config: GateConfig, cases: int) -> list[str]:
    """One line per check that this many cases, at most ``max_repeats`` runs each, cannot decide."""
    alpha = 1 - config.confidence
    calls = cases * config.max_repeats()
    lines = []
    for check in config.checks:
        metric, aggregation = split_metric_key(check.metric)
        info = metric_info(metric)
        if _bootstrapped(check) and check.about == "dataset":
            if config.max_repeats() < MIN_RUNS:
                lines.append(
                    f"{check.metric}: max_repeats {config.max_repeats()} cannot decide it (about: dataset resamples "
                    f"each case's runs and needs at least {MIN_RUNS} of every case); raise run.max_repeats"
                )
            continue
        if _bootstrapped(check) and not check.where and not check.per_slice and cases < MIN_CASES:
            lines.append(
                f"{check.metric}: {cases} case{'s' if cases != 1 else ''} cannot decide it (its interval resamples "
                f"cases and needs at least {MIN_CASES}); add cases"
            )
            continue
        needed = None
        if info.binary and aggregation in ("rate", "mean"):
            if (limit := check.at_most) is not None and 0 < limit < 1:
                needed = calls_needed(1 - limit, alpha)
            elif (limit := check.at_least) is not None and 0 < limit < 1:
                needed = calls_needed(limit, alpha)
        elif aggregation.startswith("p") and check.at_most is not None:
            needed = calls_needed(float(aggregation[1:]) / 100, alpha)
        if needed is not None and calls < needed:
            lines.append(
                f"{check.metric}: can pass only from {needed} calls a version at {config.confidence:.0%}; "
                f"{cases} cases × max_repeats {config.max_repeats()} make at most {calls}; add cases or raise "
                "run.max_repeats"
            )
    return lines
