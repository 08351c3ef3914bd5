"""Stored-trace analysis: how long ``gate score`` takes to re-read and decide a 10,000-trace session.

Run from the repository root::

    .venv/bin/python bench/analysis.py [--store-dir DIR] [--runs 3] [--no-profile]

1. Build, once, a store with one gate session of ``--cases`` × ``--repeats`` × 2 versions traces (default
   500 × 10 × 2 = 10,000): ``gate run`` with fixed repeats against a 0 ms simulator in its own process, the
   traced app of bench/tools/traced_app.py. The store, config and session id are cached in ``--store-dir``
   (default: ``<tmp>/trace-gate-bench-analysis``) and reused while the trace count matches.
2. Time ``gate score --session <id> -c <config>`` ``--runs`` times: fetch every trace of the session (with spans),
   compute the metrics, compare, decide, print the verdict; the app is not called and no scorer is configured, so
   the store is only read. Reports the median wall time and peak RSS (``os.wait4``) against the targets of
   issue 6: ≤ 5 s and ≤ 400 MB.
3. Profile two more runs, with pyinstrument (``.venv/bin/pip install pyinstrument``; the main thread's call tree,
   wall time) and py-spy (every thread, on-CPU samples: by gate step, by code area, by function), each if it is
   installed; the full reports are written to the store dir.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from _common import (
    TOOLS,
    child_env,
    count_traces,
    external_simulator,
    gate_description,
    machine,
    measure,
    median,
    tail,
    use_gate_commit,
    write_json,
)

TARGET_S, TARGET_MB = 5.0, 400.0


def write_config(folder: Path, cases: int, repeats: int) -> Path:
    config = {
        "version": 1,
        "experiment": "bench-analysis",
        "cases": [
            {"id": f"c{i}", "inputs": {"question": f"Question {i}: where is my order number {i}?"}}
            for i in range(cases)
        ],
        "baseline": {"target": "traced_app:answer_v1", "label": "v1"},
        "candidate": {"target": "traced_app:answer_v2", "label": "v2"},
        "run": {"repeats": repeats, "max_repeats": repeats, "concurrency": 8, "warmup": False},
        "checks": [
            {"metric": "latency_ms/p95", "max_increase_pct": 50},
            {"metric": "error/rate", "at_most": 0},
            {"metric": "total_tokens/mean", "max_increase_pct": 50},
        ],
    }
    path = folder / "thresholds.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    shutil.copy(TOOLS / "traced_app.py", folder / "traced_app.py")
    return path


def build_store(folder: Path, cases: int, repeats: int) -> dict:
    """The cached session, or a new one made by ``gate run``."""
    expected = cases * repeats * 2
    meta_path = folder / "session.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("traces") == expected and count_traces(folder / "mlflow.db")["traces"] == expected:
            print(f"reusing the store in {folder} (session {meta['session']}, {expected} traces)", file=sys.stderr)
            return meta
    for stale in ("mlflow.db", "mlflow.db.lock", "session.json", "artifacts"):
        path = folder / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    config = write_config(folder, cases, repeats)
    print(f"building a store of {expected} traces in {folder} (takes minutes)...", file=sys.stderr, flush=True)
    with external_simulator(0) as base_url:
        cmd = [sys.executable, "-m", "gate", "run", "-c", str(config), "--tracking-uri", _uri(folder)]
        cmd += ["--no-progress", "--output", str(folder / "build-verdict.json")]
        built = measure(cmd, cwd=folder, env=child_env(base_url), log_prefix=folder / "build", timeout_s=7200)
    stored = count_traces(folder / "mlflow.db")
    verdict = (
        json.loads((folder / "build-verdict.json").read_text()) if (folder / "build-verdict.json").exists() else {}
    )
    session = (verdict.get("mlflow") or {}).get("session")
    if built.exit_code not in (0, 1) or session is None or stored["traces"] != expected:
        raise SystemExit(f"building the store failed: exit {built.exit_code}, {stored}\n{tail(folder / 'build.err')}")
    meta = {"session": session, "traces": expected, "cases": cases, "repeats": repeats, "build": built.as_dict()}
    meta["built_with"] = gate_description()
    write_json(meta_path, meta)
    return meta


def _uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


COMMAND = ["compare"]  # --command: `gate compare --session` (paged, spans as dicts) or `gate score --session`


def score_command(folder: Path, session: str, output: Path) -> list[str]:
    return ["gate", COMMAND[0], "--session", session, "-c", str(folder / "thresholds.yaml"), "--tracking-uri",
            _uri(folder), "--output", str(output)]  # fmt: skip


def profile(folder: Path, session: str) -> str:
    """Profile one ``gate score`` with each profiler that is installed; return the summary to print.

    pyinstrument samples the main thread's wall time (which phase of the command waits where); py-spy samples
    every thread while it runs (MLflow reads spans in a thread pool, which pyinstrument sees as lock waits).
    """
    out = []
    if importlib.util.find_spec("pyinstrument") is not None:
        out.append(_pyinstrument(folder, session))
    else:
        out.append("pyinstrument is not installed (.venv/bin/pip install pyinstrument): no call tree")
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    out.append(_py_spy(py_spy, folder, session) if py_spy else "py-spy is not installed: no all-thread profile")
    return "\n".join(out)


def _pyinstrument(folder: Path, session: str) -> str:
    raw = folder / "profile.pyisession"
    cmd = [sys.executable, "-m", "pyinstrument", "-r", "pyisession", "-o", str(raw), "-m"]
    cmd += score_command(folder, session, folder / "profile-verdict.json")
    measured = measure(cmd, cwd=folder, env=child_env(None), log_prefix=folder / "profile")
    if measured.exit_code not in (0, 1):
        return f"pyinstrument run failed (exit {measured.exit_code}):\n{tail(folder / 'profile.err')}"
    load = [sys.executable, "-m", "pyinstrument", "--load", str(raw), "-r", "text", "--no-color"]
    text = subprocess.run(load, capture_output=True, text=True, check=False).stdout
    (folder / "profile-tree.txt").write_text(text, encoding="utf-8")
    # Skip pyinstrument's banner (logo, duration, program line) and the legend at the end.
    lines = [line for line in text.splitlines() if line.strip()]
    start = next((i + 1 for i, line in enumerate(lines) if line.startswith("Program:")), 0)
    body = [line for line in lines[start:] if not line.lstrip().startswith(("To view", "pyinstrument --load"))]
    head = f"pyinstrument, main thread, wall s ({measured.wall_s:.1f} s under the profiler; {folder}/profile-tree.txt):"
    return "\n".join([head, *body[:30]])


def _py_spy(py_spy: str, folder: Path, session: str) -> str:
    raw = folder / "profile-py-spy.txt"
    # --gil: sample only the thread holding the GIL, so samples add up to the process's Python time (SQLite's own
    # work runs with the GIL released and is not counted); without it, threads blocked on a queue count as busy.
    cmd = [py_spy, "record", "--gil", "--rate", "100", "--format", "raw", "--output", str(raw), "--"]
    cmd += [sys.executable, "-m", *score_command(folder, session, folder / "profile-verdict.json")]
    measured = measure(cmd, cwd=folder, env=child_env(None), log_prefix=folder / "py-spy")
    if measured.exit_code not in (0, 1) or not raw.exists():
        return f"py-spy run failed (exit {measured.exit_code}):\n{tail(folder / 'py-spy.err')}"
    return summarize_collapsed(raw.read_text(encoding="utf-8"), note=f"{measured.wall_s:.1f} s wall under py-spy")


def _area(frame: str) -> str:
    """Where a frame's code lives: its package or stdlib module (mlflow one level deeper), or the gate's file.

    py-spy prints paths relative to their sys.path entry: ``sqlalchemy/engine/default.py``, ``gate/_cli.py``.
    """
    path = frame[frame.rfind("(") + 1 : frame.rfind(")")].rsplit(":", 1)[0]
    if path.startswith("<frozen"):
        return "importlib" if "importlib" in path else path.strip("<>")
    parts = path.split("/")
    if parts[0] in ("mlflow", "gate") and len(parts) > 1:
        return "/".join(parts[:2]).removesuffix(".py")
    return parts[0].removesuffix(".py")


def _in_gate(frame: str) -> bool:
    return frame[frame.rfind("(") + 1 :].startswith("gate/")


def summarize_collapsed(text: str, note: str, top: int = 8) -> str:
    """Summarize py-spy's collapsed stacks: samples per gate step, per code area (self), per function (self)."""
    by_step: dict[str, int] = {}
    by_area: dict[str, int] = {}
    by_function: dict[str, int] = {}
    by_owner: dict[str, int] = {}
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count, frames = int(count_text), stack.split(";")
        total += count
        if any(f.startswith("_find_and_load ") for f in frames):
            step = "importing modules"
        else:
            in_gate = [f for f in frames if _in_gate(f)]
            if in_gate:
                step = in_gate[-1].split(" (")[0]
            else:  # a pool thread: name it by the first MLflow function it runs (past MLflow's thread utils)
                ours = [f for f in frames if _area(f).startswith("mlflow") and _area(f) != "mlflow/utils"]
                step = f"pool thread: {(ours or frames)[0].split(' (')[0]}"
        by_step[step] = by_step.get(step, 0) + count
        area = _area(frames[-1])
        by_area[area] = by_area.get(area, 0) + count
        function = f"{frames[-1].split(' (')[0]} [{area}]"
        by_function[function] = by_function.get(function, 0) + count
        # The innermost frame of gate's or MLflow's code: who asked for the work the libraries below do.
        owner = next((f for f in reversed(frames) if _area(f).startswith(("gate", "mlflow"))), None)
        if owner is not None:
            name = f"{owner.split(' (')[0]} [{_area(owner)}]"
            by_owner[name] = by_owner.get(name, 0) + count

    def ranked(counts: dict[str, int]) -> list[str]:
        best = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [f"  {100 * n / total:5.1f}%  {n / 100:6.1f} s  {name}" for name, n in best]

    return "\n".join(
        [
            f"py-spy --gil, all threads, {total} samples at 100 Hz ≈ {total / 100:.1f} s holding the GIL ({note}):",
            "by gate step (innermost gate function on the stack; imports apart):",
            *ranked(by_step),
            "by code area (self):",
            *ranked(by_area),
            "by function (self):",
            *ranked(by_function),
            "by the innermost gate or MLflow function on the stack (self time of everything it called below):",
            *ranked(by_owner),
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store-dir", type=Path, default=Path(tempfile.gettempdir()) / "trace-gate-bench-analysis")
    parser.add_argument("--cases", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--json", help="also write the results as JSON here")
    parser.add_argument(
        "--command", choices=["compare", "score"], default="compare", help="the command that re-reads the session"
    )
    parser.add_argument("--gate-commit", help="measure gate as of this commit (git archive) instead of the checkout")
    args = parser.parse_args()
    COMMAND[0] = args.command
    print(f"gate under test: {use_gate_commit(args.gate_commit)}", file=sys.stderr)
    folder = args.store_dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    meta = build_store(folder, args.cases, args.repeats)

    runs = []
    for i in range(args.runs):
        output = folder / f"score-verdict-{i}.json"
        cmd = [sys.executable, "-m", *score_command(folder, meta["session"], output)]
        measured = measure(cmd, cwd=folder, env=child_env(None), log_prefix=folder / f"score-{i}")
        verdict = json.loads(output.read_text()) if output.exists() else {}
        read = sum(v.get("traces", 0) for v in (verdict.get("variants") or {}).values())
        runs.append({**measured.as_dict(), "traces_read": read, "status": verdict.get("status")})
        print(f"  run {i}: {measured.wall_s:.2f} s, {measured.peak_rss_mb:.0f} MB, exit {measured.exit_code}, "
              f"{read} traces read", file=sys.stderr, flush=True)  # fmt: skip
        if measured.exit_code not in (0, 1):
            print(tail(folder / f"score-{i}.err"), file=sys.stderr)

    if not runs:  # --runs 0: only the profile
        print(profile(folder, meta["session"]))
        return 0
    wall = median([r["wall_s"] for r in runs])
    rss = max(r["peak_rss_mb"] for r in runs)
    build = meta["build"]
    print(f"\n`gate {COMMAND[0]}` on one session of {meta['traces']} traces ({meta['cases']} cases × {meta['repeats']} "
          f"repeats × 2 versions); {machine()}\n")  # fmt: skip
    print("| what | median wall s (runs) | median CPU s | peak RSS MB | traces read / stored | exits | target |")
    print("|---|---|---:|---:|---|---|---|")
    walls = ", ".join(f"{r['wall_s']:.1f}" for r in runs)
    cpu = median([r["cpu_s"] for r in runs])
    print(
        f"| gate {COMMAND[0]} | {wall:.2f} ({walls}) | {cpu:.1f} | {rss:.0f} | "
        f"{runs[0]['traces_read']} / {meta['traces']} | "
        f"{', '.join(str(r['exit_code']) for r in runs)} | ≤ {TARGET_S:g} s: {'met' if wall <= TARGET_S else 'MISSED'}"
        f", ≤ {TARGET_MB:g} MB: {'met' if rss <= TARGET_MB else 'MISSED'} |"
    )
    print(
        f"| (building it: gate run, 0 ms model; {meta.get('built_with', '?')}) | {build['wall_s']:.1f} (1) | "
        f"{build.get('cpu_s', float('nan')):.1f} | {build['peak_rss_mb']:.0f} | – / {meta['traces']} | "
        f"{build['exit_code']} | – |"
    )
    summary = None
    if not args.no_profile:
        summary = profile(folder, meta["session"])
        print("\n" + summary)
    if args.json:
        write_json(args.json, {"machine": machine(), "session": meta, "runs": runs, "median_wall_s": wall,
                               "peak_rss_mb": rss, "profile": summary})  # fmt: skip
    return 0 if all(r["exit_code"] in (0, 1) and r["traces_read"] == meta["traces"] for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
