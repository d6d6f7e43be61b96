"""The one Redis connection the store's parts share, and the one place where redis-py's errors
become ours (RedisUnreachable, RedisOutOfMemory): the Translating client."""

from __future__ import annotations

import types
from typing import Any

import redis

from fleet.errors import RedisOutOfMemory, RedisUnreachable
from fleet.retrying import says_out_of_memory
from fleet.settings import redact_url


class Translating:
    """A redis-py client (or pipeline) whose errors come out as RedisUnreachable."""

    def __init__(self, target: Any, url: str) -> None:
        self._target = target
        self._url = url

    def _translate(self, exc: redis.RedisError) -> RedisUnreachable:
        where = redact_url(self._url)
        if isinstance(exc, redis.AuthenticationError) or "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            return RedisUnreachable(f"Redis at {where} refused the credentials: {exc}")
        if isinstance(exc, redis.exceptions.InvalidResponse):  # an HTTP or other non-Redis server
            return RedisUnreachable(f"{where} does not answer as a Redis server: {exc}")
        if "DB index is out of range" in str(exc):
            return RedisUnreachable(f"Redis at {where} has no such database: {exc}")
        return RedisUnreachable(f"cannot reach Redis at {where}: {exc}")

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                value = attr(*args, **kwargs)
                if isinstance(value, types.GeneratorType):
                    value = list(value)  # scan_iter: errors surface while iterating
            except (
                redis.ConnectionError,
                redis.TimeoutError,
                redis.AuthenticationError,
                redis.exceptions.InvalidResponse,
            ) as exc:
                raise self._translate(exc) from None
            except redis.ResponseError as exc:
                if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc) or "DB index is out of range" in str(exc):
                    raise self._translate(exc) from None
                if isinstance(exc, redis.exceptions.OutOfMemoryError) or says_out_of_memory(exc):
                    raise RedisOutOfMemory(f"Redis is out of memory at {redact_url(self._url)}: {exc}") from None
                raise
            if isinstance(value, redis.client.Pipeline):
                return Translating(value, self._url)
            return value

        return call


def connect(url: str, redis_ca: str | None = None) -> Any:
    """A translating client for url (str replies). Typed Any: redis-py's stubs do not follow
    decode_responses=True, and every reply here is str."""
    tls: dict[str, Any] = {}
    if url.startswith("rediss://") and redis_ca:
        tls["ssl_ca_certs"] = redis_ca
    try:
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=3,
            socket_timeout=10,
            health_check_interval=15,
            **tls,
        )
    except ValueError as exc:
        raise RedisUnreachable(f"bad Redis URL {redact_url(url)}: {exc}") from None
    return Translating(client, url)
