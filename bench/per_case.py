"""Per-case checks (``per_case: true``): false fails and detection of the gate's own decision, by seeded simulation.

Run from the repository root::

    .venv/bin/python bench/per_case.py [--runs 1000] [--seed 0] [--json PATH]

Each simulated gate run draws a dataset of N cases (case level log-normal, sigma 0.5 on the log scale; per-call
noise log-normal with sigma 0.3, i.e. CV ≈ 0.3) and runs the adaptive loop as ``gate run`` does with
``repeats: 1, max_repeats: 10``: after each round (one more run of every case for both versions) the check
``latency_ms/mean max_increase_pct 100 per_case: true`` is decided by ``gate._decide.per_case.decide_per_case``
with the round's look (it decides at 2, 4 and 10 runs a case, the loop's looks, each at its repeated-interval
level), and the loop
stops at the first decided status (pass or fail) or at 10 runs a case. So false fails are counted across all looks.
``--every-round`` decides after every round at the full 5% instead (the rule without error spending). By default the
last look flags suspects and the loop re-runs them ``CAP`` more times each, deciding on those runs alone (the gate's
confirmation runs; "runs per case" then counts them spread over every case); ``--no-confirm`` lets the last look
decide by itself (Benjamini-Hochberg at its level), as before. Rows:

* A/A: identical versions (no case changed);
* at the bound: every case exactly 2× slower — the hardest null for ``max_increase_pct 100``;
* 3 of 40 cases 3× slower (the regression confined to a few cases that a check over all cases misses);
* 1 of 40 cases 4× slower.

Printed: a Markdown table with the share of runs ending fail (95% Wilson interval), pass, inconclusive, the mean
runs per case at the stop, and for the A/B rows the share of fails that named a case that did not change.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import wilson

from gate._config.schema import CheckConfig
from gate._decide.per_case import decide_per_case
from gate._traces.rows import TraceRow

CHECK = CheckConfig(metric="latency_ms/mean", max_increase_pct=100, per_case=True)
SIGMA, CASE_SIGMA, CAP = 0.3, 0.5, 10


def one_run(
    rng: random.Random, cases: int, factors: dict[int, float], every_round: bool, confirm: bool
) -> tuple[str, float, bool]:
    """The adaptive loop on one simulated dataset: final status, runs per case (confirmation runs spread over every
    case), and whether an unchanged case was named."""
    levels = [math.exp(rng.gauss(4, CASE_SIGMA)) for _ in range(cases)]

    def runs_of(case_ids: range | list[int], repeat: int) -> list[TraceRow]:
        out = []
        for i in case_ids:
            for variant in ("baseline", "candidate"):
                factor = factors.get(i, 1.0) if variant == "candidate" else 1.0
                value = levels[i] * factor * math.exp(rng.gauss(0, SIGMA))
                out.append(TraceRow(None, variant, f"c{i}", repeat, {"latency_ms": value}))
        return out

    def wrong(found: list) -> bool:
        return any(int(r.case_id[1:]) not in factors or factors[int(r.case_id[1:])] <= 2 for r in found)

    rows: list[TraceRow] = []
    status = "inconclusive"
    for repeat in range(CAP):
        rows += runs_of(range(cases), repeat)
        look = None if every_round else (repeat + 1, 1, CAP)
        result, found = decide_per_case(CHECK, rows, None, None, 0.95, "warn", frozenset(), look, confirm)
        status = result.status
        if status != "inconclusive":
            return status, repeat + 1, wrong(found)
    if not result.suspects:
        return status, CAP, False
    suspects = [int(c[1:]) for c in result.suspects]
    confirmation = [row for repeat in range(CAP, 2 * CAP) for row in runs_of(suspects, repeat)]
    result, found = decide_per_case(CHECK, rows, None, None, 0.95, "warn", frozenset(), look, confirm, confirmation)
    return result.status, CAP + CAP * len(suspects) / cases, wrong(found)


ROWS = [
    ("A/A, 40 cases", 40, {}),
    ("A/A, 10 cases", 10, {}),
    ("every case exactly 2× slower (at the bound), 40 cases", 40, "all2"),
    ("every case exactly 2× slower (at the bound), 10 cases", 10, "all2"),
    ("3 of 40 cases 3× slower", 40, {0: 3.0, 1: 3.0, 2: 3.0}),
    ("1 of 40 cases 4× slower", 40, {0: 4.0}),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--every-round", action="store_true", help="decide every round at 5%% (no spending)")
    parser.add_argument(
        "--no-confirm", action="store_true", help="the last look decides by itself (no confirmation runs)"
    )
    args = parser.parse_args()
    out = []
    print("| scenario | fail (95% CI) | pass | inconclusive | runs per case | fails naming an unchanged case |")
    print("|---|---|---:|---:|---:|---:|")
    for index, (name, cases, spec) in enumerate(ROWS):
        factors = dict.fromkeys(range(cases), 2.0) if spec == "all2" else dict(spec)
        rng = random.Random(args.seed * 1000 + index)
        started = time.monotonic()
        outcomes = [one_run(rng, cases, factors, args.every_round, not args.no_confirm) for _ in range(args.runs)]
        fails = sum(s == "fail" for s, _, _ in outcomes)
        low, high = wilson(fails, args.runs)
        row = {
            "scenario": name,
            "runs": args.runs,
            "fail": fails / args.runs,
            "fail_ci": [low, high],
            "pass": sum(s == "pass" for s, _, _ in outcomes) / args.runs,
            "inconclusive": sum(s == "inconclusive" for s, _, _ in outcomes) / args.runs,
            "runs_per_case": sum(r for _, r, _ in outcomes) / args.runs,
            "wrongly_named": sum(w for s, _, w in outcomes if s == "fail") / max(fails, 1),
        }
        out.append(row)
        print(
            f"| {name} | {row['fail']:.1%} [{low:.1%}, {high:.1%}] | {row['pass']:.1%} | {row['inconclusive']:.1%} "
            f"| {row['runs_per_case']:.1f} | {row['wrongly_named']:.1%} |",
            flush=True,
        )
        print(f"  ({name}: {time.monotonic() - started:.0f} s)", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "seed": args.seed, "rows": out}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
