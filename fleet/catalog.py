"""The catalog: families of models, each with a check and candidates ordered by size.

Loaded from TOML and validated without side effects. Every problem names the file, the
entry and what is wrong; unknown keys list the valid ones.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from fleet import names, tomlfile
from fleet.errors import CatalogError, FileMissing, SelectionError
from fleet.timing import MAX_TIME_LIMIT_S
from fleet.variants import VariantError, check_list

FAMILY_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_CATALOG_BYTES = 1 << 20
MAX_FAMILIES = 1000
MAX_CANDIDATES = 32
MAX_ARCHITECTURES = 32
MAX_REPEATS = 10_000  # timed repeats of a check: catalogs, --repeats and job messages alike
# Longest allowed text per key (characters): every job message carries its family's spec.
MAX_LENGTH = {
    "description": 2000,
    "id": 200,
    "path": 1024,
    "revision": 200,
    "gguf_file": 255,
    "alias_of": 1024,
    "check": 64,
    "synthetic": 64,
}
MAX_ARCHITECTURE_LENGTH = 128
HUB_ID_RE = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
# A revision names a commit (40 hex digits) or a git ref (branch, tag, refs/pr/N): never a path.
SHA_RE = re.compile(r"^[0-9a-f]{40}$")
REF_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*(/[A-Za-z0-9_][A-Za-z0-9_.+-]*)*$")
# Numbers: (minimum, exclusive minimum?, maximum); NaN and infinities are refused.
_RANGES: dict[str, tuple[float, bool, float]] = {
    "time_limit_s": (0.0, True, MAX_TIME_LIMIT_S),
    "memory_limit_mb": (0.0, True, float(1 << 30)),
    "repeats": (0.0, True, float(MAX_REPEATS)),
    "params_m": (0.0, False, 1e7),
}

_CANDIDATE_KEYS = {
    "id": str,
    "path": str,
    "revision": str,
    "params_m": (int, float),
    "allow_pickle": bool,
    "trust_remote_code": bool,
    "gguf_file": str,
    "alias_of": str,
}
CANDIDATE_KEYS: dict[str, Any] = _CANDIDATE_KEYS  # the keys (and types) of a candidate, shared with fleet.jobs
_FAMILY_KEYS = {
    "check": str,
    "description": str,
    "architectures": list,
    "synthetic": str,
    "candidates": list,
    "time_limit_s": (int, float),
    "memory_limit_mb": (int, float),
    "repeats": int,
    "variants": list,
}


@dataclass(frozen=True)
class Candidate:
    """One model to try: a Hub id (optionally pinned) or a local directory."""

    id: str | None = None
    path: str | None = None
    revision: str | None = None
    params_m: float | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False
    gguf_file: str | None = None  # a .gguf file inside `path`, converted once to safetensors by the worker
    # Another candidate name (Hub id or pkg: path) whose lock entries and pins vouch for this one:
    # the operator declares the two the same model (a copy, a mirror's name for it).
    alias_of: str | None = None

    @property
    def name(self) -> str:
        return self.id or self.path or "?"


@dataclass(frozen=True)
class Family:
    name: str
    check: str
    architectures: tuple[str, ...]
    synthetic: str
    candidates: tuple[Candidate, ...] = ()
    description: str = ""
    time_limit_s: float = 600.0
    memory_limit_mb: float | None = None
    repeats: int = 5
    variants: tuple[str, ...] = ()  # what `--variants default` runs for this family (fleet/variants.py)

    def names(self) -> list[str]:
        """Every name the candidates go by: their own and their declared aliases."""
        return [n for c in self.candidates for n in (c.name, c.alias_of) if n]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data: the job carries its family, so workers need no catalog file."""
        # Field by field (what dataclasses.asdict gives, in the same order, without its deep copies:
        # every value is a str, a number, None or a tuple of those): a submit builds one per job.
        d = {name: getattr(self, name) for name in _FAMILY_FIELDS}
        d["architectures"] = list(self.architectures)
        if self.variants:  # absent when unset: the catalog digest of older runs stays the same
            d["variants"] = list(self.variants)
        else:
            d.pop("variants")
        d["candidates"] = [{name: getattr(c, name) for name in _CANDIDATE_FIELDS} for c in self.candidates]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Family:
        return cls(
            **{
                **d,
                "architectures": tuple(d["architectures"]),
                "variants": tuple(d.get("variants") or ()),
                "candidates": tuple(Candidate(**c) for c in d["candidates"]),
            }
        )


_FAMILY_FIELDS = tuple(f.name for f in fields(Family))
_CANDIDATE_FIELDS = tuple(f.name for f in fields(Candidate))


