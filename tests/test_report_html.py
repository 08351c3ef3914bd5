"""The HTML report: its content, escaping, self-containment, determinism, golden file, and a real headless Chromium."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gate._verdict.schema import Verdict
from gate.reporters import REPORTERS
from gate.reporters._html import render_html

GOLDEN = Path(__file__).parent / "golden"
# `gate run --simulate -c thresholds.yaml`, cut to 3 cases and 64 values per distribution series.
VERDICT_JSON = GOLDEN / "html_verdict_pass.json"
# Regenerate after an intended change: GATE_UPDATE_GOLDEN=1 python -m pytest -n 0 tests/test_report_html.py
GOLDEN_HTML = GOLDEN / "html_pass.html"
CHROMIUM = Path("/usr/bin/chromium")  # Debian's `chromium` package
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
PAYLOAD = f"\"'>{SCRIPT}{IMG}"
# enums: the model refuses planted text there
LITERAL_FIELDS = {"status", "severity", "ci_of", "on_inconclusive", "population"}
FREE_KEYED = {"inputs", "distributions", "scorers", "values", "fingerprint", "bound"}  # dicts keyed by free text
URL_ATTRIBUTES = {"src", "href", "xlink:href", "action", "formaction", "poster", "srcset", "data", "background"}


def _verdict() -> Verdict:
    return Verdict.model_validate_json(VERDICT_JSON.read_text(encoding="utf-8"))


def _with_regression(verdict: Verdict) -> Verdict:
    data = verdict.model_dump(mode="json")
    case = data["cases"][0]
    data["regressions"] = [
        {
            "case_id": case["case_id"],
            "rule": "ok_to_error",
            "detail": "every baseline run answered, every candidate run raised",
            "golden": True,
            "baseline_trace_ids": case["baseline"]["trace_ids"][:2],
            "candidate_trace_ids": case["candidate"]["trace_ids"][:2],
        }
    ]
    return Verdict.model_validate(data)


def _plant(node: Any, key: str = "") -> Any:
    """Append the payload to every string and free-text dict key of a dumped verdict."""
    if isinstance(node, str):
        return node if key in LITERAL_FIELDS else node + PAYLOAD
    if isinstance(node, list):
        return [_plant(item, key) for item in node]
    if isinstance(node, dict):
        return {(k + PAYLOAD if key in FREE_KEYED else k): _plant(v, k) for k, v in node.items()}
    return node


def _planted_everywhere() -> Verdict:
    data = _with_regression(_verdict()).model_dump(mode="json")
    data["error"] = "a run error"
    return Verdict.model_validate(_plant(data))


def _planted_output() -> Verdict:
    data = _verdict().model_dump(mode="json")
    data["cases"][0]["candidate"]["output"] = f"Here is your answer. {SCRIPT} {IMG}"
    return Verdict.model_validate(data)


class _Elements(HTMLParser):
    """Every start tag of a page, with its attributes, as a browser's tokenizer sees them."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str]]] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, {name: value or "" for name, value in attrs}))


def _charts(html: str) -> list[dict[str, str]]:
    return [attrs for tag, attrs in _Elements(html).found if tag == "svg" and "chart" in attrs.get("class", "").split()]


def _check(metric: str = "latency_ms/p95", **fields: Any) -> dict[str, Any]:
    """A decided check as the verdict holds it: by default latency_ms/p95 +3.1% in [-2.0%, +8.4%], bound +10%."""
    check = {
        "metric": metric,
        "status": "pass",
        "severity": "error",
        "baseline": 200.0,
        "candidate": 206.2,
        "delta": 6.2,
        "delta_pct": 3.1,
        "bound": {"max_increase_pct": 10.0},
        "message": f"{metric} rose 3.1% (200 → 206.2 ms), within +10%",
        "ci_low": -2.0,
        "ci_high": 8.4,
        "ci_of": "delta_pct",
    }
    return {**check, **fields}


def _with_checks(*checks: dict[str, Any]) -> Verdict:
    data = _verdict().model_dump(mode="json")  # JSON mode turns an infinite end into null: the checks go in after
    data["checks"] = list(checks)
    return Verdict.model_validate(data)


