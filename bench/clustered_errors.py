"""Clustered errors: how often does ``error/rate at_most`` false-fail when errors come from a few bad cases?

Run from the repository root::

    .venv/bin/python bench/clustered_errors.py [--runs 1000] [--seed 0] [--json out.json] [--full-bootstrap]

It prints a Markdown table on stdout and progress on stderr. It is a benchmark, not a test: nothing is
asserted, and the table says for each row whether its target holds.

What is measured
----------------
Each simulated gate run draws its cases afresh from a population (the dataset is a sample of the app's
inputs), gives every case a per-case error probability, and draws ``repeats`` calls of every case. The
candidate's outcomes are decided by the gate's own ``gate._decide.checks.decide_check`` with the check
``error/rate at_most 0.1`` at confidence 0.95 (the "new" rule: Korn-Graubard bounds with cases as the unit,
``gate._decide.stats.clustered_rate_bounds``), and, on the same outcomes, by the rule the gate used before
(the "old" rule: exact Clopper-Pearson over calls, ``gate._decide.stats.clopper_pearson`` on the pooled
outcomes, ``fail`` when its lower bound is above the limit: the former block of ``decide_check``).

Error models (the population error rate is 0.09 in every A/A row, just under the limit 0.1):

* ``ICC 0.3``, ``ICC 0.6``: the per-case probability is Beta-distributed with mean 0.09 and intra-case
  correlation ρ (Beta(0.09·s, 0.91·s) with s = 1/ρ - 1); calls of a case are independent given it.
* ``extreme``: 9% of cases always fail and the rest never (each drawn case is a failing one with probability 0.09).
* ``independent``: every call fails with probability 0.09 (A/A), or 0.2 (A/B: detection of a broken limit).
* A/B rows at rate 0.12 (40 cases × 10 repeats, clustered): the limit is broken, so a ``fail`` is right and a
  ``pass`` is a false pass.

``decide_check`` also runs a paired case bootstrap whose candidate interval the 0/1 block replaces and whose
delta interval an ``at_most`` bound never reads. It costs ~0.1 s a decision at 1,000 calls, so by default it is
replaced by a stub here; ``--full-bootstrap`` keeps the real one (same statuses, ~3× the time).

Columns: ``fail`` is the share of runs whose status is ``fail`` with a 95% Wilson interval over the runs
(false fails in A/A, detections in A/B); ``pass`` the share of runs that pass (the rest are inconclusive);
``deff`` the median design effect the new rule reported over runs that saw both outcomes. The last table gives
the calls an all-zero sample needs before ``error/rate at_most 0.02`` can pass (no error seen: nothing is known
about clustering, so the effective sample is every call, as before).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # import the working tree's gate

from _common import machine, wilson, write_json

from gate._config.schema import CheckConfig
from gate._decide import checks
from gate._decide.stats import Estimate, PairedSample, clopper_pearson

CONFIDENCE = 0.95
POPULATION_RATE = 0.09
LIMIT = 0.1
AA_TARGET = 0.05  # one-sided 95%: at most 5% false fails
CASES = (10, 40, 100)
REPEATS = (1, 3, 10)


@dataclass(frozen=True)
class Row:
    model: str  # "ICC 0.3", "ICC 0.6", "extreme", "independent"
    cases: int
    repeats: int
    rate: float  # the population error rate
    kind: str  # "A/A" or "A/B"


ROWS = (
    *(
        Row(model, g, r, POPULATION_RATE, "A/A")
        for model in ("ICC 0.3", "ICC 0.6", "extreme")
        for g in CASES
        for r in REPEATS
    ),
    Row("independent", 40, 3, POPULATION_RATE, "A/A"),
    Row("independent", 40, 3, 0.2, "A/B"),
    *(Row(model, 40, 10, 0.12, "A/B") for model in ("ICC 0.3", "ICC 0.6", "extreme")),  # a pass here is wrong
)


def case_probabilities(model: str, rate: float, cases: int, rng: np.random.Generator) -> np.ndarray:
    """Each drawn case's error probability."""
    if model == "independent":
        return np.full(cases, rate)
    if model == "extreme":
        return (rng.random(cases) < rate).astype(np.float64)
    icc = float(model.split()[1])
    s = 1 / icc - 1
    drawn: np.ndarray = rng.beta(rate * s, (1 - rate) * s, size=cases)
    return drawn


def outcomes(row: Row, rng: np.random.Generator) -> np.ndarray:
    """(cases × repeats) 0/1 outcomes of one version in one simulated run."""
    p = case_probabilities(row.model, row.rate, row.cases, rng)
    drawn: np.ndarray = (rng.random((row.cases, row.repeats)) < p[:, None]).astype(np.float64)
    return drawn


def _no_bootstrap(sample: PairedSample, aggregation: str, confidence: float = 0.95, **_: Any) -> Estimate:
    """The point estimate as a zero-width interval: the 0/1 block replaces the candidate interval anyway."""
    values = [v for vs in sample.candidate for v in vs]
    point = sum(values) / len(values)
    return Estimate(candidate=(point, point), delta=(0.0, 0.0), delta_pct=None)


@functools.cache
def old_bounds(k: int, n: int) -> tuple[float, float]:
    return clopper_pearson(k, n, CONFIDENCE)


def old_status(candidate: np.ndarray, limit: float) -> str:
    """The former rule: Clopper-Pearson over calls, each call one independent trial."""
    low, high = old_bounds(int(candidate.sum()), candidate.size)
    if candidate.sum() == 0 and limit == 0:
        high = 0.0
    return "fail" if low > limit else "pass" if high <= limit else "inconclusive"


