"""Stop when settled: once a check with severity error has failed, more repeats cannot change the exit code, so the
adaptive loop stops and says why (unless run.decide_all asks to decide every check)."""

from __future__ import annotations

from conftest import Project

# error/rate at_most 0.02 with no errors cannot pass below 149 calls at 95% (Clopper-Pearson), nor fail without an
# error: over 4 runs x 6 cases (24 calls a version) it stays undecided, whatever the machine's timing noise.
CHECKS = [
    {"metric": "total_tokens/mean", "at_most": 1},  # fails in round 1: every answer has more than one token
    {"metric": "error/rate", "at_most": 0.02},  # stays undecided
]
RUN = {"repeats": 1, "max_repeats": 4, "concurrency": 4, "timeout_s": 30, "isolation": "inline", "warmup": False}


def test_a_failed_check_stops_the_adaptive_repeats(project: Project) -> None:
    project.write_config(checks=CHECKS, run=RUN)
    result = project.gate("run", "--simulate", "--no-progress")
    assert result.code == 1, result.stderr
    spend = result.verdict["spend"]
    assert spend["rounds"] == 1
    assert spend["stopped_because"] == "a check failed (total_tokens/mean); the exit code is settled"
    statuses = {c["metric"]: c["status"] for c in result.verdict["checks"]}
    assert statuses["total_tokens/mean"] == "fail"


def test_decide_all_keeps_repeating_while_a_check_is_undecided(project: Project) -> None:
    project.write_config(checks=CHECKS, run={**RUN, "decide_all": True})
    result = project.gate("run", "--simulate", "--no-progress")
    assert result.code == 1, result.stderr
    spend = result.verdict["spend"]
    # the looks at 1, 2 and 4 runs a case: three rounds, the last adding two runs of every case
    assert (spend["rounds"], spend["repeats_per_case"], spend["calls"]) == (3, 4, 48)
    assert spend["stopped_because"] == "run.max_repeats (4) reached"
    statuses = {c["metric"]: c["status"] for c in result.verdict["checks"]}
    assert statuses == {"total_tokens/mean": "fail", "error/rate": "inconclusive"}
