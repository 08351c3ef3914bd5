"""Measurement fidelity: how much does the gate itself distort the latency it measures?

Run from the repository root::

    .venv/bin/python bench/fidelity.py                                   # the gate of this checkout's venv
    .venv/bin/python bench/fidelity.py --gate /tmp/fid-venv/bin/gate      # a gate installed elsewhere
    .venv/bin/python bench/fidelity.py --gate-commit HEAD~3               # gate/ as of a commit (git archive)
    .venv/bin/python bench/fidelity.py --tools bare,gate,gate-inline,gate-before --before 4c755fb   # side by side

A fake OpenAI-compatible model server of our own (stdlib ``ThreadingHTTPServer``, TCP_NODELAY, a listen backlog
of 256, HTTP/1.1 keep-alive) answers every chat completion in exactly ``--latency-ms`` with a fixed
``chat.completion`` JSON that carries ``usage``. It runs in a process of its own, so no measured process shares its
GIL with the server. Per concurrency C (``--concurrency``, default 8 and 16) the benchmark measures, each as a
separate process:

- ``bare``: the real ``openai`` SDK, ``--cases`` calls, C threads in flight (``ThreadPoolExecutor``), one warm-up
  call first, each call timed with ``time.perf_counter`` — the floor;
- ``gate``: ``gate run`` on a generated config: ``--cases`` inline cases, baseline and candidate both the same
  traced function (bench/tools/fixed_latency_app.py: ``@mlflow.trace`` around one chat call), ``run:
  {concurrency: C, repeats: 1, max_repeats: 1, warmup: true}`` (the gate's other defaults, autolog included),
  loose ``latency_ms/p50`` and ``latency_ms/p95`` checks. Each version's p50/p95 are read from the JSON verdict on
  stdout (``metrics``); latency_ms is the trace's root span duration as MLflow records it. C is the gate's total
  in flight (both versions' calls are interleaved), i.e. the same load on the server as ``bare``;
- ``gate-inline``: the same gate and config with ``run: {isolation: inline}`` (both versions called from threads in
  the gate's own process, no worker processes);
- ``gate-before``: the same config run by gate/ as of ``--before REV`` (exported with ``git archive`` and put first
  on that child's ``PYTHONPATH`` only, with the same Python), so the gate under test and an older gate are measured
  in one sitting, interleaved per repetition;
- ``worker-async`` (``--worker async``; the idea of the worker processes): the same traced app in a plain Python
  process of its own with MLflow tracing to a SQLite store (``mlflow.openai.autolog()`` as the gate does, MLflow's
  async exporter as the gate's fallback writer), ``--cases`` calls, C threads in flight; the latencies are the stored
  traces' durations.
  ``--worker async,asyncx2,sync,noautolog,notrace``: ``x2`` starts two such processes at once with C/2 in flight
  each (one per version, as the fix would); ``sync`` exports in the calling thread, ``noautolog`` leaves out the
  OpenAI autolog span, ``notrace`` disables tracing (perf_counter latencies), to tell the costs apart.

Within a repetition the tools run one after the other, the starting tool rotating with the repetition, so machine
noise hits all. The table gives, per concurrency and tool, the median over ``--reps`` repetitions of p50 and p95
and of their ratio to ``bare``'s p50/p95 in the same repetition. Progress goes to stderr, the Markdown to stdout.
The children (bare client, worker, gate) all run on the Python of the gate under test (the interpreter next to
``--gate``), so they use the same ``openai`` and ``mlflow``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

BENCH = Path(__file__).resolve().parent
GATE_TOOLS = ("gate", "gate-inline", "gate-before", "gate-noautolog", "gate-mlflowwriter")
APP = BENCH / "tools" / "fixed_latency_app.py"

# The same request as fixed_latency_app.answer, sent untraced by the bare client (which must not import mlflow).
SYSTEM = "Answer briefly."
REQUEST = {"model": "gpt-4o-mini", "temperature": 0.3, "max_tokens": 60}
API_KEY = "sk-bench-not-a-real-key"


def question(i: int) -> str:
    return f"Question {i}: where is my order number {i}, and when will it arrive?"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between ranks (numpy's default, as the gate computes)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# ---------------------------------------------------------------------------------------------------------------
# Child roles: `fidelity.py _serve|_bare|_worker ...`. Stdlib only at import time; they may run on another Python.


def role_serve(latency_ms: float) -> int:
    """The fake model: every POST answers after exactly latency_ms with a fixed chat.completion."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = json.dumps(
        {
            "id": "chatcmpl-fidelity",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Your order ships tomorrow and arrives in 3 days."},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 31, "completion_tokens": 12, "total_tokens": 43},
        }
    ).encode()
    delay = latency_ms / 1000

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real provider
        disable_nagle_algorithm = True  # TCP_NODELAY on every accepted connection

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(delay)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256  # the default 5 can drop SYNs when 16 clients connect at once

    server = Server(("127.0.0.1", 0), Handler)
    server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"http://127.0.0.1:{server.server_address[1]}/v1", flush=True)
    sys.stdin.read()  # serve until the harness closes our stdin
    server.shutdown()
    return 0


