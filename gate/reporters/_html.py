"""The HTML reporter: one self-contained page (inline CSS, inline SVG charts, no script, no network request)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from html import escape
from typing import Literal

from gate._decide.checks import UNIT_OF
from gate._metrics import metric_info, split_metric_key
from gate._verdict.schema import CaseReport, CaseSide, CheckReport, RegressionReport, Verdict
from gate.reporters._interface import register

__all__ = ["CSP", "render_html"]

Side = Literal["baseline", "candidate"]
_SIDES: tuple[Side, Side] = ("baseline", "candidate")
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"  # nothing loads, nothing runs
_COLOUR = {"baseline": "#4c78a8", "candidate": "#e45756"}
_W, _H, _LEFT, _TOP, _BOTTOM = 480, 210, 40, 30, 34  # chart size and margins, in px
_BINS = 20  # histogram bins for continuous metrics
_CATEGORIES = 10  # at most this many distinct values (0/1 scores, small counts): one bar group per value
_TAIL = 0.98  # values above this pooled quantile share the last bin, so one slow call keeps the rest readable
# The intervals chart: width, row height, the plot's left and right ends (metric names to the left), in px
_IW, _IROW, _IPL, _IPR = 960, 46, 250, 940
_PAD = 0.15  # each row's scale reaches this share of its span beyond the outermost value, for the numbers

_NONE = '<span class="none">{}</span>'
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2328;background:#fff}
main{max-width:1200px;margin:0 auto;padding:0 24px 40px}header{padding:20px 24px;color:#fff}
header h1{margin:0 0 6px;font-size:24px}
header dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:10px 0 0}
header dt{opacity:.8}header dd{margin:0;word-break:break-all}
h2{margin:28px 0 10px;font-size:18px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
table{border-collapse:collapse;width:100%}table.cases{table-layout:fixed}table.cases th:first-child{width:18%}
th,td{border:1px solid #d0d7de;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace}
pre{margin:4px 0;white-space:pre-wrap;word-break:break-word}.msg{color:#57606a;font-size:12px;margin-top:2px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-weight:600;font-size:12px}
.s-pass{background:#1a7f37}.s-fail,.s-error{background:#cf222e}.s-warn{background:#bf8700}
.s-inconclusive{background:#6e7781}.s-missing{background:#8250df}
tr.s-pass,tr.s-fail,tr.s-warn,tr.s-inconclusive,tr.s-missing{background:none}
tr.s-fail td{background:#ffebe9}tr.s-warn td{background:#fff8c5}tr.s-missing td{background:#fbefff}
.golden{background:#9a6700}.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:16px}
figure{margin:0;border:1px solid #d0d7de;border-radius:6px;padding:8px}figcaption{font-size:12px;color:#57606a}
svg.chart{display:block;width:100%;height:auto}svg text{font-size:11px;fill:#57606a}
.out{white-space:pre-wrap;word-break:break-word;max-height:16em;overflow:auto;background:#f6f8fa;padding:6px}
.vals{font-size:12px;color:#57606a;margin:4px 0}.none{color:#6e7781;font-style:italic}
.err{background:#ffebe9;border:1px solid #cf222e;padding:10px;border-radius:6px}
footer{margin-top:32px;font-size:12px;color:#57606a}
svg.intervals{display:block;width:100%;max-width:960px;height:auto}.intervals text.m{font-size:12px;fill:#1f2328}
.intervals .s-pass{color:#1a7f37}.intervals .s-fail{color:#cf222e}.intervals .s-warn{color:#bf8700}
.intervals .s-inconclusive{color:#6e7781}.intervals .s-missing{color:#8250df}.intervals .nc{color:#8c959f;opacity:.6}
.intervals text.why{font-style:italic}
"""


def _e(value: object) -> str:
    """Escape anything from the verdict for text and quoted attributes alike."""
    return escape(str(value), quote=True)


def _num(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:,.4g}" if abs(value) < 10_000 else f"{value:,.0f}"


def _badge(status: str, css: str | None = None) -> str:
    return f'<span class="badge s-{_e(css or status)}">{_e(status)}</span>'


