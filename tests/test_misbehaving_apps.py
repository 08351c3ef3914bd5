"""Misbehaving apps: each is a recorded error or a clean exit 3, never a hung or corrupted gate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import mlflow
import pytest
from conftest import QUESTIONS, TESTS, GateResult, Project
from gate_misbehaving_apps import NOISE

from gate._store.store import open_store

APPS = "gate_misbehaving_apps"
HANG_BOUND_S = 90  # a hard bound on a gate whose app hangs; it should finish in ~10 s
EXIT_GRACE_S = 10  # from printing its verdict to exiting, a gate takes about a second


@pytest.fixture
def apps(project: Project) -> Project:
    shutil.copy(TESTS / f"{APPS}.py", project.path / f"{APPS}.py")
    return project


def _popen(folder: Path, tracking_uri: str, stderr: IO[str] | int = subprocess.PIPE) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "OPENAI_"))}
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    return subprocess.Popen(
        [sys.executable, "-m", "gate", "run", "--simulate"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def _config(
    project: Project,
    candidate: str,
    baseline: str = "agent",
    cases: int = 4,
    timeout_s: float = 30,
    checks: list[dict[str, Any]] | None = None,
    label: str = "v2",
) -> None:
    project.write_config(
        cases=[{"id": f"q{i}", "inputs": {"question": q}} for i, q in enumerate(QUESTIONS[:cases])],
        baseline={"target": f"{APPS}:{baseline}", "label": "v1"},
        candidate={"target": f"{APPS}:{candidate}", "label": label},
        run={"repeats": 1, "max_repeats": 1, "concurrency": 4, "timeout_s": timeout_s},
        checks=checks or [{"metric": "error/rate", "at_most": 0.0}],
    )


def _check(verdict: dict[str, Any], metric: str) -> dict[str, Any]:
    return next(c for c in verdict["checks"] if c["metric"] == metric)


def _counts(verdict: dict[str, Any], variant: str) -> tuple[int, int, int]:
    report = verdict["variants"][variant]
    return report["calls"], report["traces"], report["errors"]


def _case(verdict: dict[str, Any], case_id: str) -> dict[str, Any]:
    return next(c for c in verdict["cases"] if c["case_id"] == case_id)


# --- output that bypasses sys.stdout ---


@pytest.mark.parametrize(
    "target",
    [
        "prints_via_print",
        "prints_via_dunder_stdout",
        "prints_via_fd",  # os.write(1, ...) and a child process's print
    ],
)
def test_app_output_past_sys_stdout_keeps_stdout_pure_json(apps: Project, target: str) -> None:
    _config(apps, target)
    result = apps.gate("run", "--simulate")
    assert result.code == 0, result.stderr
    assert NOISE not in result.stdout
    verdict = json.loads(result.stdout)  # all of stdout, not just a JSON document somewhere in it
    assert verdict["status"] == "pass"
    assert NOISE in result.stderr  # the app's output is kept for the reader, on stderr


# --- answers that are not strings ---


@pytest.mark.parametrize(
    ("baseline", "candidate"),
    [("returns_dict", "returns_int"), ("returns_set", "returns_generator")],
    ids=["dict-vs-int", "set-vs-generator"],
)
def test_non_string_answers_are_traced_and_measured(apps: Project, baseline: str, candidate: str) -> None:
    _config(apps, candidate, baseline)
    result = apps.gate("run", "--simulate")
    assert result.code == 0, result.stderr
    verdict = result.verdict
    assert verdict["status"] == "pass"
    for variant in ("baseline", "candidate"):
        assert _counts(verdict, variant) == (4, 4, 0)
        assert verdict["metrics"][variant]["total_tokens/mean"] > 0  # the LLM spans inside are measured as usual
        for case in verdict["cases"]:
            side = case[variant]
            assert len(side["trace_ids"]) == 1
            assert isinstance(side["output"], str) and side["output"]  # the answer in its text form
            assert side["values"]["response_chars"] == len(side["output"])
    outputs = {variant: [c[variant]["output"] for c in verdict["cases"]] for variant in ("baseline", "candidate")}
    if baseline == "returns_dict":
        assert all(json.loads(o)["sources"] == ["faq.md"] for o in outputs["baseline"])
        assert all(o.isdigit() for o in outputs["candidate"])


def test_an_answer_with_no_text_form_is_a_recorded_error(apps: Project) -> None:
    # MLflow cannot serialise the answer, so the decorated call raises: the trace exists, in state ERROR.
    _config(apps, "returns_opaque")
    result = apps.gate("run", "--simulate")
    assert result.code == 1, result.stderr
    verdict = result.verdict
    assert verdict["status"] == "fail"
    assert _counts(verdict, "baseline") == (4, 4, 0)
    assert _counts(verdict, "candidate") == (4, 4, 4)
    errors = _check(verdict, "error/rate")
    assert errors["status"] == "fail" and errors["candidate"] == 1.0
    assert verdict["metrics"]["candidate"]["response_chars/mean"] is None
    assert all(c["candidate"]["output"] is None for c in verdict["cases"])


def test_no_answer_leaves_its_metric_missing_and_exits_3(apps: Project) -> None:
    _config(
        apps,
        "returns_none",
        checks=[{"metric": "error/rate", "at_most": 0.0}, {"metric": "response_chars/mean", "at_least": 1}],
    )
    result = apps.gate("run", "--simulate")
    assert result.code == 3, result.stderr
    verdict = result.verdict
    assert verdict["status"] == "error" and verdict["reason"] == "run"
    assert "no data for response_chars/mean" in verdict["error"]
    assert _check(verdict, "response_chars/mean")["status"] == "missing"
    assert _check(verdict, "error/rate")["status"] == "pass"
    assert _counts(verdict, "candidate") == (4, 4, 0)  # the calls worked and were traced: only the metric is missing


# --- SystemExit and KeyboardInterrupt raised inside a call ---


def test_exit_and_interrupt_inside_a_call_are_recorded_errors(apps: Project) -> None:
    # Both raise on q2, the refund question: sys.exit(4) in the baseline, KeyboardInterrupt in the candidate.
    _config(apps, "raises_keyboard_interrupt", baseline="raises_system_exit")
    result = apps.gate("run", "--simulate")
    verdict = result.verdict
    assert verdict["spend"]["calls"] == 8  # the gate went on after both exceptions: every call was made
    assert "gate: " in result.stderr and "Traceback" not in result.stderr
    assert result.code == 1, result.stderr  # the error/rate check fails: not 0, and not 130 "interrupted"
    assert verdict["status"] == "fail"
    errors = _check(verdict, "error/rate")
    assert errors["status"] == "fail"
    assert errors["baseline"] == errors["candidate"] == pytest.approx(1 / 4)
    for variant in ("baseline", "candidate"):
        assert _counts(verdict, variant) == (4, 4, 1)
        assert _case(verdict, "q2")[variant]["errors"] == 1


# --- calls that never return ---


@pytest.fixture(scope="module")
def hung_on_refund(tmp_path_factory: pytest.TempPathFactory) -> GateResult:
    """One run whose candidate never answers the refund question (q2), for the two tests below."""
    apps = Project(tmp_path_factory.mktemp("hung"))
    shutil.copy(TESTS / f"{APPS}.py", apps.path / f"{APPS}.py")
    _config(apps, "hangs_on_refund", timeout_s=2)
    return apps.gate("run", "--simulate", timeout=HANG_BOUND_S)  # returns only once the process has exited


def test_a_hung_call_times_out_as_an_error_and_the_gate_exits(hung_on_refund: GateResult) -> None:
    result = hung_on_refund
    assert result.code == 1, result.stderr
    verdict = result.verdict
    assert verdict["status"] == "fail"
    assert _counts(verdict, "baseline") == (4, 4, 0)
    assert _counts(verdict, "candidate") == (4, 3, 1)  # the hung call left no finished trace
    errors = _check(verdict, "error/rate")
    assert errors["status"] == "fail" and errors["candidate"] == pytest.approx(1 / 4)
    hung = _case(verdict, "q2")["candidate"]
    assert hung["errors"] == 1 and hung["trace_ids"] == []


def test_a_hung_call_is_reported_as_a_timeout(hung_on_refund: GateResult) -> None:
    result = hung_on_refund
    assert result.code == 1, result.stderr
    assert "TimeoutError" in result.stdout + result.stderr


def test_every_call_hanging_exits_3_naming_the_timeout(apps: Project) -> None:
    _config(apps, "hangs_always", baseline="hangs_always", timeout_s=2)
    result = apps.gate("run", "--simulate", timeout=HANG_BOUND_S)
    assert result.code == 3, result.stderr
    verdict = result.verdict
    assert verdict["status"] == "error" and verdict["reason"] == "run"
    # the warm-up's circuit breaker: two timed-out first calls stop the run, instead of every call timing out
    assert "first two calls (the warm-up, retries included) failed with TimeoutError: no answer within 2 s" in (
        verdict["error"]
    )


def test_threads_the_app_leaves_behind_do_not_keep_the_gate_alive(apps: Project) -> None:
    _config(apps, "leaves_a_thread")  # each call starts a non-daemon thread that sleeps for an hour
    with (apps.path / "stderr.txt").open("w") as stderr:
        process = _popen(apps.path, f"sqlite:///{apps.path / 'store' / 'mlflow.db'}", stderr)
        watchdog = threading.Timer(HANG_BOUND_S, process.kill)  # a hard bound, should the verdict never come
        watchdog.start()
        try:
            assert process.stdout is not None
            printed = ""
            for line in process.stdout:
                printed += line
                if line == "}\n":  # the end of the indented verdict
                    break
            try:
                code = process.wait(timeout=EXIT_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                pytest.fail(f"the gate printed its verdict but was still alive {EXIT_GRACE_S} s later")
        finally:
            watchdog.cancel()
            if process.stdout is not None:
                process.stdout.close()
    assert code == 0, (apps.path / "stderr.txt").read_text()
    assert json.loads(printed)["status"] == "pass"


# --- two gates on one store ---


@pytest.mark.parametrize(
    "store_exists",
    [
        True,
        False,
    ],
    ids=["existing-store", "fresh-store"],
)
def test_two_gates_sharing_a_store_keep_their_sessions_apart(tmp_path: Path, store_exists: bool) -> None:
    tracking_uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    if store_exists:
        open_store(tracking_uri, "test-gate")  # as an earlier gate run left it: schema and experiment in place
    folders = []
    for name, cases in (("one", 4), ("two", 5)):
        project = Project(tmp_path / name)
        project.path.mkdir()
        shutil.copy(TESTS / f"{APPS}.py", project.path / f"{APPS}.py")
        _config(project, "agent", cases=cases, label=f"v2-{name}")
        folders.append(project.path)
    processes = [_popen(folder, tracking_uri) for folder in folders]  # both start before either is waited on
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=HANG_BOUND_S)
        results.append(GateResult(process.returncode, stdout, stderr))
    for result in results:
        assert "database is locked" not in result.stderr
        assert result.code == 0, result.stderr
    verdicts = [r.verdict for r in results]
    sessions = [v["mlflow"]["session"] for v in verdicts]
    assert sessions[0] != sessions[1]
    assert verdicts[0]["mlflow"]["experiment_id"] == verdicts[1]["mlflow"]["experiment_id"]
    mlflow.set_tracking_uri(tracking_uri)
    for verdict, session, cases in zip(verdicts, sessions, (4, 5), strict=True):
        assert verdict["status"] == "pass"
        for variant in ("baseline", "candidate"):
            assert _counts(verdict, variant) == (cases, cases, 0)
        traces = mlflow.search_traces(
            locations=[verdict["mlflow"]["experiment_id"]],
            filter_string=f"tags.`gate.session` = '{session}'",
            return_type="list",
            include_spans=False,
        )
        assert len(traces) == verdict["spend"]["calls"] == 2 * cases
        assert {t.info.tags["gate.session"] for t in traces} == {session}
        assert sorted((t.info.tags["gate.variant"], t.info.tags["gate.case_id"]) for t in traces) == sorted(
            (v, f"q{i}") for v in ("baseline", "candidate") for i in range(cases)
        )
        assert {t.info.tags["gate.label"] for t in traces if t.info.tags["gate.variant"] == "candidate"} == {
            verdict["variants"]["candidate"]["label"]
        }