def role_bare(calls: int, concurrency: int) -> int:
    """The floor: the bare OpenAI SDK, `concurrency` threads in flight; per-call perf_counter latencies as JSON."""
    from concurrent.futures import ThreadPoolExecutor

    import openai

    client = openai.OpenAI(max_retries=0)  # OPENAI_BASE_URL / OPENAI_API_KEY from the environment

    def one(i: int) -> float:
        started = time.perf_counter()
        client.chat.completions.create(
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question(i)}], **REQUEST
        )
        return (time.perf_counter() - started) * 1000

    one(-1)  # warm-up, as the gate's `warmup: true`
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        latencies = list(pool.map(one, range(calls)))
    print(json.dumps({"latency_ms": latencies}))
    return 0


def role_worker(calls: int, concurrency: int, tracking_uri: str, tracing: bool, autolog: bool) -> int:
    """The fix idea: the traced app in a plain process of its own, tracing to a store; latencies from the traces."""
    from concurrent.futures import ThreadPoolExecutor

    import mlflow

    sys.path.insert(0, str(Path(APP).parent))
    import fixed_latency_app

    mlflow.set_tracking_uri(tracking_uri)
    experiment_id = mlflow.set_experiment("fidelity-worker").experiment_id
    if autolog:
        mlflow.openai.autolog()
    if not tracing:
        mlflow.tracing.disable()

    def one(i: int) -> float:
        started = time.perf_counter()
        fixed_latency_app.answer(question(i))
        return (time.perf_counter() - started) * 1000

    one(-1)  # warm-up
    warmup_id = mlflow.get_last_active_trace_id() if tracing else None
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        wall = list(pool.map(one, range(calls)))
    out: dict[str, object] = {"wall_ms": wall}
    if tracing:
        mlflow.flush_trace_async_logging()
        traces = mlflow.search_traces(experiment_ids=[experiment_id], return_type="list", max_results=calls + 10)
        out["latency_ms"] = [float(t.info.execution_duration) for t in traces if t.info.trace_id != warmup_id]
    else:
        out["latency_ms"] = wall
    print(json.dumps(out))
    return 0


# ---------------------------------------------------------------------------------------------------------------
# The harness.


@contextmanager
def fake_server(python: str, latency_ms: float):
    proc = subprocess.Popen(
        [python, str(Path(__file__).resolve()), "_serve", str(latency_ms)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"the fake server did not start (exit {proc.poll()})")
        yield url
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Gate:
    """Which gate runs, and on which Python the other children run."""

    def __init__(self, gate: str | None, commit: str | None, before: str | None = None) -> None:
        from _common import child_env, export_gate, use_gate_commit

        self.child_env = child_env
        self.before_path: str | None = None
        self.before_description = ""
        if before is not None:
            self.before_path, self.before_description = export_gate(before)
        if commit is not None:
            self.description = use_gate_commit(commit)
            self.python = sys.executable
            self.cmd = [sys.executable, "-m", "gate"]
            return
        exe = Path(gate) if gate else Path(sys.executable).parent / "gate"
        if not exe.exists():
            raise SystemExit(f"no gate executable at {exe}; give --gate PATH")
        exe = exe.absolute()  # not resolve(): the venv's bin/python is a symlink to the base interpreter
        python = exe.parent / "python"
        self.python = str(python) if python.exists() else sys.executable
        self.cmd = [str(exe)]
        where = subprocess.run(
            [self.python, "-c", "import gate, os; print(os.path.dirname(os.path.abspath(gate.__file__)))"],
            capture_output=True,
            text=True,
            check=True,
            cwd="/",  # not ours: with -c the current folder comes first on sys.path
            env=self.child_env(None),
        ).stdout.strip()
        git = ["git", "-C", where]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "."], capture_output=True, text=True).stdout
        self.description = f"{exe} (gate/ at {where}, commit {head or '?'}{', uncommitted changes' if dirty else ''})"

    def env(self, base_url: str, extra: dict[str, str] | None = None, before: bool = False) -> dict[str, str]:
        env = self.child_env(base_url, extra, self.before_path if before else None)
        env["OPENAI_API_KEY"] = API_KEY
        return env

    def before_cmd(self) -> list[str]:
        """`gate` as of --before: this Python, `-m gate`, the export first on PYTHONPATH (see env(before=True))."""
        return [self.python, "-m", "gate"]

    def check_before(self) -> str:
        """Where the gate-before child imports gate from (it must be the export, not the checkout)."""
        assert self.before_path is not None
        where = subprocess.run(
            [self.python, "-c", "import gate, os; print(os.path.dirname(os.path.abspath(gate.__file__)))"],
            capture_output=True,
            text=True,
            check=True,
            cwd="/",
            env=self.child_env(None, None, self.before_path),
        ).stdout.strip()
        if not where.startswith(self.before_path):
            raise SystemExit(f"gate-before imports gate from {where}, not from the export {self.before_path}")
        return where


