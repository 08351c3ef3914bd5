"""Soak: 2,000 calls through the simulator with 10% injected faults and a kill in the middle, then a rerun.

Run from the repository root::

    .venv/bin/python bench/soak.py [--cases 200] [--repeats 5] [--fault-rate 0.10]

Three `gate run` processes on one SQLite store, on the same simulator seed:
1. clean: no faults, to completion — the reference verdict;
2. killed: 10% faults spread over 429 / 500 / 503 / reset / truncated, SIGTERM once a third of the calls are done;
3. rerun: the same faults, to completion.
It prints, for each: exit code, calls, traces found (the gate's own count check: a lost trace is exit 3), retries,
errors, check statuses and wall time; and whether the rerun's check statuses equal the clean run's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
FAULTS = ("rate_limit", "server_error", "unavailable", "reset", "truncated")


def write_config(folder: Path, cases: int, repeats: int, faults: dict[str, float]) -> Path:
    config = {
        "version": 1,
        "experiment": "soak",
        "cases": [
            {"id": f"c{i}", "inputs": {"question": f"Question number {i} about my order {i % 17}?"}}
            for i in range(cases)
        ],
        "baseline": {"target": "examples.support_agents:basic_agent", "label": "v1"},
        "candidate": {"target": "examples.support_agents:empathetic_agent", "label": "v2"},
        "run": {"repeats": repeats, "max_repeats": repeats, "concurrency": 8, "retries": 6, "retry_backoff_s": 0.05},
        "checks": [
            {"metric": "error/rate", "at_most": 0.0},
            {"metric": "total_tokens/mean", "max_increase_pct": 60},
            {"metric": "output_tokens/mean", "max_increase_pct": 500},
        ],
        "simulator": {"seed": 11, "base_latency_ms": 5, "ms_per_token": 0.05, "faults": faults},
    }
    path = folder / f"soak-{len(faults)}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def run(config: Path, store: Path, kill_after_calls: int | None = None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "OPENAI_"))}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"
    env["PYTHONPATH"] = str(ROOT)
    started = time.monotonic()
    output = config.with_suffix(f".verdict-{time.monotonic_ns()}.json")
    proc = subprocess.Popen(  # the verdict goes to a file: reading only stderr here, a stdout pipe would fill up
        [sys.executable, "-m", "gate", "run", "--simulate", "-c", str(config), "--output", str(output)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    killed = False
    for line in proc.stderr:
        if kill_after_calls and " calls," in line and not killed:
            done = int(line.split(": ")[-1].split("/")[0])
            if done >= kill_after_calls:
                proc.send_signal(signal.SIGTERM)
                killed = True
    proc.wait(timeout=600)
    verdict = json.loads(output.read_text(encoding="utf-8"))
    variants = verdict.get("variants") or {}
    return {
        "exit": proc.returncode,
        "wall_s": round(time.monotonic() - started, 1),
        "calls": sum(v["calls"] for v in variants.values()),
        "traces": sum(v["traces"] for v in variants.values()),
        "retries": sum(v.get("retries", 0) for v in variants.values()),
        "errors": sum(v["errors"] for v in variants.values()),
        "checks": [c["status"] for c in verdict.get("checks", [])],
        "note": (verdict.get("error") or "")[:140],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fault-rate", type=float, default=0.10)
    args = parser.parse_args()
    total = args.cases * args.repeats * 2
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = folder / "soak.db"
        faults = {kind: args.fault_rate / len(FAULTS) for kind in FAULTS}
        clean = run(write_config(folder, args.cases, args.repeats, {}), store)
        faulty_config = write_config(folder, args.cases, args.repeats, faults)
        killed = run(faulty_config, store, kill_after_calls=total // 3)
        rerun = run(faulty_config, store)
    print(
        f"{total} calls per run ({args.cases} cases x {args.repeats} repeats x 2 versions),"
        f" faults {args.fault_rate:.0%}\n"
    )
    print("| run | exit | calls | traces | retries | errors | checks | wall s | note |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---|")
    for name, r in (("clean", clean), ("killed at 1/3", killed), ("rerun", rerun)):
        print(
            f"| {name} | {r['exit']} | {r['calls']} | {r['traces']} | {r['retries']} | {r['errors']} | "
            f"{', '.join(r['checks'])} | {r['wall_s']} | {r['note']} |"
        )
    same = clean["checks"] == rerun["checks"] and clean["exit"] == rerun["exit"]
    print(
        f"\nrerun verdict equals the clean run's: {same}; traces lost in the rerun: {rerun['calls'] - rerun['traces']}"
    )
    return 0 if same and rerun["calls"] == rerun["traces"] == total else 1


if __name__ == "__main__":
    raise SystemExit(main())
