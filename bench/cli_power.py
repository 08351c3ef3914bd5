"""The gate's decision rule measured end to end: ``gate run`` as a subprocess, N times per scenario.

Run from the repository root::

    .venv/bin/python bench/cli_power.py [--runs 30] [--scenarios 1,2,3] [--seed 0] [--base-ms 20]
        [--isolation inline|process] [--json PATH]

bench/power.py and bench/per_case.py measure the decision code in-process on synthetic rows. This script measures
the whole path instead (issue 17: "≥ 30 end-to-end CLI runs for the key rows"): every run writes a fresh project
into a temp folder (thresholds.yaml, an app module, its own SQLite store), runs ``gate run --no-progress`` on it as a
subprocess, and reads the JSON verdict from stdout. The app's calls really happen (two ``@mlflow.trace`` functions,
run inline in the gate's process), their traces are written to and read back from MLflow, and the latency the gate
decides on is the root span's duration. No LLM, no network: the app only sleeps.

Project: 40 cases ``{id: cN, inputs: {q: N}}``; ``run: {repeats: 1, concurrency: 8, isolation: inline, warmup:
false, timeout_s: 30}`` and the gate's default cap on runs a case (20 for the p95 of scenarios 1 and 2, 10 for the
per-case mean of 3; ``--max-repeats N`` sets one, 10 for the rows measured before stop 29); one check per scenario
(plus the gate's default ``error/rate`` guard).
``--isolation process`` runs each version in a worker process of its own (the gate's default): the versions' sleeps
then share no interpreter with each other or with the gate's own work; inline (this script's default, for the rows
measured before it had the option) is faster per run.

Noise model (the simulations' own, scaled to milliseconds so a run takes seconds): each gate run gets a seed in the
environment and so a fresh dataset. Case level base_i = 20 ms (``--base-ms``) × exp(0.5 z_i), z_i standard normal,
fixed per case by that seed; per call the app sleeps base_i × exp(0.3 z), z fresh per call (CV ≈ 0.3), times the
candidate's factor. What the sleep does not control is measured too: MLflow stores trace durations in whole
milliseconds, and the span, timer slack and a busy machine add a few milliseconds to every call of both versions,
which at 20 ms widens the noise and shrinks the candidate's ratios somewhat.

Scenarios (the key rows of the issue; targets as there):

1. A/A, ``latency_ms/p95 max_increase_pct 10``: share of runs whose check ends ``fail`` ≤ 5%.
2. candidate × 1.3 on every call (+30% latency), the same check: share ending ``fail`` (exit 1) ≥ 90%.
3. cases 0, 1, 2 × 3.0 (3 of 40 cases 3× slower), ``latency_ms/mean max_increase_pct 100 per_case: true``:
   share ending ``fail`` ≥ 90%, and whether the cases the verdict names (``regressions``) are all among c0-c2.

Printed: a Markdown table on stdout (share fail with a 95% Wilson interval, pass, inconclusive/warn, median calls
from ``spend.calls``, exit-code counts, wall time per run), progress on stderr; ``--json`` also writes every run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from _common import wilson

CASES = 40
RUN = {"repeats": 1, "concurrency": 8, "isolation": "inline", "warmup": False, "timeout_s": 30}
P95 = {"metric": "latency_ms/p95", "max_increase_pct": 10}
PER_CASE = {"metric": "latency_ms/mean", "max_increase_pct": 100, "per_case": True}
SLOW_CASES = {0: 3.0, 1: 3.0, 2: 3.0}

# number: (name, check, candidate factor on every call, candidate factor per case, kind, target)
SCENARIOS: dict[int, tuple[str, dict[str, Any], float, dict[int, float], str, float]] = {
    1: ("A/A", P95, 1.0, {}, "A/A", 0.05),
    2: ("+30% latency", P95, 1.3, {}, "A/B", 0.90),
    3: ("3 of 40 cases 3× slower", PER_CASE, 1.0, SLOW_CASES, "A/B", 0.90),
}

APP = '''"""The bench's app: sleeps a log-normal latency; the candidate by a factor (bench/cli_power.py)."""

