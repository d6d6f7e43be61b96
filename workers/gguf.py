"""GGUF candidates: dequantise a .gguf file once into a cached safetensors folder keyed by the
file's sha256, and load that folder afterwards.

Dequantising SmolLM2-135M (Q4_1) takes 15-25 s here; loading the converted folder 1-3 s. The
folder is built in a temporary directory and renamed into place, so two workers converting at
once never see a half-written folder.

The cache folder only saves work, it is never evidence: provenance.json carries an HMAC made
with the host's key (workers.hostkey, kept outside the cache folder). On reuse the signature
is checked and every file is hashed again (through the signed digest cache) and compared with
it; a folder that is unsigned, signed with another key, or does not match what was written is
not trusted but rebuilt. With no host key every use converts again.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.errors import ErrorKind, IntegrityFailure
from fleet.settings import Settings
from workers import hostkey, integrity

PROVENANCE = "provenance.json"
SIGNATURE = "signature"  # provenance.json's HMAC over the rest of its content
WEIGHTS = "model.safetensors"
DTYPE = "float16"  # half precision: half the disk of float32; the resolver loads it as float32


@dataclass
class Conversion:
    folder: Path
    provenance: dict[str, Any]
    seconds: float
    cached: bool
    replaced: str | None = None  # why an existing folder was not trusted, when it was rebuilt

    def to_dict(self) -> dict[str, Any]:
        out = {
            "from": self.provenance["gguf_file"],
            "gguf_sha256": self.provenance["gguf_sha256"],
            "converted_sha256": self.provenance["converted_sha256"],
            "seconds": round(self.seconds, 3),
            "cached": self.cached,
            "transformers": self.provenance["transformers"],
            "dtype": self.provenance["dtype"],
        }
        if self.replaced:
            out["replaced"] = self.replaced
        return out


def cache_dir() -> Path:
    """The worker host's cache folder (Settings.cache_dir: $FLEET_CACHE_DIR, else
    $XDG_CACHE_HOME/model-fleet, else ~/.cache/model-fleet), read at call time."""
    return Settings.from_env().cache_dir


def sha256_file(path: Path, cache: integrity.DigestCache | None = None) -> str:
    """Through the host's signed digest cache: an unchanged GGUF file or converted folder is not
    read again on every job (an edit in place changes its ctime, so it is hashed again)."""
    return integrity.file_sha256(path, cache)


def convert(gguf_path: Path) -> Conversion:
    """The converted folder for this GGUF file: reused when it verifies, otherwise (re)built."""
    t0 = time.perf_counter()
    settings = Settings.from_env()
    cache = integrity.DigestCache.for_host(settings)
    watched = integrity.watch_key(gguf_path)  # the file hashed is the file converted (_build)
    gguf_sha = sha256_file(gguf_path, cache)
    _same_file(gguf_path, watched, "while it was hashed")
    target = settings.cache_dir / "converted" / gguf_sha
    replaced = None
    if target.exists():
        problem = verify(target, gguf_sha, cache)
        if problem is None:
            prov = json.loads((target / PROVENANCE).read_text(encoding="utf-8"))
            return Conversion(target, _unsigned(prov), time.perf_counter() - t0, cached=True)
        replaced = problem
        _discard(target)
    prov = _build(gguf_path, gguf_sha, target, cache, watched)
    return Conversion(target, prov, time.perf_counter() - t0, cached=False, replaced=replaced)


def verify(folder: Path, gguf_sha: str, cache: integrity.DigestCache | None = None) -> str | None:
    """None when provenance.json is signed with this host's key and every file in the folder is
    the one it names (bytes hashed now, or a signed digest row for the same file version),
    otherwise what is wrong."""
    cache = cache or integrity.DigestCache.for_host()
    if cache.key is None:
        return "no host key: a converted folder cannot be trusted"
    try:
        prov = json.loads((folder / PROVENANCE).read_text(encoding="utf-8"))
        if not hostkey.valid(cache.key, hostkey.PROVENANCE, _unsigned(prov), prov.get(SIGNATURE)):
            return "provenance.json is not signed with this host's key"
        files: dict[str, str] = prov["files"]
        if prov["gguf_sha256"] != gguf_sha or prov["converted_sha256"] != files[WEIGHTS]:
            return "provenance.json does not describe this GGUF file"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"no usable provenance.json ({type(exc).__name__}: {exc})"
    present = {p.name for p in folder.iterdir() if p.name != PROVENANCE}
    if present != set(files):
        extra, missing = sorted(present - set(files)), sorted(set(files) - present)
        return f"files differ from provenance.json (extra {extra}, missing {missing})"
    for name, expected in files.items():
        got = sha256_file(folder / name, cache)
        if got != expected:
            return f"{name}: sha256 {got[:12]}... differs from provenance.json ({expected[:12]}...)"
    return None


def _unsigned(prov: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in prov.items() if k != SIGNATURE}


def _same_file(gguf_path: Path, watched: integrity.WatchKey, when: str) -> None:
    """The GGUF file is still the one whose sha256 was taken (same inode, size, times, link):
    converted weights are recorded, and signed, as the conversion of that digest."""
    try:
        now = integrity.watch_key(gguf_path)
    except OSError as exc:
        now = None
        why = f"vanished {when} ({type(exc).__name__})"
    else:
        why = f"changed {when} (replaced or written to)"
    if now != watched:
        raise IntegrityFailure(ErrorKind.WEIGHTS_CORRUPT, f"{gguf_path.name}: {why}")


def _build(
    gguf_path: Path, gguf_sha: str, target: Path, cache: integrity.DigestCache, watched: integrity.WatchKey
) -> dict[str, Any]:
    import torch
    import transformers

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{gguf_sha[:16]}-", dir=target.parent))
    try:
        t0 = time.perf_counter()
        model = transformers.AutoModelForCausalLM.from_pretrained(
            gguf_path.parent,
            gguf_file=gguf_path.name,
            dtype=getattr(torch, DTYPE),
            quantization_config=transformers.GgufConfig(dequantize=True),
        )
        tokenizer = transformers.AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        # The bytes just read are the bytes hashed, or nothing is written, signed or cached: a file
        # swapped between the hash and this read would be converted under the digest of another.
        _same_file(gguf_path, watched, "between its hash and its conversion")
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        del model
        written, files = _hash_written(tmp)
        if WEIGHTS not in files:
            raise RuntimeError(f"conversion wrote no {WEIGHTS} (files: {sorted(files)})")
        prov = {
            "gguf_file": gguf_path.name,
            "gguf_sha256": gguf_sha,
            "converted_sha256": files[WEIGHTS],
            "files": files,
            "transformers": transformers.__version__,
            "dtype": DTYPE,
            "convert_seconds": round(time.perf_counter() - t0, 3),
        }
        stored = dict(prov)
        if cache.key is not None:
            stored[SIGNATURE] = hostkey.sign(cache.key, hostkey.PROVENANCE, prov)
        (tmp / PROVENANCE).write_text(json.dumps(stored, indent=2, sort_keys=True), encoding="utf-8")
        os.chmod(tmp, 0o755)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another worker renamed its folder into place first: use that one if it verifies.
            if target.is_dir() and verify(target, gguf_sha, cache) is None:
                return _unsigned(json.loads((target / PROVENANCE).read_text(encoding="utf-8")))
            raise
        _remember(target, written, files, cache)
        return prov
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _hash_written(folder: Path) -> tuple[dict[str, integrity.StatKey], dict[str, str]]:
    """(stat key, sha256) of each file just written, hashed from its bytes (a cache with no
    key reads and writes nothing); a file that changes while it is hashed fails the build."""
    written: dict[str, integrity.StatKey] = {}
    files: dict[str, str] = {}
    for p in sorted(folder.iterdir()):
        key = integrity.stat_key(p)
        files[p.name] = integrity.file_sha256(p, integrity.DigestCache(key=None))
        if integrity.stat_key(p) != key:
            raise RuntimeError(f"{p.name} changed while the conversion was hashing it")
        written[p.name] = key
    return written, files


def _remember(
    folder: Path, written: dict[str, integrity.StatKey], files: dict[str, str], cache: integrity.DigestCache
) -> None:
    """Signed digest rows for the files under their final names, for those still the file
    version that was hashed (the rename moves the folder, not the files): the first load after a
    conversion then reads a stat and a row per file, not 260 MB again."""
    for name, key in written.items():
        p = folder / name
        try:
            if integrity.stat_key(p) == key:
                cache.put(key, files[name], os.path.realpath(p))
        except OSError:
            continue


def _discard(folder: Path) -> None:
    """Move an untrusted folder aside first (one rename), then delete it."""
    aside = folder.with_name(f".discard-{folder.name[:16]}-{uuid.uuid4().hex[:8]}")
    try:
        os.replace(folder, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)
