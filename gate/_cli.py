"""The ``gate`` command line; ``main`` is the one place that decides the exit code.

Exit codes (public API): 0 pass (warnings allowed), 1 a check with severity error failed,
2 usage or config error, 3 run error (infrastructure failure, missing data, trace count mismatch),
130 interrupted (143 on SIGTERM). Whatever happens, ``gate run`` writes a parseable verdict to stdout and ``--output``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

from gate._errors import ConfigError, GateError, Interrupted, Terminated
from gate._version import __version__

# Each command imports what it needs when it runs: `gate --help` and `gate --version` build no pydantic models.
if TYPE_CHECKING:
    from gate._commands.plan import RunOptions
    from gate._verdict.schema import Verdict

__all__ = ["entry", "main"]


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        command = self.prog if self.prog != "gate" else " ".join(["gate", *_command_in_argv()])
        raise ConfigError(f"usage: {message} (see '{command} --help')")


def _command_in_argv() -> list[str]:
    """The subcommand on the command line, for a message of the top-level parser (which reports unknown flags)."""
    known = ("run", "compare", "validate", "score", "calibrate", "cases", "schema")
    return [a for a in sys.argv[1:] if a in known][:1]


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gate", description="A CI quality gate for LLM apps, from MLflow traces.")
    parser.add_argument("--version", action="version", version=f"gate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run baseline and candidate, compare, print the verdict")
    run.add_argument("-c", "--config", type=Path, default=Path("thresholds.yaml"), help="default: thresholds.yaml")
    run.add_argument("--output", type=Path, help="also write the verdict JSON here (atomically)")
    run.add_argument("--report-only", action="store_true", help="exit 0 when checks fail; never hides exit 2 or 3")
    run.add_argument(
        "--dry-run", action="store_true", help="validate, locate the targets (no import), print the plan; call nothing"
    )
    run.add_argument(
        "--simulate", action="store_true", help="serve the app from the built-in OpenAI-compatible simulator"
    )
    run.add_argument("--tracking-uri", help="MLflow tracking URI (wins over MLFLOW_TRACKING_URI and the config)")
    run.add_argument(
        "--report",
        action="append",
        default=[],
        metavar="FORMAT[:PATH]",
        help="also render the verdict: markdown, junit, github, html or json; to PATH, else to stderr (repeatable)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    run.add_argument("--session", help="use this session id (shards of one gate share it; default: generated)")
    run.add_argument(
        "--shard",
        metavar="I/N",
        help="run the I-th of N slices of the cases (needs --session); a shard never fails on checks: "
        "gate compare --session gathers the shards and decides",
    )
    run.add_argument(
        "--baseline-ref",
        metavar="REV",
        help="run the baseline's code as of git revision REV (e.g. origin/main, HEAD~1); the candidate is the working "
        "tree (wins over the config's baseline.ref)",
    )
    run.add_argument(
        "--baseline-from",
        metavar="SESSION|RUN_ID",
        help="reuse that earlier session's baseline traces (if its fingerprint matches) and run only the candidate",
    )

    compare = commands.add_parser(
        "compare", help="compare two versions from traces already in a store (or gather a sharded session)"
    )
    compare.add_argument("-c", "--config", type=Path, default=Path("thresholds.yaml"))
    compare.add_argument("--session", help="gather this gate session (all its shards) instead of selectors")
    for variant in ("baseline", "candidate"):
        compare.add_argument(
            f"--{variant}",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"select the {variant}'s traces: trace_name=, run_id=, model_id=, session=, tag.K=, metadata.K=, "
            "since=, until=, max_traces=, experiment= (repeatable; replaces the config's traces:)",
        )
    compare.add_argument("--since", help="a time window for both versions: 30m, 1h, 2d, or an ISO 8601 timestamp")
    compare.add_argument("--pair-by", choices=["auto", "case_id", "inputs", "none"], help="default: the config's")
    _stored_trace_options(compare)

    validate = commands.add_parser("validate", help="check the config, the dataset and the targets")
    validate.add_argument("-c", "--config", type=Path, default=Path("thresholds.yaml"))
    validate.add_argument(
        "--import",
        dest="import_targets",
        action="store_true",
        help="import the targets (runs the app's import-time code) instead of only finding them in their source",
    )

    score = commands.add_parser("score", help="re-score the traces of an earlier session; the app is not called")
    score.add_argument("--session", required=True, help="the session id (the verdict's mlflow.session)")
    score.add_argument("-c", "--config", type=Path, default=Path("thresholds.yaml"))
    _stored_trace_options(score)

    calibrate = commands.add_parser("calibrate", help="run the baseline against itself; propose bounds from the noise")
    calibrate.add_argument("-c", "--config", type=Path, default=Path("thresholds.yaml"))
    calibrate.add_argument("--rounds", type=int, default=3, help="A/A rounds (default 3)")
    calibrate.add_argument("--simulate", action="store_true", help="serve the app from the built-in simulator")
    calibrate.add_argument("--tracking-uri", help="MLflow tracking URI")

    cases = commands.add_parser("cases", help="work with the cases a config reads")
    cases_commands = cases.add_subparsers(dest="cases_command", required=True, parser_class=_Parser)
    export = cases_commands.add_parser(
        "export", help="freeze the config's cases (e.g. sampled traces) into a JSONL file or an MLflow dataset"
    )
    export.add_argument("-c", "--config", type=Path, default=Path("thresholds.yaml"))
    export.add_argument("--to", required=True, metavar="FILE.jsonl|mlflow:NAME", help="where to write them")
    export.add_argument("--tracking-uri", help="MLflow tracking URI")

    commands.add_parser("schema", help="print the JSON Schema of the verdict")
    return parser


def _stored_trace_options(command: argparse.ArgumentParser) -> None:
    """The options of the commands that decide over stored traces (score, compare): the app is not called."""
    command.add_argument("--output", type=Path, help="also write the verdict JSON here (atomically)")
    command.add_argument("--report-only", action="store_true", help="exit 0 when checks fail")
    command.add_argument("--simulate", action="store_true", help="serve judges from the built-in simulator")
    command.add_argument("--tracking-uri", help="MLflow tracking URI")
    command.add_argument("--report", action="append", default=[], metavar="FORMAT[:PATH]", help="as for gate run")
    command.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)


def _error_verdict(error: str, exit_code: int, reason: str, config: Path | None) -> Verdict:
    from gate._secrets import redact
    from gate._verdict.schema import Verdict

    return Verdict(
        status="error",
        exit_code=exit_code,
        reason=reason,
        error=redact(error),
        gate_version=__version__,
        config=str(config) if config else None,
    )


def _parse_reports(specs: list[str]) -> list[tuple[str, Path | None]]:
    if not specs:
        return []
    from gate.reporters import REPORTERS

    reports = []
    for spec in specs:
        name, _, path = spec.partition(":")
        if name not in REPORTERS:
            raise ConfigError(f"usage: --report {spec}: unknown format '{name}'; known: {', '.join(sorted(REPORTERS))}")
        reports.append((name, Path(path) if path else None))
    return reports


def _emit(
    verdict: Verdict, stdout: TextIO | None, output: Path | None, reports: list[tuple[str, Path | None]] | None = None
) -> int:
    """Deliver the verdict: ``--output``, the reports, then stdout; return the exit code.

    A verdict that cannot be written to ``--output`` (the file CI reads) turns a pass or fail into exit 3, said on
    stderr and in the verdict on stdout; a report that cannot be written is a warning (the verdict itself arrived);
    a closed stdout (``gate run >&-``) is a warning. None of them ever becomes exit 1.
    """
    from gate._verdict.schema import render_json, write_verdict
    from gate.reporters import REPORTERS

    rendered = render_json(verdict)  # once: indented JSON is Python's slow encoder (~0.3 s for 10,000 traces)
    if output is not None:
        try:
            write_verdict(verdict, output, rendered)
        except OSError as exc:
            problem = f"cannot write the verdict to --output {output}: {_why(exc, output)}"
            print(f"gate: error: {problem}", file=sys.stderr)
            if verdict.exit_code in (0, 1):
                verdict = verdict.model_copy(update={"status": "error", "exit_code": 3, "reason": "output"})
                verdict = verdict.model_copy(update={"error": problem})
                rendered = render_json(verdict)
    for name, path in reports or []:
        text = REPORTERS[name](verdict)
        if path is None:
            sys.stderr.write(text)
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            print(f"gate: warning: cannot write the {name} report to {path}: {_why(exc, path)}", file=sys.stderr)
    try:
        if stdout is None:
            raise OSError("stdout is closed")
        stdout.write(rendered)
        stdout.flush()
    except (OSError, ValueError) as exc:
        where = "--output only" if output is not None and verdict.reason != "output" else "nowhere but the exit code"
        print(f"gate: warning: cannot write the verdict to stdout ({exc}); it went to {where}", file=sys.stderr)
    return verdict.exit_code


def _why(exc: OSError, path: Path) -> str:
    """Why a file could not be written, in words (mkdir on a path through a file says only "File exists")."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        blocking = next((p for p in path.parents if p.is_file()), None)
        if blocking is not None:
            return f"{blocking} is a file, not a folder"
    return exc.strerror or str(exc)