PASSING = _check()
FAILING = _check("latency_ms/p50", status="fail", delta_pct=20.0, ci_low=12.0, ci_high=30.0)
OPEN = _check("total_tokens/mean", status="inconclusive", delta_pct=6.0, ci_low=2.0, ci_high=math.inf)
MISSING = _check(
    "cost_usd/sum",
    status="missing",
    baseline=None,
    candidate=None,
    delta=None,
    delta_pct=None,
    ci_low=None,
    ci_high=None,
    ci_of=None,
    message="cost_usd/sum: no data for baseline; a check without data cannot pass",
)
COUNTED = _check(
    "cases_regressed/count",
    status="fail",
    baseline=None,
    candidate=2.0,
    delta=None,
    delta_pct=None,
    bound={"at_most": 0.0},
    ci_low=None,
    ci_high=None,
    ci_of=None,
)
NOT_COMPARABLE = _check("ttft_ms/p95", status="inconclusive", comparable=False)


@dataclass
class _Row:
    """One row of the intervals chart: its classes, its <title>, its elements and its texts (by class)."""

    css: list[str]
    title: str = ""
    elements: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    texts: list[tuple[str, str]] = field(default_factory=list)

    def one(self, tag: str, css: str) -> dict[str, str]:
        found = self.all(tag, css)
        assert len(found) == 1, (tag, css, self.elements)
        return found[0]

    def all(self, tag: str, css: str) -> list[dict[str, str]]:
        return [attrs for t, attrs in self.elements if t == tag and attrs.get("class") == css]

    def text(self, css: str) -> str:
        return "".join(text for c, text in self.texts if c == css)


