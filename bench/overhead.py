"""Recording overhead: the bare OpenAI SDK vs ``mlflow.genai.evaluate`` vs ``gate run`` on the same workload.

Run from the repository root::

    .venv/bin/python bench/overhead.py                     # N=100, latencies 0 and 100 ms, 3 rounds, all tools
    .venv/bin/python bench/overhead.py --cases 1000 --latency 100 --tools raw,gate
    .venv/bin/python bench/overhead.py --tools raw,gate,gate-inline,gate-before --before 4c755fb   # side by side

Workload: N questions × 2 versions, 8 calls in flight, one OpenAI chat call per case and version, against one
simulator process per latency setting (deterministic: exactly the set latency, no per-token time, no noise).
Tools, each a separate process measured from outside (whole-process wall time; CPU time and peak RSS via
``os.wait4``):

- ``raw``: bench/tools/raw_openai.py — the OpenAI SDK in a ThreadPoolExecutor(8), no tracing (the floor);
- ``evaluate``: bench/tools/mlflow_evaluate.py — ``mlflow.genai.evaluate`` on the traced app (bench/tools/
  traced_app.py, ``mlflow.openai.autolog()``), a trivial scorer, once per version, MLFLOW_GENAI_EVAL_MAX_WORKERS=8;
- ``gate``: ``python -m gate run`` with a generated thresholds.yaml (N inline cases, the traced app as both
  targets, ``run: {repeats: 1, max_repeats: 1, concurrency: 8, warmup: false}``, p95 latency and error-rate checks);
- ``gate-inline``: the same with ``run.isolation: inline`` (no worker processes);
- ``gate-before``: the same config run by gate/ as of ``--before REV`` (``git archive``, first on that child's
  ``PYTHONPATH`` only), so two gates are measured in one sitting.

CPU time and peak RSS come from ``os.wait4`` on the tool's process; Linux counts into them the descendants the tool
reaped (the gate's worker processes): CPU is the sum over the gate and its workers, peak RSS the largest single
process among them, not their sum.

The tracing tools get a fresh SQLite store per run; afterwards the harness counts its ``trace_info`` rows
(expected: 2N) and how many of them keep their spans in the database. Runs are interleaved round-robin:
every round runs every tool at every latency, round r starting at tool r, so machine noise spreads over all
tools. The table gives medians and each tool's ratio to the floor's median at the same latency.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import yaml
from _common import (
    TOOLS,
    child_env,
    count_traces,
    export_gate,
    external_simulator,
    machine,
    measure,
    median,
    tail,
    use_gate_commit,
    write_json,
)

ALL_TOOLS = ("raw", "evaluate", "gate", "gate-inline", "gate-before")
GATE_TOOLS = ("gate", "gate-inline", "gate-before")


def questions(n: int) -> list[str]:
    return [f"Question {i}: where is my order number {i}, and when will it arrive?" for i in range(n)]


def gate_config(folder: Path, cases: list[str], inline: bool = False) -> Path:
    config = {
        "version": 1,
        "experiment": "bench-gate",
        "cases": [{"id": f"c{i}", "inputs": {"question": q}} for i, q in enumerate(cases)],
        "baseline": {"target": "traced_app:answer_v1", "label": "v1"},
        "candidate": {"target": "traced_app:answer_v2", "label": "v2"},
        # only the inline config names isolation: older gates (gate-before) reject the key
        "run": {"repeats": 1, "max_repeats": 1, "concurrency": 8, "warmup": False}
        | ({"isolation": "inline"} if inline else {}),
        "checks": [
            {"metric": "latency_ms/p95", "max_increase_pct": 50},
            {"metric": "error/rate", "at_most": 0},
        ],
    }
    path = folder / ("thresholds-inline.yaml" if inline else "thresholds.yaml")
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def command(tool: str, work: Path, run_dir: Path) -> tuple[list[str], dict[str, str]]:
    """The command line of one tool and its extra environment; its store (if any) is run_dir/mlflow.db."""
    store = f"sqlite:///{run_dir / 'mlflow.db'}"
    cases = str(work / "cases.json")
    if tool == "raw":
        return [sys.executable, str(TOOLS / "raw_openai.py"), cases], {}
    if tool == "evaluate":
        return [sys.executable, str(TOOLS / "mlflow_evaluate.py"), cases], {
            "MLFLOW_TRACKING_URI": store,
            "MLFLOW_GENAI_EVAL_MAX_WORKERS": "8",
            "MLFLOW_GENAI_EVAL_SKIP_TRACE_VALIDATION": "true",  # no extra, unmeasured predict call
        }
    if tool in GATE_TOOLS:
        config = work / ("thresholds-inline.yaml" if tool == "gate-inline" else "thresholds.yaml")
        cmd = [sys.executable, "-m", "gate", "run", "-c", str(config), "--tracking-uri", store]
        return [*cmd, "--no-progress", "--output", str(run_dir / "verdict.json")], {}
    raise ValueError(tool)


def run_one(
    tool: str,
    latency: float,
    round_no: int,
    work: Path,
    base_url: str,
    n: int,
    timeout_s: float,
    before_path: str | None = None,
) -> dict:
    run_dir = work / f"{tool}-{latency:g}ms-r{round_no}"
    run_dir.mkdir()
    cmd, extra = command(tool, work, run_dir)
    # The gate imports the targets from the config's folder; evaluate imports traced_app from its own folder.
    env = child_env(base_url, extra, before_path if tool == "gate-before" else None)
    measured = measure(cmd, cwd=run_dir, env=env, log_prefix=run_dir / "log", timeout_s=timeout_s)
    record: dict = {"tool": tool, "latency_ms": latency, "round": round_no, **measured.as_dict()}
    record["expected_traces"] = 0 if tool == "raw" else 2 * n
    record.update(count_traces(run_dir / "mlflow.db") if tool != "raw" else {"traces": None, "spans_in_db": None})
    if tool in GATE_TOOLS and (run_dir / "verdict.json").exists():
        verdict = json.loads((run_dir / "verdict.json").read_text())
        record["verdict_status"] = verdict.get("status")
        record["verdict_traces"] = sum(v.get("traces", 0) for v in (verdict.get("variants") or {}).values())
        record["verdict_timing"] = verdict.get("timing")
    if measured.exit_code not in (0, 1) or measured.timed_out:
        print(f"  ! {tool} exited {measured.exit_code}:\n{tail(run_dir / 'log.err')}", file=sys.stderr)
    print(
        f"  round {round_no} {tool:8} {latency:g} ms: {measured.wall_s:.2f} s, exit {measured.exit_code}, "
        f"{measured.cpu_s:.1f} s CPU, {measured.peak_rss_mb:.0f} MB, traces {record['traces']}",
        file=sys.stderr,
        flush=True,
    )
    return record


def summarize(runs: list[dict], tools: list[str], latencies: list[float]) -> list[dict]:
    rows = []
    for latency in latencies:
        floor = median([r["wall_s"] for r in runs if r["tool"] == "raw" and r["latency_ms"] == latency])
        floor_cpu = median([r["cpu_s"] for r in runs if r["tool"] == "raw" and r["latency_ms"] == latency])
        for tool in tools:
            mine = [r for r in runs if r["tool"] == tool and r["latency_ms"] == latency]
            wall = median([r["wall_s"] for r in mine])
            rows.append(
                {
                    "tool": tool,
                    "latency_ms": latency,
                    "runs": len(mine),
                    "median_wall_s": round(wall, 2),
                    "walls_s": [r["wall_s"] for r in mine],
                    "ratio_to_floor": round(wall / floor, 2) if floor == floor else None,  # NaN: raw not run
                    "median_cpu_s": round(cpu := median([r["cpu_s"] for r in mine]), 2),
                    "cpu_ratio_to_floor": round(cpu / floor_cpu, 1) if floor_cpu == floor_cpu else None,
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in mine),
                    "traces": [r["traces"] for r in mine],
                    "spans_in_db": [r["spans_in_db"] for r in mine],
                    "expected_traces": mine[0]["expected_traces"],
                    "exit_codes": [r["exit_code"] for r in mine],
                }
            )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| tool | latency | median wall s (runs) | wall ratio to raw | median CPU s | CPU ratio to raw | peak RSS MB "
        "| traces stored / expected | exits |",
        "|---|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        walls = ", ".join(f"{w:.1f}" for w in r["walls_s"])
        if r["expected_traces"]:
            stored = ", ".join(str(t) for t in r["traces"]) + f" / {r['expected_traces']}"
            if any(s != t for s, t in zip(r["spans_in_db"], r["traces"], strict=True)):
                stored += f" (spans in DB: {', '.join(str(s) for s in r['spans_in_db'])})"
        else:
            stored = "–"
        ratio = "–" if r["ratio_to_floor"] is None else f"{r['ratio_to_floor']:.2f}×"
        cpu_ratio = "–" if r["cpu_ratio_to_floor"] is None else f"{r['cpu_ratio_to_floor']:.1f}×"
        lines.append(
            f"| {r['tool']} | {r['latency_ms']:g} ms | {r['median_wall_s']:.2f} ({walls}) | {ratio} | "
            f"{r['median_cpu_s']:.1f} | {cpu_ratio} | {r['peak_rss_mb']:.0f} | {stored} | "
            f"{', '.join(map(str, r['exit_codes']))} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100, help="N questions (calls: N × 2 versions)")
    parser.add_argument("--latency", default="0,100", help="model latencies in ms, comma-separated")
    parser.add_argument(
        "--tools", default="raw,evaluate,gate", help="subset of raw,evaluate,gate,gate-inline,gate-before"
    )
    parser.add_argument("--before", help="the commit whose gate/ the gate-before tool runs (git archive)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per tool run")
    parser.add_argument("--json", help="also write the table and every run as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (stores, logs) and print it")
    parser.add_argument("--gate-commit", help="measure gate as of this commit (git archive) instead of the checkout")
    args = parser.parse_args()
    print(f"gate under test: {use_gate_commit(args.gate_commit)}", file=sys.stderr)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if unknown := set(tools) - set(ALL_TOOLS):
        parser.error(f"unknown tools: {', '.join(sorted(unknown))}")
    latencies = [float(x) for x in args.latency.split(",")]
    if ("gate-before" in tools) != (args.before is not None):
        parser.error("the gate-before tool and --before REV go together")
    before_path, before_description = export_gate(args.before) if args.before else (None, "")
    if args.before:
        print(f"gate-before: {before_description}", file=sys.stderr)

    work = Path(tempfile.mkdtemp(prefix="gate-overhead-"))
    cases = questions(args.cases)
    (work / "cases.json").write_text(json.dumps(cases), encoding="utf-8")
    gate_config(work, cases)
    gate_config(work, cases, inline=True)
    shutil.copy(TOOLS / "traced_app.py", work / "traced_app.py")
    runs: list[dict] = []
    try:
        with ExitStack() as stack:
            # One simulator process per latency, all serving for the whole benchmark (idle ones cost nothing).
            urls = {latency: stack.enter_context(external_simulator(latency)) for latency in latencies}
            for round_no in range(args.rounds):
                order = tools[round_no % len(tools) :] + tools[: round_no % len(tools)]
                for latency in latencies:
                    for tool in order:
                        runs.append(
                            run_one(tool, latency, round_no, work, urls[latency], args.cases, args.timeout, before_path)
                        )
    finally:
        if args.keep:
            print(f"work folder: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    rows = summarize(runs, tools, latencies)
    print(file=sys.stderr)
    print(
        f"{args.cases} cases × 2 versions = {2 * args.cases} calls, concurrency 8, {args.rounds} rounds; {machine()}"
        + (f"; gate-before: {before_description}" if args.before else "")
        + "\n"
    )
    print(markdown(rows))
    if args.json:
        write_json(
            args.json, {"cases": args.cases, "rounds": args.rounds, "machine": machine(), "rows": rows, "runs": runs}
        )
    bad = [r for r in runs if r["tool"] != "raw" and r["traces"] != r["expected_traces"]]
    return 1 if bad or any(r["exit_code"] not in (0, 1) for r in runs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