@dataclass(frozen=True)
class Catalog:
    source: str
    families: dict[str, Family] = field(default_factory=dict)

    def select(self, names: list[str] | None) -> list[Family]:
        """Families by name, in catalog order for None; unknown names list the valid ones."""
        if not names:
            return list(self.families.values())
        unknown = [n for n in names if n not in self.families]
        if unknown:
            raise SelectionError(
                f"unknown family {', '.join(repr(u) for u in unknown)} in {self.source} "
                f"(available: {', '.join(self.families)})"
            )
        return [self.families[n] for n in dict.fromkeys(names)]


def default_catalog_path() -> Path:
    return Path(str(resources.files("fleet").joinpath("catalog.toml")))


def load_catalog(path: str | os.PathLike[str] | None = None, plugins: tuple[str, ...] = ()) -> Catalog:
    """The catalog at path (default: the one shipped); plugins add check names (fleet.names)."""
    p = Path(path) if path is not None else default_catalog_path()
    if not p.is_file():
        raise FileMissing(f"catalog file not found: {p}")
    try:
        size = p.stat().st_size
        if size > MAX_CATALOG_BYTES:
            raise CatalogError(f"{p}: {size} bytes; a catalog may have at most {MAX_CATALOG_BYTES} bytes")
        data = tomlfile.loads(p.read_text(encoding="utf-8"), str(p), CatalogError)
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{p}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise CatalogError(f"{p}: cannot read the catalog: {exc.strerror or exc}") from None
    return parse_catalog(data, str(p), names.check_names(plugins))


def parse_catalog(data: dict[str, Any], source: str, checks: tuple[str, ...] = names.CHECKS) -> Catalog:
    unknown = set(data) - {"families"}
    if unknown:
        raise CatalogError(f"{source}: unknown top-level key {sorted(unknown)} (valid: ['families'])")
    fams = data.get("families")
    if not isinstance(fams, dict) or not fams:
        raise CatalogError(f"{source}: no [families.NAME] tables")
    if len(fams) > MAX_FAMILIES:
        raise CatalogError(f"{source}: {len(fams)} families; at most {MAX_FAMILIES}")
    families = {name: _parse_family(source, name, spec, checks) for name, spec in fams.items()}
    return Catalog(source=source, families=families)


def _check_keys(where: str, spec: Any, schema: dict[str, Any]) -> None:
    if not isinstance(spec, dict):
        raise CatalogError(f"{where}: expected a table, got {type(spec).__name__}")
    for key, value in spec.items():
        if key not in schema:
            raise CatalogError(f"{where}: unknown key {key!r} (valid: {', '.join(schema)})")
        want = schema[key]
        ok = isinstance(value, bool) if want is bool else (not isinstance(value, bool) and isinstance(value, want))
        if not ok:
            raise CatalogError(f"{where}: {key} must be {_type_name(want)}, got {type(value).__name__}")
        if isinstance(value, str) and len(value) > MAX_LENGTH.get(key, 0):
            raise CatalogError(f"{where}: {key} is {len(value)} characters long; at most {MAX_LENGTH.get(key, 0)}")
        if key in _RANGES:
            low, exclusive, high = _RANGES[key]
            if not math.isfinite(value) or value < low or (exclusive and value == low) or value > high:
                bound = ">" if exclusive else ">="
                raise CatalogError(
                    f"{where}: {key} must be a finite number {bound} {low:g} and <= {high:g}, got {value}"
                )


def _type_name(want: Any) -> str:
    if isinstance(want, tuple):
        return "a number"
    return {str: "a string", bool: "true or false", list: "a list", int: "an integer"}.get(want, str(want))