def config_name(concurrency: int, tool: str) -> str:
    suffix = {"gate-noautolog": "-noautolog", "gate-inline": "-inline"}.get(tool, "")
    return f"thresholds-c{concurrency}{suffix}.yaml"


def write_config(folder: Path, cases: int, concurrency: int, tool: str = "gate") -> Path:
    config = {
        "version": 1,
        "experiment": "bench-fidelity",
        "cases": [{"id": f"c{i}", "inputs": {"question": question(i)}} for i in range(cases)],
        "baseline": {"target": "fixed_latency_app:answer", "label": "a"},
        "candidate": {"target": "fixed_latency_app:answer", "label": "a-again"},
        "run": {
            "concurrency": concurrency,
            "repeats": 1,
            "max_repeats": 1,
            "warmup": True,
            "autolog": tool != "gate-noautolog",
            # only gate-inline names isolation: older gates (gate-before) reject the key
            **({"isolation": "inline"} if tool == "gate-inline" else {}),
        },
        "checks": [
            {"metric": "latency_ms/p50", "max_increase_pct": 1000},
            {"metric": "latency_ms/p95", "max_increase_pct": 1000},
        ],
    }
    path = folder / config_name(concurrency, tool)
    path.write_text(json.dumps(config, indent=1), encoding="utf-8")  # JSON is YAML
    return path


def run_child(cmd: list[str], cwd: Path, env: dict[str, str], log: Path, timeout_s: float) -> tuple[int, str, float]:
    started = time.perf_counter()
    with open(log, "wb") as err:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err, timeout=timeout_s)
    return proc.returncode, proc.stdout.decode(errors="replace"), time.perf_counter() - started


def stats(latencies: list[float]) -> dict[str, float]:
    return {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95), "n": len(latencies)}