class _IntervalRows(HTMLParser):
    """The rows of a page's intervals chart, as a browser's tokenizer sees them."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.svgs: list[dict[str, str]] = []
        self.rows: list[_Row] = []
        self._inside = self._row = False
        self._text: str | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = {name: value or "" for name, value in attrs}
        if tag == "svg" and "intervals" in named.get("class", "").split():
            self._inside = True
            self.svgs.append(named)
        elif self._inside and tag == "g" and "row" in named.get("class", "").split():
            self._row = True
            self.rows.append(_Row(named["class"].split()))
        elif self._row:
            self.rows[-1].elements.append((tag, named))
            self._text = named.get("class", "") if tag == "text" else "title" if tag == "title" else None

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._inside = self._row = False
        elif tag == "g":
            self._row = False
        self._text = None

    def handle_data(self, data: str) -> None:
        if self._row and self._text == "title":
            self.rows[-1].title += data
        elif self._row and self._text is not None:
            self.rows[-1].texts.append((self._text, data))


def _rows(*checks: dict[str, Any]) -> dict[str, _Row]:
    parsed = _IntervalRows(render_html(_with_checks(*checks)))
    assert len(parsed.svgs) == 1
    return {row.title.split(":")[0]: row for row in parsed.rows}


def _bar(row: _Row) -> tuple[float, float]:
    rect = row.one("rect", "ci")
    return float(rect["x"]), float(rect["x"]) + float(rect["width"])


def _bounds(row: _Row) -> list[float]:
    return [float(line["x1"]) for line in row.all("line", "bound")]


# --- the page itself -----------------------------------------------------------------------------------------------


def test_html_is_a_registered_report_format() -> None:
    assert REPORTERS["html"] is render_html


def test_report_names_every_check_metric_and_message() -> None:
    verdict = _verdict()
    html = render_html(verdict)
    missing = [text for c in verdict.checks for text in (c.metric, c.message) if escape(text) not in html]
    assert verdict.checks and missing == []


def test_each_interval_cell_says_what_its_interval_is_about() -> None:
    data = _verdict().model_dump(mode="json")
    for check, population in zip(data["checks"], ["app", "dataset", "traffic"], strict=False):
        check["population"] = population
    html = render_html(Verdict.model_validate(data))
    assert "candidate in [1, 1] at 95%; cases as the unit</td>" in html
    assert "delta in [-0.0455, +0.0568] at 95%; calls as the unit: this dataset&#x27;s cases</td>" in html
    assert "delta in [+1, +1] at 95%; traces as the unit (unpaired)</td>" in html
    assert "delta_pct in [+34.3%, +81.8%] at 95%</td>" in html  # no population recorded (an older verdict)


def test_each_check_row_is_coloured_by_its_status() -> None:
    verdict = _verdict()
    rows = [attrs["class"] for tag, attrs in _Elements(render_html(verdict)).found if tag == "tr" and "class" in attrs]
    assert rows == [f"s-{c.status}" for c in verdict.checks]


def test_report_has_one_chart_per_distribution_metric() -> None:
    verdict = _verdict()
    labels = [attrs["aria-label"].split(":")[0] for attrs in _charts(render_html(verdict))]
    assert labels == list(verdict.distributions) and len(labels) == 6


def test_charts_of_empty_and_non_finite_series_have_finite_coordinates() -> None:
    distributions = {"latency_ms": {"baseline": [], "candidate": [math.nan, math.inf, 3.0]}, "x": {}}
    html = render_html(_verdict().model_copy(update={"distributions": distributions}))
    coordinates = [
        float(value)
        for tag, attrs in _Elements(html).found
        if tag in {"rect", "line", "text"}
        for name, value in attrs.items()
        if name in {"x", "y", "x1", "x2", "y1", "y2", "width", "height"}
    ]
    assert len(_charts(html)) == 2 and coordinates and all(math.isfinite(c) for c in coordinates)


def test_report_shows_both_answers_of_a_case_in_one_row() -> None:
    case = _verdict().cases[0]
    html = render_html(_verdict())
    start = html.index(f"<tr><td><b>{escape(case.case_id)}</b>")
    row = html[start : html.index("</tr>", start)]
    answers = [side.output for side in (case.baseline, case.candidate) if side and side.output]
    assert len(answers) == 2 and all(escape(answer) in row for answer in answers)


def test_regressions_name_their_trace_ids() -> None:
    verdict = _with_regression(_verdict())
    html = render_html(verdict)
    regression = verdict.regressions[0]
    section = html[html.index("<h2>Regressions") : html.index("<h2>Cases")]
    assert all(t in section for t in regression.baseline_trace_ids + regression.candidate_trace_ids)


def test_markup_planted_in_an_output_renders_as_text() -> None:
    html = render_html(_planted_output())
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt; &lt;img src=x onerror=alert(1)&gt;"
    assert escaped in html and "<script" not in html.lower() and "<img" not in html.lower()


def test_markup_planted_in_every_text_field_creates_no_element_or_handler() -> None:
    elements = _Elements(render_html(_planted_everywhere())).found
    unsafe = [
        (tag, name) for tag, attrs in elements for name in attrs if tag in {"script", "img"} or name.startswith("on")
    ]
    assert elements and unsafe == []


def test_report_references_no_external_resource() -> None:
    data = _verdict().model_dump(mode="json")
    data["endpoint"] = "https://api.example.com/v1"  # a URL in the verdict is shown as text, never loaded
    html = render_html(Verdict.model_validate(data))
    references = [(tag, n, v) for tag, attrs in _Elements(html).found for n, v in attrs.items() if n in URL_ATTRIBUTES]
    assert references == [] and "url(" not in html and "@import" not in html


def test_report_declares_a_strict_content_security_policy() -> None:
    metas = [attrs for tag, attrs in _Elements(render_html(_verdict())).found if tag == "meta"]
    strict = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    assert {"http-equiv": "Content-Security-Policy", "content": strict} in metas


def test_error_verdict_renders_its_reason_and_message() -> None:
    verdict = Verdict(
        status="error", exit_code=2, reason="config", error="thresholds.yaml: file not found", gate_version="0.1.0"
    )
    html = render_html(verdict)
    assert "trace-gate: ERROR" in html and "Error: config" in html and "thresholds.yaml: file not found" in html


def test_same_verdict_renders_the_same_bytes_across_processes_and_hash_seeds() -> None:
    code = (
        "import sys; from gate._verdict.schema import Verdict; from gate.reporters._html import render_html; "
        "sys.stdout.buffer.write(render_html(Verdict.model_validate_json(open(sys.argv[1]).read())).encode())"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", code, str(VERDICT_JSON)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        for seed in ("1", "2")
    ]
    assert runs[0] == runs[1] == render_html(_verdict()).encode()


def test_report_matches_the_golden_file() -> None:
    html = render_html(_verdict()).encode()
    if os.environ.get("GATE_UPDATE_GOLDEN"):
        GOLDEN_HTML.write_bytes(html)
    assert html == GOLDEN_HTML.read_bytes(), f"report changed; if intended: GATE_UPDATE_GOLDEN=1 pytest -n 0 {__file__}"


# --- the intervals chart -------------------------------------------------------------------------------------------


def test_intervals_chart_has_a_row_per_check_in_order_coloured_by_status() -> None:
    verdict = _verdict()
    parsed = _IntervalRows(render_html(verdict))
    named = [(row.title.split(":")[0], row.css[1]) for row in parsed.rows]
    assert len(parsed.svgs) == 1 and named == [(c.metric, f"s-{c.status}") for c in verdict.checks]
    assert len(named) == 7 and all(len(row.all("rect", "ci")) == 1 for row in parsed.rows)


def test_intervals_chart_is_left_out_without_checks() -> None:
    parsed = _IntervalRows(render_html(_with_checks()))
    assert parsed.svgs == [] and parsed.rows == []


def test_interval_row_reads_as_point_interval_bound_and_status() -> None:
    row = _rows(PASSING)["latency_ms/p95"]
    assert row.title == "latency_ms/p95: +3.1% [−2.0%, +8.4%] vs bound +10%: pass"
    assert (row.text("lo"), row.text("hi")) == ("−2.0%", "+8.4%") and "+10%" in row.text("")


def test_bound_line_lies_beyond_a_passing_interval_and_before_a_failing_one() -> None:
    rows = _rows(PASSING, FAILING)
    (pass_low, pass_high), (fail_low, _) = _bar(rows["latency_ms/p95"]), _bar(rows["latency_ms/p50"])
    [pass_bound], [fail_bound] = _bounds(rows["latency_ms/p95"]), _bounds(rows["latency_ms/p50"])
    pass_dot = float(rows["latency_ms/p95"].one("circle", "pt")["cx"])
    zero = float(rows["latency_ms/p95"].one("line", "zero")["x1"])
    assert pass_low < zero < pass_dot < pass_high < pass_bound  # -2.0% < 0 < +3.1% < +8.4% < +10%
    assert fail_bound < fail_low  # the whole interval, +12% and up, lies above +10%


def test_interval_crossing_its_bound_has_the_bound_inside_the_bar() -> None:
    row = _rows(_check(status="inconclusive", ci_low=4.0, ci_high=15.0))["latency_ms/p95"]
    (low, high), [bound] = _bar(row), _bounds(row)
    assert low < bound < high


def test_decrease_and_value_bounds_sit_where_their_limits_are() -> None:
    rows = _rows(
        _check("helpful/rate", bound={"max_decrease_pct": 5.0}, delta_pct=-1.0, ci_low=-3.0, ci_high=1.0),
        _check(
            "error/rate",
            bound={"at_least": 0.1, "at_most": 0.2},
            ci_of="candidate",
            candidate=0.15,
            ci_low=0.12,
            ci_high=0.18,
        ),
    )
    helpful, error = rows["helpful/rate"], rows["error/rate"]
    [decrease], zero = _bounds(helpful), float(helpful.one("line", "zero")["x1"])
    (low, high), (least, most) = _bar(error), _bounds(error)
    assert decrease < _bar(helpful)[0] < zero and least < low < high < most and error.all("line", "zero") == []
    assert "bounds ≥ 0.1, ≤ 0.2" in error.title


def test_an_infinite_or_absent_end_renders_open() -> None:
    rows = _rows(OPEN, _check("x/mean", ci_low=None, ci_high=4.0), PASSING)
    infinite, absent, closed = rows["total_tokens/mean"], rows["x/mean"], rows["latency_ms/p95"]
    [arrow] = infinite.all("polygon", "open")
    tip_x = float(arrow["points"].split()[0].split(",")[0])
    assert tip_x > _bar(infinite)[1] >= max(_bounds(infinite)) and infinite.text("hi") == "+∞"
    assert infinite.title == "total_tokens/mean: +6.0% [+2.0%, +∞) vs bound +10%: inconclusive"
    [arrow] = absent.all("polygon", "open")
    assert float(arrow["points"].split()[0].split(",")[0]) < _bar(absent)[0] and absent.text("lo") == "open"
    assert closed.all("polygon", "open") == []


def test_every_row_fits_its_scale_even_when_nothing_has_a_width() -> None:
    flat = _check("error/rate", bound={"at_most": 0.0}, ci_of="candidate", candidate=0.0, ci_low=0.0, ci_high=0.0)
    unbounded = _check("y/mean", bound={"max_increase": 1.0}, ci_low=-math.inf, ci_high=math.inf, delta_pct=math.nan)
    huge = _check("z/mean", delta_pct=1e6, ci_low=-1e-6, ci_high=2e6)
    parsed = _IntervalRows(render_html(_with_checks(PASSING, FAILING, OPEN, flat, unbounded, huge)))
    xs = [
        float(value)
        for row in parsed.rows
        for tag, attrs in row.elements
        for name, value in attrs.items()
        if name in {"x", "x1", "x2", "cx"}
    ]
    width = float(parsed.svgs[0]["width"])
    assert len(parsed.rows) == 6 and xs and all(math.isfinite(x) and 0 <= x <= width for x in xs)
    assert all(len(row.all("rect", "ci")) == 1 for row in parsed.rows)


def test_bound_interval_and_point_sit_inside_their_row_with_a_margin() -> None:
    crossing = _check("x/mean", delta_pct=9.0, ci_low=4.0, ci_high=15.0)
    value = _check("error/rate", bound={"at_most": 0.02}, ci_of="candidate", candidate=0.03, ci_low=0.025, ci_high=0.05)
    for row in _rows(PASSING, FAILING, crossing, value).values():
        track = row.one("line", "track")
        left, right = float(track["x1"]), float(track["x2"])
        margin = (right - left) / 10
        xs = [*_bar(row), *_bounds(row), float(row.one("circle", "pt")["cx"])]
        assert len(xs) == 4 and all(left + margin <= x <= right - margin for x in xs), (row.title, xs)


def test_a_point_interval_names_its_value_once_and_a_zero_bound_reads_no_change() -> None:
    check = _check("empathy/rate", bound={"max_decrease": 0.0}, ci_of="delta", delta=1.0, ci_low=1.0, ci_high=1.0)
    row = _rows(check)["empathy/rate"]
    assert (row.text("ends"), row.text("lo"), row.text("hi")) == ("+1", "", "")
    assert row.title == "empathy/rate: +1 [+1, +1] vs bound no fall: pass" and "no fall" in row.text("")


def test_checks_without_an_interval_say_why_instead_of_a_bar() -> None:
    rows = _rows(MISSING, COUNTED)
    missing, counted = rows["cost_usd/sum"], rows["cases_regressed/count"]
    assert missing.text("why") == "missing: no data for baseline; a check without data cannot pass"
    assert counted.text("why").startswith("no interval: counted over cases") and "2" in counted.text("why")
    assert all(row.all("rect", "ci") == [] and row.all("line", "bound") == [] for row in (missing, counted))


def test_not_comparable_check_is_greyed_and_says_so() -> None:
    rows = _rows(NOT_COMPARABLE, PASSING)
    greyed, plain = rows["ttft_ms/p95"], rows["latency_ms/p95"]
    assert "nc" in greyed.css and greyed.text("").startswith("not comparable")
    assert greyed.title.endswith(": inconclusive (not comparable)") and "nc" not in plain.css


def test_a_bound_on_another_scale_is_named_not_drawn() -> None:
    row = _rows(_check("x/mean", bound={"max_increase_pct": 10.0, "max_increase": 5.0}))["x/mean"]
    assert len(_bounds(row)) == 1 and "max_increase 5 (judged on another scale; not drawn)" in row.title
    assert "1 bound on another scale" in row.text("")


def test_a_percent_bound_of_a_zero_baseline_is_no_change() -> None:
    check = _check("y/mean", baseline=0.0, delta_pct=None, delta=0.5, ci_of="delta", ci_low=0.2, ci_high=0.8)
    row = _rows(check)["y/mean"]
    [bound], zero = _bounds(row), float(row.one("line", "zero")["x1"])
    assert bound == zero < _bar(row)[0] and "no rise (baseline 0)" in row.title


# --- in a real browser ---------------------------------------------------------------------------------------------
# "No network request" is checked from Chromium's own NetLog (--log-net-log): every URL request goes through it. The
# browser's background fetches (network time, account checks) appear there too, so only requests made for the
# file:// page count: their initiator is the page's opaque origin ("null") or their network isolation key is file://.
# A positive control (a page with a remote <img>) proves the filter sees a page's request. The host resolver maps
# every name to NOTFOUND, so nothing leaves the machine either way, and the test needs no network.


def _chromium(url: str, folder: Path, *args: str) -> str:
    """Run headless Chromium offline on one URL; return its stdout. Its whole process group dies after 60 s."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: `apt-get install -y chromium` to run the browser tests")
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={folder / 'profile'}",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--window-size=1280,2000",
        *args,
        url,
    ]
    env = {**os.environ, "HOME": str(folder)}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group this test started: browser, renderer and helpers
        proc.communicate()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    return out.decode()


