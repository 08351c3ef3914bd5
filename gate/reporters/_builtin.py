"""The text reporters: markdown (PR comment / step summary), junit, github (annotations) and json.

Model outputs and case inputs are untrusted: every reporter escapes them for its format.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from gate._verdict.schema import CheckReport, Verdict, render_json
from gate.reporters._interface import register

__all__ = ["MARKDOWN_LIMIT", "md_escape", "render_github", "render_junit", "render_markdown"]

MARKDOWN_LIMIT = 65_536  # GitHub's limit for a comment body (and the step summary is best kept under it)
_ICON = {"pass": "✅", "fail": "❌", "warn": "⚠️", "inconclusive": "❔", "missing": "⛔", "error": "⛔"}


def md_escape(text: str, limit: int = 300) -> str:
    """Text safe inside a Markdown table cell: no HTML, no table breaks, no @mentions, no images or links."""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = re.sub(r"[\r\n]+", " ", text)
    text = re.sub(r"([\\`*_\[\]#!|~])", r"\\\1", text)
    return text.replace("@", "@\u200b")  # a zero-width space keeps GitHub from pinging


def _num(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.4g}" if abs(value) < 10_000 else f"{value:,.0f}"


def _delta(check: CheckReport) -> str:
    if check.delta_pct is not None:
        return f"{check.delta_pct:+.1f}%"
    return "–" if check.delta is None else f"{check.delta:+.4g}"


def _interval(check: CheckReport) -> str:
    if check.ci_low is None or check.ci_high is None:
        return "–"
    unit = "%" if check.ci_of == "delta_pct" else ""
    sign = "+" if check.ci_of != "candidate" else ""
    return f"[{check.ci_low:{sign}.3g}{unit}, {check.ci_high:{sign}.3g}{unit}]"


def _bound(check: CheckReport) -> str:
    return ", ".join(f"{name} {value:g}" for name, value in check.bound.items())


@register("markdown")
def render_markdown(verdict: Verdict) -> str:
    """A summary for a PR comment or ``$GITHUB_STEP_SUMMARY``, cut to fit GitHub's 65,536-character limit."""
    title = f"## {_ICON.get(verdict.status, '')} trace-gate: **{verdict.status.upper()}**"
    lines = [title, ""]
    if verdict.variants:
        b, c = verdict.variants["baseline"], verdict.variants["candidate"]
        lines.append(
            f"Baseline **{md_escape(b.label)}** vs candidate **{md_escape(c.label)}**"
            + (f" · confidence {verdict.confidence:.0%}" if verdict.confidence else "")
            + (f" · endpoint `{md_escape(verdict.endpoint or '')}`" if verdict.endpoint else "")
        )
        lines.append("")
    if verdict.error:
        lines += [f"> **Error** (exit {verdict.exit_code}): {md_escape(verdict.error, 2000)}", ""]
    if verdict.checks:
        lines += ["| | check | baseline | candidate | delta | interval | bound |", "|---|---|---:|---:|---:|---|---|"]
        for check in verdict.checks:
            status = check.status if check.comparable else "not comparable"
            where = f" [{md_escape(check.slice)}]" if check.slice else ""
            lines.append(
                f"| {_ICON[check.status]} {status} | `{check.metric}`{where} | {_num(check.baseline)} | "
                f"{_num(check.candidate)} | {_delta(check)} | {_interval(check)} | {_bound(check)} |"
            )
        lines.append("")
        notes = [c for c in verdict.checks if c.status != "pass"]
        for check in notes:
            lines.append(f"- {_ICON[check.status]} {md_escape(check.message, 1000)}")
        if notes:
            lines.append("")
    if verdict.regressions:
        lines += ["### Regressed cases", "", "| case | rule | baseline trace | candidate trace |", "|---|---|---|---|"]
        for r in verdict.regressions[:10]:
            golden = " (golden)" if r.golden else ""
            lines.append(
                f"| `{md_escape(r.case_id, 80)}`{golden} | {md_escape(r.detail)} | "
                f"`{(r.baseline_trace_ids or ['–'])[0]}` | `{(r.candidate_trace_ids or ['–'])[0]}` |"
            )
        lines.append("")
    if verdict.spend:
        s = verdict.spend
        cost = f", ${s.cost_usd:.4g}" if s.cost_usd is not None else ""
        lines.append(f"Spent {s.calls} calls{cost} in {s.rounds} rounds ({md_escape(s.stopped_because)}).")
    if verdict.mlflow and verdict.mlflow.session:
        lines.append(
            f"Traces: MLflow experiment `{md_escape(verdict.mlflow.experiment)}`, filter "
            f"``tags.`gate.session` = '{verdict.mlflow.session}'``."
        )
    lines.append("<!-- trace-gate -->")
    text = "\n".join(lines) + "\n"
    if len(text) > MARKDOWN_LIMIT:
        note = "\n\n_Report truncated to fit GitHub's 65,536-character limit; the full verdict is in the artifact._\n"
        text = text[: MARKDOWN_LIMIT - len(note) - 30].rsplit("\n", 1)[0] + note + "<!-- trace-gate -->\n"
    return text


_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml(text: str) -> str:
    return _XML_INVALID.sub("\ufffd", text)


@register("junit")
def render_junit(verdict: Verdict) -> str:
    """One testcase per check, for CI test-report UIs; failures carry the message."""
    suite = ET.Element("testsuite", name="trace-gate")
    failures = errors = skipped = 0
    for check in verdict.checks:
        case = ET.SubElement(suite, "testcase", classname="gate.checks", name=_xml(check.metric))
        message = _xml(check.message)
        if check.status == "fail":
            failures += 1
            ET.SubElement(case, "failure", message=message, type="regression").text = message
        elif check.status == "missing":
            errors += 1
            ET.SubElement(case, "error", message=message, type="missing-data").text = message
        elif check.status in ("warn", "inconclusive"):
            ET.SubElement(case, "system-out").text = f"{check.status}: {message}"
    if verdict.status == "error":
        errors += 1
        case = ET.SubElement(suite, "testcase", classname="gate", name="run")
        text = _xml(verdict.error or "error")
        ET.SubElement(case, "error", message=text, type=verdict.reason or "error").text = text
    suite.set("tests", str(len(suite)))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    root = ET.Element("testsuites", name="trace-gate")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _command_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _command_property(text: str) -> str:
    return _command_data(text).replace(":", "%3A").replace(",", "%2C")


@register("github")
def render_github(verdict: Verdict) -> str:
    """GitHub workflow commands: ``::error`` for failed and missing checks, ``::warning`` for the rest."""
    lines = []
    where = f"file={_command_property(verdict.config)}," if verdict.config else ""
    for check in verdict.checks:
        level = {"fail": "error", "missing": "error", "warn": "warning", "inconclusive": "warning"}.get(check.status)
        if level:
            title = _command_property(f"gate: {check.metric} {check.status}")
            lines.append(f"::{level} {where}title={title}::{_command_data(check.message)}")
    if verdict.status == "error":
        lines.append(f"::error {where}title=gate: run error::{_command_data(verdict.error or 'error')}")
    return "\n".join(lines) + ("\n" if lines else "")


@register("json")
def _render_json(verdict: Verdict) -> str:
    return render_json(verdict)
