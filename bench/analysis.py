"""Stored-trace analysis: how long ``gate compare`` takes to re-read and decide 10,000 (and 100,000) stored traces.

Run from the repository root::

    .venv/bin/python bench/analysis.py [--store-dir DIR] [--runs 3] [--scale 1,10] [--mode selector|session]
                                       [--before REV] [--no-profile] [--cprofile] [--json PATH]

1. Build, once, a store with one gate session of ``--cases`` × ``--repeats`` × 2 versions traces (default
   500 × 10 × 2 = 10,000): ``gate run`` with fixed repeats against a 0 ms simulator in its own process, the
   traced app of bench/tools/traced_app.py. The store, config and session id are cached in ``--store-dir``
   (default: ``<tmp>/trace-gate-bench-analysis``) and reused while the trace count matches.
   ``--scale K`` (K > 1) derives, once, a store of K × as many traces in ``<store-dir>/x<K>/`` by copying every
   trace of the session K - 1 more times in SQL (new trace ids; ``gate.repeat`` shifted by ``repeats`` per copy,
   so that every copy is another repeat of the same cases; same timestamps, durations, tokens and spans).
2. Time the read ``--runs`` times per store: with ``--mode selector`` (the default)
   ``gate compare --baseline session=S --baseline max_traces=M --candidate session=S --candidate max_traces=M``
   (a selector: no shard check); ``--mode session``: ``gate compare --session S`` (or ``--command score``).
   Every trace is fetched (spans too), the metrics computed, compared, decided; the app is not called and no scorer
   is configured, so the store is only read. Reports median wall, median CPU and peak RSS (``os.wait4``) against
   the targets: ≤ 5 s and ≤ 300 MB at 10,000 traces. ``--before REV`` also times the gate as of REV (``git
   archive``), interleaved with the checkout run by run (the order alternating), for a before/after in one sitting.
3. Profile more runs (10,000-trace store, the checkout), with pyinstrument (``.venv/bin/pip install pyinstrument``;
   the main thread's call tree, wall time) and py-spy (every thread, on-CPU samples: by gate step, by code area, by
   function), each if it is installed; ``--cprofile`` adds a ``python -m cProfile`` run (top functions by
   cumulative and by own time). The full reports are written to the store dir.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import pstats
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from _common import (
    TOOLS,
    child_env,
    count_traces,
    export_gate,
    external_simulator,
    gate_description,
    machine,
    measure,
    median,
    tail,
    use_gate_commit,
    write_json,
)

TARGET_S, TARGET_MB = 5.0, 300.0  # at 10,000 traces (the target; it was 400 MB before)


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
        # inline: one process holds and writes the 10,000 traces; two workers' end-of-round writes of 5,000 each
        # outlast their flush deadline on a loaded 2-core machine, and the read-back then meets traces without spans
        "run": {"repeats": repeats, "max_repeats": repeats, "concurrency": 8, "warmup": False, "isolation": "inline"},
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


COMMAND = ["compare"]  # --command: `gate compare` (paged, spans as dicts) or `gate score --session`
MODE = ["selector"]  # --mode: select each version with a selector (session=S) or gather the session (--session S)
MAX_TRACES = [10_000]  # per version, for the selector: every trace of the store


def score_command(folder: Path, session: str, output: Path) -> list[str]:
    if COMMAND[0] == "compare" and MODE[0] == "selector":
        select = []
        for seat in ("--baseline", "--candidate"):
            select += [seat, f"session={session}", seat, f"max_traces={MAX_TRACES[0]}"]
        return ["gate", "compare", *select, "-c", str(folder / "thresholds.yaml"), "--tracking-uri", _uri(folder),
                "--output", str(output)]  # fmt: skip
    return ["gate", COMMAND[0], "--session", session, "-c", str(folder / "thresholds.yaml"), "--tracking-uri",
            _uri(folder), "--output", str(output)]  # fmt: skip


# Tables that hold a row per trace (or per span, tag, ...) keyed by its trace id, and that column's name.
_TRACE_TABLES = {"trace_tags": "request_id", "trace_request_metadata": "request_id", "spans": "trace_id"}


def scaled_store(base: Path, meta: dict, scale: int) -> tuple[Path, dict]:
    """The base store with every trace of its session copied ``scale - 1`` more times (cached in ``base/x<scale>``).

    Copy ``j`` of a trace gets a new id (``tr-`` + 32 hex digits from the old id and ``j``; the old id is replaced
    inside tag, metadata and span values too), and its ``gate.repeat`` tag is moved up by ``j × repeats``, so that
    the copies are further repeats of the same cases: pairing by case id keeps all of them.
    """
    if scale == 1:
        return base, meta
    folder = base / f"x{scale}"
    expected = meta["traces"] * scale
    meta_path = folder / "session.json"
    if meta_path.exists():
        cached = json.loads(meta_path.read_text())
        if cached.get("traces") == expected and count_traces(folder / "mlflow.db")["traces"] == expected:
            print(f"reusing the store in {folder} ({expected} traces)", file=sys.stderr)
            return folder, cached
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name in ("thresholds.yaml", "traced_app.py"):
        shutil.copy(base / name, folder / name)
    print(f"deriving a store of {expected} traces in {folder}...", file=sys.stderr, flush=True)
    shutil.copy(base / "mlflow.db", folder / "mlflow.db")
    with sqlite3.connect(folder / "mlflow.db") as conn:
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        ids = [row[0] for row in conn.execute(
            "SELECT request_id FROM trace_tags WHERE key = 'gate.session' AND value = ?", (meta["session"],)
        )]  # fmt: skip
        conn.execute("CREATE TEMP TABLE idmap (old TEXT NOT NULL, new TEXT PRIMARY KEY, copy INTEGER NOT NULL)")
        conn.execute("CREATE INDEX temp.idmap_old ON idmap (old)")
        conn.executemany(
            "INSERT INTO idmap VALUES (?, ?, ?)",
            [(old, "tr-" + hashlib.md5(f"{old}/{j}".encode()).hexdigest(), j) for j in range(1, scale) for old in ids],
        )

        def columns(table: str) -> list[str]:
            return [r[1] for r in conn.execute(f"PRAGMA table_xinfo({table})") if r[6] in (0, 1)]  # not generated

        info_cols = [c for c in columns("trace_info") if c != "request_id"]
        conn.execute(
            f"INSERT INTO trace_info (request_id, {', '.join(info_cols)}) "
            f"SELECT m.new, {', '.join('t.' + c for c in info_cols)} "
            "FROM trace_info t JOIN idmap m ON t.request_id = m.old"
        )
        for table, key in _TRACE_TABLES.items():
            cols = [c for c in columns(table) if c != key]
            values = []
            for c in cols:
                if table == "trace_tags" and c == "value":
                    values.append(
                        f"CASE WHEN t.key = 'gate.repeat' THEN CAST(CAST(t.value AS INTEGER) + m.copy * "
                        f"{int(meta['repeats'])} AS TEXT) ELSE replace(t.value, m.old, m.new) END"
                    )
                elif c in ("value", "content"):
                    values.append(f"replace(t.{c}, m.old, m.new)")
                else:
                    values.append(f"t.{c}")
            conn.execute(
                f"INSERT INTO {table} ({key}, {', '.join(cols)}) "
                f"SELECT m.new, {', '.join(values)} FROM {table} t JOIN idmap m ON t.{key} = m.old"
            )  # fmt: skip
        conn.commit()
    stored = count_traces(folder / "mlflow.db")
    if stored["traces"] != expected:
        raise SystemExit(f"deriving the x{scale} store gave {stored}, expected {expected} traces")
    derived = {**meta, "traces": expected, "repeats": meta["repeats"] * scale, "derived_from": str(base)}
    write_json(meta_path, derived)
    return folder, derived


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


def _cprofile(folder: Path, session: str, top: int = 25) -> str:
    """One run under ``python -m cProfile``: the top functions by cumulative time and by own time."""
    raw = folder / "profile.cprofile"
    cmd = [sys.executable, "-m", "cProfile", "-o", str(raw), "-m"]
    cmd += score_command(folder, session, folder / "profile-verdict.json")
    measured = measure(cmd, cwd=folder, env=child_env(None), log_prefix=folder / "cprofile")
    if measured.exit_code not in (0, 1) or not raw.exists():
        return f"cProfile run failed (exit {measured.exit_code}):\n{tail(folder / 'cprofile.err')}"
    out = []
    for order in ("cumulative", "tottime"):
        report = folder / f"profile-cprofile-{order}.txt"
        with open(report, "w", encoding="utf-8") as stream:
            pstats.Stats(str(raw), stream=stream).strip_dirs().sort_stats(order).print_stats(top)
        lines = report.read_text(encoding="utf-8").splitlines()
        first = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
        out += [f"cProfile, by {order} ({measured.wall_s:.1f} s wall under the profiler; {report}):", *lines[first:]]
    return "\n".join(out)


def _time_runs(stores: list[tuple[int, Path, dict]], gates: dict[str, str | None], runs: int) -> list[dict]:
    """Every (store, gate) ``runs`` times, interleaved: run i goes through the gates in an order that rotates."""
    results = []
    names = list(gates)
    for i in range(runs):
        for scale, folder, meta in stores:
            for name in names[i % len(names) :] + names[: i % len(names)]:
                MAX_TRACES[0] = meta["traces"]
                tag = name.split()[0]  # before / now
                output = folder / f"score-verdict-{tag}-{i}.json"
                output.unlink(missing_ok=True)
                cmd = [sys.executable, "-m", *score_command(folder, meta["session"], output)]
                env = child_env(None, gate_pythonpath=gates[name])
                measured = measure(cmd, cwd=folder, env=env, log_prefix=folder / f"score-{tag}-{i}")
                verdict = json.loads(output.read_text()) if output.exists() else {}
                read = sum(v.get("traces", 0) for v in (verdict.get("variants") or {}).values())
                metrics = verdict.get("metrics")
                results.append({**measured.as_dict(), "gate": name, "scale": scale, "traces": meta["traces"],
                                "traces_read": read, "status": verdict.get("status"), "metrics": metrics,
                                "load": os.getloadavg()[0]})  # fmt: skip
                print(f"  {meta['traces']} traces, {name}, run {i}: {measured.wall_s:.2f} s, {measured.cpu_s:.1f} s "
                      f"CPU, {measured.peak_rss_mb:.0f} MB, exit {measured.exit_code}, {read} traces read, load "
                      f"{os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)  # fmt: skip
                if measured.exit_code not in (0, 1):
                    print(tail(folder / f"score-{tag}-{i}.err"), file=sys.stderr)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store-dir", type=Path, default=Path(tempfile.gettempdir()) / "trace-gate-bench-analysis")
    parser.add_argument("--cases", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", default="1", help="comma-separated multiples of the built store to time (1,10)")
    parser.add_argument("--mode", choices=["selector", "session"], default="selector", help="how compare selects")
    parser.add_argument("--before", help="also time the gate as of this commit, interleaved with the checkout")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--cprofile", action="store_true", help="also profile one run with cProfile")
    parser.add_argument("--json", help="also write the results as JSON here")
    parser.add_argument(
        "--command", choices=["compare", "score"], default="compare", help="the command that re-reads the session"
    )
    parser.add_argument("--gate-commit", help="measure gate as of this commit (git archive) instead of the checkout")
    args = parser.parse_args()
    COMMAND[0], MODE[0] = args.command, args.mode
    now = use_gate_commit(args.gate_commit)
    print(f"gate under test: {now}", file=sys.stderr)
    gates: dict[str, str | None] = {}
    if args.before:
        before_path, before = export_gate(args.before)
        gates[f"before ({before})"] = before_path
    gates[f"now ({now})"] = None
    folder = args.store_dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    meta = build_store(folder, args.cases, args.repeats)
    scales = [int(k) for k in args.scale.split(",")]
    stores = [(k, *scaled_store(folder, meta, k)) for k in scales]

    runs = _time_runs(stores, gates, args.runs)
    summary = None
    if not runs:  # --runs 0: only the profile
        MAX_TRACES[0] = meta["traces"]
        print(profile(folder, meta["session"]))
        if args.cprofile:
            print(_cprofile(folder, meta["session"]))
        return 0
    load = [r["load"] for r in runs]
    print(f"\n`{' '.join(score_command(folder, 'S', Path('V'))[:2])}` ({MODE[0]}) on one session of "
          f"{meta['traces']} traces ({meta['cases']} cases × {meta['repeats']} repeats × 2 versions), and copies; "
          f"{machine()}; load average (1 min) {min(load):.1f}–{max(load):.1f} during the runs\n")  # fmt: skip
    print("| traces | gate | median wall s (runs) | median CPU s | peak RSS MB (median, max) | traces read | exits |"
          " target |")  # fmt: skip
    print("|---:|---|---|---:|---|---|---|---|")
    ok = True
    for scale, _, smeta in stores:
        for name in gates:
            mine = [r for r in runs if r["scale"] == scale and r["gate"] == name]
            wall, cpu = median([r["wall_s"] for r in mine]), median([r["cpu_s"] for r in mine])
            rss = [r["peak_rss_mb"] for r in mine]
            target = "–"
            if smeta["traces"] <= 10_000:
                target = (f"≤ {TARGET_S:g} s: {'met' if wall <= TARGET_S else 'MISSED'}, ≤ {TARGET_MB:g} MB: "
                          f"{'met' if max(rss) <= TARGET_MB else 'MISSED'}")  # fmt: skip
            walls = ", ".join(f"{r['wall_s']:.1f}" for r in mine)
            print(f"| {smeta['traces']} | {name} | {wall:.2f} ({walls}) | {cpu:.1f} | "
                  f"{median(rss):.0f}, {max(rss):.0f} | "
                  f"{', '.join(sorted({str(r['traces_read']) for r in mine}))} / {smeta['traces']} | "
                  f"{', '.join(str(r['exit_code']) for r in mine)} | {target} |")  # fmt: skip
            ok = ok and all(r["exit_code"] in (0, 1) and r["traces_read"] == smeta["traces"] for r in mine)
        same = {json.dumps(r["metrics"], sort_keys=True) for r in runs if r["scale"] == scale}
        if len(same) > 1:
            print(f"\nWARNING: the verdicts' metrics differ between runs at {smeta['traces']} traces", file=sys.stderr)
            ok = False
    build = meta["build"]
    print(
        f"\nBuilding the {meta['traces']}-trace store: gate run, 0 ms model ({meta.get('built_with', '?')}): "
        f"{build['wall_s']:.1f} s wall, {build.get('cpu_s', float('nan')):.1f} s CPU, {build['peak_rss_mb']:.0f} MB"
    )
    if not args.no_profile:
        MAX_TRACES[0] = meta["traces"]
        summary = profile(folder, meta["session"])
        if args.cprofile:
            summary += "\n" + _cprofile(folder, meta["session"])
        print("\n" + summary)
    if args.json:
        write_json(args.json, {"machine": machine(), "session": meta, "runs": runs, "profile": summary})
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
