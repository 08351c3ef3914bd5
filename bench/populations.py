"""What an interval is about: the app's inputs (cases as the unit) or this dataset's cases (their runs the sample).

Run from the repository root::

    .venv/bin/python bench/populations.py [--runs 1000] [--seed 0] [--rows percentiles,changes,detection]

It prints Markdown tables on stdout and progress on stderr. It is a benchmark, not a test: nothing is asserted.

What is measured
----------------
Each simulated dataset draws its cases afresh from the app's inputs: case latency levels log-normal (median 800 ms,
σ 0.5 or 0.2 across cases), each call the case's level × LogNormal(0, 0.29) (CV 0.3), ``runs`` calls a case.

* Percentiles (``latency_ms/p95`` against ``at_most`` / ``at_least``): the one-sided 95% bounds the gate uses,
  measured against two truths. The **app's** p95 (the population of inputs; log-levels plus log-noise are one
  normal, so it is exact) for the bounds about the app (``gate._decide.stats.clustered_quantile_bounds``: Woodruff's
  interval at the case-clustered effective sample, each end widened to a beta-binomial count's) and for the
  calls-level bounds the gate used before (``quantile_bounds``, every call an independent draw). The **dataset's**
  p95 (the mixture of these cases' call distributions, found by bisection) for the calls-level bounds, which
  ``about: dataset`` uses. A miss is an upper
  bound below the truth (an ``at_most`` limit there would pass while the true p95 is above it) or a lower bound
  above it (an ``at_most`` limit there would fail while the true p95 is within it); each is allowed 5%.
* Changes (``latency_ms/p95 max_increase_pct 10``, the candidate ×1.1 = exactly at the bound, or ×1.3): the
  paired bootstrap's one-sided 95% lower bound of the % change, resampling cases (about the app) or runs within
  each case (``about: dataset``). At the bound a lower end above +10% is a false fail (≤ 5%); at +30% it is a
  detection. One decision at ``runs`` runs a case (no looks).
* Detection (``latency_ms/p95 at_most``, the app's p95 20% or 50% over the limit): how often the lower bound about
  the app is above the limit (the check fails), for the rule now and for Woodruff's interval alone, which it widens.

Columns: the share of datasets missing each way, with a 95% Wilson interval; ``inf`` the share whose upper bound is
infinite (the effective sample cannot bound the p95: an ``at_most`` check is then inconclusive); ``deff`` the median
design effect of the indicator "at or below the sample p95".
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # import the working tree's gate

from _common import wilson

from gate._decide.stats import (
    PairedSample,
    bootstrap,
    clustered_quantile_bounds,
    order_statistic_bounds,
    quantile_bounds,
)

MEDIAN_MS = 800.0
CALL_SIGMA = 0.29
Z95 = 1.6448536269514722
CHANGE_ROWS = [(40, 10, 1.1), (40, 10, 1.3), (10, 3, 1.1), (10, 5, 1.1), (40, 5, 1.1)]  # cases, runs, ×


def draw(rng: np.random.Generator, cases: int, runs: int, case_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    levels = MEDIAN_MS * np.exp(case_sigma * rng.standard_normal(cases))
    return levels, levels[:, None] * np.exp(CALL_SIGMA * rng.standard_normal((cases, runs)))


def dataset_p95(levels: np.ndarray) -> float:
    """The 95th percentile of the mixture of the cases' log-normal call distributions (bisection on log x)."""
    logs = np.log(levels)
    lo, hi = logs.min() - 10 * CALL_SIGMA, logs.max() + 10 * CALL_SIGMA
    for _ in range(80):
        mid = (lo + hi) / 2
        below = np.mean([0.5 * (1 + math.erf((mid - m) / (CALL_SIGMA * math.sqrt(2)))) for m in logs])
        lo, hi = (mid, hi) if below < 0.95 else (lo, mid)
    return math.exp((lo + hi) / 2)


def share(k: int, n: int) -> str:
    low, high = wilson(k, n)
    return f"{k / n:.1%} [{low:.1%}, {high:.1%}]"


