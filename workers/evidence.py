"""What a load proves, as typed records handed from the resolver to the job's later stages:
the files read and their digests, what their source claimed, how the revision is known, and
how long each part took (hashing and a GGUF conversion apart from the load itself)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workers.integrity import Hashed


@dataclass(frozen=True)
class WeightsEvidence:
    """The weight files read (name -> sha256), their combined digest, the source's claims and
    the sources whose every claim matched the bytes."""

    files: dict[str, str]
    digest: str
    claims: list[dict[str, str]] = field(default_factory=list)
    verified_by: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """As the result's "weights" field."""
        return {
            "files": dict(sorted(self.files.items())),
            "digest": self.digest,
            "claims": self.claims,
            "verified_by": self.verified_by,
        }


@dataclass(frozen=True)
class LoadEvidence:
    """A candidate's load, as evidence. A synthetic model has no weights evidence: only its
    build time (load_s)."""

    load_s: float  # locating, validating and loading, measured without hashing and conversion
    revision_basis: str | None = None  # how the revision is known (workers/resolver.py: _provenance)
    weights: WeightsEvidence | None = None
    hashed: Hashed | None = None  # every file read, to check they stay unchanged after the inferences
    hash_s: float = 0.0
    hash_cached: bool | None = None
    parameters_loaded: int | None = None  # parameters taken from the checkpoint (integrity.complete)
    conversion: dict[str, Any] | None = None  # a GGUF candidate: what was converted, and how
    endpoint: str | None = None  # the Hub endpoint that answered (credentials stripped), for a download

    @property
    def weights_sha256(self) -> str | None:
        return self.weights.digest if self.weights is not None else None

    @property
    def convert_s(self) -> float:
        return float(self.conversion["seconds"]) if self.conversion else 0.0
