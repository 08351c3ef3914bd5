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
from dataclasses import dataclass
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

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
LITERAL_FIELDS = {"status", "severity", "ci_of", "on_inconclusive"}  # enums: the model refuses planted text there
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


# --- the page itself -----------------------------------------------------------------------------------------------


def test_html_is_a_registered_report_format() -> None:
    assert REPORTERS["html"] is render_html


def test_report_names_every_check_metric_and_message() -> None:
    verdict = _verdict()
    html = render_html(verdict)
    missing = [text for c in verdict.checks for text in (c.metric, c.message) if escape(text) not in html]
    assert verdict.checks and missing == []


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
    return Browsed(dom, png.read_bytes(), _page_requests(net_log), list(verdict.distributions))


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
