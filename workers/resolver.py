"""The fallback resolver: candidates in order of size, each validated before it is loaded,
every pass-over recorded as data, and a synthetic model as the last resort.

Integrity failures (weights_corrupt, weights_incomplete, a substituted class) end the
resolution: the job fails with that kind instead of falling back, so a tampered or broken
copy on this host is never hidden behind another candidate or the synthetic model."""

from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import torch
import transformers

from fleet.catalog import Candidate, Family
from fleet.errors import CheckFailure, ErrorKind
from fleet.protocol import Attempt
from fleet.settings import Settings
from workers import devices, failures, gguf, hub, integrity, pkgpath, trust
from workers.checks.base import Bundle, Check
from workers.tiny import synthetic

SAFE_SUFFIX = ".safetensors"
PREPROCESSING_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "tokenizer.model",
    "preprocessor_config.json",
)
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
    record: dict[str, str] | None = None  # the package's RECORD sha256 per file (pkg: candidates)
    hub_sha: str | None = None  # the commit the Hub answered with
    conversion: dict[str, Any] | None = None  # a GGUF candidate: what was converted, and how


# Failures that say a candidate's files are not what they claim to be: they end the job rather
# than fall back to the next candidate or the synthetic model, which would hide the tampering.
INTEGRITY_KINDS = (
    ErrorKind.WEIGHTS_CORRUPT,
    ErrorKind.WEIGHTS_INCOMPLETE,
    ErrorKind.ARCHITECTURE_MISMATCH,
    ErrorKind.SIZE_MISMATCH,
)


class IntegrityFailure(CheckFailure):
    """A candidate whose weights are not what they claim to be: ends the resolution."""


@dataclass
class Resolution:
    bundle: Bundle | None
    attempts: list[Attempt]
    offline: str | None
    failure: CheckFailure | None = None  # an integrity failure that ended the resolution


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
        except IntegrityFailure as exc:
            attempts.append(_attempt(cand.name, "failed", exc, t0))
            return Resolution(None, attempts, offline, CheckFailure(exc.kind, f"{cand.name}: {exc.message}", exc.data))
        except CheckFailure as exc:
            attempts.append(_attempt(cand.name, "skipped", exc, t0))
            continue
        except Exception as exc:  # a bug or an odd file system: this attempt's error, not the job's
            err = CheckFailure(ErrorKind.RESOLVE_ERROR, f"{cand.name}: {type(exc).__name__}: {str(exc)[:300]}")
            attempts.append(_attempt(cand.name, "skipped", err, t0))
            continue
        attempts.append(_attempt(cand.name, "loaded", None, t0))
        return Resolution(bundle, attempts, offline)
    t0 = time.perf_counter()
    try:
        bundle = synthetic.build(family, check, dev)
    except CheckFailure as exc:
        attempts.append(_attempt(f"synthetic:{family.synthetic}", "skipped", exc, t0))
        # the harness cannot build this model yet: the job says so, never "no candidate"
        failure = exc if exc.kind == ErrorKind.HARNESS_UNSUPPORTED else None
        return Resolution(None, attempts, offline, failure)
    except Exception as exc:
        err = failures.load_failure(exc, f"synthetic:{family.synthetic}")
        attempts.append(_attempt(f"synthetic:{family.synthetic}", "failed", err, t0))
        return Resolution(None, attempts, offline)
    attempts.append(_attempt(bundle.name, "loaded", None, t0, detail=bundle.extra.get("config_from", "")))
    return Resolution(bundle, attempts, offline)


def _attempt(name: str, outcome: str, exc: CheckFailure | None, t0: float, detail: str = "") -> Attempt:
    out: Attempt = {
        "candidate": name,
        "outcome": outcome,
        "error_kind": str(exc.kind) if exc else None,
        "detail": exc.message if exc else detail,
        "seconds": round(time.perf_counter() - t0, 4),
    }
    if exc is not None and exc.data:
        out["data"] = exc.data
    return out


