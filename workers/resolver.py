"""The fallback resolver: candidates in order of size, each validated before it is loaded,
every pass-over recorded as data, and a synthetic model as the last resort.

Integrity failures (fleet.errors.IntegrityFailure: weights_corrupt, weights_incomplete, a
substituted class, a size far from the catalog's) end the resolution: the job fails with that
kind instead of falling back, so a tampered or broken copy on this host is never hidden behind
another candidate or the synthetic model."""

from __future__ import annotations

import json
import os
import re
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import torch
import transformers

from fleet import witness
from fleet.catalog import Candidate, Family
from fleet.errors import CheckFailure, ErrorKind, IntegrityFailure
from fleet.protocol import Attempt
from fleet.settings import Settings
from workers import devices, failures, gguf, hub, integrity, pkgpath, trust
from workers.checks.base import Bundle, Check
from workers.evidence import LoadEvidence, WeightsEvidence
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
    "sentencepiece.bpe.model",
    "source.spm",
    "target.spm",
    "chat_template.jinja",
    "chat_template.json",  # transformers' LEGACY_PROCESSOR_CHAT_TEMPLATE_FILE
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "video_preprocessor_config.json",
    "audio_tokenizer_config.json",
    # every other name a tokenizer class of transformers reads its vocabulary from
    # (VOCAB_FILES_NAMES): a file read is evidence, whichever tokenizer reads it
    "bpe.codes",
    "byte_maps.json",
    "dict.txt",
    "emoji.json",
    "entity_vocab.json",
    "normalizer.json",
    "prophetnet.tokenizer",
    "sentencepiece.model",
    "spm.model",
    "spm_char.model",
    "target_vocab.json",
    "vocab-src.json",
    "vocab-tgt.json",
    "word_pronunciation.json",
    "word_shape.json",
)
# Files a tokenizer of transformers picks from the folder by pattern, not by a fixed name: with
# no tokenizer.json, a Mistral vocabulary (tekken.json, tokenizer.model.v3, tiktoken.model: its
# `other_pattern`) or any SentencePiece model (*.model: find_sentencepiece_model_file); chat
# templates in additional_chat_templates/. Each one present is read-able, so each is hashed.
PATTERN_FILES = re.compile(r"^(tekken\.json|tiktoken\.model|tokenizer\.model\..*|[^/]*\.model|[^/]*\.jinja)$")
PATTERN_DIRS = ("additional_chat_templates",)
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
    hub_blobs: dict[str, str] = field(default_factory=dict)  # the Hub's git blob id of each non-LFS file
    record: dict[str, str] | None = None  # the package's RECORD sha256 per file (pkg: candidates)
    hub_sha: str | None = None  # the commit the Hub answered with
    endpoint: str | None = None  # the endpoint that answered (fleet.witness.label)
    witness: bool = False  # that endpoint is the official Hub or one this worker trusts (fleet.witness)
    conversion: dict[str, Any] | None = None  # a GGUF candidate: what was converted, and how


@dataclass
class Trail:
    """What the resolution tried, recorded as it happens: a job that an integrity failure ends
    still reports every attempt, and why the Hub counted as offline."""

    attempts: list[Attempt] = field(default_factory=list)
    offline: str | None = None


@dataclass
class Resolution:
    """The model to check, and what its load proves."""

    bundle: Bundle
    evidence: LoadEvidence
    trail: Trail

    @property
    def attempts(self) -> list[Attempt]:
        return self.trail.attempts

    @property
    def offline(self) -> str | None:
        return self.trail.offline


