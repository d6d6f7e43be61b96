"""The HTML report: self-contained, escaped, one matrix cell per result, marks for regressions
and unexpected outcomes, and what a real browser (Debian's chromium, headless) makes of it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from fleet.store import ResultStore
from orchestrator import report
from orchestrator.report.html import COLOUR, render_html
from orchestrator.report.model import assemble
from tests.helpers import orchestrator
from tests.test_report import HOSTILE_MESSAGE, HOSTILE_MODEL, _fixture, _result


class Page(HTMLParser):
    """What a page holds: elements with their attributes, and its text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def having(self, attr: str) -> list[dict[str, str | None]]:
        return [a for _, a in self.elements if attr in a]

    def ids(self) -> set[str]:
        return {str(a["id"]) for _, a in self.elements if a.get("id")}


def _check_page(html: str, results: list[dict[str, Any]]) -> Page:
    page = Page(html)
    cells = page.having("data-cell")
    assert len(cells) == len(results)
    assert Counter(c["data-status"] for c in cells) == Counter(r["status"] for r in results)
    assert {c["data-job"] for c in cells} == {r["job_id"] for r in results}
    # every cell links to its job's details, and has a text alternative besides its colour
    ids = page.ids()
    links = [a for tag, a in page.elements if tag == "a" and a.get("aria-label")]
    assert len(links) == len(results)
    assert all(str(a["href"]).removeprefix("#") in ids for a in links)
    assert len([1 for tag, a in page.elements if tag == "details" and str(a.get("id", "")).startswith("job-")]) == len(
        results
    )
    return page


