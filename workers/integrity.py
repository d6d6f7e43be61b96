"""Evidence integrity: the weights a result names are the bytes that were loaded.

- weight_files(): exactly the files transformers will read (it is given the same folder and
  the same use_safetensors), mirroring its order of preference.
- hash_files(): sha256 of each file from its bytes, with a digest cache on this host keyed by
  the real path and (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns), each row signed with
  the host's key (workers.hostkey) so the cache can skip work but never change an answer; a
  safetensors header that promises more bytes than the file holds is a truncated file.
- claims() / verify(): what the source says the bytes are (the Hub's LFS sha256, the cache's
  blob name, the package's RECORD) against what was hashed; a mismatch is weights_corrupt.
- unchanged(): the files transformers read are the files hashed (same inode, size, times).
- complete() / built_class(): transformers' loading information and the class it built.
- revision_basis(): how the revision is known, never "verified" when only claimed.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import sqlite3
import stat
import struct
import time
from contextlib import closing
from dataclasses import dataclass, field
from math import prod
from pathlib import Path
from typing import Any

from fleet.errors import CheckFailure, ErrorKind, IntegrityFailure
from fleet.settings import Settings
from workers import hostkey

SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
PICKLE_SINGLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
CHUNK = 1 << 22
KEYS_SHOWN = 20
MAX_HEADER = 100 * 2**20  # the safetensors format's own limit on the JSON header

StatKey = tuple[int, int, int, int, int]
# A watched file: its target's StatKey, plus the path's own identity (every link on the way is
# resolved, and the name itself lstat'ed), so a symlink retargeted and put back is seen.
WatchKey = tuple[StatKey, str, int, int]


# -- which files ------------------------------------------------------------------------
def weight_files(path: Path, config: dict[str, Any], use_safetensors: bool | None) -> tuple[list[str], str | None]:
    """(weight files, index file or None) that from_pretrained(path, use_safetensors=...) reads."""
    explicit = config.get("transformers_weights")
    if explicit is not None:
        if not isinstance(explicit, str) or not explicit.endswith((".safetensors", ".safetensors.index.json")):
            raise CheckFailure(ErrorKind.UNSAFE_WEIGHTS, f"config names weights file {explicit!r}: not safetensors")
        _inside(explicit)
        if explicit.endswith(".index.json"):
            return _shards(path, explicit), explicit
        return [_present(path, explicit)], None
    if use_safetensors is not False and _is_file(path / SAFE_SINGLE):
        return [SAFE_SINGLE], None
    if use_safetensors is not False and _is_file(path / SAFE_INDEX):
        return _shards(path, SAFE_INDEX), SAFE_INDEX
    if not use_safetensors and _is_file(path / PICKLE_SINGLE):
        return [PICKLE_SINGLE], None
    if not use_safetensors and _is_file(path / PICKLE_INDEX):
        return _shards(path, PICKLE_INDEX), PICKLE_INDEX
    wanted = SAFE_SINGLE if use_safetensors else f"{SAFE_SINGLE} or {PICKLE_SINGLE}"
    for name in (SAFE_SINGLE, SAFE_INDEX):
        _present(path, name, optional=True)  # a dangling link or a loop is named as such
    raise CheckFailure(ErrorKind.LOAD_ERROR, f"no {wanted} (or its index) in {_short(path)}")


def _is_file(p: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(p).st_mode)
    except OSError:
        return False


def _present(path: Path, name: str, optional: bool = False) -> str:
    """The name, when it is a regular file that can be stat'ed; else a load_error saying why."""
    p = path / name
    try:
        st = os.stat(p)
    except OSError as exc:
        if optional and not os.path.lexists(p):
            return name
        raise CheckFailure(ErrorKind.LOAD_ERROR, f"{name}: unreadable ({_oserror(exc)})") from None
    if not stat.S_ISREG(st.st_mode):
        raise CheckFailure(ErrorKind.LOAD_ERROR, f"{name}: not a regular file")
    return name


def _inside(name: str) -> None:
    norm = os.path.normpath(name)
    if os.path.isabs(name) or norm == ".." or norm.startswith(".." + os.sep):
        raise IntegrityFailure(ErrorKind.WEIGHTS_CORRUPT, f"weights file {name!r} lies outside the model folder")