def _print_error(exc: GateError) -> None:
    lines = exc.problems if isinstance(exc, ConfigError) else str(exc).splitlines() or [""]
    for line in lines:
        print(f"{type(exc).__name__}: {line}", file=sys.stderr)


def _claim_stdout() -> TextIO | None:
    """Keep file descriptor 1 for the verdict: the app's writes below ``sys.stdout`` (``os.write(1, ...)``,
    C extensions, child processes) go to stderr instead. Returns the stream to write the verdict to (None when
    stdout is closed: ``gate run >&-``)."""
    stdout: TextIO | None = sys.stdout
    if stdout is None:
        return None
    if id(stdout) != id(sys.__stdout__):  # stdout was replaced (pytest capture, an embedding app): leave fds alone
        return stdout
    try:
        stdout.flush()
        verdict_fd = os.dup(1)
        os.dup2(2, 1)
    except OSError:
        return stdout
    return os.fdopen(verdict_fd, "w", encoding="utf-8")


def _run(args: argparse.Namespace) -> int:
    """``gate run``, ``compare`` and ``score``: a verdict on stdout (and ``--output``) whatever happens."""
    from gate._run.progress import Progress

    real_stdout = _claim_stdout()
    reports: list[tuple[str, Path | None]] = []
    progress = None if args.no_progress else Progress()
    try:
        reports = _parse_reports(args.report)
        # Nothing but the verdict reaches stdout: the app's and MLflow's prints go to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            if args.command == "score":
                from gate._commands.score import ScoreOptions, score_session

                verdict = score_session(
                    ScoreOptions(args.config, args.session, args.simulate, args.tracking_uri, args.report_only)
                )
            elif args.command == "compare":
                from gate._commands.compare import CompareOptions, compare, parse_selector_flags

                verdict = compare(
                    CompareOptions(
                        config_path=args.config,
                        session=args.session,
                        baseline=parse_selector_flags("--baseline", args.baseline),
                        candidate=parse_selector_flags("--candidate", args.candidate),
                        since=args.since,
                        pair_by=args.pair_by,
                        simulate=args.simulate,
                        tracking_uri=args.tracking_uri,
                        report_only=args.report_only,
                    )
                )
            elif args.dry_run:
                from gate._commands.plan import plan_gate

                plan = plan_gate(_run_options(args))
                if real_stdout is not None:
                    real_stdout.write(json.dumps({"plan": plan}, indent=2) + "\n")
                print(
                    f"gate: dry run: {plan['cases']} cases × 2 versions × {plan['repeats']} repeats"
                    f" = {plan['calls']} calls; nothing was called",
                    file=sys.stderr,
                )
                for line in plan["too_small"]:
                    print(f"gate: warning: {line}", file=sys.stderr)
                return 0
            else:
                from gate._commands.run import run_gate

                verdict = run_gate(_run_options(args), progress=progress)
    except GateError as exc:
        _print_error(exc)
        reason = "config" if isinstance(exc, ConfigError) else "run"
        return _emit(_error_verdict(str(exc), exc.exit_code, reason, args.config), real_stdout, args.output, reports)
    except KeyboardInterrupt as exc:
        code = exc.exit_code if isinstance(exc, Interrupted) else 130
        partial = exc.partial if isinstance(exc, Interrupted) else None
        message = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        if partial:
            calls, errors = partial.calls, partial.errors
            message += (
                f" after {calls['baseline']} baseline and {calls['candidate']} candidate calls"
                f" ({errors['baseline']} and {errors['candidate']} errors); their traces are in session"
                f" {partial.session} (experiment {partial.experiment_id})"
            )
        print(f"gate: {message}", file=sys.stderr)
        return _emit(_error_verdict(message, code, "interrupted", args.config), real_stdout, args.output, reports)
    except Exception as exc:  # noqa: BLE001 - a bug of ours: keep the traceback, still leave a verdict
        traceback.print_exc()
        _emit(
            _error_verdict(f"internal error: {type(exc).__name__}: {exc}", 3, "internal", args.config),
            real_stdout,
            args.output,
            reports,
        )
        return 3
    from gate.reporters.summary import render_summary

    sys.stderr.write(render_summary(verdict))
    return _emit(verdict, real_stdout, args.output, reports)


