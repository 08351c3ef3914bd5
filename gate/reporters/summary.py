"""The short human summary the gate prints to stderr."""

from __future__ import annotations

from gate._decide.checks import UNIT_OF
from gate._verdict.schema import VariantReport, Verdict

__all__ = ["render_summary"]


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"


def render_summary(verdict: Verdict) -> str:
    """A few lines: the status, one row per check, and where the traces are."""
    lines = [f"gate: {verdict.status.upper()} (exit {verdict.exit_code})"]
    if verdict.error:
        lines.append(f"  {verdict.error}")
    if verdict.variants:
        b, c = verdict.variants["baseline"], verdict.variants["candidate"]
        sources = verdict.comparison
        stored = {
            "baseline": sources is not None and sources.baseline_source == "stored",
            "candidate": sources is not None and sources.candidate_source == "stored",
        }

        def made(report: VariantReport, variant: str) -> str:
            what = f"{report.traces} stored traces" if stored[variant] else f"{report.calls} calls"
            return f"{variant} {report.label}: {what}, {report.errors} errors"

        lines.append(f"  {made(b, 'baseline')} · {made(c, 'candidate')}")
        if sources is not None and (sources.baseline_from or sources.pair_by != "case_id"):
            reused = f"baseline reused from {sources.baseline_from}; " if sources.baseline_from else ""
            paired = "unpaired statistics" if sources.pair_by == "none" else f"paired by {sources.pair_by}"
            lines.append(f"  {reused}{paired} ({sources.why})")
        for variant in (b, c):
            for error in variant.first_errors:
                lines.append(f"  {variant.label} error: {error}")
    if verdict.checks:
        rows = [("status", "check", "baseline", "candidate", "delta", "bound")]
        for check in verdict.checks:
            delta = (
                "-"
                if check.delta is None
                else (f"{check.delta_pct:+.1f}%" if check.delta_pct is not None else f"{check.delta:+.4g}")
            )
            bound = ", ".join(f"{k}={v:g}" for k, v in check.bound.items())
            status = check.status if check.comparable else "not comparable"
            metric = f"{check.metric} [{check.slice}]" if check.slice else check.metric
            rows.append((status.upper(), metric, _num(check.baseline), _num(check.candidate), delta, bound))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            lines.append("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        # What the intervals are about: one phrase when all agree, else each with its checks.
        about: dict[str, list[str]] = {}
        for check in verdict.checks:
            if check.population is not None:
                about.setdefault(check.population, []).append(check.metric)
        if len(about) == 1:
            lines.append(f"  intervals: {UNIT_OF[next(iter(about))]}")
        elif about:
            lines.append("  intervals: " + "; ".join(f"{UNIT_OF[p]} ({', '.join(m)})" for p, m in about.items()))
        for check in verdict.checks:
            if check.status != "pass":
                lines.append(f"  {check.status}: {check.message}")
    for regression in verdict.regressions[:5]:
        golden = " (golden)" if regression.golden else ""
        lines.append(
            f"  regressed{golden}: case {regression.case_id}: {regression.detail}; traces "
            f"{', '.join(regression.baseline_trace_ids[:1] + regression.candidate_trace_ids[:1])}"
        )
    unpaired = [f"{side}: {', '.join(ids)}" for side, ids in verdict.unpaired_cases.items() if ids]
    if unpaired:
        lines.append(f"  cases with data for one version only: {'; '.join(unpaired)}")
    for name, report in verdict.scorers.items():
        if report.missing and report.first_error:
            lines.append(f"  warning: scorer '{name}' gave no value for {report.missing} traces: {report.first_error}")
    if verdict.spend:
        s = verdict.spend
        cost = f", ${s.cost_usd:.4g}" if s.cost_usd is not None else ""
        lines.append(
            f"  spent {s.calls} calls (+{s.warmup_calls} warm-up){cost}, {s.repeats_per_case} repeats per case"
            f" in {s.rounds} rounds; stopped: {s.stopped_because}"
        )
    if verdict.mlflow and verdict.mlflow.session:
        uri = verdict.mlflow.tracking_uri
        where = uri if uri.startswith(("http://", "https://")) else f"mlflow ui --backend-store-uri {uri}"
        lines.append(
            f"  traces: experiment '{verdict.mlflow.experiment}', tag gate.session = {verdict.mlflow.session} ({where})"
        )
    return "\n".join(lines) + "\n"