class Stopwatch:
    """Seconds accumulated over the spans timed with it."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextmanager
    def timing(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - t0


def resolve(
    family: Family, check: Check, dev: torch.device, settings: Settings | None = None, trail: Trail | None = None
) -> Resolution:
    """Try every candidate, then the synthetic model; every attempt goes into `trail` as it ends.
    A candidate's failure passes to the next one. Raises only what ends the job: an
    IntegrityFailure (unchanged, its candidate named), harness_unsupported from the synthetic
    builder, or no_candidate when nothing could be used."""
    settings = settings or Settings.from_env()
    trail = trail if trail is not None else Trail()
    if any(c.id for c in family.candidates):
        trail.offline = hub.offline_reason(settings.hub_probe_timeout_s)
    attempts = trail.attempts
    for cand in family.candidates:
        t0 = time.perf_counter()
        try:
            bundle, evidence = _try_candidate(cand, family, check, dev, trail.offline, settings)
        except IntegrityFailure as exc:
            exc.candidate = cand.name
            attempts.append(_attempt(cand.name, "failed", exc, t0))
            raise
        except CheckFailure as exc:
            attempts.append(_attempt(cand.name, "skipped", exc, t0))
            continue
        except Exception as exc:  # a bug or an odd file system: this attempt's error, not the job's
            err = CheckFailure(ErrorKind.RESOLVE_ERROR, f"{cand.name}: {type(exc).__name__}: {str(exc)[:300]}")
            attempts.append(_attempt(cand.name, "skipped", err, t0))
            continue
        attempts.append(_attempt(cand.name, "loaded", None, t0))
        return Resolution(bundle, evidence, trail)
    t0 = time.perf_counter()
    try:
        bundle = synthetic.build(family, check, dev)
    except CheckFailure as exc:
        attempts.append(_attempt(f"synthetic:{family.synthetic}", "skipped", exc, t0))
        # the job says so, never "no candidate": our gap, or a class that cannot be built at all
        if exc.kind in (ErrorKind.HARNESS_UNSUPPORTED, ErrorKind.LOAD_ERROR):
            raise
        raise _no_candidate(attempts) from None
    except Exception as exc:
        err = failures.load_failure(exc, f"synthetic:{family.synthetic}")
        attempts.append(_attempt(f"synthetic:{family.synthetic}", "failed", err, t0))
        raise _no_candidate(attempts) from None
    build_s = time.perf_counter() - t0
    attempts.append(_attempt(bundle.name, "loaded", None, t0, detail=bundle.built_from))
    return Resolution(bundle, LoadEvidence(load_s=round(build_s, 4)), trail)


def _no_candidate(attempts: list[Attempt]) -> CheckFailure:
    kinds = ", ".join(f"{a['candidate']}: {a['error_kind']}" for a in attempts)
    return CheckFailure(ErrorKind.NO_CANDIDATE, f"no candidate could be used ({kinds})")


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
) -> tuple[Bundle, LoadEvidence]:
    clock = Stopwatch()  # load_s: everything but hashing and a GGUF conversion, which are timed apart
    with clock.timing():
        trust.require_allowed(cand, settings)  # before anything is read, downloaded or imported
        located = locate(cand, offline, settings.hub_timeout_s)
        if located.source == "hub":
            located.endpoint = witness.label(hub.endpoint())
            located.witness = witness.is_witness(hub.endpoint(), settings.trusted_endpoints)
    if cand.gguf_file:
        located = convert_gguf(located, cand)
    with clock.timing():
        architecture, config = validate(located, cand, family, dev)
    return load(located, cand, family, check, dev, architecture, config, clock, settings.hub_timeout_s)


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
    return Located(
        config_path.parent, "hub", info.sha, weights, info.lfs_sha256, hub_blobs=info.blob_sha1, hub_sha=info.sha
    )


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
    except IntegrityFailure:  # the GGUF file changed under the conversion: a fact about the bytes, it ends the job
        raise
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
        # No claim for the converted bytes: their digest is hashed by load() like any local
        # folder's; a cached folder is reused only when its provenance.json carries this host's
        # signature (workers.hostkey), never on the word of whoever can write the cache.
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


def validate(located: Located, cand: Candidate, family: Family, dev: torch.device) -> tuple[str, dict[str, Any]]:
    """Config, architecture, weight format and size, before any weights are read. Returns the
    architecture and the config, parsed here once for the whole candidate."""
    config_file = located.path / "config.json"
    if not config_file.is_file():
        raise CheckFailure(ErrorKind.NO_CONFIG, f"{cand.name}: no config.json")
    try:
        config: dict[str, Any] = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckFailure(ErrorKind.LOAD_ERROR, f"{cand.name}: unreadable config.json ({exc})") from None
    # valid JSON that is not an object fails on the next line: a resolve_error of the attempt
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
    return str(arch), config


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
    config: dict[str, Any],
    clock: Stopwatch,
    hub_timeout_s: float = 10.0,
) -> tuple[Bundle, LoadEvidence]:
    """Hash exactly the files transformers will read, check them against what their source
    claims, load, then check that the same files were read, completely, into the declared class.
    `config` is the one validate() read; `clock` times everything here but the hashing."""
    with clock.timing():
        path = located.path
        if located.source == "hub":
            assert cand.id is not None
            path = hub.download(cand.id, cand.revision, cand.allow_pickle, hub_timeout_s)
            located.revision = path.name  # the snapshot folder is named by the commit it holds
            if path != located.path:  # the ref moved between the two requests: this snapshot's own config
                config = _read_config(path, cand)
        use_safetensors = True if any(f.endswith(SAFE_SUFFIX) for f in located.files) else None
        weights, index = integrity.weight_files(path, config, use_safetensors)
        # The tokenizer and processor files decide what the checks feed the model: their bytes are
        # evidence too, hashed and held to the source's claims like the weights.
        preprocessing = preprocessing_files(path)
    hashed = integrity.hash_files(path, weights, ["config.json", *([index] if index else []), *preprocessing])
    with clock.timing():
        claims = integrity.claims(hashed, located.lfs_sha256, located.record, located.hub_blobs)
        verified_by = integrity.verify(hashed, claims)
        model, tokenizer, processor, parameters_loaded = _from_pretrained(
            path, use_safetensors, hashed, cand, family, check, dev, architecture
        )
        revision, basis = _provenance(located, path, hashed, verified_by, claims)
    bundle = Bundle(
        model=model,
        tokenizer=tokenizer,
        processor=processor,
        name=cand.name,
        source=located.source,
        revision=revision,
        architecture=architecture,
        path=path,
    )
    evidence = LoadEvidence(
        load_s=round(clock.seconds, 4),
        revision_basis=basis,
        weights=WeightsEvidence(dict(sorted(hashed.files.items())), hashed.digest, claims, verified_by),
        hashed=hashed,
        hash_s=round(hashed.seconds, 4),
        hash_cached=hashed.cached,
        parameters_loaded=parameters_loaded,
        conversion=located.conversion,
        endpoint=located.endpoint,
    )
    return bundle, evidence


def preprocessing_files(path: Path) -> list[str]:
    """Every tokenizer or processor file present that transformers may read: the fixed names
    (PREPROCESSING_FILES) and those it picks by pattern (PATTERN_FILES, in the folder and in
    PATTERN_DIRS). A file read is evidence: none is read unhashed."""
    found = [f for f in PREPROCESSING_FILES if (path / f).is_file()]
    for folder in ("", *PATTERN_DIRS):
        try:
            names = sorted(os.listdir(path / folder)) if folder == "" or (path / folder).is_dir() else []
        except OSError:
            names = []
        for name in names:
            rel = f"{folder}/{name}" if folder else name
            if rel not in found and PATTERN_FILES.match(name) and (path / rel).is_file():
                found.append(rel)
    return found


def _from_pretrained(
    path: Path,
    use_safetensors: bool | None,
    hashed: integrity.Hashed,
    cand: Candidate,
    family: Family,
    check: Check,
    dev: torch.device,
    architecture: str,
) -> tuple[Any, Any, Any, int]:
    """(model on the device, tokenizer, processor, parameters loaded): the hashed files loaded,
    then held to the integrity checks (an IntegrityFailure raised where a fact is found)."""
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
    return model, tokenizer, processor, parameters_loaded


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
    located: Located, path: Path, hashed: integrity.Hashed, verified_by: list[str], claims: list[dict[str, str]]
) -> tuple[str | None, str]:
    """The revision, and how it is known: never more than the evidence supports."""
    if located.source == "hub":  # the official Hub (or a trusted endpoint) is a witness; any other, a mirror
        # Every file read must be one the Hub listed at this commit, its bytes matching the Hub's
        # LFS sha256 or git blob id (verify() checked each claim): a file in the local snapshot that
        # the Hub did not vouch for (an edited config or tokenizer, an extra weights file) is not the Hub's.
        vouched = {c["file"] for c in claims if c["by"] == "hub"}
        whole = all(f in vouched for f in [*hashed.files, *hashed.others])
        if not (located.hub_sha and located.revision == located.hub_sha and whole):
            return located.revision, "claimed"
        return located.revision, "hub" if located.witness else "mirror"
    if located.source == "cache":
        return located.revision, integrity.cache_ref_basis(path)
    if located.conversion is not None:  # converted from a GGUF file: as strong as that file's check
        if located.conversion.get("gguf_verified_by") == "package_record":
            return located.revision, "package_record"
        if located.revision is None:  # a GGUF file at a plain path: named by its own bytes
            return f"sha256:{located.conversion['gguf_sha256']}", "content_digest"
        return located.revision, "claimed"
    if located.revision is not None:  # a package name==version
        recorded = located.record or {}
        whole = all(f in recorded for f in [*hashed.files, *hashed.others])
        return located.revision, "package_record" if whole and "package_record" in verified_by else "claimed"
    return f"sha256:{hashed.digest}", "content_digest"