def _dl(rows: Iterable[tuple[str, str | None]]) -> str:
    return "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in rows if v) + "</dl>"


def _label(verdict: Verdict, side: Side) -> str:
    return verdict.variants[side].label if verdict.variants else side


def _header(verdict: Verdict) -> str:
    spend = verdict.spend
    spent = None
    if spend:
        cost = "cost unknown" if spend.cost_usd is None else f"${spend.cost_usd:.4g}"
        spent = _e(
            f"{spend.calls} calls (+{spend.warmup_calls} warm-up), {cost}, {spend.repeats_per_case} repeats per case "
            f"in {spend.rounds} rounds; stopped: {spend.stopped_because}"
        )
    variants = None
    if verdict.variants:
        b, c = verdict.variants["baseline"], verdict.variants["candidate"]
        variants = " → ".join(
            f"<b>{_e(v.label)}</b> <code>{_e(v.target or (v.selection.filter if v.selection else ''))}</code>"
            for v in (b, c)
        )
    flow = verdict.mlflow
    rows: list[tuple[str, str | None]] = [("versions", variants)]
    if flow:
        rows += [
            ("session", f"<code>gate.session = {_e(flow.session)}</code>" if flow.session else None),
            ("experiment", _e(f"{flow.experiment} (id {flow.experiment_id or '?'})")),
            ("tracking URI", f"<code>{_e(flow.tracking_uri)}</code>"),
        ]
    report_only = " (report only: a failing verdict exits 0)" if verdict.report_only else ""
    rows += [
        ("endpoint", _e(verdict.endpoint) if verdict.endpoint else None),
        ("spend", spent),
        ("confidence", f"{verdict.confidence:.0%}" if verdict.confidence else None),
        ("exit code", f"{verdict.exit_code}{report_only}"),
    ]
    return (
        f'<header class="s-{_e(verdict.status)}"><h1>trace-gate: {_e(verdict.status.upper())}</h1>{_dl(rows)}</header>'
    )


def _delta(check: CheckReport) -> str:
    if check.delta_pct is not None:
        return f"{check.delta_pct:+.1f}%"
    return "–" if check.delta is None else f"{check.delta:+.4g}"


def _interval(check: CheckReport, confidence: float | None) -> str:
    if check.ci_low is None or check.ci_high is None:
        return "–"
    unit, sign = ("%" if check.ci_of == "delta_pct" else ""), ("+" if check.ci_of != "candidate" else "")
    at = f" at {confidence:.0%}" if confidence else ""
    extra = "" if check.p_value is None else f", McNemar p={check.p_value:.3g}"
    if check.population in UNIT_OF:
        extra += f"; {UNIT_OF[check.population]}"
    return _e(f"{check.ci_of} in [{check.ci_low:{sign}.3g}{unit}, {check.ci_high:{sign}.3g}{unit}]{at}{extra}")


def _checks(verdict: Verdict) -> str:
    if not verdict.checks:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("check", "baseline", "candidate", "delta", "interval", "bound", "status"))
    rows = []
    for c in verdict.checks:
        bound = ", ".join(f"{k} {v:g}" for k, v in c.bound.items())
        severity = " <small>(warn only)</small>" if c.severity == "warn" else ""
        badge = _badge(c.status if c.comparable else "not comparable", c.status)
        rows.append(
            f'<tr class="s-{_e(c.status)}"><td><code>{_e(c.metric)}</code><div class="msg">{_e(c.message)}</div></td>'
            f'<td class="n">{_num(c.baseline)}</td><td class="n">{_num(c.candidate)}</td><td class="n">{_delta(c)}</td>'
            f"<td>{_interval(c, verdict.confidence)}</td><td>{_e(bound)}</td><td>{badge}{severity}</td></tr>"
        )
    return f'<h2>Checks</h2><table class="checks"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _in_units(value: float | None, ci_of: str | None) -> str:
    """A number on a row's scale: a signed % or change for deltas, the plain value for the candidate; − for minus."""
    if value is None or math.isnan(value):
        return "open"
    if math.isinf(value):
        return "+∞" if value > 0 else "−∞"
    value += 0.0  # no "−0"
    if ci_of == "delta_pct":
        text = f"{value:+,.1f}%" if value == 0 or abs(value) >= 1 else f"{value:+.2g}%"
    else:
        text = ("+" if ci_of == "delta" and value >= 0 else "") + _num(value)
    return text.replace("-", "−")


