"""Every shape of quality record renders in every report format, with or without a bound: the
records are made by workers/quality.py's own functions, and a template failure is a bug."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from typing import Any

import pytest

from fleet.store import ResultStore
from orchestrator import report
from orchestrator.report.model import assemble
from tests.test_report import _fixture_run, _result
from workers import quality

NO_GATE = quality.no_gate("no quality gate for task image_classification", task="image_classification")
MARGIN = quality.margin_gate([-0.01, -0.02, 0.0], quality.EMBEDDING_MARGIN, "sentence triples")
# each shape: (record, status, the words every format shows for it)
SHAPES: dict[str, tuple[dict[str, Any], str, str]] = {
    "no_gate": (NO_GATE, "REAL", "no gate: no quality gate for task image_classification"),
    "no_gate_synthetic": (
        {**NO_GATE, "informational": True},
        "SYNTHETIC",
        "no gate: no quality gate for task image_classification (synthetic weights)",
    ),
    "not_proven": (
        quality.not_proven(MARGIN, "a miss proves nothing here"),
        "REAL",
        "no gate: a miss proves nothing here",
    ),
    "passed": (
        quality.margin_gate([0.3, 0.3, 0.3], quality.EMBEDDING_MARGIN, "sentence triples"),
        "REAL",
        "passed",
    ),
    "failed": (MARGIN, "FAILED", "failed"),
    "failed_without_bound": (  # not written by this version: a record from elsewhere must still render
        {**NO_GATE, "passed": False, "tokenizer_unfaithful": {"text": "a", "decoded": "b", "tokens": 1}},
        "FAILED",
        "failed: no quality gate for task image_classification",
    ),
    "informational": ({**MARGIN, "passed": None, "informational": True}, "SYNTHETIC", "information only"),
    "old_forward_record": (  # what the forward check wrote before it had gates
        {"metric": "none", "value": None, "bound": None, "reference": None, "passed": None},
        "REAL",
        "no gate: no bound was checked",
    ),
}


class Text(HTMLParser):
    def __init__(self, html: str) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.feed(html)

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _results() -> list[dict[str, Any]]:
    out = []
    for name, (record, status, _) in SHAPES.items():
        extra: dict[str, Any] = {}
        if status == "FAILED":
            extra["error"] = {"kind": "quality_gate", "message": quality.failure(record).message}
        out.append(_result("r", name, "cpu", status, output={"quality": record}, metrics={"quality_s": 0.01}, **extra))
    return out


def _data() -> dict[str, Any]:
    return assemble({"run_id": "r", "started_at": 1_790_000_000.0}, _results(), None, {}, [("r", {})])


def _quality_lines(markdown: str) -> dict[str, str]:
    """job family -> its "- Quality:" line in the markdown report."""
    lines: dict[str, str] = {}
    current = None
    for line in markdown.splitlines():
        for name in SHAPES:
            if line.startswith("### ") and line.split()[1] == report.md(f"{name}@cpu"):
                current = name
        if line.startswith("- Quality:") and current:
            lines[current] = line
    return lines


def test_every_quality_record_renders_in_markdown_with_its_verdict() -> None:
    lines = _quality_lines(report.render_markdown(_data()))
    assert set(lines) == set(SHAPES)
    for name, (record, _status, words) in SHAPES.items():
        line = lines[name]
        shown = words if words != "failed" else "**failed**"
        if name == "failed_without_bound":
            shown = "**failed**: no quality gate for task image\\_classification"
        assert shown.replace("image_classification", "image\\_classification") in line, (name, line)
        # a figure and bound are shown exactly when the record has a bound
        assert ("required" in line) is (record.get("direction") is not None), (name, line)
    assert "`semantic_margin` = -0.0100, required &gt;= 0.1200" in lines["not_proven"]


def test_every_quality_record_renders_in_html_with_its_verdict() -> None:
    html = report.render_html(_data())
    text = " ".join(Text(html).parts)
    for name, (_record, _status, words) in SHAPES.items():
        assert words in text, name
    assert "<strong>failed</strong>" in html and "<strong>failed: no quality gate" in html


def test_every_quality_record_survives_json_and_junit() -> None:
    data = _data()
    js = json.loads(report.to_json(data))
    records = {r["family"]: r["output"]["quality"] for r in js["results"]}
    assert records["no_gate"]["passed"] is None and records["no_gate"]["reason"].startswith("no quality gate")
    suite = ET.fromstring(report.to_junit(data))
    failed = {c.get("name"): c.find("failure") for c in suite.iter("testcase") if c.find("failure") is not None}
    assert set(failed) == {"failed@cpu", "failed_without_bound@cpu"}
    assert (
        failed["failed_without_bound@cpu"]
        .get("message")
        .startswith("quality gate: no metric (no quality gate for task image_classification); the tokenizer does not")
    )


@pytest.mark.service
def test_a_stored_run_with_a_boundless_record_renders_every_format(redis_url: str) -> None:
    """The path of `orchestrator run` and `report`: results read back from Redis, then rendered."""
    store = ResultStore(redis_url)
    results = [{**r, "run_id": "run-q"} for r in _results()]
    _fixture_run(store, "run-q", 1_790_000_000.0, results)
    data = report.build(store, "run-q")
    for render in report.RENDERERS.values():
        assert render(data)
    assert "no gate: no quality gate for task image\\_classification" in report.render_markdown(data)
