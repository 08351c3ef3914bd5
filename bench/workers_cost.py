"""What the worker processes cost: start-up time and memory, ``run.isolation: process`` against ``inline``.

Run from the repository root::

    .venv/bin/python bench/workers_cost.py                          # start-up (5 runs each) and memory (100, 1000)
    .venv/bin/python bench/workers_cost.py --startup-runs 5 --memory-cases 100,1000 --json /tmp/workers-cost.json

- **Start-up**: ``gate run --simulate`` on a one-case config (the traced app of bench/tools/traced_app.py as both
  versions, ``run: {repeats: 1, max_repeats: 1, warmup: false}``), a fresh SQLite store per run, ``isolation:
  process`` and ``inline`` alternating (the first isolation of run i alternates too); whole-process wall time, and
  CPU (user + system, the workers included: ``os.wait4`` counts the descendants a process reaped) and peak RSS of
  the largest single process. With one case the run is almost all fixed cost: importing MLflow and the app, opening
  the store, the writer's self-test, starting (and stopping) the workers.
- **Memory**: ``gate run`` on N cases (``--memory-cases``) against an external simulator (0 ms, deterministic),
  8 in flight, one round; while it runs, ``/proc/<pid>/status`` of the gate and of each descendant is read every
  50 ms (forked workers are children of the gate's fork server): the table gives the gate's and each worker's peak
  RSS (``VmHWM``, the last value read before it exited) and the peak of the sum of their proportional set sizes
  (``Pss``: pages a fork shares counted once) over the samples, i.e. what the run occupies at once. Workers hold
  a round's traces in memory until the gate flushes them at the end of the round, so with one round their peak grows
  with N.

Runs are sequential; progress goes to stderr, the Markdown tables to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml
from _common import TOOLS, child_env, external_simulator, machine, median, write_json

# "process": the gate's default, workers forked from its fork server (gate/_run/forkserver.py); "process-exec": each
# worker a fresh interpreter (GATE_WORKER_START=exec, the way before stop 26); "inline": no workers.
ISOLATIONS = ("process", "process-exec", "inline")


def mode_env(iso: str) -> dict[str, str]:
    return {"GATE_WORKER_START": "exec"} if iso.endswith("-exec") else {}


def write_config(folder: Path, cases: int, isolation: str, concurrency: int = 8) -> Path:
    config = {
        "version": 1,
        "experiment": "bench-workers-cost",
        "cases": [
            {"id": f"c{i}", "inputs": {"question": f"Question {i}: where is my order number {i}?"}}
            for i in range(cases)
        ],
        "baseline": {"target": "traced_app:answer_v1", "label": "v1"},
        "candidate": {"target": "traced_app:answer_v2", "label": "v2"},
        "run": {
            "repeats": 1,
            "max_repeats": 1,
            "concurrency": concurrency,
            "warmup": False,
            "isolation": isolation.removesuffix("-exec"),
        },
        "checks": [{"metric": "latency_ms/p95", "max_increase_pct": 1000}],
    }
    path = folder / f"thresholds-{cases}-{isolation}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _fields(pid: int, keys: tuple[str, ...], name: str = "status") -> dict[str, int]:
    """The first number of each ``key:`` line of ``/proc/<pid>/<name>`` (kB for sizes); empty once it is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/{name}") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in keys:
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def _children(pid: int) -> list[int]:
    """Children of every thread of ``pid`` (a child is listed under the thread that started it)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return found


def _descendants(pid: int) -> list[int]:
    """Children, and theirs: forked workers are children of the gate's fork server."""
    out: list[int] = []
    for child in _children(pid):
        out += [child, *_descendants(child)]
    return out


