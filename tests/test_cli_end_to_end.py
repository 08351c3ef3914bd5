"""`gate run` as a user runs it: a subprocess, the simulator over real HTTP, a real SQLite MLflow store.

What these tests check (verdicts, checks, exit codes, reports, calibrate) does not depend on where the versions run,
so they run them inline (in the gate's process), which spares two worker processes per run. A passing run and the
signal tests keep the default, a worker process per version: the full default path, and stopping workers mid-run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import jsonschema
import mlflow
import pytest
import yaml
from conftest import QUESTIONS, Project, sigint_as_a_terminal_delivers_it

from gate._verdict.schema import verdict_schema

pytestmark = pytest.mark.run_isolation("inline")


def _check(verdict: dict, metric: str) -> dict:
    return next(c for c in verdict["checks"] if c["metric"] == metric)


@pytest.mark.run_isolation("process")  # the gate's default: a full end-to-end run with a worker process per version
def test_identical_versions_pass(project: Project) -> None:
    # up to 4 runs a case: 6 cases × 2 runs leave a +50% latency bound undecided now and then on a loaded machine
    project.write_config(run={"repeats": 1, "max_repeats": 4, "concurrency": 4, "timeout_s": 30})
    result = project.gate("run", "--simulate")
    assert result.code == 0, result.stderr
    verdict = result.verdict
    assert verdict["status"] == "pass"
    assert verdict["endpoint"] == "simulated"
    assert {c["status"] for c in verdict["checks"]} == {"pass"}
    calls = verdict["spend"]["repeats_per_case"] * 6  # adaptive repeats may add rounds until decided
    assert verdict["variants"]["baseline"]["traces"] == verdict["variants"]["baseline"]["calls"] == calls
    assert verdict["variants"]["candidate"]["traces"] == calls
    assert verdict["spend"]["calls"] == 2 * calls
    jsonschema.validate(verdict, verdict_schema())
    assert "gate: PASS (exit 0)" in result.stderr
    assert "\n  intervals: cases as the unit\n" in result.stderr  # every interval is about the app's inputs


def test_traces_are_tagged_and_linked_to_their_run(project: Project) -> None:
    project.write_config(run={"repeats": 2, "max_repeats": 2, "concurrency": 3, "timeout_s": 30})
    result = project.gate("run", "--simulate")
    assert result.code == 0, result.stderr
    verdict = result.verdict
    mlflow.set_tracking_uri(f"sqlite:///{project.path / 'store' / 'mlflow.db'}")
    run_id = verdict["variants"]["candidate"]["mlflow_run_id"]
    traces = mlflow.search_traces(
        locations=[verdict["mlflow"]["experiment_id"]], run_id=run_id, return_type="list", include_spans=False
    )
    assert len(traces) == 12
    tags = [t.info.tags for t in traces]
    assert {t["gate.variant"] for t in tags} == {"candidate"}
    assert {t["gate.label"] for t in tags} == {"v2"}
    assert {t["gate.session"] for t in tags} == {verdict["mlflow"]["session"]}
    assert sorted((t["gate.case_id"], t["gate.repeat"]) for t in tags) == sorted(
        (f"q{i}", str(r)) for i in range(6) for r in range(2)
    )


def test_slower_candidate_fails_on_latency(project: Project) -> None:
    project.write_config(candidate={"target": "gate_test_apps:slow_agent"})
    result = project.gate("run", "--simulate")
    assert result.code == 1, result.stderr
    verdict = result.verdict
    assert verdict["status"] == "fail"
    latency = _check(verdict, "latency_ms/median")
    assert latency["status"] == "fail"
    assert latency["candidate"] >= 250  # the trace duration includes the app's own sleep
    assert latency["message"].startswith("latency_ms/median rose ")
    assert "limit +50%" in latency["message"]
    # the loop stops once latency has failed (the exit code is settled): tokens may be undecided at that look, whose
    # level 6 cases cannot back without extrapolating, but never failed
    assert _check(verdict, "total_tokens/mean")["status"] in ("pass", "inconclusive")


def test_candidate_raising_on_some_cases_fails_on_error_rate(project: Project) -> None:
    project.write_config(candidate={"target": "gate_test_apps:flaky_agent"})
    result = project.gate("run", "--simulate")
    assert result.code == 1, result.stderr
    verdict = result.verdict
    errors = _check(verdict, "error/rate")
    assert errors["status"] == "fail"
    assert errors["candidate"] == pytest.approx(1 / 6)
    # One case fails on every repeat (another round runs when a latency check is still undecided).
    repeats = verdict["spend"]["repeats_per_case"]
    assert verdict["variants"]["candidate"]["errors"] == repeats
    # The failing call is a data point with its ERROR trace, not a crash of the gate.
    assert verdict["variants"]["candidate"]["traces"] == 6 * repeats


def test_warn_severity_reports_but_passes(project: Project) -> None:
    project.write_config(
        candidate={"target": "gate_test_apps:slow_agent"},
        checks=[{"metric": "latency_ms/median", "max_increase_pct": 10, "severity": "warn"}],
    )
    result = project.gate("run", "--simulate")
    assert result.code == 0, result.stderr
    assert result.verdict["status"] == "pass"
    assert result.verdict["checks"][0]["status"] == "warn"


def test_report_only_turns_fail_into_exit_zero(project: Project) -> None:
    project.write_config(candidate={"target": "gate_test_apps:flaky_agent"})
    result = project.gate("run", "--simulate", "--report-only")
    assert result.code == 0, result.stderr
    assert result.verdict["status"] == "fail"
    assert result.verdict["report_only"] is True


def test_broken_config_exits_2_with_a_verdict(project: Project) -> None:
    project.write_config(checks=[{"metric": "latency_ms/p95", "max_increse_pct": 25}])
    result = project.gate("run", "--simulate", "--output", "out/verdict.json")
    assert result.code == 2
    assert "Traceback" not in result.stderr
    assert "thresholds.yaml: checks[0].max_increse_pct: unknown key; valid keys here: metric, at_most" in result.stderr
    verdict = result.verdict
    assert verdict["status"] == "error" and verdict["exit_code"] == 2 and verdict["reason"] == "config"
    assert json.loads((project.path / "out" / "verdict.json").read_text()) == verdict
    jsonschema.validate(verdict, verdict_schema())


def test_every_call_failing_exits_3(project: Project) -> None:
    project.write_config()
    # No --simulate and an endpoint where nothing listens: every call fails to connect.
    result = project.gate(
        "run", env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "sk-testsecret123456"}
    )
    assert result.code == 3, result.stderr
    verdict = result.verdict
    assert verdict["status"] == "error"
    # the warm-up's circuit breaker stops it after two calls instead of failing every call in turn
    assert "first two calls (the warm-up, retries included) failed with APIConnectionError" in verdict["error"]
    assert "sk-testsecret123456" not in result.stdout + result.stderr


def test_a_dropped_trace_exits_3(project: Project) -> None:
    project.write_config(candidate={"target": "gate_test_apps:untraced_sometimes"})
    result = project.gate("run", "--simulate")
    assert result.code == 3, result.stderr
    verdict = result.verdict
    assert verdict["status"] == "error"
    assert "expected 12 traces, 1 missing (e.g. candidate/q2#0)" in verdict["error"]
    assert verdict["variants"]["candidate"]["traces"] == 5


def test_app_printing_to_stdout_keeps_the_verdict_parseable(project: Project) -> None:
    project.write_config(candidate={"target": "gate_test_apps:chatty_agent"})
    result = project.gate("run", "--simulate")
    assert result.code == 0, result.stderr
    assert result.verdict["status"] == "pass"
    assert "debug: the app printed this to stdout" in result.stderr


def test_check_without_data_is_missing_and_exits_3(project: Project) -> None:
    # cost_usd needs a price: neither the (empty) price table nor MLflow's own prices know this model.
    in_house = {"target": "gate_test_apps:in_house_agent"}
    project.write_config(
        checks=[{"metric": "cost_usd/sum", "max_increase_pct": 10}], baseline=in_house, candidate=in_house
    )
    result = project.gate("run", "--simulate")
    assert result.code == 3, result.stderr
    assert result.verdict["checks"][0]["status"] == "missing"
    assert "no data for cost_usd/sum" in result.verdict["error"]


def test_dry_run_plans_without_calling(project: Project) -> None:
    project.write_config(run={"repeats": 3})
    result = project.gate("run", "--dry-run")
    assert result.code == 0, result.stderr
    plan = json.loads(result.stdout)["plan"]
    assert plan["calls"] == 6 * 2 * 3
    # what an undecided run may spend: 10 runs a case (a median, a rate, a mean), 20 with a percentile check
    assert plan["max_repeats"] == 10 and plan["calls_at_most"] == 6 * 2 * 10
    p95 = [{"metric": "latency_ms/p95", "max_increase_pct": 10}]
    project.write_config(run={"repeats": 3}, checks=p95)
    plan = json.loads(project.gate("run", "--dry-run").stdout)["plan"]
    assert plan["max_repeats"] == 20 and plan["calls_at_most"] == 6 * 2 * 20
    project.write_config(run={"repeats": 3, "max_calls": 100}, checks=p95)
    assert json.loads(project.gate("run", "--dry-run").stdout)["plan"]["calls_at_most"] == 100
    assert not (project.path / "store").exists()


def test_validate_and_schema_commands(project: Project, tmp_path: Path) -> None:
    project.write_config()
    ok = project.gate("validate")
    assert ok.code == 0 and "is valid: 6 cases, 3 checks, both targets defined (found in their source" in ok.stderr
    imported = project.gate("validate", "--import")
    assert imported.code == 0 and "is valid: 6 cases, 3 checks, both targets import" in imported.stderr
    project.write_config(baseline={"target": "gate_test_apps:no_such_function"})
    bad = project.gate("validate")
    assert bad.code == 2
    assert "baseline.target: module 'gate_test_apps' has no attribute 'no_such_function'" in bad.stderr
    schema = project.gate("schema")
    assert schema.code == 0 and json.loads(schema.stdout)["title"] == "gate verdict"


def test_usage_error_exits_2(project: Project) -> None:
    result = project.gate("run", "--no-such-flag")
    assert result.code == 2
    assert "usage: unrecognized arguments: --no-such-flag" in result.stderr
    assert result.verdict["status"] == "error" and result.verdict["exit_code"] == 2


def test_regression_of_a_golden_case_fails_the_gate_and_names_both_traces(project: Project) -> None:
    cases = [{"id": f"q{i}", "inputs": {"question": q}, "golden": i == 2} for i, q in enumerate(QUESTIONS)]
    project.write_config(
        cases=cases,
        candidate={"target": "gate_test_apps:flaky_agent"},
        checks=[{"metric": "latency_ms/median", "max_increase_pct": 1000}],
    )
    result = project.gate("run", "--simulate")
    assert result.code == 1, result.stderr
    verdict = result.verdict
    assert verdict["checks"][0]["status"] != "fail"  # the latency check alone would not fail
    [regression] = verdict["regressions"]
    assert regression["case_id"] == "q2" and regression["golden"] is True and regression["rule"] == "ok_to_error"
    assert regression["baseline_trace_ids"][0].startswith("tr-")
    assert regression["candidate_trace_ids"][0].startswith("tr-")


def test_cases_regressed_count_is_a_check(project: Project) -> None:
    project.write_config(
        candidate={"target": "gate_test_apps:flaky_agent"},
        checks=[{"metric": "cases_regressed/count", "at_most": 0}],
    )
    result = project.gate("run", "--simulate")
    assert result.code == 1, result.stderr
    check = result.verdict["checks"][0]
    assert check["status"] == "fail" and check["candidate"] == 1
    assert check["message"] == "cases_regressed/count is 1.0 cases, limit ≤ 0"


def test_checks_carry_their_interval_and_the_run_reports_its_spend(project: Project) -> None:
    project.write_config(
        run={"repeats": 1, "max_repeats": 3, "concurrency": 4, "timeout_s": 30},
        checks=[
            {"metric": "latency_ms/median", "max_increase_pct": 50},
            {"metric": "error/rate", "at_most": 0.0},
            {"metric": "total_tokens/mean", "max_increase_pct": 20},
            {"metric": "latency_ms/p90", "max_increase_pct": 50, "percentile": "plain"},
        ],
    )
    verdict = project.gate("run", "--simulate").verdict
    latency = _check(verdict, "latency_ms/median")
    assert latency["ci_of"] == "delta_pct" and latency["ci_low"] <= latency["delta_pct"] <= latency["ci_high"]
    assert latency["n_pairs"] == 6
    assert "the plain percentile" not in latency["message"]
    plain = _check(verdict, "latency_ms/p90")  # decided on the p90 itself, and saying so
    assert plain["ci_of"] == "delta_pct"
    assert ", cases as the unit, the plain percentile" in plain["message"], plain["message"]
    assert _check(verdict, "error/rate")["p_value"] == 1.0
    spend = verdict["spend"]
    assert spend["calls"] == 12 * spend["repeats_per_case"] and spend["warmup_calls"] == 2
    assert 1 <= spend["rounds"] <= 3
    assert spend["stopped_because"] in ("all checks decided", "run.max_repeats (3) reached")
    assert len(verdict["fingerprint"]["dataset"]) == 16


def test_calibrate_proposes_bounds_from_an_a_a_run(project: Project) -> None:
    project.write_config()
    result = project.gate("calibrate", "--simulate", "--rounds", "2")
    assert result.code == 0, result.stderr
    proposal = yaml.safe_load(result.stdout)
    metrics = [c["metric"] for c in proposal["checks"]]
    assert metrics == ["latency_ms/median", "total_tokens/mean"]  # error/rate has no relative bound
    assert all(c["max_increase_pct"] > 0 for c in proposal["checks"])
    assert "2 A/A rounds of the baseline against itself, 6 cases x 1 repeats" in result.stdout


def test_reports_are_written_where_asked_and_stdout_stays_the_verdict(project: Project) -> None:
    project.write_config(candidate={"target": "gate_test_apps:flaky_agent"})
    result = project.gate(
        "run",
        "--simulate",
        "--report",
        "markdown:out/report.md",
        "--report",
        "junit:out/junit.xml",
        "--report",
        "github",
    )
    assert result.code == 1, result.stderr
    assert result.verdict["status"] == "fail"
    assert "| ❌ fail | `error/rate` |" in (project.path / "out" / "report.md").read_text()
    assert "<failure" in (project.path / "out" / "junit.xml").read_text()
    assert "::error file=thresholds.yaml,title=gate%3A error/rate fail::" in result.stderr


def test_unknown_report_format_exits_2_naming_the_known_ones(project: Project) -> None:
    project.write_config()
    result = project.gate("run", "--simulate", "--report", "pdf:x.pdf")
    assert result.code == 2
    assert "--report pdf:x.pdf: unknown format 'pdf'; known: github, html, json, junit, markdown" in result.stderr
    assert result.verdict["status"] == "error"


@pytest.mark.run_isolation("process")  # a signal must stop the workers too
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_run_exits_with_its_code_and_leaves_a_verdict(project: Project, signum: int, code: int) -> None:
    project.write_config(
        baseline={"target": "gate_test_apps:slow_agent"},
        candidate={"target": "gate_test_apps:slow_agent"},
        run={"repeats": 20, "concurrency": 2},
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "OPENAI_"))}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{project.path / 'store' / 'mlflow.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gate", "run", "--simulate", "--output", "verdict.json"],
        cwd=project.path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_a_terminal_delivers_it,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # the first progress line means calls are in flight
        if "round 1" in line:
            break
    proc.send_signal(signum)
    stdout, _ = proc.communicate(timeout=30)
    assert proc.returncode == code
    verdict = json.loads(stdout)
    assert verdict["status"] == "error" and verdict["reason"] == "interrupted" and verdict["exit_code"] == code
    assert re.search(
        r"after \d+ baseline and \d+ candidate calls \(\d+ and \d+ errors\); their traces", verdict["error"]
    )
    assert json.loads((project.path / "verdict.json").read_text()) == verdict
    # The store is still usable: a second run on it completes. Any run that opens the store and writes traces to it
    # shows that; it runs inline, without a warm-up (two worker processes and two calls fewer; the workers' stopping
    # is what the run above checked).
    project.write_config(run={"repeats": 1, "max_repeats": 1, "isolation": "inline", "warmup": False})
    assert project.gate("run", "--simulate").code == 0