def _run_options(args: argparse.Namespace) -> RunOptions:
    from gate._commands.plan import SESSION_ID, RunOptions

    session, shard, baseline_from = args.session, args.shard, args.baseline_from
    if session is not None and not SESSION_ID.fullmatch(session):
        raise ConfigError(f"usage: --session {session!r}: use letters, digits, '.', '_' and '-' (at most 100)")
    parsed = None
    if shard is not None:
        match = re.fullmatch(r"(\d+)/(\d+)", shard)
        if not match or not 1 <= int(match[1]) <= int(match[2]):
            raise ConfigError(f"usage: --shard {shard}: expected I/N with 1 <= I <= N, e.g. --shard 2/4")
        if session is None:
            raise ConfigError(
                "usage: --shard needs --session: every shard of one gate must record into the same session "
                "(e.g. --session ci-$GITHUB_RUN_ID)"
            )
        parsed = (int(match[1]), int(match[2]))
    return RunOptions(
        config_path=args.config,
        simulate=args.simulate,
        tracking_uri=args.tracking_uri,
        session=session,
        shard=parsed,
        baseline_from=baseline_from,
        baseline_ref=args.baseline_ref,
        report_only=args.report_only,
    )


def _validate(args: argparse.Namespace) -> int:
    from gate._commands.validate import validate

    for line in validate(args.config, args.import_targets).splitlines():
        print(f"gate: {line}", file=sys.stderr)
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from gate._commands.calibrate import CalibrateOptions, calibrate

    real_stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        proposal = calibrate(CalibrateOptions(args.config, args.rounds, args.simulate, args.tracking_uri))
    real_stdout.write(proposal)
    return 0