def _pss_kb(pid: int) -> int:
    """Proportional set size: pages shared after a fork counted once over all the processes that share them."""
    return _fields(pid, ("Pss",), "smaps_rollup").get("Pss", 0)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Sampler(threading.Thread):
    """Every 50 ms: VmHWM and Pss of the root process and of each of its descendants (the workers)."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.stop = threading.Event()
        self.hwm_kb: dict[int, int] = {}
        self.role: dict[int, str] = {}
        self.peak_sum_kb = 0
        self.samples = 0

    def run(self) -> None:
        while not self.stop.is_set():
            total = 0
            root_cmd = _cmdline(self.root)
            for pid in [self.root, *_descendants(self.root)]:
                if self.role.get(pid) in (None, "other"):  # re-read: just after fork it still has our cmdline
                    self.role[pid] = self._role(pid, root_cmd)
                st = _fields(pid, ("VmRSS", "VmHWM"))
                if "VmHWM" in st:
                    self.hwm_kb[pid] = max(self.hwm_kb.get(pid, 0), st["VmHWM"])
                total += _pss_kb(pid)
            self.peak_sum_kb = max(self.peak_sum_kb, total)
            self.samples += 1
            self.stop.wait(0.05)

    def _role(self, pid: int, root_cmd: str) -> str:
        if pid == self.root:
            return "gate"
        cmd = _cmdline(pid)
        if "_run.worker" in cmd:
            return "worker"  # a fresh interpreter: python -c "...gate._run.worker..."
        parent = _fields(pid, ("PPid",)).get("PPid", 0)
        if cmd == root_cmd:  # a fork of the gate: its fork server (child of the gate) or a worker (child of that)
            return "server" if parent == self.root else "worker"
        return "other"


def run_gate(cmd: list[str], cwd: Path, env: dict[str, str], log: Path, sample: bool) -> dict:
    with open(log, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        sampler = Sampler(proc.pid) if sample else None
        if sampler:
            sampler.start()
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        wall = time.perf_counter() - started
        if sampler:
            sampler.stop.set()
            sampler.join()
        _, status, usage = os.wait4(proc.pid, 0)
    out = {
        "exit_code": os.waitstatus_to_exitcode(status),
        "wall_s": round(wall, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "max_single_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }
    if sampler:
        workers = sorted(kb for pid, kb in sampler.hwm_kb.items() if sampler.role[pid] == "worker")
        out.update(
            gate_hwm_mb=round(sampler.hwm_kb.get(proc.pid, 0) / 1024, 1),
            worker_hwm_mb=[round(kb / 1024, 1) for kb in workers],
            peak_sum_pss_mb=round(sampler.peak_sum_kb / 1024, 1),
            samples=sampler.samples,
        )
    return out


def verdict_traces(path: Path) -> int | None:
    try:
        verdict = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return sum(v.get("traces", 0) for v in (verdict.get("variants") or {}).values())


def startup(work: Path, runs: int) -> list[dict]:
    configs = {iso: write_config(work, 1, iso) for iso in ISOLATIONS}
    records = []
    for i in range(runs):
        order = ISOLATIONS if i % 2 == 0 else ISOLATIONS[::-1]
        for iso in order:
            run_dir = work / f"startup-{iso}-{i}"
            run_dir.mkdir()
            cmd = [sys.executable, "-m", "gate", "run", "--simulate", "-c", str(configs[iso])]
            cmd += ["--tracking-uri", f"sqlite:///{run_dir / 'mlflow.db'}", "--no-progress"]
            cmd += ["--output", str(run_dir / "verdict.json")]
            env = child_env(None, mode_env(iso))
            rec = {"isolation": iso, "run": i, **run_gate(cmd, run_dir, env, run_dir / "log.err", True)}
            rec["traces"] = verdict_traces(run_dir / "verdict.json")
            records.append(rec)
            print(
                f"  startup {iso:12} run {i}: {rec['wall_s']:.2f} s, {rec['cpu_s']:.1f} s CPU, "
                f"exit {rec['exit_code']}, gate {rec['gate_hwm_mb']} MB, workers {rec['worker_hwm_mb']} MB, "
                f"sum {rec['peak_sum_pss_mb']} MB",
                file=sys.stderr,
                flush=True,
            )
    return records


def memory(work: Path, cases_list: list[int]) -> list[dict]:
    records = []
    with external_simulator(0) as url:
        for n in cases_list:
            for iso in ISOLATIONS:
                config = write_config(work, n, iso)
                run_dir = work / f"memory-{n}-{iso}"
                run_dir.mkdir()
                cmd = [sys.executable, "-m", "gate", "run", "-c", str(config)]
                cmd += ["--tracking-uri", f"sqlite:///{run_dir / 'mlflow.db'}", "--no-progress"]
                cmd += ["--output", str(run_dir / "verdict.json")]
                rec = {
                    "isolation": iso,
                    "cases": n,
                    **run_gate(cmd, run_dir, child_env(url, mode_env(iso)), run_dir / "log.err", True),
                }
                rec["traces"] = verdict_traces(run_dir / "verdict.json")
                records.append(rec)
                print(
                    f"  memory {n} cases {iso:12}: {rec['wall_s']:.1f} s, {rec['cpu_s']:.1f} s CPU, exit "
                    f"{rec['exit_code']}, gate {rec['gate_hwm_mb']} MB, workers {rec['worker_hwm_mb']} MB, "
                    f"sum {rec['peak_sum_pss_mb']} MB, traces {rec['traces']}",
                    file=sys.stderr,
                    flush=True,
                )
    return records


def startup_table(records: list[dict]) -> str:
    lines = [
        "| isolation | median wall s (runs) | median CPU s (gate + workers) | gate peak RSS MB | worker peak RSS MB "
        "| peak PSS of all at once MB | exits |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for iso in ISOLATIONS:
        mine = [r for r in records if r["isolation"] == iso]
        walls = ", ".join(f"{r['wall_s']:.2f}" for r in mine)
        workers = [mb for r in mine for mb in r["worker_hwm_mb"]]
        cells = [
            iso,
            f"{median([r['wall_s'] for r in mine]):.2f} ({walls})",
            f"{median([r['cpu_s'] for r in mine]):.1f}",
            f"{median([r['gate_hwm_mb'] for r in mine]):.0f}",
            f"{median(workers):.0f}" if workers else "–",
            f"{median([r['peak_sum_pss_mb'] for r in mine]):.0f}",
            ", ".join(str(r["exit_code"]) for r in mine),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def memory_table(records: list[dict]) -> str:
    lines = [
        "| cases × 2 versions | isolation | wall s | CPU s (gate + workers) | gate peak RSS MB | worker peak RSS MB "
        "| peak PSS of all at once MB | traces (verdict) | exit |",
        "|---:|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in records:
        workers = ", ".join(f"{mb:.0f}" for mb in r["worker_hwm_mb"]) or "–"
        lines.append(
            f"| {r['cases']} × 2 | {r['isolation']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['gate_hwm_mb']:.0f} "
            f"| {workers} | {r['peak_sum_pss_mb']:.0f} | {r['traces']} | {r['exit_code']} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--startup-runs", type=int, default=5, help="runs per isolation of the one-case config")
    parser.add_argument("--memory-cases", default="100,1000", help="N per memory run, comma-separated ('' to skip)")
    parser.add_argument("--json", help="also write every run as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (stores, logs) and print it")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gate-workers-cost-"))
    shutil.copy(TOOLS / "traced_app.py", work / "traced_app.py")
    try:
        started = startup(work, args.startup_runs) if args.startup_runs else []
        mem = memory(work, [int(x) for x in args.memory_cases.split(",") if x.strip()])
    finally:
        if args.keep:
            print(f"work folder: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{machine()}\n")
    if started:
        print(f"Start-up: `gate run --simulate`, 1 case × 2 versions, {args.startup_runs} runs each, alternating\n")
        print(startup_table(started) + "\n")
    if mem:
        print("Memory: `gate run`, N cases × 2 versions, 0 ms external simulator, 8 in flight, one round\n")
        print(memory_table(mem))
    if args.json:
        write_json(args.json, {"machine": machine(), "startup": started, "memory": mem})
    return 0 if all(r["exit_code"] in (0, 1) for r in started + mem) else 1


if __name__ == "__main__":
    raise SystemExit(main())