import json
import math
import os
import random
import time

import mlflow

SEED = int(os.environ["CLI_POWER_SEED"])
BASE_MS = float(os.environ["CLI_POWER_BASE_MS"])
FACTOR = float(os.environ["CLI_POWER_FACTOR"])
CASE_FACTORS = {int(k): v for k, v in json.loads(os.environ["CLI_POWER_CASE_FACTORS"]).items()}
# One noise stream per version: with worker processes each version imports this module in its own interpreter, and
# one shared seed would give the k-th call of both versions the same draw (noise perfectly paired, as no real app's).
# normalvariate keeps no state between calls: safe across the gate's threads.
_noise = {"baseline": random.Random(2 * SEED), "candidate": random.Random(2 * SEED + 1)}


def _sleep(q, factor, version):
    level = BASE_MS * math.exp(0.5 * random.Random(SEED * 1000 + q).gauss(0, 1))  # the case's, fixed by the seed
    time.sleep(level * factor * math.exp(0.3 * _noise[version].normalvariate(0, 1)) / 1000)
    return f"answer to {q}"


@mlflow.trace(span_type="AGENT")
def baseline(q):
    return _sleep(q, 1.0, "baseline")


@mlflow.trace(span_type="AGENT")
def candidate(q):
    return _sleep(q, FACTOR * CASE_FACTORS.get(q, 1.0), "candidate")
