"""The one Redis connection the store's parts share, and the one place where redis-py's errors
become ours (RedisUnreachable, RedisOutOfMemory, StoreCorrupt): the Translating client.

Whoever can write to Redis can leave any type under a fleet key, and any bytes. A key of
another type (WRONGTYPE) becomes StoreCorrupt, naming the command and key: raised by a call, and
in place of that command's reply in a pipeline run with execute(raise_on_error=False), where the
store's readers turn it into a corrupt record (fleet.records). Bytes that are not UTF-8 never
raise: they are decoded with backslashreplace (the byte 0xff reads as the four characters `\\xff`),
so a record holding them is invalid JSON, hence a corrupt record, and an id holding them
prints as it is.
"""

from __future__ import annotations

import re
import types
from typing import Any

import redis

from fleet.errors import RedisOutOfMemory, RedisUnreachable, StoreCorrupt
from fleet.retrying import says_out_of_memory
from fleet.settings import redact_url

_WRONGTYPE = re.compile(r"(^|error: )WRONGTYPE ")  # a reply, or one command's in a pipeline's error


def wrong_type(exc: BaseException) -> bool:
    """Whether Redis refused a command because its key holds another type."""
    return isinstance(exc, redis.ResponseError) and bool(_WRONGTYPE.search(str(exc)))


_IN_PIPELINE = re.compile(r"Command # \d+ \((\S+) (\S+)")  # redis-py: "Command # 2 (GET key ...) of pipeline ..."


def corrupt(exc: redis.ResponseError, command: str, args: tuple[Any, ...]) -> StoreCorrupt:
    """StoreCorrupt for a WRONGTYPE reply to this command (its key named when known)."""
    in_pipeline = _IN_PIPELINE.match(str(exc))
    if in_pipeline:
        detail = f"{in_pipeline[1].upper()} {in_pipeline[2][:200]!r}: WRONGTYPE"
    elif command in ("execute", "transaction", "eval", "evalsha") or not args:
        detail = str(exc)[:300]
    else:
        detail = f"{command.upper()} {str(args[0])[:200]!r}: WRONGTYPE"
    return StoreCorrupt(
        f"a key in Redis holds another type than the fleet keeps there ({detail}): the store is corrupt; "
        "delete that key (redis-cli DEL) to go on"
    )


class Translating:
    """A redis-py client (or pipeline) whose errors come out as ours (see the module's docstring)."""

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
                raise self._response_error(exc, name, args) from None
            except UnicodeDecodeError as exc:  # only from a parser that ignores encoding_errors (connect)
                raise StoreCorrupt(f"Redis holds bytes that are not UTF-8 text ({name.upper()}): {exc}") from None
            if isinstance(value, redis.client.Pipeline):
                return Translating(value, self._url)
            if name == "execute" and isinstance(value, list):  # execute(raise_on_error=False)
                return [self._in_place(v) for v in value]
            return value

        return call

    def _response_error(self, exc: redis.ResponseError, name: str, args: tuple[Any, ...]) -> Exception:
        """Ours for an error reply we know (the reply itself for any other)."""
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc) or "DB index is out of range" in str(exc):
            return self._translate(exc)
        if isinstance(exc, redis.exceptions.OutOfMemoryError) or says_out_of_memory(exc):
            return RedisOutOfMemory(f"Redis is out of memory at {redact_url(self._url)}: {exc}")
        if wrong_type(exc):
            return corrupt(exc, name, args)
        return exc

    def _in_place(self, reply: Any) -> Any:
        """One reply of a pipeline run with raise_on_error=False: WRONGTYPE as a StoreCorrupt in
        place (the caller decides), any other error raised."""
        if not isinstance(reply, redis.ResponseError):
            return reply
        error = self._response_error(reply, "execute", ())
        if isinstance(error, StoreCorrupt):
            return error
        raise error


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
            encoding_errors="backslashreplace",  # bytes that are not UTF-8: never an error (see above)
            socket_connect_timeout=3,
            socket_timeout=10,
            health_check_interval=15,
            **tls,
        )
    except ValueError as exc:
        raise RedisUnreachable(f"bad Redis URL {redact_url(url)}: {exc}") from None
    return Translating(client, url)
