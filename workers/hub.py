"""The one boundary to the Hugging Face Hub: metadata, downloads, the local cache, and the
translation of huggingface_hub / httpx errors into our error kinds.

Offline is decided once per process (HF_HUB_OFFLINE, or one quick TCP probe of the
endpoint, remembered for PROBE_TTL_S); offline lookups read the cache and never touch the
network, so a family with six uncached candidates resolves in milliseconds.
"""

from __future__ import annotations

import http.client
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import huggingface_hub
from huggingface_hub import HfApi, constants, errors, hf_hub_download, snapshot_download

from fleet.errors import CheckFailure, ErrorKind

PROBE_TTL_S = 60.0
# What a check needs from a repo: config, weights, tokenizer / processor files.
ALLOW_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*.txt",
    "*.model",
    "spiece.model",
    "merges.txt",
]
PICKLE_PATTERNS = ["*.bin", "*.pt", "*.pth"]
_probe_cache: dict[str, tuple[float, bool, str]] = {}


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def cache_dir() -> str:
    """The HF cache, read at call time (HF_HUB_CACHE, then HF_HOME/hub) so that each test
    and each worker can point at its own."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return str(constants.HF_HUB_CACHE)


def token() -> str | None:
    """The user's token, if any. Never written to results, logs or reports."""
    return os.environ.get("HF_TOKEN") or None