def _try_candidate(
    cand: Candidate, family: Family, check: Check, dev: torch.device, offline: str | None, settings: Settings
) -> Bundle:
    trust.require_allowed(cand, settings)  # before anything is read, downloaded or imported
    located = locate(cand, offline, settings.hub_timeout_s)
    if cand.gguf_file:
        located = convert_gguf(located, cand)
    architecture = validate(located, cand, family, dev)
    try:
        return load(located, cand, family, check, dev, architecture, settings.hub_timeout_s)
    except CheckFailure as exc:
        if exc.kind in INTEGRITY_KINDS:
            raise IntegrityFailure(exc.kind, exc.message, exc.data) from None
        raise


# -- locate ---------------------------------------------------------------------------
def locate(cand: Candidate, offline: str | None, hub_timeout_s: float = 10.0) -> Located:
    if cand.path:
        return _locate_local(cand.path)
    assert cand.id is not None
    if offline:
        try:
            path = hub.cached_snapshot(cand.id, cand.revision, cand.allow_pickle)
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
    return Located(config_path.parent, "hub", info.sha, weights, info.lfs_sha256, hub_sha=info.sha)


def _locate_local(spec: str) -> Located:
    revision = record = None
    if spec.startswith("pkg:"):
        found = pkgpath.resolve(spec)  # not_allowed past the pkg: rule, not_found when not installed
        path = found.path
        pkg = integrity.package_record(found.name, found.sub)
        if pkg is not None:
            revision, record = pkg
    else:
        path = Path(spec).expanduser()
    try:
        is_dir = path.is_dir()
    except OSError as exc:  # a name too long, a loop of links
        raise CheckFailure(ErrorKind.NOT_FOUND, f"{spec[:200]}: unusable path ({exc.strerror})") from None
    if not is_dir:
        raise CheckFailure(ErrorKind.NOT_FOUND, f"{spec[:200]}: no such directory")
    return Located(path, "local", revision, _weight_files(path), record=record)


def convert_gguf(located: Located, cand: Candidate) -> Located:
    """The one hook for GGUF candidates: the converted (cached) folder, used like a local candidate."""
    assert cand.gguf_file is not None
    source = located.path / cand.gguf_file
    if not source.is_file():
        raise CheckFailure(ErrorKind.NOT_FOUND, f"{cand.name}: no GGUF file {cand.gguf_file} in {located.path}")
    try:
        conv = gguf.convert(source)
    except Exception as exc:
        raise failures.load_failure(exc, f"{cand.name} (GGUF conversion)") from None
    conversion = conv.to_dict()
    # The GGUF file against what its package's RECORD says (a pkg: candidate): the converted
    # weights are only as good as the file they came from.
    recorded = (located.record or {}).get(cand.gguf_file)
    if recorded is not None and recorded != conv.provenance["gguf_sha256"]:
        raise IntegrityFailure(
            ErrorKind.WEIGHTS_CORRUPT,
            f"{cand.gguf_file}: sha256 {conv.provenance['gguf_sha256']} read, the package RECORD says {recorded}",
            {"file": cand.gguf_file, "read": conv.provenance["gguf_sha256"], "claimed": recorded},
        )
    conversion["gguf_verified_by"] = "package_record" if recorded is not None else None
    return Located(
        conv.folder,
        "local",
        located.revision,
        _weight_files(conv.folder),
        # No claim for the converted bytes: their digest comes from convert() (or from a
        # provenance.json in a writable cache), not from the Hub or any other source.
        conversion=conversion,
    )


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
    located: Located,
    cand: Candidate,
    family: Family,
    check: Check,
    dev: torch.device,
    architecture: str,
    hub_timeout_s: float = 10.0,
) -> Bundle:
    """Hash exactly the files transformers will read, check them against what their source
    claims, load, then check that the same files were read, completely, into the declared class."""
    path = located.path
    if located.source == "hub":
        assert cand.id is not None
        path = hub.download(cand.id, cand.revision, cand.allow_pickle, hub_timeout_s)
        located.revision = path.name  # the snapshot folder is named by the commit it holds
    use_safetensors = True if any(f.endswith(SAFE_SUFFIX) for f in located.files) else None
    config = _read_config(path, cand)
    weights, index = integrity.weight_files(path, config, use_safetensors)
    # The tokenizer and processor files decide what the checks feed the model: their bytes are
    # evidence too, hashed and held to the source's claims like the weights.
    preprocessing = [f for f in PREPROCESSING_FILES if (path / f).is_file()]
    hashed = integrity.hash_files(path, weights, ["config.json", *([index] if index else []), *preprocessing])
    claims = integrity.claims(hashed, located.lfs_sha256, located.record)
    verified_by = integrity.verify(hashed, claims)
    try:
        auto = getattr(transformers, check.auto_class)
        if hashed.numel is not None:  # sized on the meta device: nothing allocated yet
            planned = _planned_parameters(auto, path, cand)
            integrity.fits_checkpoint(planned, hashed.numel, _memory_budget(dev), cand.name)
        model, info = auto.from_pretrained(
            path,
            use_safetensors=use_safetensors,
            trust_remote_code=cand.trust_remote_code,
            dtype=torch.float32,
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # reported in the loading info, then refused below
        )
        integrity.unchanged(hashed)
        integrity.built_class(model, architecture, family.architectures)
        parameters_loaded = integrity.complete(model, info, hashed.numel)
        integrity.expected_size(parameters_loaded, cand.params_m, cand.name)
        model = model.to(dev).eval()
        tokenizer, processor = check.load_preprocessing(path)
    except CheckFailure:
        raise
    except Exception as exc:
        raise failures.load_failure(exc, cand.name) from None
    revision, basis = _provenance(located, path, hashed, verified_by)
    return Bundle(
        model=model,
        tokenizer=tokenizer,
        processor=processor,
        name=cand.name,
        source=located.source,
        revision=revision,
        weights_sha256=hashed.digest,
        architecture=architecture,
        path=path,
        weights={
            "files": dict(sorted(hashed.files.items())),
            "digest": hashed.digest,
            "claims": claims,
            "verified_by": verified_by,
        },
        revision_basis=basis,
        hashed=hashed,
        extra={
            "hash_s": round(hashed.seconds, 4),
            "hash_cached": hashed.cached,
            "parameters_loaded": parameters_loaded,
            **({"conversion": located.conversion} if located.conversion else {}),
        },
    )