def _parse_family(source: str, name: str, spec: Any, checks: tuple[str, ...]) -> Family:
    where = f"{source}: families.{name}"
    if not FAMILY_RE.match(name):
        raise CatalogError(f"{where}: family names are lower-case letters, digits, '-' and '_'")
    _check_keys(where, spec, _FAMILY_KEYS)
    for required in ("check", "architectures"):
        if required not in spec:
            raise CatalogError(f"{where}: missing required key {required!r}")
    if spec["check"] not in checks:
        raise CatalogError(f"{where}: unknown check {spec['check']!r} (available: {', '.join(checks)})")
    archs = spec["architectures"]
    if not archs or not all(isinstance(a, str) and a for a in archs):
        raise CatalogError(f"{where}: architectures must be a non-empty list of class names")
    synthetic = spec.get("synthetic", names.NO_SYNTHETIC)
    builders = (*names.SYNTHETIC_BUILDERS, names.NO_SYNTHETIC)
    if synthetic not in builders:
        raise CatalogError(f"{where}: unknown synthetic builder {synthetic!r} (available: {', '.join(builders)})")
    if len(archs) > MAX_ARCHITECTURES or any(len(a) > MAX_ARCHITECTURE_LENGTH for a in archs):
        raise CatalogError(
            f"{where}: at most {MAX_ARCHITECTURES} architectures of at most {MAX_ARCHITECTURE_LENGTH} characters"
        )
    if len(spec.get("candidates", [])) > MAX_CANDIDATES:
        raise CatalogError(f"{where}: at most {MAX_CANDIDATES} candidates")
    candidates = tuple(
        _parse_candidate(f"{where}.candidates[{i}]", c) for i, c in enumerate(spec.get("candidates", []))
    )
    # Hub ids in order of size; local paths (offline fallbacks) may follow them, in their own size order.
    for kind, group in (("Hub", [c for c in candidates if c.id]), ("local path", [c for c in candidates if c.path])):
        sizes = [c.params_m for c in group if c.params_m is not None]
        if sizes != sorted(sizes):
            raise CatalogError(
                f"{where}: {kind} candidates must be in order of increasing size (params_m {sizes}); "
                "local paths are ordered among themselves and may follow the Hub ids"
            )
    if not candidates and synthetic == names.NO_SYNTHETIC:
        raise CatalogError(f"{where}: no candidates and no synthetic builder: nothing could run")
    return Family(
        name=name,
        check=spec["check"],
        architectures=tuple(archs),
        synthetic=synthetic,
        candidates=candidates,
        description=spec.get("description", ""),
        time_limit_s=float(spec.get("time_limit_s", 600.0)),
        memory_limit_mb=float(spec["memory_limit_mb"]) if "memory_limit_mb" in spec else None,
        repeats=int(spec.get("repeats", 5)),
        variants=_variants(where, spec.get("variants", [])),
    )


def _variants(where: str, value: list[Any]) -> tuple[str, ...]:
    try:
        return tuple(check_list(value, f"{where}.variants"))
    except VariantError as exc:
        raise CatalogError(exc.message) from None


def _parse_candidate(where: str, spec: Any) -> Candidate:
    _check_keys(where, spec, _CANDIDATE_KEYS)
    problem = candidate_problem(spec)
    if problem:
        raise CatalogError(f"{where}: {problem}")
    return Candidate(**spec)


def revision_problem(revision: str) -> str | None:
    """What is wrong with a revision, or None: a 40-hex commit or a git ref name, bounded,
    with no '..' and no leading '/' (a revision is looked up on the Hub or in the cache's refs,
    and is never a path to open)."""
    limit = MAX_LENGTH["revision"]
    if not 0 < len(revision) <= limit:
        return f"revision must have 1-{limit} characters, got {len(revision)}"
    if SHA_RE.match(revision):
        return None
    if ".." in revision or revision.endswith((".lock", ".")) or not REF_RE.match(revision):
        return f"revision {revision[:80]!r} is neither a 40-hex commit nor a git ref name"
    return None


def file_name_problem(key: str, name: str, suffix: str = "") -> str | None:
    """What is wrong with a bare file name (no directories, no leading dot), or None."""
    limit = MAX_LENGTH.get(key, 255)
    if not 0 < len(name) <= limit:
        return f"{key} must have 1-{limit} characters, got {len(name)}"
    if "/" in name or "\\" in name or "\0" in name or name.startswith(".") or not name.endswith(suffix):
        return f"{key} {name[:80]!r} must be a file name ending in {suffix or 'any suffix'} (no directories)"
    return None


def candidate_problem(spec: dict[str, Any]) -> str | None:
    """What is wrong with a candidate's values (types and lengths already checked), or None.
    Shared by the catalog and the worker's check of a job message (fleet.jobs)."""
    if ("id" in spec) == ("path" in spec):
        return "give exactly one of 'id' (a Hub repo) or 'path' (a local directory)"
    if "id" in spec and not HUB_ID_RE.match(spec["id"]):
        return f"{spec['id'][:80]!r} is not a Hub repo id (owner/name)"
    if "revision" in spec:
        if "path" in spec:
            return "'revision' applies to Hub ids, not local paths"
        problem = revision_problem(spec["revision"])
        if problem:
            return problem
    if "alias_of" in spec and spec["alias_of"] in (spec.get("id"), spec.get("path")):
        return "'alias_of' names another candidate name, not this one"
    if "gguf_file" in spec:
        if "path" not in spec:
            return "'gguf_file' names a file inside a local 'path'; it cannot go with 'id'"
        return file_name_problem("gguf_file", spec["gguf_file"], ".gguf")
    return None