def offline_reason(probe_timeout_s: float = 0.8) -> str | None:
    """Why the Hub counts as unreachable, or None when it is reachable. Decided once per TTL
    by one HEAD request with a 0.8 s timeout (FLEET_HUB_PROBE_TIMEOUT): a host that accepts
    connections but never answers counts as unreachable too."""
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return "HF_HUB_OFFLINE is set"
    url = endpoint()
    cached = _probe_cache.get(url)
    if cached and time.monotonic() - cached[0] < PROBE_TTL_S:
        return None if cached[1] else cached[2]
    parts = urlsplit(url)
    host = parts.hostname or ""
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(host, parts.port, timeout=probe_timeout_s)
    try:
        # Any HTTP answer (even an error status) means the Hub can be reached.
        conn.request("HEAD", (parts.path.rstrip("/") or "") + "/api/models")
        conn.getresponse()
        ok, why = True, ""
    except (OSError, http.client.HTTPException) as exc:
        ok, why = False, f"{host} unreachable ({exc.__class__.__name__}: {exc})"
    finally:
        conn.close()
    _probe_cache[url] = (time.monotonic(), ok, why)
    return None if ok else why


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Translate Hub and transport errors into CheckFailure with our error kinds."""
    try:
        yield
    except CheckFailure:
        raise
    except errors.LocalEntryNotFoundError as exc:
        raise CheckFailure(ErrorKind.OFFLINE_NOT_CACHED, f"{what}: not in the local cache") from exc
    except errors.GatedRepoError as exc:
        raise CheckFailure(ErrorKind.GATED, f"{what}: gated repository (accept its terms and set HF_TOKEN)") from exc
    except errors.RepositoryNotFoundError as exc:
        status = _status(exc)
        if status == 401:
            raise CheckFailure(
                ErrorKind.AUTH, f"{what}: the Hub requires authentication (HTTP 401): private repo or bad token"
            ) from exc
        raise CheckFailure(ErrorKind.NOT_FOUND, f"{what}: repository not found (HTTP {status})") from exc
    except errors.RevisionNotFoundError as exc:
        raise CheckFailure(ErrorKind.NOT_FOUND, f"{what}: revision not found") from exc
    except errors.EntryNotFoundError as exc:
        raise CheckFailure(ErrorKind.NOT_FOUND, f"{what}: file not found in repository") from exc
    except errors.HfHubHTTPError as exc:
        status = _status(exc)
        if status in (401, 403):
            raise CheckFailure(ErrorKind.AUTH, f"{what}: the Hub refused access (HTTP {status})") from exc
        if status == 404:
            raise CheckFailure(ErrorKind.NOT_FOUND, f"{what}: not found (HTTP 404)") from exc
        raise CheckFailure(ErrorKind.HUB_UNAVAILABLE, f"{what}: the Hub answered HTTP {status}") from exc
    except TimeoutError as exc:
        raise CheckFailure(ErrorKind.HUB_TIMEOUT, f"{what}: no answer from the Hub in time") from exc
    except Exception as exc:  # httpx transport errors, OfflineModeIsEnabled, OSError
        name = type(exc).__name__
        if "Timeout" in name:
            raise CheckFailure(ErrorKind.HUB_TIMEOUT, f"{what}: no answer from the Hub in time ({name})") from exc
        if isinstance(exc, OSError) or "Connect" in name or "Network" in name or "Offline" in name:
            raise CheckFailure(ErrorKind.HUB_UNAVAILABLE, f"{what}: cannot reach the Hub ({name})") from exc
        raise


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


@dataclass
class RepoInfo:
    """What the Hub says about a repo, without downloading weights."""

    sha: str | None
    gated: bool
    files: dict[str, int] = field(default_factory=dict)  # filename -> size in bytes
    lfs_sha256: dict[str, str] = field(default_factory=dict)
    blob_sha1: dict[str, str] = field(default_factory=dict)  # git blob id of every other file (config, tokenizer)


def repo_info(repo_id: str, revision: str | None, timeout_s: float = 10.0) -> RepoInfo:
    with translated(repo_id):
        info: Any = HfApi(endpoint=endpoint()).model_info(
            repo_id, revision=revision, files_metadata=True, token=token(), timeout=timeout_s
        )
    files: dict[str, int] = {}
    lfs: dict[str, str] = {}
    blobs: dict[str, str] = {}
    for s in info.siblings or []:
        files[s.rfilename] = int(s.size or 0)
        if s.lfs is not None:
            sha = s.lfs.get("sha256") if isinstance(s.lfs, dict) else getattr(s.lfs, "sha256", None)
            if sha:
                lfs[s.rfilename] = sha
        elif isinstance(getattr(s, "blob_id", None), str):
            blobs[s.rfilename] = s.blob_id
    return RepoInfo(sha=info.sha, gated=bool(info.gated), files=files, lfs_sha256=lfs, blob_sha1=blobs)


def fetch_file(repo_id: str, filename: str, revision: str | None, timeout_s: float = 10.0) -> Path:
    with translated(f"{repo_id}/{filename}"):
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                token=token(),
                endpoint=endpoint(),
                etag_timeout=timeout_s,
                cache_dir=cache_dir(),
            )
        )


def download(repo_id: str, revision: str | None, allow_pickle: bool, timeout_s: float = 10.0) -> Path:
    patterns = ALLOW_PATTERNS + (PICKLE_PATTERNS if allow_pickle else [])
    with translated(repo_id):
        return Path(
            snapshot_download(
                repo_id,
                revision=revision,
                token=token(),
                endpoint=endpoint(),
                allow_patterns=patterns,
                etag_timeout=timeout_s,
                cache_dir=cache_dir(),
            )
        )


def cached_snapshot(repo_id: str, revision: str | None, allow_pickle: bool = False) -> Path:
    """The cached snapshot directory; no network call. Raises offline_not_cached. Completeness
    is judged on the files download() fetches (the patterns), not on README.md and the like."""
    patterns = ALLOW_PATTERNS + (PICKLE_PATTERNS if allow_pickle else [])
    with translated(repo_id):
        return Path(
            snapshot_download(
                repo_id, revision=revision, local_files_only=True, allow_patterns=patterns, cache_dir=cache_dir()
            )
        )


def cached_file(repo_id: str, filename: str) -> Path | None:
    found = huggingface_hub.try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir())
    return Path(found) if isinstance(found, str) else None
