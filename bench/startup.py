"""How long the fast commands take: ``gate validate`` and ``gate run --dry-run`` on the example config.

Runs the working tree's gate and the gate of ``--before REV`` (exported with ``git archive``, first on the children's
``PYTHONPATH``) alternately, ``--runs`` times each, and prints the medians of wall and CPU time (user + system).
Neither command may import MLflow, numpy or the app; this is where a change that does would show.

    .venv/bin/python bench/startup.py --before 4c755fb [--runs 15]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, child_env, machine, measure, median

COMMANDS = {"validate": ["validate"], "dry-run": ["run", "--dry-run", "--no-progress"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the commit to compare with")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    before = Path(tempfile.mkdtemp(prefix="gate-before-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "gate"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
    # Safe path: `-m gate` would put the checkout (the working directory) before PYTHONPATH, and both would run it.
    gates = {"before": {"PYTHONPATH": str(before), "PYTHONSAFEPATH": "1"}, "now": {"PYTHONSAFEPATH": "1"}}
    logs = Path(tempfile.mkdtemp(prefix="gate-startup-"))
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for run in range(args.runs):
        for name, cmd in COMMANDS.items():
            for gate, extra in (gates.items() if run % 2 == 0 else reversed(gates.items())):
                env = child_env(None, extra)
                done = measure([sys.executable, "-m", "gate", *cmd], cwd=ROOT, env=env, log_prefix=logs / "x")
                if done.exit_code != 0:
                    raise SystemExit(f"{gate} {name} exited {done.exit_code}: {(logs / 'x.err').read_text()}")
                results.setdefault((name, gate), []).append((done.wall_s, done.cpu_s))
        print(f"run {run + 1}/{args.runs}", file=sys.stderr)
    print(f"{machine()}; before = {args.before}, now = the working tree; {args.runs} runs each, alternating\n")
    print("| command | gate | median wall s | median CPU s |\n|---|---|---:|---:|")
    for (name, gate), values in results.items():
        wall, cpu = median([w for w, _ in values]), median([c for _, c in values])
        print(f"| `gate {' '.join(COMMANDS[name])}` | {gate} | {wall:.3f} | {cpu:.3f} |")


if __name__ == "__main__":
    main()
