"""Connection and run settings, resolved once from options and the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_url(cli_value: str | None = None) -> str:
    return cli_value or os.environ.get("FLEET_REDIS_URL") or DEFAULT_REDIS_URL


def redact_url(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def state_dir() -> Path:
    """Where the embedded run keeps its Redis data and reports."""
    base = os.environ.get("FLEET_HOME")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "model-fleet"


@dataclass(frozen=True)
class RunSettings:
    """Knobs every job of a run carries to its worker."""

    max_attempts: int = 3  # deliveries before a job that keeps killing its worker ends FAILED
    deadline_s: float = 3600.0  # after this a job with no result is LOST (or SKIPPED: no worker)
    repeats: int | None = None  # overrides the family's steady-state repeat count
    time_limit_s: float | None = None  # overrides the family's time limit