def _page_requests(net_log: Path) -> list[str]:
    text = net_log.read_text(encoding="utf-8")
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # Chromium documents that a log cut short at exit only lacks its closing "]}"
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        event["params"]["url"]
        for event in log["events"]
        if event["type"] == start_job
        and (
            event["params"].get("initiator") == "null" or "file://" in event["params"].get("network_isolation_key", "")
        )
    ]


@dataclass
class Browsed:
    """What Chromium made of the report: its DOM, a screenshot, and the page's URL requests."""

    dom: str
    png: bytes
    requests: list[str]
    metrics: list[str]
    checks: list[str]


@pytest.fixture(scope="module")
def browsed(tmp_path_factory: pytest.TempPathFactory) -> Browsed:
    folder = tmp_path_factory.mktemp("browser")
    verdict = _planted_everywhere()
    report = folder / "report.html"
    report.write_text(render_html(verdict), encoding="utf-8")
    net_log = folder / "net-log.json"
    dom = _chromium(report.as_uri(), folder / "dom", "--dump-dom", f"--log-net-log={net_log}")
    png = folder / "report.png"
    _chromium(report.as_uri(), folder / "shot", f"--screenshot={png}")
    metrics = list(verdict.distributions)
    return Browsed(dom, png.read_bytes(), _page_requests(net_log), metrics, [c.metric for c in verdict.checks])