def _bound_at(name: str, limit: float, check: CheckReport) -> tuple[float, str] | None:
    """Where a bound sits on the scale of the check's interval, and its label; None: it is judged on another scale."""
    of, sign = check.ci_of, (1.0 if name in ("at_most", "max_increase", "max_increase_pct") else -1.0)
    if not math.isfinite(limit):
        return None
    if name in ("at_most", "at_least") and of == "candidate":
        return limit, f"{'≤' if sign > 0 else '≥'} {limit:g}"
    way = "+" if sign > 0 else "−"
    if limit == 0 and (name, of) in (("max_increase", "delta"), ("max_decrease", "delta")):
        return 0.0, f"no {'rise' if sign > 0 else 'fall'}"
    if name in ("max_increase", "max_decrease") and of == "delta":
        return sign * limit, f"{way}{limit:g}"
    if name in ("max_increase_pct", "max_decrease_pct") and of == "delta_pct":
        return sign * limit, f"{way}{limit:g}%" if limit else f"no {'rise' if sign > 0 else 'fall'}"
    if name in ("max_increase_pct", "max_decrease_pct") and of == "delta" and check.delta_pct is None:
        return 0.0, f"no {'rise' if sign > 0 else 'fall'} (baseline 0)"  # a % of 0: any change that way breaks it
    return None


def _no_interval(check: CheckReport) -> str | None:
    """Why a check has no interval to draw, or None when it has one."""
    prefix = f"{check.metric}: "
    if check.status == "missing":
        message = check.message[len(prefix) :] if check.message.startswith(prefix) else check.message
        return f"missing: {message}"
    if check.ci_of is None:
        return f"no interval: counted over cases, not sampled; its value is {_num(check.candidate)}"
    ends = [e for e in (check.ci_low, check.ci_high) if e is not None and not math.isnan(e)]
    return None if ends else "no interval in the verdict"


