"""The text reporters against golden files, from canonical verdicts: pass, fail, error, and one too long for GitHub.

Regenerate after an intended change: ``GATE_UPDATE_GOLDEN=1 python -m pytest -n 0 tests/test_reporters.py``.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gate._verdict.schema import (
    CaseReport,
    CaseSide,
    CheckReport,
    RegressionReport,
    SpendReport,
    VariantReport,
    Verdict,
)
from gate.reporters import REPORTERS
from gate.reporters._builtin import MARKDOWN_LIMIT, md_escape, render_github, render_junit, render_markdown
from gate.reporters.summary import render_summary

GOLDEN = Path(__file__).parent / "golden"
HOSTILE = "<script>alert(1)</script> | @octocat ![x](https://evil.example/p.png)\n## heading %0A::error::"


def _check(metric: str, status: str, message: str, **extra: object) -> CheckReport:
    fields: dict[str, object] = {
        "metric": metric,
        "status": status,
        "severity": "error",
        "baseline": 812.0,
        "candidate": 960.5,
        "delta": 148.5,
        "delta_pct": 18.29,
        "bound": {"max_increase_pct": 25.0},
        "message": message,
        "ci_low": 2.1,
        "ci_high": 31.0,
        "ci_of": "delta_pct",
        "n_pairs": 22,
        **extra,
    }
    return CheckReport.model_validate(fields)


def canonical(status: str) -> Verdict:
    variants = {
        "baseline": VariantReport(label="v1", target="app:v1", mlflow_run_id="r1", calls=22, traces=22, errors=0),
        "candidate": VariantReport(label="v2", target="app:v2", mlflow_run_id="r2", calls=22, traces=22, errors=1),
    }
    checks = [
        _check("latency_ms/p95", "pass", "latency_ms/p95 rose 18.3% (812.0 → 960.5 ms), within +25%"),
        _check("error/rate", "fail" if status == "fail" else "pass", "error/rate rose by 0.05 (0 → 0.05), limit ≤ 0"),
        _check("total_tokens/mean", "warn", "total_tokens/mean rose 80.0% (100 → 180 tokens), limit +60% broken"),
        _check("helpful/rate", "inconclusive", f"helpful/rate: inconclusive; the answer said {HOSTILE}"),
    ]
    regression = RegressionReport(
        case_id="refund",
        rule="ok_to_error",
        detail="OK on 1 baseline runs, ERROR on all 1 candidate runs",
        golden=True,
        baseline_trace_ids=["tr-b1"],
        candidate_trace_ids=["tr-c1"],
    )
    side = CaseSide(trace_ids=["tr-x"], errors=0, output=HOSTILE, values={"latency_ms": 10.0})
    return Verdict(
        status="fail" if status == "fail" else "pass",
        exit_code=1 if status == "fail" else 0,
        gate_version="0.1.0",
        config="thresholds.yaml",
        endpoint="simulated",
        variants=variants,
        checks=checks,
        confidence=0.95,
        regressions=[regression] if status == "fail" else [],
        spend=SpendReport(
            calls=44, rounds=1, repeats_per_case=1, cost_usd=0.0029, stopped_because="all checks decided"
        ),
        cases=[CaseReport(case_id="refund", inputs={"question": HOSTILE}, baseline=side, candidate=side)],
    )


def error_verdict() -> Verdict:
    return Verdict(
        status="error",
        exit_code=3,
        reason="run",
        error="every call of both versions failed; first errors: APIConnectionError: Connection error.",
        gate_version="0.1.0",
        config="thresholds.yaml",
    )


VERDICTS = {"pass": lambda: canonical("pass"), "fail": lambda: canonical("fail"), "error": error_verdict}
SUFFIX = {"markdown": "md", "junit": "xml", "github": "txt"}


@pytest.mark.parametrize("kind", sorted(VERDICTS))
@pytest.mark.parametrize("fmt", sorted(SUFFIX))
def test_reporter_matches_its_golden_file(fmt: str, kind: str) -> None:
    text = REPORTERS[fmt](VERDICTS[kind]())
    golden = GOLDEN / f"{fmt}_{kind}.{SUFFIX[fmt]}"
    if os.environ.get("GATE_UPDATE_GOLDEN"):
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")


def test_the_summary_says_what_the_intervals_are_about() -> None:
    verdict = canonical("pass")
    assert "intervals:" not in render_summary(verdict)  # no population recorded: nothing to say
    same = verdict.model_copy(update={"checks": [c.model_copy(update={"population": "app"}) for c in verdict.checks]})
    assert "\n  intervals: cases as the unit\n" in render_summary(same)
    populations = ["app", "dataset", "app", None]
    mixed = verdict.model_copy(
        update={
            "checks": [c.model_copy(update={"population": p}) for c, p in zip(verdict.checks, populations, strict=True)]
        }
    )
    assert (
        "\n  intervals: cases as the unit (latency_ms/p95, total_tokens/mean); calls as the unit: this dataset's cases "
        "(error/rate)\n" in render_summary(mixed)
    )


def test_the_built_in_formats_are_registered() -> None:
    assert {"markdown", "junit", "github", "json", "html"} <= set(REPORTERS)


def test_markdown_escapes_untrusted_text() -> None:
    text = md_escape(HOSTILE)
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "@\u200boctocat" in text and "\\!\\[x\\]" in text
    assert "\n" not in text and "\\|" in text


def test_markdown_fits_githubs_comment_limit_with_a_note() -> None:
    verdict = canonical("fail")
    many = [_check(f"s{i}/rate", "fail", "x" * 900) for i in range(200)]
    long = verdict.model_copy(update={"checks": many})
    text = render_markdown(long)
    assert len(text) <= MARKDOWN_LIMIT
    assert "Report truncated to fit GitHub's 65,536-character limit" in text
    assert text.rstrip().endswith("<!-- trace-gate -->")


def test_junit_is_well_formed_with_one_testcase_per_check_and_survives_control_bytes() -> None:
    verdict = canonical("fail")
    nasty = verdict.model_copy(update={"checks": [*verdict.checks, _check("x/rate", "fail", "bad \x00\x1b bytes")]})
    root = ET.fromstring(render_junit(nasty))
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "5" and suite.get("failures") == "2"
    failure = root.find(".//testcase[@name='error/rate']/failure")
    assert failure is not None and failure.get("message") == "error/rate rose by 0.05 (0 → 0.05), limit ≤ 0"


def test_github_annotations_escape_newlines_and_percent_signs() -> None:
    text = render_github(canonical("fail"))
    lines = text.splitlines()
    assert lines[0].startswith("::error file=thresholds.yaml,title=gate%3A error/rate fail::")
    assert all(line.startswith(("::error", "::warning")) for line in lines)
    assert "%0A::error::" not in text.replace("%250A", "")  # the planted command stays data, not a new command
