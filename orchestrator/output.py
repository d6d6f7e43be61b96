"""Writing files the user asked for (whole or not at all, regular files only), and strict JSON."""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fleet.errors import BadInput


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_target(path: Path, force: bool = False) -> None:
    """A path we may write a report to: missing, or a regular file. A symlink is replaced (not
    followed) only with force; directories, devices, FIFOs and sockets never."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(st.st_mode):
        if not force:
            raise BadInput(f"{path} is a symbolic link; use --force to replace the link with a file")
        return
    if stat.S_ISDIR(st.st_mode):
        raise BadInput(f"{path} is a directory; name a file")
    if not stat.S_ISREG(st.st_mode):
        raise BadInput(f"{path} is not a regular file (a device, FIFO or socket); name a file")


def writable_dir(path: Path, what: str, mode: int = 0o777) -> Path:
    """A directory a command will write into later, created and proven writable now (a file is
    made in it and removed): a long command (an embedded run, the beat) must not find out at its
    end, after the work is done, that its reports cannot be written. BadInput (one line, exit 2)
    when it is a file, cannot be created, or cannot be written."""
    path = Path(path)
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise BadInput(f"{what} {path} is not a directory") from None
    except OSError as exc:
        raise BadInput(f"cannot use {path} as {what}: {exc.strerror or exc}") from None
    return path


def write_atomic(path: Path, text: str, force: bool = False) -> None:
    """Write a whole file or nothing: a temp file in the same folder, then a rename. The file
    gets the mode a new file would get (0666 less the umask)."""
    write_atomic_set([(Path(path), text)], force)


def write_atomic_set(files: Sequence[tuple[Path, str]], force: bool = False) -> None:
    """Write several files as one: every temp file is written in full before the first is
    renamed into place, so a write that fails (a full disk, a quota) leaves none of them
    (the report of a run is its markdown, JSON and HTML together, never one without the
    others). BadInput names the file that could not be written."""
    for path, _ in files:
        check_target(Path(path), force)
    tmps: list[tuple[str, Path]] = []
    path = Path(files[0][0]) if files else Path()
    try:
        for path, text in ((Path(p), t) for p, t in files):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            tmps.append((tmp, path))
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(tmp, 0o666 & ~_umask())
        for tmp, path in tmps:
            os.replace(tmp, path)
    except OSError as exc:
        for tmp, _ in tmps:
            Path(tmp).unlink(missing_ok=True)
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        for tmp, _ in tmps:
            Path(tmp).unlink(missing_ok=True)
        raise


def finite(data: Any) -> Any:
    """data with every number JSON cannot carry (NaN, +-Infinity) as null: a report is strict JSON
    (RFC 8259), which JSON.parse and every other strict reader accept."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v) for v in data]
    return data


def dumps(data: Any, **kwargs: Any) -> str:
    """json.dumps, strict (allow_nan=False): a non-finite number is written as null. The common
    case, no such number, costs one encoding."""
    try:
        return json.dumps(data, allow_nan=False, default=str, **kwargs)
    except ValueError:
        return json.dumps(finite(data), allow_nan=False, default=str, **kwargs)