def _interval_row(check: CheckReport, top: int) -> str:
    """One check: its interval (bar; an open end is an arrow), point estimate (dot) and bounds (dark lines)."""
    of = check.ci_of
    metric, aggregation = split_metric_key(check.metric)
    unit = "" if aggregation in ("share", "rate") else metric_info(metric).unit
    drawn = {name: _bound_at(name, limit, check) for name, limit in check.bound.items()}
    bounds = ", ".join(
        at[1] if at else f"{name} {limit:g} (judged on another scale; not drawn)"
        for (name, limit), at in zip(check.bound.items(), drawn.values(), strict=True)
    )
    status = check.status if check.comparable else f"{check.status} (not comparable)"
    word = check.status if check.comparable else "not comparable"
    why = _no_interval(check)
    point = {"delta_pct": check.delta_pct, "delta": check.delta, "candidate": check.candidate}.get(of or "")
    point = point if point is not None and math.isfinite(point) else None
    low, high = (None if e is None or math.isnan(e) else e for e in (check.ci_low, check.ci_high))
    lo_open, hi_open = low is None or math.isinf(low), high is None or math.isinf(high)
    units = f" {unit}" if unit and of != "delta_pct" else ""
    shown = _in_units(point, of) if point is not None else ""
    if why is None:
        ends = f"{'(' if lo_open else '['}{_in_units(low, of)}, {_in_units(high, of)}{')' if hi_open else ']'}"
        summary = f"{shown} {ends}{units}".strip()
        scale = {
            "delta_pct": f"{shown or '%'} change",
            "delta": f"{shown}{units} change" if shown else f"change{units}",
            "candidate": f"candidate {shown}{units}" if shown else f"candidate{units}",
        }[of or "candidate"]
        hidden = sum(b is None for b in drawn.values())
        sub = f"{word} · {scale}" + (f" · {hidden} bound{'s' * (hidden > 1)} on another scale" if hidden else "")
    else:
        summary, sub = why, word
    title = f"{check.metric}: {summary} vs bound{'s' * (len(check.bound) > 1)} {bounds or 'none'}: {status}"
    css = f"s-{check.status}" + ("" if check.comparable else " nc")
    mid = top + 22
    out = [
        f'<g class="row {_e(css)}" role="img"><title>{_e(title)}</title>'
        f'<text class="m" x="8" y="{top + 19:.0f}">{_e(_clip(check.metric, 36))}</text>'
        f'<text x="8" y="{top + 35:.0f}">{_e(sub)}</text>'
    ]
    if why is not None:
        out.append(f'<text class="why" x="{_IPL}" y="{mid + 4:.0f}">{_e(_clip(why, 110))}</text></g>')
        return "".join(out)
    at = {name: b for name, b in drawn.items() if b is not None}
    finite = [v for v in (low, high, point) if v is not None and math.isfinite(v)]
    finite += [b[0] for b in at.values()] + ([0.0] if of != "candidate" else [])
    lo, hi = min(finite, default=0.0), max(finite, default=0.0)
    if hi == lo:
        lo, hi = lo - (abs(lo) / 2 or 0.5), hi + (abs(hi) / 2 or 0.5)
    lo, hi = lo - _PAD * (hi - lo), hi + _PAD * (hi - lo)

    def x(value: float | None, open_at: float) -> float:
        if value is None or math.isinf(value):
            return open_at
        return _IPL + (value - lo) / (hi - lo) * (_IPR - _IPL)

    x_lo, x_hi = x(low, _IPL), x(high, _IPR)
    out.append(f'<line class="track" x1="{_IPL}" x2="{_IPR}" y1="{mid}" y2="{mid}" stroke="#eaeef2"/>')
    if of != "candidate":
        z = x(0.0, _IPL)
        out.append(
            f'<line class="zero" x1="{z:.1f}" x2="{z:.1f}" y1="{top + 12}" y2="{top + 32}" stroke="#8c959f" '
            'stroke-dasharray="2 2"/>'
        )
    bar_lo, bar_hi = (_IPL + 7 if lo_open else x_lo), (_IPR - 7 if hi_open else x_hi)  # an arrow ends an open side
    width = max(bar_hi - bar_lo, 2.0)
    out.append(
        f'<rect class="ci" x="{bar_lo:.1f}" y="{mid - 4}" width="{width:.1f}" height="8" fill="currentColor" '
        'fill-opacity=".35"/>'
    )
    for is_open, edge, tip in ((lo_open, _IPL, 7), (hi_open, _IPR, -7)):
        if is_open:
            out.append(
                f'<polygon class="open" points="{edge},{mid} {edge + tip},{mid - 6} {edge + tip},{mid + 6}" '
                'fill="currentColor"/>'
            )
    for name, (value, label) in at.items():
        bx = x(value, _IPL)
        out.append(
            f'<line class="bound" data-bound="{_e(name)}" x1="{bx:.1f}" x2="{bx:.1f}" y1="{top + 12}" '
            f'y2="{top + 32}" stroke="#1f2328" stroke-width="2"/>'
            f'<text x="{min(max(bx, _IPL + 30), _IPR - 30):.1f}" y="{top + 10}" text-anchor="middle">{_e(label)}</text>'
        )
    if point is not None:
        out.append(
            f'<circle class="pt" cx="{x(point, _IPL):.1f}" cy="{mid}" r="5" fill="currentColor" stroke="#fff" '
            'stroke-width="1.5"/>'
        )
    lo_text, hi_text = _in_units(low, of), _in_units(high, of)
    if lo_text == hi_text and not (lo_open or hi_open):  # a point interval: one number, not the same twice
        out.append(f'<text class="ends" x="{x_lo:.1f}" y="{top + 41}" text-anchor="middle">{_e(lo_text)}</text></g>')
    else:
        out.append(
            f'<text class="lo" x="{x_lo - 3 * (not lo_open):.1f}" y="{top + 41}" '
            f'text-anchor="{"start" if lo_open else "end"}">{_e(lo_text)}</text>'
            f'<text class="hi" x="{x_hi + 3 * (not hi_open):.1f}" y="{top + 41}" '
            f'text-anchor="{"end" if hi_open else "start"}">{_e(hi_text)}</text></g>'
        )
    return "".join(out)