def percentiles(runs: int, seed: int) -> None:
    print("| cases × runs | case σ | bounds | about | upper below the truth | lower above the truth | inf | deff |")
    print("|---|---:|---|---|---|---|---:|---:|")
    for cases, per_case, sigma in [
        (10, 10, 0.5),
        (40, 3, 0.5),
        (40, 10, 0.5),
        (100, 3, 0.5),
        (100, 10, 0.5),
        (40, 10, 0.2),
        (100, 3, 0.2),
    ]:
        rng = np.random.default_rng([seed, cases, per_case, int(sigma * 10)])
        app_truth = MEDIAN_MS * math.exp(Z95 * math.sqrt(sigma**2 + CALL_SIGMA**2))
        misses = {"app": [0, 0, 0], "old": [0, 0, 0], "dataset": [0, 0, 0]}
        deffs = []
        started = time.monotonic()
        for _ in range(runs):
            levels, calls = draw(rng, cases, per_case, sigma)
            groups = calls.tolist()
            new = clustered_quantile_bounds(groups, 0.95, 0.95)
            old = quantile_bounds(calls.ravel().tolist(), 0.95, 0.95)
            deffs.append(new.design_effect)
            for key, (low, high), truth in (
                ("app", (new.low, new.high), app_truth),
                ("old", old, app_truth),
                ("dataset", old, dataset_p95(levels)),
            ):
                misses[key][0] += high < truth
                misses[key][1] += low > truth
                misses[key][2] += math.isinf(high)
        print(f"  {cases}x{per_case} σ{sigma}: {time.monotonic() - started:.0f} s", file=sys.stderr)
        for key, label, about in (
            ("old", "calls-level (before)", "the app"),
            ("app", "cases as the unit (now, default)", "the app"),
            ("dataset", "calls-level (`about: dataset`)", "this dataset"),
        ):
            up, down, inf = misses[key]
            deff = f"{np.median(deffs):.1f}" if key == "app" else "–"
            print(
                f"| {cases} × {per_case} | {sigma} | {label} | {about} | {share(up, runs)} | {share(down, runs)} "
                f"| {inf / runs:.1%} | {deff} |"
            )


def changes(runs: int, seed: int) -> None:
    print("| cases × runs | candidate | about | lower end above +10% | median interval width |")
    print("|---|---|---|---|---:|")
    for cases, per_case, factor in CHANGE_ROWS:
        rng = np.random.default_rng([seed, cases, per_case, int(factor * 100)])
        fails = {"case": 0, "call": 0}
        widths: dict[str, list[float]] = {"case": [], "call": []}
        started = time.monotonic()
        for _ in range(runs):
            levels = MEDIAN_MS * np.exp(0.5 * rng.standard_normal(cases))
            noise = np.exp(CALL_SIGMA * rng.standard_normal((2, cases, per_case)))
            sample = PairedSample((levels[:, None] * noise[0]).tolist(), (levels[:, None] * noise[1] * factor).tolist())
            for unit in ("case", "call"):
                pct = bootstrap(sample, "p95", 0.95, unit=unit).delta_pct  # type: ignore[arg-type]
                assert pct is not None
                fails[unit] += pct[0] > 10
                widths[unit].append(pct[1] - pct[0])
        print(f"  changes {cases}x{per_case} ×{factor}: {time.monotonic() - started:.0f} s", file=sys.stderr)
        for unit, about in (("case", "the app (cases resampled)"), ("call", "this dataset (runs resampled)")):
            print(
                f"| {cases} × {per_case} | ×{factor} | {about} | {share(fails[unit], runs)} "
                f"| {np.median(widths[unit]):.1f} points |"
            )


def detection(runs: int, seed: int) -> None:
    print("| cases × runs | app's p95 over the limit | fails: the rule now | fails: Woodruff alone |")
    print("|---|---|---|---|")
    for cases, per_case, over in [(40, 10, 1.2), (40, 10, 1.5), (100, 10, 1.2), (40, 3, 1.5)]:
        rng = np.random.default_rng([seed, cases, per_case, int(over * 10)])
        limit = MEDIAN_MS * math.exp(Z95 * math.sqrt(0.5**2 + CALL_SIGMA**2)) / over
        now = alone = 0
        for _ in range(runs):
            _, calls = draw(rng, cases, per_case, 0.5)
            got = clustered_quantile_bounds(calls.tolist(), 0.95, 0.95)
            woodruff_low = (
                order_statistic_bounds(np.sort(calls.ravel()), 0.95, 0.95, got.effective_calls)[0]
                if got.design_effect > 1
                else got.low
            )
            now += got.low > limit
            alone += woodruff_low > limit
        print(f"| {cases} × {per_case} | {over - 1:.0%} | {share(now, runs)} | {share(alone, runs)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000, help="simulated datasets per row (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", default="percentiles,changes", help="percentiles, changes and/or detection")
    args = parser.parse_args()
    rows = args.rows.split(",")
    print(f"`bench/populations.py --runs {args.runs} --seed {args.seed} --rows {args.rows}`\n")
    if "percentiles" in rows:
        percentiles(args.runs, args.seed)
        print()
    if "changes" in rows:
        changes(args.runs, args.seed)
        print()
    if "detection" in rows:
        detection(args.runs, args.seed)


if __name__ == "__main__":
    main()