'''


def write_project(
    folder: Path, check: dict[str, Any], isolation: str = "inline", max_repeats: int | None = None
) -> None:
    config = {
        "version": 1,
        "experiment": "cli-power",
        "cases": [{"id": f"c{i}", "inputs": {"q": i}} for i in range(CASES)],
        "baseline": {"target": "power_app:baseline", "label": "baseline"},
        "candidate": {"target": "power_app:candidate", "label": "candidate"},
        "run": {**RUN, "isolation": isolation, **({"max_repeats": max_repeats} if max_repeats else {})},
        "checks": [check],
    }
    (folder / "thresholds.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    (folder / "power_app.py").write_text(APP, encoding="utf-8")


def gate_run(
    number: int, seed: int, base_ms: float, isolation: str = "inline", max_repeats: int | None = None
) -> dict[str, Any]:
    """One ``gate run`` on a fresh project; what its verdict says about the scenario's check."""
    _, check, factor, case_factors, _, _ = SCENARIOS[number]
    with tempfile.TemporaryDirectory(prefix="cli-power-") as tmp:
        folder = Path(tmp)
        write_project(folder, check, isolation, max_repeats)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "OPENAI_"))}
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'store' / 'mlflow.db'}"
        env["CLI_POWER_SEED"] = str(seed)
        env["CLI_POWER_BASE_MS"] = str(base_ms)
        env["CLI_POWER_FACTOR"] = str(factor)
        env["CLI_POWER_CASE_FACTORS"] = json.dumps(case_factors)
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "gate", "run", "--no-progress"],
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            code: int | str = proc.returncode
            stdout, stderr = proc.stdout, proc.stderr
        except subprocess.TimeoutExpired:
            code, stdout, stderr = "timeout", "", "timed out after 900 s"
        wall = time.monotonic() - started
    record: dict[str, Any] = {"scenario": number, "seed": seed, "exit_code": code, "wall_s": round(wall, 1)}
    try:
        verdict = json.loads(stdout)
    except json.JSONDecodeError:
        verdict = {}
    mine = [c for c in verdict.get("checks", []) if c.get("metric") == check["metric"] and not c.get("default")]
    spend = verdict.get("spend") or {}
    record.update(
        status=verdict.get("status"),
        check=mine[0]["status"] if mine else None,
        message=mine[0]["message"] if mine else None,
        calls=spend.get("calls"),
        repeats_per_case=spend.get("repeats_per_case"),
        stopped_because=spend.get("stopped_because"),
        regressions=[r["case_id"] for r in verdict.get("regressions", [])],
        other_checks={c["metric"]: c["status"] for c in verdict.get("checks", []) if c.get("default")},
    )
    if code not in (0, 1):
        lines = [line for line in stderr.splitlines() if line.strip()]
        record["error"] = verdict.get("error") or (lines[-1] if lines else "")
    return record


def summarise(number: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    name, check, _, case_factors, kind, target = SCENARIOS[number]
    n = len(runs)
    fails = sum(r["check"] == "fail" for r in runs)
    low, high = wilson(fails, n)
    calls = [r["calls"] for r in runs if r["calls"] is not None]
    row: dict[str, Any] = {
        "scenario": f"{number}. {name}",
        "check": check,
        "target": f"fail {'≤' if kind == 'A/A' else '≥'} {target:.0%}",
        "runs": n,
        "fail": fails / n,
        "fail_ci": [low, high],
        "pass": sum(r["check"] == "pass" for r in runs) / n,
        "inconclusive": sum(r["check"] in ("warn", "inconclusive") for r in runs) / n,
        "median_calls": statistics.median(calls) if calls else None,
        "exit_codes": dict(sorted(Counter(str(r["exit_code"]) for r in runs).items())),
        "wall_s_per_run": statistics.mean(r["wall_s"] for r in runs),
    }
    if case_factors:
        named = [set(r["regressions"]) for r in runs if r["check"] == "fail"]
        slow = {f"c{i}" for i in case_factors}
        row["fails_naming_only_slow_cases"] = sum(bool(s) and s <= slow for s in named)
        row["fails_naming_all_slow_cases"] = sum(s >= slow for s in named)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | target | runs | fail [95% CI] | pass | inconclusive/warn | median calls | exit codes "
        "| wall s/run | fails naming only c0-c2 (all three) |",
        "|---|---|---:|---|---:|---:|---:|---|---:|---|",
    ]
    for r in rows:
        low, high = r["fail_ci"]
        calls = "—" if r["median_calls"] is None else f"{r['median_calls']:.0f}"
        codes = ", ".join(f"{code}: {count}" for code, count in r["exit_codes"].items())
        named = "—"
        if "fails_naming_only_slow_cases" in r:
            fails = round(r["fail"] * r["runs"])
            named = f"{r['fails_naming_only_slow_cases']}/{fails} ({r['fails_naming_all_slow_cases']})"
        lines.append(
            f"| {r['scenario']} | {r['target']} | {r['runs']} | {r['fail']:.1%} [{low:.1%}, {high:.1%}] "
            f"| {r['pass']:.1%} | {r['inconclusive']:.1%} | {calls} | {codes} "
            f"| {r['wall_s_per_run']:.1f} | {named} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="gate runs per scenario")
    parser.add_argument("--scenarios", default="1,2,3", help="comma-separated scenario numbers (1-3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base-ms", type=float, default=20.0, help="median case latency (default 20 ms)")
    parser.add_argument(
        "--isolation", choices=("inline", "process"), default="inline", help="run.isolation of every gate run"
    )
    parser.add_argument("--max-repeats", type=int, help="run.max_repeats of every gate run (default: the gate's)")
    parser.add_argument("--json", type=Path, help="also write the rows and every run here")
    args = parser.parse_args()
    numbers = [int(s) for s in args.scenarios.split(",")]
    rows, records = [], []
    for number in numbers:
        runs = []
        for i in range(args.runs):
            seed = args.seed * 100_000 + number * 1_000 + i
            record = gate_run(number, seed, args.base_ms, args.isolation, args.max_repeats)
            runs.append(record)
            print(
                f"scenario {number} run {i + 1}/{args.runs}: exit {record['exit_code']}, check {record['check']}, "
                f"{record['calls']} calls, {record['wall_s']:.1f} s"
                + (f", regressions {record['regressions']}" if record["regressions"] else "")
                + (f" — {record['error']}" if "error" in record else ""),
                file=sys.stderr,
                flush=True,
            )
        rows.append(summarise(number, runs))
        records.extend(runs)
    print(table(rows))
    if args.json:
        payload = {
            "runs": args.runs,
            "seed": args.seed,
            "base_ms": args.base_ms,
            "run": {**RUN, "isolation": args.isolation, "max_repeats": args.max_repeats},
            "rows": rows,
            "records": records,
        }
        args.json.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