def decide(candidate: np.ndarray, baseline: np.ndarray, limit: float) -> checks.CheckResult:
    sample = PairedSample(baseline.tolist(), candidate.tolist())
    return checks.decide_check(
        CheckConfig(metric="error/rate", at_most=limit),
        sample,
        float(baseline.mean()),
        float(candidate.mean()),
        CONFIDENCE,
        "warn",
    )


def design_effect(message: str) -> float | None:
    marker = "design effect "
    if marker not in message:
        return None
    return float(message.split(marker, 1)[1].split(",")[0].split(")")[0])


def run_row(row: Row, index: int, runs: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    old: dict[str, int] = {"fail": 0, "inconclusive": 0, "pass": 0}
    new: dict[str, int] = {"fail": 0, "inconclusive": 0, "pass": 0}
    effects: list[float] = []
    for _ in range(runs):
        candidate = outcomes(row, rng)
        baseline = outcomes(row, rng)  # A/A: the same version again (unused by an at_most bound)
        old[old_status(candidate, LIMIT)] += 1
        result = decide(candidate, baseline, LIMIT)
        new["fail" if result.status in ("fail", "warn") else result.status] += 1
        deff = design_effect(result.message)
        if deff is not None:
            effects.append(deff)
    return {
        "model": row.model,
        "cases": row.cases,
        "repeats": row.repeats,
        "rate": row.rate,
        "kind": row.kind,
        "runs": runs,
        "old": old,
        "new": new,
        "median_design_effect": float(np.median(effects)) if effects else None,
    }


def calls_to_pass_with_no_errors(limit: float, repeats: int) -> int:
    """The fewest calls (whole cases of ``repeats``) with no error at which ``at_most limit`` passes."""
    for cases in range(1, 100_000):
        zeros = np.zeros((cases, repeats))
        if decide(zeros, zeros, limit).status == "pass":
            return cases * repeats
    raise RuntimeError("never passes")


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def rate_cell(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{pct(k / n)} [{pct(lo)}, {pct(hi)}]"


def table(results: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| errors | rate | cases × repeats | runs | old: fail [95% CI] | new: fail [95% CI] | old: pass | new: pass "
        "| deff | verdict (new) |",
        "|---|---:|---|---:|---|---|---:|---:|---:|---|",
    ]
    for r in results:
        n = r["runs"]
        new_fail = r["new"]["fail"]
        if r["kind"] == "A/A":
            lo, _ = wilson(new_fail, n)
            met = new_fail / n <= AA_TARGET
            verdict = "met (fail ≤ 5%)" if met else "**missed**" + (" (CI contains 5%)" if lo <= AA_TARGET else "")
        else:
            verdict = (
                f"rate above the limit: fail (right) new {pct(new_fail / n)} vs old {pct(r['old']['fail'] / n)}, "
                f"pass (wrong) new {pct(r['new']['pass'] / n)} vs old {pct(r['old']['pass'] / n)}"
            )
        deff = "–" if r["median_design_effect"] is None else f"{r['median_design_effect']:.1f}"
        lines.append(
            f"| {r['model']} | {r['rate']:g} | {r['cases']} × {r['repeats']} | {n} | {rate_cell(r['old']['fail'], n)} "
            f"| {rate_cell(new_fail, n)} | {pct(r['old']['pass'] / n)} | {pct(r['new']['pass'] / n)} | {deff} "
            f"| {verdict} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=1000, help="simulated gate runs per row (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated data (default 0)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON to this file")
    parser.add_argument(
        "--full-bootstrap", action="store_true", help="keep decide_check's bootstrap (its result is unused here)"
    )
    args = parser.parse_args(argv)
    if not args.full_bootstrap:
        checks.bootstrap = _no_bootstrap  # type: ignore[attr-defined,assignment]

    started = time.monotonic()
    results = []
    for index, row in enumerate(ROWS):
        results.append(run_row(row, index, args.runs, args.seed))
        print(
            f"  row {index + 1}/{len(ROWS)} ({row.model}, {row.cases} × {row.repeats}) "
            f"{time.monotonic() - started:.0f} s",
            file=sys.stderr,
        )
    needed = {repeats: calls_to_pass_with_no_errors(0.02, repeats) for repeats in REPEATS}
    cpu = time.process_time()

    print(
        f"Seed {args.seed}; {args.runs} runs per row; `error/rate at_most {LIMIT:g}`, confidence {CONFIDENCE:g}; "
        f"cases drawn afresh each run. {machine()}."
    )
    print()
    print(table(results))
    print()
    print("| `error/rate at_most 0.02`, no error seen | calls needed to pass |")
    print("|---|---:|")
    for repeats, calls in needed.items():
        print(f"| {repeats} repeat{'s' if repeats > 1 else ''} per case | {calls} ({calls // repeats} cases) |")
    print()
    bootstrap = "real bootstrap" if args.full_bootstrap else "bootstrap stubbed (its interval is not used)"
    print(f"Wall time {time.monotonic() - started:.0f} s, CPU {cpu:.0f} s, one process; {bootstrap}.")
    if args.json is not None:
        write_json(
            args.json,
            {
                "seed": args.seed,
                "runs": args.runs,
                "limit": LIMIT,
                "confidence": CONFIDENCE,
                "full_bootstrap": args.full_bootstrap,
                "machine": machine(),
                "rows": results,
                "calls_to_pass_at_most_0.02_with_no_errors": {str(k): v for k, v in needed.items()},
            },
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