def test_html_is_self_contained_escaped_and_complete(redis_url: str) -> None:
    store = ResultStore(redis_url)
    data = report.build(store, _fixture(store))
    html = render_html(data)
    page = _check_page(html, data["results"])
    # nothing runs and nothing is fetched: no script, no external resource, a CSP that forbids both
    assert not [a for tag, a in page.elements if tag in {"script", "link", "iframe", "img", "object", "embed"}]
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)|url\(|@import""", html)
    csp = next(a for tag, a in page.elements if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in str(csp["content"]) and "script-src" not in str(csp["content"])
    # hostile strings are text: no tag of theirs reaches the DOM, their text is intact
    assert "<script>" not in html and "<b>bold</b>" not in html
    text = "".join(page.text)
    assert HOSTILE_MESSAGE in text and HOSTILE_MODEL in text
    # the regression is marked in its cell and its label says so
    (llama,) = [c for c in page.having("data-cell") if c["data-job"] == "llama@cpu"]
    assert llama["data-marks"] == "regressed" and "regressed from REAL" in str(llama["title"])
    assert [c for c in page.having("data-marks") if c is not llama] == []
    # failure groups: one group per kind, each counted
    assert re.search(r"<code>known_answer_mismatch</code> — 1 job\(s\)", html)
    assert re.search(r"<code>inference_error</code> — 1 job\(s\)", html)
    # two runs of history: a strip per job, its last square this run's status
    assert 'id="history"' in html and 'title="run-2: SYNTHETIC"' in html and 'title="run-1: REAL"' in html
    # charts: inline SVG with a title and a description
    assert html.count("<svg ") == 2 and html.count("<desc ") == 2  # latency and host memory (no CUDA here)


def test_unexpected_and_flaky_rows_are_marked_when_the_model_has_them() -> None:
    """Fields that the report model may carry (expectations, flakiness, baselines) are shown when present."""
    results = [
        _result("r", "a", "cpu", "FAILED", error={"kind": "load_error", "message": "x"}),
        _result("r", "b", "cpu", "REAL"),
        _result("r", "b", "cuda:1", "SKIPPED"),
    ]
    meta = {"run_id": "r", "started_at": 1_790_000_000.0}
    data = assemble(meta, results, None, {}, [("r", {})])
    rows = {row["job_id"]: row for row in data["rows"]}
    rows["a@cpu"].update(unexpected=True, expected="REAL", baseline={"status": "REAL", "run_id": "r0"})
    rows["b@cpu"].update(flaky={"flips": 3})
    html = render_html(data)
    page = _check_page(html, results)
    marks = {c["data-job"]: c.get("data-marks") for c in page.having("data-cell")}
    assert marks == {"a@cpu": "unexpected", "b@cpu": "flaky", "b@cuda:1": None}
    assert "a on cpu: FAILED, unexpected" in html and "expected REAL" in html and "status: REAL, run_id: r0" in html
    # a device column per device, cpu first; the missing (a, cuda:1) cell is shown empty, not as a result
    assert re.findall(r'<th scope="col">([^<]+)</th>', html)[:3] == ["Family", "cpu", "cuda:1"]
    assert len(page.having("data-empty")) == 1


def test_report_command_writes_html(redis_url: str, tmp_path: Path) -> None:
    store = ResultStore(redis_url)
    run_id = _fixture(store)
    out = tmp_path / "r.html"
    res = orchestrator("report", run_id, "--format", "html", "--output", str(out), "--redis-url", redis_url)
    assert res.returncode == 0, res.stderr
    _check_page(out.read_text(), store.results(run_id))


def test_junit_timestamp_is_iso_8601_utc(redis_url: str) -> None:
    store = ResultStore(redis_url)
    suite = ET.fromstring(report.to_junit(report.build(store, _fixture(store))))
    stamp = suite.get("timestamp") or ""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\+00:00|Z)?", stamp), stamp
    parsed = datetime.fromisoformat(stamp)
    assert parsed.utcoffset() in (None, timedelta(0)) and parsed.timestamp() == 1_790_000_000.0 + 86_400


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (scripts/bootstrap.sh installs it as root)")
def test_real_browser_renders_the_matrix(redis_url: str, tmp_path: Path) -> None:
    store = ResultStore(redis_url)
    run_id = _fixture(store)
    data = report.build(store, run_id)
    path = tmp_path / f"{run_id}.html"
    path.write_text(render_html(data))
    expected = json.loads(report.to_json(data))["results"]  # the JSON report is the reference

    dom = _chromium(tmp_path, "--dump-dom", path.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = _check_page(dom.stdout, expected)  # the DOM as the browser built it, not our text
    assert "model-fleet report" in "".join(page.text)

    shot = tmp_path / "shot.png"
    res = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,1000", path.as_uri())
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1400, 1000)
        colours = {colour: n for n, colour in img.convert("RGB").getcolors(maxcolors=1 << 24) or []}

    def pixels(status: str) -> int:
        hexa = COLOUR[status].lstrip("#")
        return colours.get((int(hexa[0:2], 16), int(hexa[2:4], 16), int(hexa[4:6], 16)), 0)

    # the stylesheet was applied: the status colours are painted (badges and matrix cells)
    assert pixels("REAL") > 500 and pixels("FAILED") > 500 and pixels("SYNTHETIC") > 500


def test_every_status_has_its_colour_and_letter_on_the_page(redis_url: str) -> None:
    """A status added to fleet.protocol must not render as an unstyled cell."""
    from fleet.protocol import STATUSES

    page = render_html(report.build(ResultStore(redis_url), _fixture(ResultStore(redis_url))))
    for status in STATUSES:
        assert f".s-{status}{{background:{COLOUR[status]}" in page, status


def test_a_large_run_is_summarised_with_every_miss_listed() -> None:
    """From COMPACT_FROM results: the matrix by architecture (counts), every miss in its failure
    group with a place to link to, strips only for jobs whose status changed, evidence in the JSON."""
    from bench.render import fixture_results
    from orchestrator.report.html import COMPACT_FROM

    n = COMPACT_FROM + 100
    results = fixture_results("big", n, ("REAL", "SYNTHETIC", "FAILED", "REAL", "SKIPPED", "LOST"))
    for i, r in enumerate(results):
        r["architecture"] = ("LlamaForCausalLM", "BertModel", "T5Model")[i % 3]
        if r["status"] in ("FAILED", "LOST", "SKIPPED"):
            r["error"] = {"kind": "inference_error", "message": "<b>boom</b> " + "x" * 1000}
    previous = {r["job_id"]: {**r, "status": "REAL", "error": None} for r in results}
    changed = results[1]["job_id"]  # SYNTHETIC now, REAL before (as every SYNTHETIC one): regressed while passing
    history = [("old", {changed: "REAL"}), ("big", {r["job_id"]: r["status"] for r in results})]
    meta = {"run_id": "big", "started_at": 1_790_000_000.0}
    data = assemble(meta, results, "old", previous, history)  # type: ignore[arg-type]
    html = render_html(data)
    page = Page(html)

    assert not page.having("data-cell") and not [a for t, a in page.elements if t == "details" and a.get("id")]
    misses = page.having("data-miss")
    rows = data["rows"]
    expected = {r["job_id"] for r in rows if r["status"] not in ("REAL", "SYNTHETIC") or r["change"] == "regressed"}
    assert changed in expected and len(expected) < n
    assert sorted(str(m["data-job"]) for m in misses) == sorted(expected)  # each once
    ids = page.ids()
    assert all(str(a["href"]).removeprefix("#") in ids for t, a in page.elements if t == "a" and "#job-" in a["href"])
    # the architecture table counts every job
    counts = [int(x) for x in re.findall(r'<span class="badge s-\w+" title="\w+">\w (\d+)</span>', html)]
    assert sum(counts) == n
    # history: the strips of the jobs whose status changed, here only one
    assert html.count('class="strip"') == 1 and f'{changed}</a></th><td><span class="strip"' in html
    # messages shortened and escaped; the whole ones are in the JSON report the page points to
    assert "<b>boom</b>" not in html and "x" * 400 not in html and 'href="big.json"' in html
    assert len(html) < 800 * n  # misses with their (shortened) message; passing jobs counted, not listed