def _intervals(verdict: Verdict) -> str:
    """One row per check, each on its own scale: how far inside or outside its bound the interval lies."""
    if not verdict.checks:
        return ""
    height = len(verdict.checks) * _IROW + 8
    rows = "".join(_interval_row(c, 4 + i * _IROW) for i, c in enumerate(verdict.checks))
    at = f"one-sided {verdict.confidence:.0%} " if verdict.confidence else ""
    about = (
        f"Each check's {at}interval (bar; an arrow is an open end) and point estimate (dot) against its bound "
        "(dark line), in the units its check is judged in: % change, change, or the candidate's value. Each row has "
        "its own scale; the dotted line is no change."
    )
    return (
        f'<h2>Intervals</h2><p class="msg">{_e(about)}</p><svg class="intervals" role="group" '
        f'aria-label="Intervals: each check against its bound" width="{_IW}" height="{height}" '
        f'viewBox="0 0 {_IW} {height}">{rows}</svg>'
    )


def _quantile(ordered: Sequence[float], q: float) -> float:
    at = (len(ordered) - 1) * q
    low = math.floor(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def _chart(metric: str, data: dict[Side, list[float]], labels: dict[Side, str]) -> str:
    """Both versions' share of traces per bin, side by side, with each version's median marked."""
    series = {side: sorted(x for x in data.get(side, []) if math.isfinite(x)) for side in _SIDES}
    pooled = sorted(series["baseline"] + series["candidate"])
    aria = _e(f"{metric}: distribution of per-trace values, baseline vs candidate")
    svg = [f'<svg class="chart" role="img" aria-label="{aria}" width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}">']
    plot_w, plot_h = _W - _LEFT - 10, _H - _TOP - _BOTTOM
    if not pooled:
        svg.append(f'<text x="{_W // 2}" y="{_H // 2}" text-anchor="middle" fill="#6e7781">no values</text></svg>')
        return "".join(svg)
    distinct = sorted(set(pooled))
    categorical = len(distinct) <= _CATEGORIES
    lo, hi = pooled[0], (pooled[-1] if categorical else _quantile(pooled, _TAIL))
    hi = pooled[-1] if hi <= lo else hi
    n_bins = len(distinct) if categorical else _BINS
    step = (hi - lo) / _BINS or 1.0
    index = {v: i for i, v in enumerate(distinct)}

    def bin_of(x: float) -> int:
        return index[x] if categorical else max(0, min(int((x - lo) / step), _BINS - 1))

    shares = {}
    for side in _SIDES:
        counts = [0] * n_bins
        for x in series[side]:
            counts[bin_of(x)] += 1
        shares[side] = [n / len(series[side]) if series[side] else 0.0 for n in counts]
    top = max(max(s) for s in shares.values()) or 1.0
    group = plot_w / max(n_bins, 5)  # a 0/1 score gets two bar groups, not two walls
    x0 = _LEFT + (plot_w - group * n_bins) / 2
    base_y = _TOP + plot_h
    for i in range(n_bins):
        name = _num(distinct[i]) if categorical else f"{_num(lo + i * step)}–{_num(lo + (i + 1) * step)}"
        name += "+" if not categorical and i == n_bins - 1 and hi < pooled[-1] else ""
        for k, side in enumerate(_SIDES):
            share = shares[side][i]
            h, x = share / top * plot_h, x0 + i * group + group * (0.1 + 0.4 * k)
            tip = _e(f"{labels[side]} ({side}) {name}: {share:.1%} of traces")
            svg.append(
                f'<rect x="{x:.1f}" y="{base_y - h:.1f}" width="{group * 0.4:.1f}" height="{h:.1f}" '
                f'fill="{_COLOUR[side]}"><title>{tip}</title></rect>'
            )
        if categorical:
            svg.append(f'<text x="{x0 + (i + 0.5) * group:.1f}" y="{base_y + 14}" text-anchor="middle">{name}</text>')
    if not categorical:
        end = f"{_num(hi)}+" if hi < pooled[-1] else _num(hi)
        svg.append(f'<text x="{_LEFT}" y="{base_y + 14}">{_num(lo)}</text>')
        svg.append(f'<text x="{_LEFT + plot_w}" y="{base_y + 14}" text-anchor="end">{end}</text>')
        for side in (s for s in _SIDES if series[s]):
            med = _quantile(series[side], 0.5)
            x = _LEFT + min(max((med - lo) / (hi - lo or 1.0), 0.0), 1.0) * plot_w
            svg.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP}" y2="{base_y}" stroke="{_COLOUR[side]}" '
                f'stroke-dasharray="4 3"><title>{_e(f"{labels[side]} median {_num(med)}")}</title></line>'
            )
    svg.append(f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{base_y}" y2="{base_y}" stroke="#8c959f"/>')
    svg.append(f'<text x="{_LEFT - 4}" y="{_TOP + 4}" text-anchor="end">{top:.0%}</text>')
    svg.append(f'<text x="{_LEFT - 4}" y="{base_y}" text-anchor="end">0%</text>')
    for k, side in enumerate(_SIDES):
        x = _LEFT + k * plot_w / 2
        svg.append(f'<rect x="{x:.1f}" y="8" width="10" height="10" fill="{_COLOUR[side]}"/>')
        label = labels[side] if len(labels[side]) <= 24 else labels[side][:23] + "…"  # two legends share a line
        svg.append(f'<text x="{x + 14:.1f}" y="17">{_e(label)} ({side}, n={len(series[side])})</text>')
    return "".join(svg) + "</svg>"


def _caption(metric: str, data: dict[Side, list[float]], verdict: Verdict) -> str:
    parts = []
    for side in _SIDES:
        xs = sorted(x for x in data.get(side, []) if math.isfinite(x))
        stats = f"median {_num(_quantile(xs, 0.5))}, mean {_num(sum(xs) / len(xs))}" if xs else "no values"
        parts.append(f"{_e(_label(verdict, side))}: {stats}")
    checks = [c for c in verdict.checks if c.metric.split("/")[0] == metric]
    badges = " ".join(f"<code>{_e(c.metric)}</code> {_badge(c.status)}" for c in checks)
    return f"<figcaption><b>{_e(metric)}</b> per trace · {' · '.join(parts)} {badges}</figcaption>"


def _charts(verdict: Verdict) -> str:
    if not verdict.distributions:
        return ""
    labels = {side: _label(verdict, side) for side in _SIDES}
    figures = "".join(
        f"<figure>{_chart(metric, data, labels)}{_caption(metric, data, verdict)}</figure>"
        for metric, data in verdict.distributions.items()
    )
    return f'<h2>Distributions</h2><div class="charts">{figures}</div>'


def _trace_ids(ids: Sequence[str]) -> str:
    return " ".join(f"<code>{_e(t)}</code>" for t in ids) or _NONE.format("none")


def _regression(r: RegressionReport) -> str:
    golden = ' <span class="badge golden">golden</span>' if r.golden else ""
    return (
        f"<li><b>{_e(r.case_id)}</b>{golden} <code>{_e(r.rule)}</code>: {_e(r.detail)}"
        f'<div class="vals">baseline traces: {_trace_ids(r.baseline_trace_ids)}</div>'
        f'<div class="vals">candidate traces: {_trace_ids(r.candidate_trace_ids)}</div></li>'
    )


def _regressions(verdict: Verdict) -> str:
    if verdict.status == "error" and not verdict.regressions:
        return ""
    items = "".join(_regression(r) for r in verdict.regressions)
    body = f'<ol class="regressions">{items}</ol>' if items else '<p class="none">No case got worse.</p>'
    unpaired = "".join(
        f"<p>{_e(kind.replace('_', ' '))}: {', '.join(f'<code>{_e(c)}</code>' for c in ids)}</p>"
        for kind, ids in verdict.unpaired_cases.items()
        if ids
    )
    return f"<h2>Regressions ({len(verdict.regressions)})</h2>{body}{unpaired}"


def _side(side: CaseSide | None) -> str:
    if side is None:
        return f"<td>{_NONE.format('not run')}</td>"
    errors = f"{_badge(f'{side.errors} error(s)', 'fail')} " if side.errors else ""
    output = f'<div class="out">{_e(side.output)}</div>' if side.output is not None else _NONE.format("no output")
    values = " · ".join(f"{_e(k)} {_num(v)}" for k, v in side.values.items())
    n = len(side.trace_ids)
    traces = f"<details><summary>{n} trace{'s' * (n != 1)}</summary>{_trace_ids(side.trace_ids)}</details>"
    return f'<td>{errors}{output}<div class="vals">{values}</div>{traces}</td>'


def _case(case: CaseReport) -> str:
    golden = ' <span class="badge golden">golden</span>' if case.golden else ""
    inputs = json.dumps(case.inputs, indent=2, ensure_ascii=False, default=str)
    first = f"<td><b>{_e(case.case_id)}</b>{golden}<pre>{_e(inputs)}</pre></td>"
    return f"<tr>{first}{_side(case.baseline)}{_side(case.candidate)}</tr>"


def _cases(verdict: Verdict) -> str:
    if not verdict.cases:
        return ""
    head = "".join(f"<th>{_e(_label(verdict, s))} ({s})</th>" for s in _SIDES)
    rows = "".join(_case(c) for c in verdict.cases)
    table = f'<table class="cases"><thead><tr><th>case</th>{head}</tr></thead>{rows}</table>'
    return f"<h2>Cases ({len(verdict.cases)})</h2>{table}"


def _scorers(verdict: Verdict) -> str:
    if not verdict.scorers:
        return ""
    head = "".join(
        f"<th>{h}</th>" for h in ("scorer", "type", "scored", "missing", "judge tokens in/out", "first error")
    )
    rows = "".join(
        f"<tr><td><code>{_e(name)}</code></td><td>{_e(s.type)}</td><td class='n'>{s.scored}</td>"
        f"<td class='n'>{s.missing}</td><td class='n'>{s.judge_input_tokens} / {s.judge_output_tokens}</td>"
        f"<td>{_e(s.first_error or '')}</td></tr>"
        for name, s in verdict.scorers.items()
    )
    return f"<h2>Scorers</h2><table><thead><tr>{head}</tr></thead>{rows}</table>"


def _footer(verdict: Verdict) -> str:
    rows = [("gate", verdict.gate_version), ("config", verdict.config)]
    rows += [(f"fingerprint {k}", v) for k, v in verdict.fingerprint.items()]
    rows += [(f"timing {k}", str(v)) for k, v in verdict.timing.items()]
    return "<footer>" + " · ".join(f"{_e(k)}: <code>{_e(v)}</code>" for k, v in rows if v) + "</footer>"


@register("html")
def render_html(verdict: Verdict) -> str:
    """One self-contained HTML page: a pure function of the verdict, byte-for-byte the same for the same verdict."""
    error = ""
    if verdict.status == "error" or verdict.error:
        error = f'<h2>Error: {_e(verdict.reason or "unknown")}</h2><pre class="err">{_e(verdict.error or "")}</pre>'
    body = "".join(
        [
            error,
            _checks(verdict),
            _intervals(verdict),
            _charts(verdict),
            _regressions(verdict),
            _cases(verdict),
            _scorers(verdict),
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>trace-gate: {_e(verdict.status.upper())}</title><style>{_CSS}</style></head>"
        f"<body>{_header(verdict)}<main>{body}{_footer(verdict)}</main></body></html>\n"
    )
