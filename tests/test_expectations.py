"""The expectations file: parsing with clear errors, exact keys over patterns, lapsing
"until LIBRARY VERSION", and the judgement of each outcome (unexpected passes included)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.errors import BadInput, FileMissing
from fleet.names import AUTO_SYNTHETIC_PREFIX as AUTO
from fleet.protocol import base_result
from orchestrator import expectations
from workers import reruns


def result(job_id: str, status: str, **env: str) -> dict:
    fam, _, device = job_id.partition("@")
    r = base_result({"run_id": "r", "job_id": job_id, "family": fam, "device": device})
    r.update(status=status, environment=dict(env))
    return r


FILE = """
[expect]
"xclip@cuda" = "FAILED: kernel gap, until transformers 5.30"
"*@cuda" = "SKIPPED: no GPU here"
"llama@cpu" = "REAL"
"""


def test_exact_key_wins_over_patterns_and_passes_can_be_unexpected() -> None:
    exp = expectations.parse(FILE, "e.toml")
    assert exp.judge(result("xclip@cuda", "FAILED", transformers="5.24.0"))["unexpected"] is False
    v = exp.judge(result("xclip@cuda", "REAL", transformers="5.24.0"))
    assert (v["unexpected"], v["kind"], v["reason"]) == (True, "unexpected pass", "kernel gap, until transformers 5.30")
    assert exp.judge(result("t5@cuda", "SKIPPED"))["pattern"] == "*@cuda"
    assert exp.judge(result("llama@cpu", "SYNTHETIC"))["kind"] == "unexpected failure"
    # no entry: a pass or a skip is fine, a failure or a flaky job is not
    assert not exp.judge(result("bert@cpu", "SYNTHETIC"))["unexpected"]
    assert exp.judge(result("bert@cpu", "FLAKY"))["unexpected"]


def test_an_expectation_lapses_at_the_named_version() -> None:
    exp = expectations.parse(FILE, "e.toml")
    v = exp.judge(result("xclip@cuda", "FAILED", transformers="5.30.0"))
    assert v["unexpected"] and v["expected"] is None and v["lapsed"]["status"] == "FAILED"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[expect\n", "not valid TOML"),
        ('[other]\n"a@cpu" = "REAL"\n', "unknown table"),
        ("# nothing\n", "missing [expect] table"),
        ('[expect]\n"a@cpu" = 3\n', 'expected a string "STATUS[: reason]"'),
        ('[expect]\n"a@cpu" = "PASSED"\n', "unknown status 'PASSED'"),
        ('[expect]\n"a@cpu" = "FAILED: gap, until torch x.y"\n', "unknown status"),
    ],
)
def test_bad_files_are_bad_input_naming_the_problem(text: str, message: str) -> None:
    if message == "unknown status":  # "until torch x.y" is not a version: the reason stays free text
        assert expectations.parse(text, "e.toml").entries[0].until is None
        return
    with pytest.raises(BadInput, match=message.replace("[", r"\[").replace("(", r"\(")):
        expectations.parse(text, "e.toml")


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileMissing, match="does not exist"):
        expectations.load(tmp_path / "nope.toml")


def test_written_file_reads_back() -> None:
    rs = [result("a@cpu", "REAL"), result("b@cpu", "FAILED")]
    rs[1]["error"] = {"kind": "oom", "message": 'out of "memory": until x 1.0'}
    exp = expectations.parse(expectations.dumps(rs, "run-1"), "w.toml")
    assert {e.pattern: e.status for e in exp.entries} == {"a@cpu": "REAL", "b@cpu": "FAILED"}
    assert exp.entries[1].until is None and "oom" in exp.entries[1].reason


def test_deterministic_failures_are_not_rerun() -> None:
    job = {"run_id": "r", "job_id": "a@cpu", "reruns": 2, "rerun": 0}
    failed = result("a@cpu", "FAILED")
    failed["error"] = {"kind": "inference_error", "message": "x"}
    assert reruns.wants_rerun(failed, job)
    assert not reruns.wants_rerun(failed, {**job, "rerun": 2})  # reruns used up
    failed["error"] = {"kind": "weights_corrupt", "message": "x"}
    assert not reruns.wants_rerun(failed, job)
    assert not reruns.wants_rerun(result("a@cpu", "SKIPPED"), job)


def test_a_seeded_twin_failing_deterministically_is_not_rerun() -> None:
    """The same seeded model and inputs fail the same way in a fresh process: no rerun for its
    inference error (nor, on cpu, an invalid output); nor for its timeout on cpu, which only the
    host decides (the next run orders it first); an oom is still rerun."""
    job = {"run_id": "r", "job_id": "arch:X@cpu", "reruns": 1, "rerun": 0, "family_spec": {"synthetic": AUTO + "X"}}
    twin = result("arch:X@cpu", "FAILED")
    twin["source"] = "synthetic"
    for kind, rerun in (("inference_error", False), ("output_invalid", False), ("timeout", False), ("oom", True)):
        twin["error"] = {"kind": kind, "message": "x"}
        assert reruns.wants_rerun(twin, job) is rerun, kind
    on_gpu = result("arch:X@cuda", "FAILED")
    on_gpu.update(source="synthetic", error={"kind": "output_invalid", "message": "x"})
    assert reruns.wants_rerun(on_gpu, {**job, "job_id": "arch:X@cuda"})  # GPU kernels may differ
    on_gpu["error"] = {"kind": "timeout", "message": "x"}
    assert reruns.wants_rerun(on_gpu, {**job, "job_id": "arch:X@cuda"})  # a GPU host's timeout: still rerun
    hub = result("arch:X@cpu", "FAILED")
    hub.update(source="hub", error={"kind": "inference_error", "message": "x"})
    assert reruns.wants_rerun(hub, job)  # real weights: a rerun may tell a flake
    # a twin that could not be built (the class fails on its seeded config): no model, no source;
    # the only candidate tried was the twin, so a fresh process builds the same config and fails alike
    unbuilt = result("arch:X@cpu", "FAILED")
    unbuilt.update(source=None, error={"kind": "load_error", "message": "x"})
    unbuilt["attempts"] = [{"candidate": "synthetic:auto:X", "outcome": "skipped", "error_kind": "load_error"}]
    assert not reruns.wants_rerun(unbuilt, job)
    unbuilt["error"] = {"kind": "oom", "message": "x"}
    assert reruns.wants_rerun(unbuilt, job)  # the host's memory: rerun
    # timed out while the twin was still being built: no source, no attempt, but an architecture
    # job (no candidates) runs nothing else
    building = result("arch:X@cpu", "FAILED")
    building.update(source=None, error={"kind": "timeout", "message": "x"}, attempts=[])
    assert not reruns.wants_rerun(building, {**job, "family_spec": {"synthetic": AUTO + "X", "candidates": []}})
    catalog_job = {**job, "family_spec": {"synthetic": AUTO + "X", "candidates": [{"id": "org/real"}]}}
    assert reruns.wants_rerun(building, catalog_job)  # a catalog family may have been loading weights
    # weights from elsewhere were tried first (a catalog family with a twin as its last resort)
    tried = result("arch:X@cpu", "FAILED")
    tried.update(source=None, error={"kind": "load_error", "message": "x"})
    tried["attempts"] = [
        {"candidate": "org/real", "outcome": "failed", "error_kind": "load_error"},
        {"candidate": "synthetic:auto:X", "outcome": "skipped", "error_kind": "load_error"},
    ]
    assert reruns.wants_rerun(tried, catalog_job)
