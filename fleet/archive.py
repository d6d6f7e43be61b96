"""The archive of runs Redis no longer keeps: one file per run, RUN_ID.jsonl.gz, compressed JSON
lines. The first line is the run's header ({"archive": 1, "meta": ..., "counts": ..., "total":
...}), then one result per line, sorted by job id. Written whole or not at all (a temp file in the
same folder, then a rename); a run is deleted from Redis only once its file is written
(fleet.store.results.ResultStore.prune). Reading never needs Redis (`orchestrator history`).
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from fleet.errors import RunNotFound, StoreCorrupt

SUFFIX = ".jsonl.gz"
VERSION = 1


def path_of(folder: Path, run_id: str) -> Path:
    return folder / f"{run_id}{SUFFIX}"


def write_run(folder: Path, meta: Mapping[str, Any], results: Sequence[Mapping[str, Any]], total: int) -> Path:
    """The run's file, atomically (OSError when it cannot be written: nothing is left behind)."""
    folder.mkdir(parents=True, exist_ok=True)
    header = {
        "archive": VERSION,
        "meta": meta,
        "total": total,
        "counts": dict(Counter(str(r.get("status")) for r in results)),
    }
    path = path_of(folder, str(meta["run_id"]))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as fh:
            fh.write((json.dumps(header, separators=(",", ":")) + "\n").encode())
            for r in sorted(results, key=lambda r: str(r.get("job_id"))):
                fh.write((json.dumps(r, separators=(",", ":"), default=str) + "\n").encode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    try:
        with gzip.open(path, "rb") as fh:
            for n, line in enumerate(fh, 1):
                try:
                    value = json.loads(line)
                except ValueError:
                    raise StoreCorrupt(f"archive {path}: line {n} is not JSON") from None
                if not isinstance(value, dict):
                    raise StoreCorrupt(f"archive {path}: line {n} is not a JSON object")
                yield value
    except (OSError, EOFError, zlib.error) as exc:
        raise StoreCorrupt(f"archive {path} cannot be read: {exc}") from None


def header(path: Path) -> dict[str, Any]:
    """The first line of a run's file (reading nothing more)."""
    for value in _lines(path):
        if value.get("archive") != VERSION or not isinstance(value.get("meta"), dict):
            raise StoreCorrupt(f"archive {path}: the first line is not an archive header")
        return value
    raise StoreCorrupt(f"archive {path} is empty")


def runs(folder: Path) -> list[dict[str, Any]]:
    """The header of every archived run, newest first (by start time)."""
    if not folder.is_dir():
        return []
    found = [header(p) for p in folder.glob(f"*{SUFFIX}") if not p.name.startswith(".")]
    return sorted(found, key=lambda h: (-float(h["meta"].get("started_at") or 0), str(h["meta"].get("run_id"))))


def results(folder: Path, run_id: str) -> Iterator[dict[str, Any]]:
    """The results of one archived run, in job id order."""
    path = path_of(folder, run_id)
    if "/" in run_id or run_id.startswith(".") or not path.is_file():
        raise RunNotFound(f"no archived run {run_id!r} in {folder}")
    lines = _lines(path)
    first = next(lines, None)
    if first is None or first.get("archive") != VERSION:
        raise StoreCorrupt(f"archive {path}: the first line is not an archive header")
    yield from lines
