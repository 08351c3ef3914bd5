"""Errors are a regression of their own, never a speed-up: failed calls count in the error rate only, a rise in
the candidate's error rate fails the gate by default, and a candidate that fails every call is exit 1, not 3."""

from __future__ import annotations

from typing import Any

from conftest import Project

RUN = {"repeats": 2, "max_repeats": 2, "concurrency": 4, "timeout_s": 30, "isolation": "inline"}
NO_ERROR_CHECK = [
    {"metric": "latency_ms/p95", "max_increase_pct": 50},
    {"metric": "output_tokens/mean", "max_increase_pct": 50},
]


def check(verdict: dict[str, Any], metric: str, default: bool = False) -> dict[str, Any]:
    return next(c for c in verdict["checks"] if c["metric"] == metric and c["default"] is default)


def test_a_candidate_failing_half_its_calls_fails_by_default_and_does_not_look_faster(project: Project) -> None:
    project.write_config(candidate={"target": "gate_test_apps:half_broken_agent"}, checks=NO_ERROR_CHECK, run=RUN)
    result = project.gate("run", "--simulate", "--no-progress")
    assert result.code == 1, result.stderr
    verdict = result.verdict
    guard = check(verdict, "error/rate", default=True)
    assert guard["status"] == "fail"
    assert guard["message"].startswith(
        "default check (guard_errors: true; add an error/rate check to set your own): error/rate rose"
    )
    assert verdict["metrics"]["candidate"]["error/rate"] == 0.5
    latency = check(verdict, "latency_ms/p95")
    assert latency["n_pairs"] == 3  # only the cases the candidate answered: a fast failure is not a fast answer
    assert verdict["variants"]["candidate"]["first_errors"] == ["RuntimeError: tool 'orders' is unavailable"]

    project.write_config(
        candidate={"target": "gate_test_apps:half_broken_agent"}, checks=NO_ERROR_CHECK, run=RUN, guard_errors=False
    )
    opted_out = project.gate("run", "--simulate", "--no-progress")
    assert opted_out.code == 0, opted_out.stderr  # the documented opt-out: then errors are only reported
    assert all(not c["default"] for c in opted_out.verdict["checks"])


def test_a_candidate_failing_every_call_is_exit_1_naming_the_error(project: Project) -> None:
    project.write_config(candidate={"target": "gate_test_apps:broken_agent"}, checks=NO_ERROR_CHECK, run=RUN)
    result = project.gate("run", "--simulate", "--no-progress")
    assert result.code == 1, result.stderr  # a regression, not "could not decide"
    verdict = result.verdict
    assert check(verdict, "error/rate", default=True)["status"] == "fail"
    assert check(verdict, "latency_ms/p95")["status"] == "missing"  # no answers to time: said, and outranked
    assert verdict["variants"]["candidate"]["first_errors"] == ["RuntimeError: the vector store is unreachable"]
    assert "RuntimeError: the vector store is unreachable" in result.stderr


def test_an_explicit_error_check_replaces_the_default_one(project: Project) -> None:
    checks = [*NO_ERROR_CHECK, {"metric": "error/rate", "at_most": 0.9}]
    project.write_config(candidate={"target": "gate_test_apps:half_broken_agent"}, checks=checks, run=RUN)
    result = project.gate("run", "--simulate", "--no-progress")
    assert all(not c["default"] for c in result.verdict["checks"])
    assert check(result.verdict, "error/rate")["status"] == "pass"
    assert result.code == 0, result.stderr


def test_an_endpoint_that_never_answers_trips_the_warm_up_breaker_within_the_timeout(project: Project) -> None:
    import socket
    import time

    with socket.socket() as listener:  # accepts connections (the kernel's backlog) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        project.write_config(run={**RUN, "timeout_s": 3, "retries": 0})
        started = time.monotonic()
        result = project.gate("run", "--no-progress", env={"OPENAI_BASE_URL": url, "OPENAI_API_KEY": "sk-test"})
    assert result.code == 3, result.stderr
    assert (
        "the baseline's first two calls (the warm-up, retries included) failed with TimeoutError: no answer within "
        "3 s: what it calls looks unreachable, so the gate stops instead of letting every call wait for it "
        "(gate_test_apps:agent; run.warmup: false skips this check)"
    ) in result.stderr  # results come in call order: the baseline's warm-up is the first call
    assert time.monotonic() - started < 60  # ~2 x timeout_s plus start-up; it used to be minutes with no verdict