def _shards(path: Path, index: str) -> list[str]:
    try:
        data = json.loads((path / index).read_text(encoding="utf-8"))
        weight_map = data["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckFailure(ErrorKind.LOAD_ERROR, f"{index}: unreadable index ({type(exc).__name__}: {exc})") from None
    if not names or not all(isinstance(n, str) for n in names):
        raise CheckFailure(ErrorKind.LOAD_ERROR, f"{index}: lists no weight files")
    for name in names:
        _inside(name)
        if not os.path.lexists(path / name):
            raise IntegrityFailure(ErrorKind.WEIGHTS_INCOMPLETE, f"{index} lists {name}, which is missing")
        _present(path, name)
    return names


# -- hashing ----------------------------------------------------------------------------
def cache_dir() -> Path:
    """The worker host's cache folder (Settings.cache_dir: $FLEET_CACHE_DIR, else
    $XDG_CACHE_HOME/model-fleet, else ~/.cache/model-fleet), read at call time."""
    return Settings.from_env().cache_dir


class DigestCache:
    """sha256 of files on this host, keyed by where and when the file was last changed.

    A cache only saves work, it is never evidence: every row is signed with the host's key
    (workers.hostkey, kept outside the cache folder) over (real path, stat key, sha256), and a
    row that is unsigned or signed with another key is a miss (the file is hashed again and the
    row overwritten). With no key nothing is read from or written to the cache.

    sqlite in WAL mode: safe with several workers writing at once. A cache that cannot be
    opened or written is skipped (the file is hashed), never a failed job."""

    TABLE = "signed_digests"

    def __init__(self, path: Path | None = None, key: bytes | None = None) -> None:
        self.path = path or cache_dir() / "digests.sqlite"
        self.key = key

    @classmethod
    def for_host(cls, settings: Settings | None = None) -> DigestCache:
        """This host's cache, with its key (None when the key cannot be had: nothing trusted)."""
        settings = settings or Settings.from_env()
        return cls(settings.cache_dir / "digests.sqlite", hostkey.load(settings))

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.TABLE} (path TEXT NOT NULL, dev INTEGER, ino INTEGER, size INTEGER,"
            " mtime_ns INTEGER, ctime_ns INTEGER, sha256 TEXT NOT NULL, mac TEXT NOT NULL, hashed_at REAL,"
            " PRIMARY KEY (path, dev, ino, size, mtime_ns, ctime_ns))"
        )
        return conn

    def get(self, key: StatKey, real_path: str) -> str | None:
        """The digest this host recorded for this file version, or None (a miss)."""
        if self.key is None:
            return None
        try:
            with closing(self._connect()) as conn:
                row = conn.execute(
                    f"SELECT sha256, mac FROM {self.TABLE}"
                    " WHERE path=? AND dev=? AND ino=? AND size=? AND mtime_ns=? AND ctime_ns=?",
                    (real_path, *key),
                ).fetchone()
        except (sqlite3.Error, OSError):
            return None
        if row is None or not isinstance(row[0], str):
            return None
        sha, mac = row
        return sha if hostkey.valid(self.key, hostkey.DIGEST_ROW, _row(real_path, key, sha), mac) else None

    def put(self, key: StatKey, sha256: str, real_path: str) -> None:
        if self.key is None:
            return
        mac = hostkey.sign(self.key, hostkey.DIGEST_ROW, _row(real_path, key, sha256))
        try:
            with closing(self._connect()) as conn, conn:
                conn.execute(
                    f"INSERT OR REPLACE INTO {self.TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (real_path, *key, sha256, mac, time.time()),
                )
        except (sqlite3.Error, OSError):
            pass


def _row(real_path: str, key: StatKey, sha256: str) -> list[Any]:
    return [real_path, list(key), sha256]


def stat_key(p: Path) -> StatKey:
    st = os.stat(p)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def watch_key(p: Path, key: StatKey | None = None) -> WatchKey:
    lst = os.lstat(p)
    return (key or stat_key(p), os.path.realpath(p), lst.st_ino, lst.st_ctime_ns)


