"""Settings: every environment variable model-fleet reads, read in one place.

`Settings.from_env()` is called once at each entry point (the `orchestrator` command,
`fleet-worker`, the worker process, the beat process) and the object is passed down. Nothing
reads the environment at import time. Values are checked here: a bad one is a BadInput
naming the variable.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from fleet.errors import BadInput
from fleet.timing import MAX_DEADLINE_S

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


# Query options that carry a credential: redis-py reads every query option of a URL as a
# keyword of the connection, so `redis://host/0?password=SECRET` authenticates like the userinfo.
_SECRET_QUERY_WORDS = ("pass", "secret", "token", "auth", "key", "credential")


def _secret_option(name: str) -> bool:
    return any(word in name.lower() for word in _SECRET_QUERY_WORDS)


def redact_url(url: str) -> str:
    """The URL with every credential replaced, for messages and logs: the userinfo's password
    and the value of any query option that names a credential (password=, ...?token=)."""
    try:
        parts = urlsplit(url)
        password = parts.password
        port = parts.port  # ValueError for a port that is not a number 0-65535
    except ValueError:
        return "<unparsable url>"
    options = parse_qsl(parts.query, keep_blank_values=True)
    secret_query = any(_secret_option(k) for k, _ in options)
    if password is None and not secret_query:
        return url
    if password is not None:
        host = parts.hostname or ""
        if port:
            host = f"{host}:{port}"
        url = urlunsplit((parts.scheme, f"{parts.username or ''}:***@{host}", parts.path, "", ""))
    else:
        url = url.split("?", 1)[0]
    query = "&".join(f"{k}={'***' if _secret_option(k) else v}" for k, v in options)
    return url + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")


REDIS_SCHEMES = ("redis", "rediss", "unix")
# Query options of a Redis URL that redis-py and kombu read as numbers: (whole number?, minimum,
# maximum). Larger values overflow the socket layer's time_t or the server's database index.
MAX_REDIS_DB = 2**31 - 1
MAX_SOCKET_TIMEOUT_S = 86400.0
MAX_KEEP_RUNS = 1_000_000
_NUMERIC_URL_OPTIONS: dict[str, tuple[bool, float, float]] = {
    "socket_timeout": (False, 0.0, MAX_SOCKET_TIMEOUT_S),
    "socket_connect_timeout": (False, 0.0, MAX_SOCKET_TIMEOUT_S),
    "timeout": (False, 0.0, MAX_SOCKET_TIMEOUT_S),
    "health_check_interval": (True, 0, MAX_SOCKET_TIMEOUT_S),
    "max_connections": (True, 1, 2**31 - 1),
    "socket_read_size": (True, 1, 2**31 - 1),
    "db": (True, 0, MAX_REDIS_DB),
}


def _url_number(text: str, whole: bool, low: float, high: float) -> bool:
    """Whether text is a number redis-py parses (int() or float()) within [low, high]."""
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        return False
    return math.isfinite(value) and low <= value <= high


@functools.cache
def connection_options() -> frozenset[str]:
    """The query options a Redis URL may carry: redis-py hands every one to its connection class
    as a keyword (redis.connection.parse_url), so a name none of them takes is a TypeError at the
    first command, not a usable URL."""
    import inspect

    import redis.connection as rc

    names: set[str] = set(getattr(rc, "URL_QUERY_ARGUMENT_PARSERS", {}))
    for cls in (
        rc.AbstractConnection,
        rc.Connection,
        rc.SSLConnection,
        rc.UnixDomainSocketConnection,
        rc.ConnectionPool,
    ):
        names |= {p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")}
    return frozenset(names)


def check_redis_url(url: str, where: str = "--redis-url") -> str:
    """The URL when redis-py and kombu can use it; otherwise BadInput naming what is wrong."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError for a port out of range or not a number
    except ValueError as exc:
        raise BadInput(f"{where}: {shown} is not a usable Redis URL ({exc})") from None
    if parts.scheme not in REDIS_SCHEMES:
        raise BadInput(f"{where}: {shown} is not a Redis URL (expected redis://, rediss:// or unix://)")
    if parts.scheme != "unix":
        if not parts.hostname:
            raise BadInput(f"{where}: {shown} names no host (expected redis://HOST[:PORT][/DB])")
        if port == 0:
            raise BadInput(f"{where}: {shown}: port must be 1-65535")
        db = parts.path.lstrip("/")
        if db and not (db.isascii() and db.isdigit() and int(db) <= MAX_REDIS_DB):
            raise BadInput(f"{where}: {shown}: the database must be a number (/0 ... /15), got /{db}")
    elif not parts.path:
        raise BadInput(f"{where}: {shown} names no socket path (expected unix:///path/to/redis.sock)")
    known = connection_options()
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in known:
            raise BadInput(
                f"{where}: {shown}: unknown option {key[:60]!r} (redis-py passes every query option to its "
                "connection, which takes none by that name; names are case-sensitive)"
            )
        if key in _NUMERIC_URL_OPTIONS:
            whole, low, high = _NUMERIC_URL_OPTIONS[key]
            if not _url_number(value, whole, low, high):
                kind = "a whole number" if whole else "a number"
                span = f"{low:.0f} to {high:.0f}" if whole else f"{low:g} to {high:g}"
                raise BadInput(f"{where}: {shown}: {key} must be {kind} from {span}, got {value!r}")
    return url