def run_tool(tool: str, concurrency: int, rep: int, args: argparse.Namespace, gate: Gate, work: Path, url: str) -> dict:
    run_dir = work / f"{tool}-c{concurrency}-r{rep}"
    run_dir.mkdir()
    me = str(Path(__file__).resolve())
    record: dict = {"tool": tool, "concurrency": concurrency, "rep": rep}
    if tool == "bare":
        rc, out, wall = run_child(
            [gate.python, me, "_bare", str(args.cases), str(concurrency)],
            run_dir,
            gate.env(url),
            run_dir / "log.err",
            args.timeout,
        )
        record.update(stats(json.loads(out)["latency_ms"]) if rc == 0 else {})
    elif tool in GATE_TOOLS:
        config = work / config_name(concurrency, tool)
        cmd = [*(gate.before_cmd() if tool == "gate-before" else gate.cmd), "run", "-c", str(config)]
        cmd += ["--tracking-uri", f"sqlite:///{run_dir / 'mlflow.db'}", "--no-progress"]
        extra = {"GATE_TRACE_WRITER": "mlflow"} if tool == "gate-mlflowwriter" else None
        env = gate.env(url, extra, before=tool == "gate-before")
        rc, out, wall = run_child(cmd, run_dir, env, run_dir / "log.err", args.timeout)
        try:
            verdict = json.loads(out) if rc in (0, 1) else None
        except ValueError:
            verdict = None
        if verdict is not None:
            for variant in ("baseline", "candidate"):
                m = verdict["metrics"][variant]
                record[variant] = {"p50": m["latency_ms/p50"], "p95": m["latency_ms/p95"]}
                record[variant]["n"] = verdict["variants"][variant]["traces"]
            record["p50"] = (record["baseline"]["p50"] + record["candidate"]["p50"]) / 2
            record["p95"] = (record["baseline"]["p95"] + record["candidate"]["p95"]) / 2
            record["n"] = record["baseline"]["n"] + record["candidate"]["n"]
            record["writer"] = verdict.get("mlflow", {}).get("trace_writer")
    elif tool.startswith("worker-"):
        mode, _, times = tool.removeprefix("worker-").partition("x")
        split = int(times or 1)
        env = gate.env(url, {"MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "true" if mode == "async" else "false"})
        started = time.perf_counter()
        procs = []
        for k in range(split):
            cmd = [gate.python, me, "_worker", str(args.cases), str(concurrency // split)]
            tracing = "off" if mode == "notrace" else "on"
            cmd += [f"sqlite:///{run_dir / f'mlflow-{k}.db'}", tracing, "off" if mode == "noautolog" else "on"]
            err = open(run_dir / f"log-{k}.err", "wb")
            procs.append((subprocess.Popen(cmd, cwd=run_dir, env=env, stdout=subprocess.PIPE, stderr=err), err))
        latencies, rcs = [], []
        for proc, err in procs:
            out, _ = proc.communicate(timeout=args.timeout)
            err.close()
            rcs.append(proc.returncode)
            if proc.returncode == 0:
                latencies += json.loads(out)["latency_ms"]
        rc, wall = max(rcs), time.perf_counter() - started
        record.update(stats(latencies) if rc == 0 else {})
    else:
        raise ValueError(tool)
    record.update(exit_code=rc, wall_s=round(wall, 2))
    if "p50" not in record:
        print(f"  ! {tool} c{concurrency} exited {rc}; logs in {run_dir}", file=sys.stderr)
    else:
        each = ""
        if tool in GATE_TOOLS:
            each = (
                " ("
                + ", ".join(f"{v} {record[v]['p50']:.1f}/{record[v]['p95']:.1f}" for v in ("baseline", "candidate"))
                + ")"
            )
        print(
            f"  rep {rep} c{concurrency:<3} {tool:16} p50 {record['p50']:7.1f} ms  p95 {record['p95']:7.1f} ms{each}"
            f"  n={record['n']}  wall {wall:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    return record


def median(values: list[float]) -> float:
    values = sorted(v for v in values if v == v)
    if not values:
        return math.nan
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def summarize(runs: list[dict], tools: list[str], concurrencies: list[int]) -> list[dict]:
    rows = []
    for c in concurrencies:
        bare = {r["rep"]: r for r in runs if r["tool"] == "bare" and r["concurrency"] == c and "p50" in r}
        for tool in tools:
            mine = [r for r in runs if r["tool"] == tool and r["concurrency"] == c and "p50" in r]
            row: dict = {"tool": tool, "concurrency": c, "reps": len(mine)}
            for q in ("p50", "p95"):
                row[q] = median([r[q] for r in mine])
                row[f"{q}_ratio"] = median([r[q] / bare[r["rep"]][q] for r in mine if r["rep"] in bare])
                if tool in GATE_TOOLS:
                    for v in ("baseline", "candidate"):
                        row[f"{v}_{q}"] = median([r[v][q] for r in mine])
                        row[f"{v}_{q}_ratio"] = median([r[v][q] / bare[r["rep"]][q] for r in mine if r["rep"] in bare])
            row["per_rep"] = [(r["p50"], r["p95"]) for r in mine]
            rows.append(row)
    return rows


def pct(ratio: float) -> str:
    return "–" if ratio != ratio else f"{ratio:.3f} ({(ratio - 1) * 100:+.1f}%)"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| C | tool | p50 ms | p95 ms | p50 / bare | p95 / bare | per rep p50/p95 |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        per_rep = ", ".join(f"{a:.0f}/{b:.0f}" for a, b in r["per_rep"])
        lines.append(
            f"| {r['concurrency']} | {r['tool']} (mean of versions) | {r['p50']:.1f} | {r['p95']:.1f} "
            f"| {pct(r['p50_ratio'])} "
            f"| {pct(r['p95_ratio'])} | {per_rep} |"
            if r["tool"] in GATE_TOOLS
            else f"| {r['concurrency']} | {r['tool']} | {r['p50']:.1f} | {r['p95']:.1f} | {pct(r['p50_ratio'])} "
            f"| {pct(r['p95_ratio'])} | {per_rep} |"
        )
        if r["tool"] in GATE_TOOLS:
            for v in ("baseline", "candidate"):
                lines.append(
                    f"| {r['concurrency']} | {r['tool']} {v} | {r[f'{v}_p50']:.1f} | {r[f'{v}_p95']:.1f} "
                    f"| {pct(r[f'{v}_p50_ratio'])} | {pct(r[f'{v}_p95_ratio'])} | |"
                )
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):  # a child role
        role, rest = sys.argv[1], sys.argv[2:]
        if role == "_serve":
            return role_serve(float(rest[0]))
        if role == "_bare":
            return role_bare(int(rest[0]), int(rest[1]))
        if role == "_worker":
            return role_worker(int(rest[0]), int(rest[1]), rest[2], rest[3] == "on", rest[4] == "on")
        raise SystemExit(f"unknown role {role}")

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200, help="calls per version (gate: cases × 1 repeat)")
    parser.add_argument("--concurrency", default="8,16", help="calls in flight, comma-separated")
    parser.add_argument("--reps", type=int, default=3, help="repetitions K; medians over them")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="the fake server's answer time")
    parser.add_argument("--gate", help="the gate executable (default: `gate` next to this Python)")
    parser.add_argument("--gate-commit", help="instead: gate/ as of this commit (git archive), run with this Python")
    parser.add_argument(
        "--tools",
        default="bare,gate",
        help="bare, gate, gate-inline (run.isolation: inline), gate-before (the gate as of --before), and for "
        "diagnosis gate-noautolog (run.autolog: false) and gate-mlflowwriter "
        "(GATE_TRACE_WRITER=mlflow: MLflow's async exporter instead of the gate's buffered writer)",
    )
    parser.add_argument("--before", help="the commit whose gate/ the gate-before tool runs (git archive), e.g. 4c755fb")
    parser.add_argument(
        "--worker",
        default="",
        help="also run the traced app in worker processes; comma-separated modes: async (MLflow's async exporter), "
        "sync (exported in the calling thread), noautolog (async, no mlflow.openai.autolog), notrace (tracing "
        "disabled, perf_counter latencies); a suffix xK (asyncx2) runs K processes at once, C/K in flight each",
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds per child")
    parser.add_argument("--json", help="also write the table and every run as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (stores, logs) and print it")
    args = parser.parse_args()
    sys.path.insert(0, str(BENCH))
    concurrencies = [int(x) for x in args.concurrency.split(",")]
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if ("gate-before" in tools) != (args.before is not None):
        parser.error("the gate-before tool and --before REV go together")
    gate = Gate(args.gate, args.gate_commit, args.before)
    print(f"gate under test: {gate.description}; children on {gate.python}", file=sys.stderr)
    if args.before is not None:
        print(f"gate-before: {gate.before_description}, imported from {gate.check_before()}", file=sys.stderr)
    if bad := [t for t in tools if t not in ("bare", *GATE_TOOLS)]:
        parser.error(f"unknown tools: {', '.join(bad)}")
    if "bare" not in tools:
        parser.error("the ratios need 'bare' among --tools")
    n_plain = len(tools)
    tools += [f"worker-{m.strip().replace(' ', '')}" for m in args.worker.split(",") if m.strip()]
    for tool in tools[n_plain:]:
        mode, _, times = tool.removeprefix("worker-").partition("x")
        if mode not in ("async", "sync", "noautolog", "notrace") or not (times or "1").isdigit():
            parser.error(f"unknown worker mode {tool.removeprefix('worker-')!r}")

    work = Path(tempfile.mkdtemp(prefix="gate-fidelity-"))
    shutil.copy(APP, work / APP.name)
    for c in concurrencies:
        for tool in ("gate", "gate-noautolog", "gate-inline"):
            write_config(work, args.cases, c, tool)
    runs: list[dict] = []
    started = time.perf_counter()
    try:
        with fake_server(gate.python, args.latency_ms) as url:
            print(f"fake server at {url}, {args.latency_ms:g} ms per answer", file=sys.stderr)
            for rep in range(args.reps):
                order = tools[rep % len(tools) :] + tools[: rep % len(tools)]
                for c in concurrencies:
                    for tool in order:
                        runs.append(run_tool(tool, c, rep, args, gate, work, url))
    finally:
        if args.keep:
            print(f"work folder: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    rows = summarize(runs, tools, concurrencies)
    print(f"total {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print(
        f"{args.cases} calls per version, {args.latency_ms:g} ms fake model, medians over {args.reps} repetitions; "
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
        f"gate: {gate.description}" + (f"; gate-before: {gate.before_description}" if args.before else "") + "\n"
    )
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows, "runs": runs}, indent=1) + "\n")
    return 0 if all("p50" in r for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
