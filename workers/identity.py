"""The weights' identity: who, other than whoever supplied the bytes, vouches that they are the
named model. A result is REAL only when all of these hold:

- its quality gate ran and held (quality record `passed is True`): a check with no gate, or
  whose gate could not be applied, proves the code path, not the weights;
- the identity is anchored: the official Hub (or an endpoint the worker was told to trust)
  answered with the commit the bytes were downloaded at and their LFS sha256 matched, or a
  model lock entry for this (name, revision), or for the candidate's declared alias, holds
  exactly these files (fleet/lock.py);
- where a pin exists, the pin matched (stages.gate_known_answer, strict: fleet/pins.py).

Weights that pass everything else but that no one outside their supplier vouches for are
UNVERIFIED, with what would anchor them. A cache folder, a blob's name, a package's RECORD, a
mirror's answers: each can be written by the same hand as the bytes, so none is an anchor.
The lock is strict both ways: the locked (name, revision) with other bytes is weights_corrupt,
the bytes of a locked model under another name are identity_mismatch (fleet/lock.judge).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import transformers

from fleet import lock
from fleet.catalog import Family
from fleet.errors import ErrorKind, IntegrityFailure
from fleet.protocol import Job, Status
from fleet.settings import Settings
from workers.evidence import LoadEvidence
from workers.measure import Measurement

LOCK_HINT = (
    "add a lock entry: `orchestrator lock RUN_ID --output FILE` after a run against the official Hub, "
    "then --lock FILE (or $FLEET_LOCK)"
)
HUB_HINT = "verify online once: a run against the official Hub (https://huggingface.co) anchors the download"


@dataclass(frozen=True)
class Identity:
    status: Status  # REAL or UNVERIFIED
    record: dict[str, Any]  # the result's "identity"


def read_files(evidence: LoadEvidence) -> dict[str, str]:
    """Every file the check read -> sha256; for weights converted from a GGUF file, that file
    (the converted folder is this host's own product, held to the lock's converted digest)."""
    if evidence.conversion:
        return {str(evidence.conversion["from"]): str(evidence.conversion["gguf_sha256"])}
    files = dict(evidence.weights.files) if evidence.weights is not None else {}
    if evidence.hashed is not None:
        files.update(evidence.hashed.others)
    return dict(sorted(files.items()))


def alias_of(family: Family, name: str) -> str | None:
    return next((c.alias_of for c in family.candidates if c.name == name), None)


def entries(job: Job, settings: Settings) -> list[dict[str, Any]]:
    """The lock this job is judged by: the worker's own (the shipped fleet/models.lock and the
    worker's $FLEET_LOCK), then the job's entries for keys the worker's does not hold. A job
    message can add entries, never drop or replace the worker's."""
    own = _worker_lock(str(settings.lock or ""))
    held = {lock.key(e) for e in own}
    return [*own, *(e for e in job.get("lock", []) if lock.key(e) not in held)]


@functools.lru_cache(maxsize=4)
def _worker_lock(path: str) -> list[dict[str, Any]]:
    return lock.load(path or None)


def judge(
    job: Job, family: Family, name: str, revision: str | None, evidence: LoadEvidence, settings: Settings
) -> dict[str, Any]:
    """The identity record of a candidate's load (before its output is judged): the files read,
    their digest, and what anchors them. Raises what fleet/lock.judge raises, and
    weights_corrupt for a conversion whose output differs from the lock's converted digest."""
    read = read_files(evidence)
    locked = entries(job, settings)
    verdict = lock.judge(locked, name, revision, read, alias_of(family, name))
    record: dict[str, Any] = {"files": read, "digest": lock.digest(read), "basis": evidence.revision_basis}
    if evidence.endpoint is not None:
        record["endpoint"] = evidence.endpoint
    if verdict is not None:
        record["anchored_by"] = "lock"
        record["lock"] = verdict
        if evidence.conversion:
            _converted_as_locked(_vouching(locked, name, revision, verdict, read), name, evidence.conversion)
    elif evidence.revision_basis == "hub":
        record["anchored_by"] = "hub"
    else:
        record["anchored_by"] = None
    return record


def decide(record: dict[str, Any], measurement: Measurement) -> Identity:
    """REAL when anchored and the quality gate held; else UNVERIFIED, saying why and what would anchor it."""
    quality = measurement.output.get("quality")
    why: list[str] = []
    hints: list[str] = []
    if not isinstance(quality, dict) or quality.get("passed") is not True:
        reason = (quality or {}).get("reason") if isinstance(quality, dict) else None
        why.append(f"no quality gate held for this check ({reason or 'the check has no gate'})")
    if record.get("anchored_by") is None:
        basis = record.get("basis")
        if basis == "mirror":
            why.append(f"downloaded from a mirror ({record.get('endpoint')}), which vouches only for its own copy")
        else:
            why.append(f"no lock entry and no official Hub answer vouches for these files (basis {basis})")
        hints += [LOCK_HINT, HUB_HINT]
    out = dict(record, unverified=why)
    if hints:
        out["to_anchor"] = hints
    return Identity(Status.UNVERIFIED if why else Status.REAL, out)


def _vouching(
    locked: list[dict[str, Any]], name: str, revision: str | None, verdict: dict[str, Any], read: dict[str, str]
) -> dict[str, Any] | None:
    """The lock entry that vouched (lock.judge's rule): the candidate's own (name, revision), else
    its declared alias's entry holding these bytes."""
    own = next((e for e in locked if e["model"] == name and e["revision"] == revision), None)
    if own is not None or verdict.get("alias") is None:
        return own
    loaded = lock.digest(read)
    return next((e for e in locked if e["model"] == verdict["alias"] and e["digest"] == loaded), None)


def _converted_as_locked(entry: dict[str, Any] | None, name: str, conversion: dict[str, Any]) -> None:
    """A GGUF candidate is held to the converted digest of the entry that vouched for its file,
    whichever name that entry has (its own, or the alias it is declared to be)."""
    want = (entry or {}).get("converted", {}).get(transformers.__version__)
    if want is not None and want != conversion.get("converted_sha256"):
        raise IntegrityFailure(
            ErrorKind.WEIGHTS_CORRUPT,
            f"{name}: the GGUF file converts to {want} with transformers {transformers.__version__} (lock), "
            f"the converted weights loaded are {conversion.get('converted_sha256')}",
            {"locked_converted": want, "loaded_converted": conversion.get("converted_sha256")},
        )
