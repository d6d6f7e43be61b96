"""The fallback resolver: candidates in order of size, each validated before it is loaded,
every pass-over recorded as data, and a synthetic model as the last resort."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers

from fleet.catalog import Candidate, Family
from fleet.errors import CheckFailure, ErrorKind
from fleet.protocol import Attempt
from fleet.settings import Settings
from workers import devices, failures, hub, synthetic, trust
from workers.checks.base import Bundle, Check

SAFE_SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
MEMORY_HEADROOM = 1.2  # weights need this factor of free memory to count as fitting


@dataclass
class Located:
    """A candidate found on disk (not yet loaded), with its provenance."""

    path: Path
    source: str  # hub | cache | local
    revision: str | None
    files: dict[str, int] = field(default_factory=dict)  # weight file -> bytes
    lfs_sha256: dict[str, str] = field(default_factory=dict)


@dataclass
class Resolution:
    bundle: Bundle | None
    attempts: list[Attempt]
    offline: str | None


def resolve(family: Family, check: Check, dev: torch.device, settings: Settings | None = None) -> Resolution:
    """Try every candidate, then the synthetic model. Never raises for a candidate's failure."""
    settings = settings or Settings.from_env()
    offline = None
    if any(c.id for c in family.candidates):
        offline = hub.offline_reason(settings.hub_probe_timeout_s)
    attempts: list[Attempt] = []
    for cand in family.candidates:
        t0 = time.perf_counter()
        try:
            bundle = _try_candidate(cand, family, check, dev, offline, settings)
        except CheckFailure as exc:
            attempts.append(_attempt(cand.name, "skipped", exc, t0))
            continue
        attempts.append(_attempt(cand.name, "loaded", None, t0))
        return Resolution(bundle, attempts, offline)
    t0 = time.perf_counter()
    try:
        bundle = synthetic.build(family, check, dev)
    except CheckFailure as exc:
        attempts.append(_attempt(f"synthetic:{family.synthetic}", "skipped", exc, t0))
        return Resolution(None, attempts, offline)
    except Exception as exc:
        err = failures.load_failure(exc, f"synthetic:{family.synthetic}")
        attempts.append(_attempt(f"synthetic:{family.synthetic}", "failed", err, t0))
        return Resolution(None, attempts, offline)
    attempts.append(_attempt(bundle.name, "loaded", None, t0, detail=bundle.extra.get("config_from", "")))
    return Resolution(bundle, attempts, offline)


def _attempt(name: str, outcome: str, exc: CheckFailure | None, t0: float, detail: str = "") -> Attempt:
    return {
        "candidate": name,
        "outcome": outcome,
        "error_kind": str(exc.kind) if exc else None,
        "detail": exc.message if exc else detail,
        "seconds": round(time.perf_counter() - t0, 4),
    }


def _try_candidate(
    cand: Candidate, family: Family, check: Check, dev: torch.device, offline: str | None, settings: Settings
) -> Bundle:
    trust.require_allowed(cand, settings)  # before anything is read, downloaded or imported
    located = locate(cand, offline, settings.hub_timeout_s)
    architecture = validate(located, cand, family, dev)
    return load(located, cand, check, dev, architecture, settings.hub_timeout_s)


# -- locate ---------------------------------------------------------------------------
def locate(cand: Candidate, offline: str | None, hub_timeout_s: float = 10.0) -> Located:
    if cand.path:
        return _locate_local(cand.path)
    assert cand.id is not None
    if offline:
        try:
            path = hub.cached_snapshot(cand.id, cand.revision)
        except CheckFailure as exc:
            raise CheckFailure(exc.kind, f"{exc.message}; hub offline: {offline}") from None
        weights = _weight_files(path)
        if not weights:
            raise CheckFailure(
                ErrorKind.OFFLINE_NOT_CACHED, f"{cand.id}: weights not in the local cache; hub offline: {offline}"
            )
        return Located(path, "cache", path.name, weights)
    info = hub.repo_info(cand.id, cand.revision, hub_timeout_s)
    if info.gated and not hub.token():
        raise CheckFailure(ErrorKind.GATED, f"{cand.id}: gated repository and no HF_TOKEN set")
    weights = {f: s for f, s in info.files.items() if f.endswith((SAFE_SUFFIX, *PICKLE_SUFFIXES))}
    if "config.json" not in info.files:
        raise CheckFailure(ErrorKind.NO_CONFIG, f"{cand.id}: repository has no config.json")
    # Validate from metadata before downloading any weights.
    _require_safe(cand, list(weights))
    # Downloads name the catalog's revision (or main), so the cache records the ref for offline use.
    config_path = hub.fetch_file(cand.id, "config.json", cand.revision, hub_timeout_s)
    pre = Located(config_path.parent, "hub", info.sha, weights, info.lfs_sha256)
    return pre


