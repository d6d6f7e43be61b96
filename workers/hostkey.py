"""The worker host's key: what lets a host cache save work without becoming evidence.

Whoever can write the cache folder ($FLEET_CACHE_DIR) could otherwise add a digest row beside
a tampered file, or a converted GGUF folder with a provenance.json of their own, and the result
would name bytes that were never loaded. Each digest row and each provenance.json is therefore
signed (HMAC-SHA256) with a secret that lives outside the cache folder (Settings.host_key:
$FLEET_HOST_KEY, else $XDG_CONFIG_HOME/model-fleet/host.key, else ~/.config/model-fleet/host.key),
created on first use with mode 0600. Anything unsigned or signed with another key is a miss:
the file is hashed again, the GGUF converted again.

No key (it cannot be read or created, lies inside the cache folder, is readable or writable by
others, or is not 64+ hex digits) means no cache is trusted: everything is hashed and
converted again, and the worker logs why once. It is never a failed job.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import uuid
from pathlib import Path
from typing import Any

from fleet.settings import Settings

log = logging.getLogger(__name__)

KEY_BYTES = 32
MAX_KEY_FILE = 4096
DIGEST_ROW = "model-fleet digest row v1"  # what a signature is for: one can never stand for the other
PROVENANCE = "model-fleet provenance v1"

_warned: set[str] = set()


class NoKey(Exception):
    """Why this host has no usable key (its message says so in one line)."""


def load(settings: Settings | None = None) -> bytes | None:
    """The host's key, created on first use; None (caches not trusted) when it cannot be had."""
    settings = settings or Settings.from_env()
    try:
        return read_or_create(settings.host_key, settings.cache_dir)
    except NoKey as exc:
        _warn_once(str(exc))
        return None


def read_or_create(path: Path, cache_dir: Path) -> bytes:
    """The key in `path`, created (0600, in a 0700 folder) when there is none. Raises NoKey."""
    if _inside(path, cache_dir):
        raise NoKey(f"host key {path} lies inside the cache folder {cache_dir}: host caches are not trusted")
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise NoKey(
            f"host key {path}: unreadable ({type(exc).__name__}: {exc.strerror or exc}); caches not trusted"
        ) from None
    try:
        _create(path)
        return _read(path)
    except OSError as exc:
        raise NoKey(
            f"host key {path}: cannot be created ({type(exc).__name__}: {exc.strerror or exc}); caches not trusted"
        ) from None


def _read(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NoKey(f"host key {path} is not a regular file; caches not trusted")
        if st.st_mode & 0o077:
            raise NoKey(
                f"host key {path} is open to other users (mode {stat.S_IMODE(st.st_mode):04o}); "
                "chmod 600 it; caches not trusted"
            )
        raw = os.read(fd, MAX_KEY_FILE)
    finally:
        os.close(fd)
    text = raw.decode("ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < KEY_BYTES:
        raise NoKey(f"host key {path} does not hold {2 * KEY_BYTES} or more hex digits; caches not trusted")
    return key


def _create(path: Path) -> None:
    """A new random key, written to a private temporary file and linked into place: two workers
    creating it at once both end up reading the one that was linked first, never half a file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        try:
            os.write(fd, (secrets.token_hex(KEY_BYTES) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another worker created it first: use theirs
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _inside(path: Path, folder: Path) -> bool:
    """Whether path lies inside folder, by name or once links are resolved."""
    for p, f in ((os.path.abspath(path), os.path.abspath(folder)), (os.path.realpath(path), os.path.realpath(folder))):
        if p == f or p.startswith(f.rstrip(os.sep) + os.sep):
            return True
    return False


def sign(key: bytes, purpose: str, payload: Any) -> str:
    """HMAC-SHA256 (hex) over the purpose and a canonical JSON form of the payload."""
    message = json.dumps([purpose, payload], sort_keys=True, separators=(",", ":"))
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def valid(key: bytes | None, purpose: str, payload: Any, signature: object) -> bool:
    """Whether signature is this host's over payload; never with no key."""
    if key is None or not isinstance(signature, str):
        return False
    return hmac.compare_digest(sign(key, purpose, payload), signature)


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)
