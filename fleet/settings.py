"""Settings: every environment variable model-fleet reads, read in one place.

`Settings.from_env()` is called once at each entry point (the `orchestrator` command,
`fleet-worker`, the worker process, the beat process) and the object is passed down. Nothing
reads the environment at import time. Values are checked here: a bad one is a BadInput
naming the variable.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from fleet.errors import BadInput

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redact_url(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable url>"
    if password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def _number(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadInput(f"${name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value < minimum:
        raise BadInput(f"${name} must be a finite number >= {minimum:g}, got {raw!r}")
    return value


def _names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in env.get(name, "").split(",") if x.strip())


@dataclass(frozen=True)
class Settings:
    """What the environment configures. Command-line options override fields with replace()."""

    redis_url: str = DEFAULT_REDIS_URL  # FLEET_REDIS_URL
    redis_ca: str | None = None  # FLEET_REDIS_CA: CA bundle for rediss:// with a private CA
    home: Path = field(default_factory=lambda: Path.home() / ".local" / "state" / "model-fleet")  # FLEET_HOME
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "model-fleet")  # FLEET_CACHE_DIR
    keep_runs: int = 200  # FLEET_KEEP_RUNS
    visibility_timeout_s: int = 3900  # FLEET_VISIBILITY_TIMEOUT
    hub_timeout_s: float = 10.0  # FLEET_HUB_TIMEOUT
    hub_probe_timeout_s: float = 0.8  # FLEET_HUB_PROBE_TIMEOUT
    max_rss_growth_mb: float | None = None  # FLEET_MAX_RSS_GROWTH_MB
    pins: Path | None = None  # FLEET_PINS: known answers used on top of the shipped fleet/pins.toml
    plugins: tuple[str, ...] = ()  # FLEET_PLUGINS: worker modules that add checks (see fleet.names)
    # Set by fleet-worker for the Celery worker it starts (not meant to be set by hand):
    worker_name: str | None = None  # FLEET_WORKER_NAME
    worker_queues: tuple[str, ...] = ("cpu",)  # FLEET_WORKER_QUEUES
    worker_devices: tuple[str, ...] = ("cpu",)  # FLEET_WORKER_DEVICES

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        if env.get("FLEET_HOME"):
            home = Path(env["FLEET_HOME"])
        else:
            xdg = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
            home = Path(xdg) / "model-fleet"
        if env.get("FLEET_CACHE_DIR"):
            cache = Path(env["FLEET_CACHE_DIR"])
        else:
            cache = Path(env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")) / "model-fleet"
        growth = env.get("FLEET_MAX_RSS_GROWTH_MB")
        return cls(
            redis_url=env.get("FLEET_REDIS_URL") or DEFAULT_REDIS_URL,
            redis_ca=env.get("FLEET_REDIS_CA") or None,
            home=home,
            cache_dir=cache,
            keep_runs=int(_number(env, "FLEET_KEEP_RUNS", 200, minimum=1)),
            visibility_timeout_s=int(_number(env, "FLEET_VISIBILITY_TIMEOUT", 3900, minimum=1)),
            hub_timeout_s=_number(env, "FLEET_HUB_TIMEOUT", 10.0),
            hub_probe_timeout_s=_number(env, "FLEET_HUB_PROBE_TIMEOUT", 0.8),
            max_rss_growth_mb=_number(env, "FLEET_MAX_RSS_GROWTH_MB", 0.0, minimum=-math.inf) if growth else None,
            pins=Path(env["FLEET_PINS"]) if env.get("FLEET_PINS") else None,
            plugins=_names(env, "FLEET_PLUGINS"),
            worker_name=env.get("FLEET_WORKER_NAME") or None,
            worker_queues=_names(env, "FLEET_WORKER_QUEUES") or ("cpu",),
            worker_devices=_names(env, "FLEET_WORKER_DEVICES") or ("cpu",),
        )

    def with_redis_url(self, url: str | None) -> Settings:
        """These settings with a command line's --redis-url, when one was given."""
        return replace(self, redis_url=url) if url else self


@dataclass(frozen=True)
class RunSettings:
    """Knobs every job of a run carries to its worker."""

    max_attempts: int = 3  # deliveries before a job that keeps killing its worker ends FAILED
    deadline_s: float = 3600.0  # after this a job with no result is LOST (or SKIPPED: no worker)
    repeats: int | None = None  # overrides the family's steady-state repeat count
    time_limit_s: float | None = None  # overrides the family's time limit
    reruns: int = 0  # a FAILED job runs again up to this many times (fresh process); mixed outcomes: FLAKY