def _paths(env: Mapping[str, str], name: str) -> tuple[Path, ...]:
    return tuple(Path(x) for x in env.get(name, "").split(os.pathsep) if x.strip())


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise BadInput(f"${name} must be 1 or 0, got {env[name]!r}")


def _number(
    env: Mapping[str, str], name: str, default: float, minimum: float = 0.0, maximum: float = math.inf
) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadInput(f"${name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value < minimum:
        raise BadInput(f"${name} must be a finite number >= {minimum:g}, got {raw!r}")
    if value > maximum:
        raise BadInput(f"${name} must be at most {maximum:g}, got {raw!r}")
    return value


def home_folder(env: Mapping[str, str]) -> Path:
    """$FLEET_HOME, else $XDG_STATE_HOME/model-fleet (~/.local/state/model-fleet)."""
    if env.get("FLEET_HOME"):
        return Path(env["FLEET_HOME"])
    return Path(env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")) / "model-fleet"


def _within(path: Path, folder: Path) -> bool:
    """Whether path lies inside folder, by name (both made absolute, links not followed)."""
    p, f = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return p == f or f in p.parents


def _names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in env.get(name, "").split(",") if x.strip())


@dataclass(frozen=True)
class Settings:
    """What the environment configures. Command-line options override fields with replace()."""

    redis_url: str = DEFAULT_REDIS_URL  # FLEET_REDIS_URL
    redis_ca: str | None = None  # FLEET_REDIS_CA: CA bundle for rediss:// with a private CA
    home: Path = field(default_factory=lambda: Path.home() / ".local" / "state" / "model-fleet")  # FLEET_HOME
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "model-fleet")  # FLEET_CACHE_DIR
    # FLEET_HOST_KEY: the worker host's secret that signs its caches (workers.hostkey); never
    # inside cache_dir, since whoever can write the cache must not be able to read it.
    host_key: Path = field(default_factory=lambda: Path.home() / ".config" / "model-fleet" / "host.key")
    keep_runs: int = 200  # FLEET_KEEP_RUNS
    # FLEET_ARCHIVE_DIR: where runs older than keep_runs go (fleet.archive); default HOME/reports/archive
    archive_dir: Path | None = None
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
    # The worker's trust policy (fleet-worker --trust-remote-code, --allow-pickle, --allow-path DIR):
    # what a job message may ask of this worker. Off by default; see workers.trust.
    trust_remote_code: bool = False  # FLEET_TRUST_REMOTE_CODE=1
    allow_pickle: bool = False  # FLEET_ALLOW_PICKLE=1
    allow_paths: tuple[Path, ...] = ()  # FLEET_ALLOW_PATHS, os.pathsep-separated directories
    # Hub endpoints other than the official one whose answers this worker takes as the Hub's own
    # (fleet-worker --trust-endpoint URL): any other HF_ENDPOINT is a mirror (workers/identity.py).
    trusted_endpoints: tuple[str, ...] = ()  # FLEET_TRUSTED_ENDPOINTS, comma-separated URLs
    lock: Path | None = None  # FLEET_LOCK: a model lock used on top of the shipped fleet/models.lock

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = home_folder(env)
        if env.get("FLEET_CACHE_DIR"):
            cache = Path(env["FLEET_CACHE_DIR"])
        else:
            cache = Path(env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")) / "model-fleet"
        if env.get("FLEET_HOST_KEY"):
            host_key = Path(env["FLEET_HOST_KEY"]).expanduser()
            if _within(host_key, cache):
                raise BadInput(
                    f"$FLEET_HOST_KEY ({host_key}) lies inside the cache folder {cache}: whoever can write the "
                    "cache could read or replace it; keep it elsewhere"
                )
        else:
            config = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
            host_key = Path(config) / "model-fleet" / "host.key"
        growth = env.get("FLEET_MAX_RSS_GROWTH_MB")
        return cls(
            redis_url=check_redis_url(env.get("FLEET_REDIS_URL") or DEFAULT_REDIS_URL, "$FLEET_REDIS_URL"),
            redis_ca=env.get("FLEET_REDIS_CA") or None,
            home=home,
            cache_dir=cache,
            host_key=host_key,
            keep_runs=int(_number(env, "FLEET_KEEP_RUNS", 200, minimum=1, maximum=MAX_KEEP_RUNS)),
            archive_dir=Path(env.get("FLEET_ARCHIVE_DIR") or home / "reports" / "archive"),
            visibility_timeout_s=int(_number(env, "FLEET_VISIBILITY_TIMEOUT", 3900, minimum=1, maximum=MAX_DEADLINE_S)),
            hub_timeout_s=_number(env, "FLEET_HUB_TIMEOUT", 10.0, maximum=MAX_SOCKET_TIMEOUT_S),
            hub_probe_timeout_s=_number(env, "FLEET_HUB_PROBE_TIMEOUT", 0.8, maximum=MAX_SOCKET_TIMEOUT_S),
            max_rss_growth_mb=_number(env, "FLEET_MAX_RSS_GROWTH_MB", 0.0, minimum=-math.inf) if growth else None,
            pins=Path(env["FLEET_PINS"]) if env.get("FLEET_PINS") else None,
            plugins=_names(env, "FLEET_PLUGINS"),
            worker_name=env.get("FLEET_WORKER_NAME") or None,
            worker_queues=_names(env, "FLEET_WORKER_QUEUES") or ("cpu",),
            worker_devices=_names(env, "FLEET_WORKER_DEVICES") or ("cpu",),
            trust_remote_code=_flag(env, "FLEET_TRUST_REMOTE_CODE"),
            allow_pickle=_flag(env, "FLEET_ALLOW_PICKLE"),
            allow_paths=_paths(env, "FLEET_ALLOW_PATHS"),
            trusted_endpoints=_names(env, "FLEET_TRUSTED_ENDPOINTS"),
            lock=Path(env["FLEET_LOCK"]) if env.get("FLEET_LOCK") else None,
        )

    def with_redis_url(self, url: str | None) -> Settings:
        """These settings with a command line's --redis-url, when one was given."""
        return replace(self, redis_url=check_redis_url(url)) if url else self

    def policy_env(self) -> dict[str, str]:
        """The trust policy as the environment of a worker process (read back by from_env)."""
        return {
            "FLEET_TRUST_REMOTE_CODE": "1" if self.trust_remote_code else "0",
            "FLEET_ALLOW_PICKLE": "1" if self.allow_pickle else "0",
            "FLEET_ALLOW_PATHS": os.pathsep.join(str(p) for p in self.allow_paths),
            "FLEET_TRUSTED_ENDPOINTS": ",".join(self.trusted_endpoints),
        }


@dataclass(frozen=True)
class RunSettings:
    """Knobs every job of a run carries to its worker."""

    max_attempts: int = 3  # deliveries before a job that keeps killing its worker ends FAILED
    deadline_s: float | None = None  # after this a job with no result is LOST; None: fleet.timing.default_deadline
    repeats: int | None = None  # overrides the family's steady-state repeat count
    time_limit_s: float | None = None  # overrides the family's time limit
    reruns: int = 0  # a FAILED job runs again up to this many times (fresh process); mixed outcomes: FLAKY
    variants: str | None = None  # --variants as given (fleet/variants.py); `default` expands per family