def entry() -> None:
    """The console script: run ``main``, then exit even if the app left non-daemon threads running."""
    code = main()
    leftovers = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if leftovers:
        names = ", ".join(sorted({t.name for t in leftovers}))
        print(
            f"gate: warning: the app left {len(leftovers)} threads running ({names}); exiting anyway", file=sys.stderr
        )
        from gate._store.recording import flush_traces  # os._exit skips atexit: write the traces still buffered first

        flush_traces(3.0)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the command, return the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        args = _parser().parse_args(argv)
    except ConfigError as exc:
        _print_error(exc)
        if argv[:1] in (["run"], ["compare"]):  # a CI step parses stdout even when the command line was wrong
            _emit(_error_verdict(str(exc), exc.exit_code, "config", None), sys.stdout, None)
        return exc.exit_code
    try:
        if args.command in ("run", "score", "compare"):
            return _run(args)
        if args.command == "validate":
            return _validate(args)
        if args.command == "calibrate":
            return _calibrate(args)
        if args.command == "cases":
            from gate._commands.cases import export_cases

            print(f"gate: {export_cases(args.config, args.to, args.tracking_uri)}", file=sys.stderr)
            return 0
        from gate._verdict.schema import verdict_schema

        sys.stdout.write(json.dumps(verdict_schema(), indent=2) + "\n")
        return 0
    except GateError as exc:
        _print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