def _png_scanlines(png: bytes) -> tuple[int, int, bytes]:
    """Width, height and the decompressed (still filtered) scanlines of a PNG."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    pos, size, data = 8, (0, 0), b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            data += body
        pos += 12 + length
    return size[0], size[1], zlib.decompress(data)


def test_screenshot_is_a_full_size_image_with_content(browsed: Browsed) -> None:
    width, height, scanlines = _png_scanlines(browsed.png)
    # A single-colour 1280x2000 screenshot is ~12 KB and its filtered scanlines hold about 6 distinct byte values;
    # this report's hold all 256.
    assert (width, height) == (1280, 2000) and len(browsed.png) > 10_000 and len(set(scanlines)) > 64


def test_browser_renders_a_sized_chart_per_distribution_metric(browsed: Browsed) -> None:
    charts = _charts(browsed.dom)
    sizes = [(float(c["width"]), float(c["height"])) for c in charts]
    assert len(charts) == len(browsed.metrics) == 6 and all(w > 0 and h > 0 for w, h in sizes)


def test_browser_dom_has_an_intervals_row_per_check(browsed: Browsed) -> None:
    parsed = _IntervalRows(browsed.dom)
    sizes = [(float(svg["width"]), float(svg["height"])) for svg in parsed.svgs]
    titles = [row.title for row in parsed.rows]
    assert len(sizes) == 1 and all(w > 0 and h > 0 for w, h in sizes) and len(browsed.checks) == 7
    assert [t[: len(m)] for t, m in zip(titles, browsed.checks, strict=True)] == browsed.checks


def _png_pixels(png: bytes) -> np.ndarray:
    """A PNG screenshot's pixels, height x width x channels: its scanlines unfiltered (PNG spec, section 9)."""
    width, height, data = _png_scanlines(png)
    bpp = (len(data) // height - 1) // width
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        kind, line = data[y * (stride + 1)], bytearray(data[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif kind == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev, strict=True))
        elif kind in (3, 4):
            for i in range(stride):
                a, b, c = (line[i - bpp], prev[i], prev[i - bpp]) if i >= bpp else (0, prev[i], 0)
                if kind == 3:
                    line[i] = (line[i] + (a + b) // 2) & 255
                    continue
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(height, width, bpp)[..., :3].astype(int)


def _bar_in_screenshot(pixels: np.ndarray, colour: tuple[int, int, int]) -> tuple[int, int, int, int]:
    """Where Chromium painted an interval bar of a status colour (at .35 over white): its middle row, ends and bound."""
    pale = np.array([round(255 - 0.35 * (255 - c)) for c in colour])
    bar = (np.abs(pixels - pale) <= 2).all(axis=2)
    ys = np.flatnonzero(bar.sum(axis=1) >= 60)  # anti-aliased text of the header or a badge: a few pixels a row
    assert 5 <= len(ys) <= 10 and ys[-1] - ys[0] <= 9, ys  # one bar, 8 px high (its middle crosses the grey track)
    y = (int(ys[0]) + int(ys[-1])) // 2
    xs = np.flatnonzero(bar[ys[np.argmin(np.abs(ys - y))]])
    dark = (pixels[y - 7 : y + 8].max(axis=2) < 100).all(axis=0)  # a vertical dark line through the bar's row
    lines = np.flatnonzero(dark)
    assert len(lines) and lines[-1] - lines[0] <= 3, lines  # the one bound line, 2 px wide
    dot = (np.abs(pixels[ys[0] : ys[-1] + 1, xs[0] : xs[-1]] - np.array(colour)) <= 12).all(axis=2).sum()
    assert dot >= 20  # the point estimate, solid, on the bar
    return y, int(xs[0]), int(xs[-1]), int(lines.mean())


@pytest.fixture(scope="module")
def intervals_pixels(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    folder = tmp_path_factory.mktemp("intervals")
    data = _with_checks(PASSING, FAILING).model_dump()
    data.update(distributions={}, cases=[], scorers={})
    report = folder / "report.html"
    report.write_text(render_html(Verdict.model_validate(data)), encoding="utf-8")
    png = folder / "report.png"
    _chromium(report.as_uri(), folder / "shot", f"--screenshot={png}")
    return _png_pixels(png.read_bytes())


def test_browser_draws_the_bound_beyond_a_passing_bar_and_before_a_failing_one(intervals_pixels: np.ndarray) -> None:
    y_pass, pass_low, pass_high, pass_bound = _bar_in_screenshot(intervals_pixels, (0x1A, 0x7F, 0x37))
    y_fail, fail_low, fail_high, fail_bound = _bar_in_screenshot(intervals_pixels, (0xCF, 0x22, 0x2E))
    assert y_pass < y_fail and 100 < pass_high - pass_low and 100 < fail_high - fail_low  # rows in order, bars wide
    assert pass_high < pass_bound and fail_bound < fail_low  # as the SVG says, in pixels Chromium painted


def test_browser_dom_has_no_element_from_planted_markup(browsed: Browsed) -> None:
    tags = {tag for tag, _ in _Elements(browsed.dom).found}
    assert "svg" in tags and not tags & {"script", "img"}


def test_browser_makes_no_request_for_the_report(browsed: Browsed) -> None:
    assert browsed.requests == []


def test_net_log_sees_a_request_a_page_makes(tmp_path: Path) -> None:
    page = tmp_path / "remote.html"
    page.write_text('<!DOCTYPE html><img src="http://gate-test.invalid/pixel.png">', encoding="utf-8")
    net_log = tmp_path / "net-log.json"
    _chromium(page.as_uri(), tmp_path / "run", "--dump-dom", f"--log-net-log={net_log}")
    assert _page_requests(net_log) == ["http://gate-test.invalid/pixel.png"]