def _memory_budget(dev: torch.device) -> int:
    """What a load may use: the device's free memory, or less under the job's RLIMIT_AS."""
    free = devices.free_bytes(dev)
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if dev.type == "cpu" and soft != resource.RLIM_INFINITY:
        free = min(free, max(0, soft - psutil.Process().memory_info().vms))
    return free


def _planned_parameters(auto: Any, path: Path, cand: Candidate) -> int:
    """Parameters of the model config.json describes, built on the meta device (no memory)."""
    config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=cand.trust_remote_code)
    with torch.device("meta"):
        if hasattr(auto, "from_config"):
            model = auto.from_config(config, trust_remote_code=cand.trust_remote_code)
        else:  # a model class itself (an ad hoc job's check loads exactly the config's architecture)
            model = auto(config)
    return int(sum(p.numel() for p in model.parameters()))


def _read_config(path: Path, cand: Candidate) -> dict[str, Any]:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckFailure(ErrorKind.LOAD_ERROR, f"{cand.name}: unreadable config.json ({exc})") from None
    if not isinstance(config, dict):
        raise CheckFailure(ErrorKind.LOAD_ERROR, f"{cand.name}: config.json is not an object")
    return config


def _provenance(
    located: Located, path: Path, hashed: integrity.Hashed, verified_by: list[str]
) -> tuple[str | None, str]:
    """The revision, and how it is known: never more than the evidence supports."""
    if located.source == "hub":
        return located.revision, "hub" if located.hub_sha and located.revision == located.hub_sha else "claimed"
    if located.source == "cache":
        return located.revision, integrity.cache_ref_basis(path)
    if located.conversion is not None:  # converted from a GGUF file: as strong as that file's check
        verified = located.conversion.get("gguf_verified_by") == "package_record"
        return located.revision, "package_record" if verified else "claimed"
    if located.revision is not None:  # a package name==version
        recorded = located.record or {}
        whole = all(f in recorded for f in [*hashed.files, *hashed.others])
        return located.revision, "package_record" if whole and "package_record" in verified_by else "claimed"
    return f"sha256:{hashed.digest}", "content_digest"