def _locate_local(spec: str) -> Located:
    revision = None
    if spec.startswith("pkg:"):
        module, _, sub = spec[4:].partition("/")
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            raise CheckFailure(ErrorKind.NOT_FOUND, f"{spec}: Python package {module!r} is not installed")
        path = Path(next(iter(found.submodule_search_locations))) / sub
        try:
            revision = f"{module.replace('_', '-')}=={importlib.metadata.version(module.replace('_', '-'))}"
        except importlib.metadata.PackageNotFoundError:
            revision = None
    else:
        path = Path(spec).expanduser()
    if not path.is_dir():
        raise CheckFailure(ErrorKind.NOT_FOUND, f"{spec}: no such directory {path}")
    return Located(path, "local", revision, _weight_files(path))


def _weight_files(path: Path) -> dict[str, int]:
    return {
        p.name: p.stat().st_size
        for p in path.iterdir()
        if p.is_file() and p.name.endswith((SAFE_SUFFIX, *PICKLE_SUFFIXES))
    }


# -- validate -------------------------------------------------------------------------
def _require_safe(cand: Candidate, weight_files: list[str]) -> None:
    safe = [f for f in weight_files if f.endswith(SAFE_SUFFIX)]
    if safe:
        return
    pickled = [f for f in weight_files if f.endswith(PICKLE_SUFFIXES)]
    if not pickled:
        raise CheckFailure(ErrorKind.LOAD_ERROR, f"{cand.name}: no weights file")
    if not cand.allow_pickle:
        raise CheckFailure(
            ErrorKind.UNSAFE_WEIGHTS,
            f"{cand.name}: only pickle weights ({', '.join(sorted(pickled))}); set allow_pickle to accept them",
        )


def validate(located: Located, cand: Candidate, family: Family, dev: torch.device) -> str:
    """Config, architecture, weight format and size, before any weights are read."""
    config_file = located.path / "config.json"
    if not config_file.is_file():
        raise CheckFailure(ErrorKind.NO_CONFIG, f"{cand.name}: no config.json")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckFailure(ErrorKind.LOAD_ERROR, f"{cand.name}: unreadable config.json ({exc})") from None
    archs = config.get("architectures") or []
    if not archs:
        raise CheckFailure(ErrorKind.UNSUPPORTED_ARCHITECTURE, f"{cand.name}: config names no architecture")
    arch = archs[0]
    if arch not in family.architectures:
        raise CheckFailure(
            ErrorKind.ARCHITECTURE_MISMATCH,
            f"{cand.name}: architecture {arch} is not one this family accepts ({', '.join(family.architectures)})",
        )
    if not hasattr(transformers, arch):
        if config.get("auto_map") and not cand.trust_remote_code:
            why = "needs the repository's own code (trust_remote_code is off for this candidate)"
        else:
            why = f"unknown to the installed transformers {transformers.__version__}"
        raise CheckFailure(ErrorKind.UNSUPPORTED_ARCHITECTURE, f"{cand.name}: {arch} {why}")
    _require_safe(cand, list(located.files))
    size = _weights_size(located.files)
    free = devices.free_bytes(dev)
    if size * MEMORY_HEADROOM > free:
        raise CheckFailure(
            ErrorKind.TOO_LARGE,
            f"{cand.name}: weights {size / 2**20:.0f} MiB need {MEMORY_HEADROOM}x, "
            f"{dev} has {free / 2**20:.0f} MiB free",
        )
    return str(arch)


def _weights_size(files: dict[str, int]) -> int:
    safe = {f: s for f, s in files.items() if f.endswith(SAFE_SUFFIX)}
    return sum((safe or files).values())


# -- load -----------------------------------------------------------------------------
def load(
    located: Located, cand: Candidate, check: Check, dev: torch.device, architecture: str, hub_timeout_s: float = 10.0
) -> Bundle:
    path = located.path
    if located.source == "hub":
        assert cand.id is not None
        path = hub.download(cand.id, cand.revision, cand.allow_pickle, hub_timeout_s)
        located.revision = path.name  # the snapshot folder is named by the commit it holds
    try:
        auto = getattr(transformers, check.auto_class)
        model = auto.from_pretrained(
            path,
            use_safetensors=True if any(f.endswith(SAFE_SUFFIX) for f in located.files) else None,
            trust_remote_code=cand.trust_remote_code,
            dtype=torch.float32,
        )
        model = model.to(dev).eval()
        tokenizer, processor = check.load_preprocessing(path)
    except CheckFailure:
        raise
    except Exception as exc:
        raise failures.load_failure(exc, cand.name) from None
    return Bundle(
        model=model,
        tokenizer=tokenizer,
        processor=processor,
        name=cand.name,
        source=located.source,
        revision=located.revision,
        weights_sha256=_weights_sha256(path, located),
        architecture=architecture,
        path=path,
    )


def _weights_sha256(path: Path, located: Located) -> str | None:
    """The HF cache names large-file blobs by their sha256; local files are hashed."""
    files = sorted(f for f in located.files if f.endswith(SAFE_SUFFIX)) or sorted(located.files)
    if not files:
        return None
    target = path / files[0]
    if files[0] in located.lfs_sha256:
        return located.lfs_sha256[files[0]]
    if target.is_symlink():
        blob = target.resolve().name
        if len(blob) == 64:
            return blob
    digest = hashlib.sha256()
    with target.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
