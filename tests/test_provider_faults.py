"""Provider faults injected by the simulator over real HTTP: the gate retries what is transient and counts it.

The versions run inline (in the gate's process), which spares two worker processes per run; the 429 test keeps the
default, a worker process per version, whose own retry loop (gate/_run/worker.py) it covers.
"""

from __future__ import annotations

import pytest
from conftest import Project

pytestmark = pytest.mark.run_isolation("inline")

CHECKS = [{"metric": "error/rate", "at_most": 0.0}, {"metric": "total_tokens/mean", "max_increase_pct": 20}]


def _run(project: Project, faults: dict[str, float], **run: object) -> dict:
    project.write_config(
        checks=CHECKS,
        run={"repeats": 1, "max_repeats": 1, "concurrency": 4, "timeout_s": 30, "retry_backoff_s": 0.05, **run},
        simulator={"faults": faults, "seed": 7},
    )
    result = project.gate("run", "--simulate")
    verdict = result.verdict
    verdict["_code"] = result.code
    return verdict


@pytest.mark.run_isolation("process")  # retries happen in the worker: its retry loop, with Retry-After
def test_twenty_percent_429s_end_with_the_same_verdict_as_a_clean_run(project: Project) -> None:
    clean = _run(project, {})
    faulty = _run(project, {"rate_limit": 0.2}, retries=5)
    assert clean["_code"] == faulty["_code"] == 0
    # Which of two identical requests gets which simulated answer depends on arrival order, so the A/A token check
    # may land on pass or inconclusive either way; what faults must never do is fail a check or add errors.
    assert faulty["checks"][0]["status"] == clean["checks"][0]["status"] == "pass"  # error/rate
    assert "fail" not in {c["status"] for c in faulty["checks"]}
    assert faulty["variants"]["baseline"]["errors"] == faulty["variants"]["candidate"]["errors"] == 0
    retries = faulty["variants"]["baseline"]["retries"] + faulty["variants"]["candidate"]["retries"]
    assert retries > 0 and clean["variants"]["baseline"]["retries"] == 0
    # Every call left exactly one counted trace, however many attempts it took.
    assert faulty["variants"]["candidate"]["traces"] == faulty["variants"]["candidate"]["calls"] == 6


@pytest.mark.parametrize("fault", ["rate_limit_no_retry_after", "server_error", "unavailable", "reset", "truncated"])
def test_transient_faults_are_retried_until_the_call_succeeds(project: Project, fault: str) -> None:
    verdict = _run(project, {fault: 0.3}, retries=8)
    assert verdict["_code"] == 0, verdict.get("error")
    assert verdict["variants"]["baseline"]["errors"] + verdict["variants"]["candidate"]["errors"] == 0
    assert verdict["variants"]["baseline"]["retries"] + verdict["variants"]["candidate"]["retries"] > 0


def test_without_retries_a_fault_is_an_error_data_point(project: Project) -> None:
    verdict = _run(project, {"server_error": 0.5}, retries=0)
    errors = verdict["variants"]["baseline"]["errors"] + verdict["variants"]["candidate"]["errors"]
    assert errors > 0
    assert verdict["_code"] == 1  # error/rate at_most 0 is broken: a regression or not, it is data
    assert next(c for c in verdict["checks"] if c["metric"] == "error/rate")["status"] == "fail"


def test_a_response_that_never_comes_is_cut_at_the_call_deadline(project: Project) -> None:
    verdict = _run(project, {"hang": 0.25}, retries=0, timeout_s=2)
    errors = verdict["variants"]["baseline"]["errors"] + verdict["variants"]["candidate"]["errors"]
    assert errors > 0 and verdict["_code"] in (0, 1)  # which version's calls hang depends on arrival order
    first = verdict["variants"]["baseline"]["first_errors"] + verdict["variants"]["candidate"]["first_errors"]
    assert "TimeoutError: no answer within 2 s" in first


def test_an_exhausted_error_budget_exits_3_and_says_why(project: Project) -> None:
    verdict = _run(project, {"server_error": 0.6}, retries=0, max_error_rate=0.1)
    assert verdict["_code"] == 3
    assert "error budget exhausted" in verdict["error"] and "above run.max_error_rate 10.0%" in verdict["error"]
    assert "InternalServerError" in verdict["error"]