@dataclass
class Hashed:
    """Digests of the weight files, and what every file read was like when it was hashed."""

    path: Path
    files: dict[str, str]  # weight file -> sha256
    watched: dict[str, WatchKey] = field(default_factory=dict)  # every file read, incl. config/index
    others: dict[str, str] = field(default_factory=dict)  # config.json, index -> sha256
    cached: bool = False
    seconds: float = 0.0
    numel: int | None = None  # values stored in the checkpoint (safetensors headers); None for pickle

    @property
    def digest(self) -> str:
        return combined_digest(self.files)


def combined_digest(files: dict[str, str]) -> str:
    """One file: its own sha256. Several: sha256 over sorted "name sha256\\n" lines."""
    if len(files) == 1:
        return next(iter(files.values()))
    lines = "".join(f"{name} {sha}\n" for name, sha in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def hash_files(path: Path, weights: list[str], others: list[str], cache: DigestCache | None = None) -> Hashed:
    """The digests of the files read, each from its bytes now or from a row this host signed
    for the same file version (path, inode, size, mtime and ctime): never from anything else."""
    cache = cache or DigestCache.for_host()
    t0 = time.perf_counter()
    out = Hashed(path, {})
    all_cached, numel = True, 0
    for name in [*weights, *others]:
        p = path / name
        try:
            key = stat_key(p)
            watch = watch_key(p, key)
            if name.endswith(".safetensors"):
                numel += _safetensors_numel(p, name, key[2])
            sha = cache.get(key, watch[1])
            if sha is None:
                all_cached = False
                sha = _sha256(p)
                if watch_key(p) != watch:
                    raise IntegrityFailure(ErrorKind.WEIGHTS_CORRUPT, f"{name}: changed while it was being hashed")
                cache.put(key, sha, watch[1])
        except OSError as exc:
            raise CheckFailure(ErrorKind.LOAD_ERROR, f"{name}: unreadable ({_oserror(exc)})") from None
        out.watched[name] = watch
        (out.files if name in weights else out.others)[name] = sha
    out.cached = all_cached
    out.numel = numel if all(w.endswith(".safetensors") for w in weights) else None
    out.seconds = time.perf_counter() - t0
    return out


def file_sha256(p: Path, cache: DigestCache | None = None) -> str:
    """sha256 of one file through this host's signed digest cache (keyed by real path and stat,
    ctime included, so an edit in place is a miss); a file that changes while it is hashed is
    not cached."""
    cache = cache or DigestCache.for_host()
    real, key = os.path.realpath(p), stat_key(p)
    sha = cache.get(key, real)
    if sha is None:
        sha = _sha256(p)
        if stat_key(p) == key:
            cache.put(key, sha, real)
    return sha


def _sha256(p: Path) -> str:
    digest = hashlib.sha256()
    with p.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _safetensors_numel(p: Path, name: str, size: int) -> int:
    """Values stored in a safetensors file, from its header; a file shorter or longer than
    its header says is corrupt (truncated, or bytes appended)."""
    with p.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise IntegrityFailure(ErrorKind.WEIGHTS_CORRUPT, f"{name}: truncated ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise IntegrityFailure(
                ErrorKind.WEIGHTS_CORRUPT, f"{name}: truncated or not safetensors (header of {n} bytes)"
            )
        try:
            header = json.loads(fh.read(n))
            tensors = [v for k, v in header.items() if k != "__metadata__"]
            end = max((int(t["data_offsets"][1]) for t in tensors), default=0)
            count = sum(prod(int(d) for d in t["shape"]) for t in tensors)
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            raise IntegrityFailure(
                ErrorKind.WEIGHTS_CORRUPT, f"{name}: unreadable safetensors header ({exc})"
            ) from None
    if 8 + n + end != size:
        raise IntegrityFailure(
            ErrorKind.WEIGHTS_CORRUPT,
            f"{name}: {size} bytes, but its header describes {8 + n + end} (truncated or extended)",
        )
    return count


# -- claims -----------------------------------------------------------------------------
def package_record(module: str, sub: str) -> tuple[str, dict[str, str]] | None:
    """("dist==version", {file relative to the model folder: sha256 hex}) from the installed
    package's RECORD, or None when the package has no distribution metadata."""
    dist_name = module.replace("_", "-")
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None
    prefix = f"{module}/{sub.strip('/')}/" if sub.strip("/") else f"{module}/"
    record: dict[str, str] = {}
    for f in dist.files or []:
        posix = f.as_posix()
        if f.hash is None or f.hash.mode != "sha256" or not posix.startswith(prefix):
            continue
        value = f.hash.value
        record[posix[len(prefix) :]] = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()
    return f"{dist.metadata['Name']}=={dist.version}", record


def git_blob_sha1(p: Path) -> str:
    data = p.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def claims(
    hashed: Hashed, hub_lfs: dict[str, str], record: dict[str, str] | None, hub_blobs: dict[str, str] | None = None
) -> list[dict[str, str]]:
    """What each source says the files are: the Hub's LFS sha256 (large files) or git blob id
    (the others), the cache blob's name (sha256 for large files, git blob sha1 for small ones),
    the package's RECORD."""
    out: list[dict[str, str]] = []
    for name in [*hashed.files, *hashed.others]:
        if name in hub_lfs:
            out.append({"file": name, "sha256": hub_lfs[name], "by": "hub"})
        elif hub_blobs and name in hub_blobs:
            out.append({"file": name, "git_sha1": hub_blobs[name], "by": "hub"})
        link = hashed.path / name
        if link.is_symlink():
            blob = Path(os.readlink(link)).name
            if len(blob) == 64 and _is_hex(blob):
                out.append({"file": name, "sha256": blob, "by": "cache_blob"})
            elif len(blob) == 40 and _is_hex(blob):
                out.append({"file": name, "git_sha1": blob, "by": "cache_blob"})
        if record is not None and name in record:
            out.append({"file": name, "sha256": record[name], "by": "package_record"})
    return out


def verify(hashed: Hashed, claimed: list[dict[str, str]]) -> list[str]:
    """The sources whose every claim matched the bytes; a mismatch is weights_corrupt."""
    sources: dict[str, bool] = {}
    for c in claimed:
        name = c["file"]
        if "git_sha1" in c:
            want, got, what = c["git_sha1"], git_blob_sha1(hashed.path / name), "git blob sha1"
        else:
            want, got, what = c["sha256"], {**hashed.files, **hashed.others}[name], "sha256"
        if want.lower() != got:
            raise IntegrityFailure(
                ErrorKind.WEIGHTS_CORRUPT,
                f"{name}: {c['by']} claims {what} {want}, the bytes have {got}",
                {"file": name, "claimed": want, "computed": got, "by": c["by"]},
            )
        sources[c["by"]] = True
    return sorted(sources)


def _is_hex(s: str) -> bool:
    return all(ch in "0123456789abcdef" for ch in s)


# -- after the load ---------------------------------------------------------------------
def unchanged(hashed: Hashed, when: str = "during load") -> None:
    """Every file hashed is still the same file, untouched since it was hashed. Checked after
    the load and again after the inferences: safetensors are memory-mapped, so bytes written
    in place after the load would reach the model."""
    for name, key in hashed.watched.items():
        try:
            now = watch_key(hashed.path / name)
        except OSError as exc:
            raise IntegrityFailure(ErrorKind.WEIGHTS_CORRUPT, f"{name}: vanished {when} ({_oserror(exc)})") from None
        if now != key:
            raise IntegrityFailure(ErrorKind.WEIGHTS_CORRUPT, f"{name}: changed {when} (replaced or written to)")


def built_class(model: Any, declared: str, accepted: tuple[str, ...]) -> None:
    """The class built must be the one the config declares, and one the family accepts."""
    built = type(model).__name__
    if built != declared or built not in accepted:
        raise IntegrityFailure(
            ErrorKind.ARCHITECTURE_MISMATCH,
            f"config declares {declared}, but the class built from it is {built}",
            {"declared": declared, "built": built},
        )


def complete(model: Any, info: dict[str, Any], checkpoint_numel: int | None) -> int:
    """Parameters loaded from the checkpoint. Raises weights_incomplete for a parameter that
    was not (other than weights the model declares tied, which transformers ties and drops
    from missing_keys), a shape mismatch, or checkpoint tensors the model did not use."""
    missing = sorted(k for k in info.get("missing_keys", ()) if _is_parameter(model, k))
    mismatched = sorted(str(m[0]) for m in info.get("mismatched_keys", ()))
    unexpected = sorted(str(k) for k in info.get("unexpected_keys", ()))
    problems = []
    if missing:
        problems.append(f"{len(missing)} parameter(s) not in the checkpoint (randomly initialised): {_first(missing)}")
    if mismatched:
        problems.append(f"{len(mismatched)} tensor(s) of the wrong shape: {_first(mismatched)}")
    if unexpected:
        problems.append(f"{len(unexpected)} checkpoint tensor(s) the model did not use: {_first(unexpected)}")
    bad = {id(model.get_parameter(k)) for k in missing + mismatched if _is_parameter(model, k)}
    params = list(model.parameters())
    loaded = sum(p.numel() for p in params if id(p) not in bad)
    if not problems and checkpoint_numel is not None and loaded > checkpoint_numel:
        problems.append(f"the checkpoint holds {checkpoint_numel} values, fewer than the {loaded} parameters built")
    if problems:
        raise IntegrityFailure(
            ErrorKind.WEIGHTS_INCOMPLETE,
            "; ".join(problems),
            {
                "missing": missing[:KEYS_SHOWN],
                "missing_count": len(missing),
                "mismatched": mismatched[:KEYS_SHOWN],
                "mismatched_count": len(mismatched),
                "unexpected": unexpected[:KEYS_SHOWN],
                "unexpected_count": len(unexpected),
                "parameters": sum(p.numel() for p in params),
                "parameters_loaded": loaded,
            },
        )
    return int(loaded)


SIZE_TOLERANCE = 2.0  # the catalog's params_m is approximate: within a factor of 2 either way


def expected_size(parameters_loaded: int, params_m: float | None, name: str) -> None:
    """A candidate is the model the catalog names only if it is about the size the catalog
    says: a 2 M-parameter model under a 68 M name (say one trained on the gate's own text) is
    size_mismatch, whatever its outputs."""
    if not params_m:
        return
    ratio = parameters_loaded / (params_m * 1e6)
    if not 1 / SIZE_TOLERANCE <= ratio <= SIZE_TOLERANCE:
        raise IntegrityFailure(
            ErrorKind.SIZE_MISMATCH,
            f"{name}: the checkpoint holds {parameters_loaded / 1e6:.2f} M parameters, the catalog says "
            f"{params_m:g} M (allowed: a factor of {SIZE_TOLERANCE:g} either way)",
            {"parameters_loaded": parameters_loaded, "params_m": params_m},
        )


def fits_checkpoint(planned: int, checkpoint_numel: int | None, free_bytes: int, name: str) -> None:
    """Before anything is allocated: a config that describes more parameters than the
    checkpoint holds, and more than the device could hold, is refused here as incomplete (an
    inflated config would otherwise end as an out-of-memory load, or kill the worker). A
    smaller excess is left to complete(), which names the missing keys after the load."""
    if checkpoint_numel is None or planned <= checkpoint_numel:
        return
    if planned * 4 > free_bytes:  # float32
        raise IntegrityFailure(
            ErrorKind.WEIGHTS_INCOMPLETE,
            f"{name}: config.json describes {planned} parameters ({planned * 4 / 2**20:.0f} MiB in float32), "
            f"the checkpoint holds {checkpoint_numel} values",
            {"planned_parameters": planned, "checkpoint_values": checkpoint_numel, "free_bytes": free_bytes},
        )


def _is_parameter(model: Any, key: str) -> bool:
    try:
        model.get_parameter(key)
        return True
    except (AttributeError, ValueError):
        return False


def _first(keys: list[str]) -> str:
    shown = ", ".join(keys[:KEYS_SHOWN])
    return shown + (f" (and {len(keys) - KEYS_SHOWN} more)" if len(keys) > KEYS_SHOWN else "")


# -- provenance -------------------------------------------------------------------------
def cache_ref_basis(snapshot: Path) -> str:
    """ "cache_ref" when a ref in the HF cache names this snapshot's commit, else "claimed"."""
    refs = snapshot.parent.parent / "refs"
    try:
        for ref in refs.rglob("*"):
            if ref.is_file() and ref.read_text(encoding="utf-8").strip() == snapshot.name:
                return "cache_ref"
    except OSError:
        pass
    return "claimed"


def _oserror(exc: OSError) -> str:
    return f"{type(exc).__name__}: {exc.strerror or exc}"[:200]


def _short(path: Path) -> str:
    s = str(path)
    return s if len(s) <= 200 else s[:100] + "..." + s[-97:]
