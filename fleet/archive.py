"""The archive of runs Redis no longer keeps: one file per run, RUN_ID.jsonl.gz, compressed JSON
lines. The first line is the run's header ({"archive": 1, "meta": ..., "counts": ..., "total":
...}), then one result per line, sorted by job id. Written whole or not at all (a temp file in the
same folder, then a rename); a run is deleted from Redis only once its file is written
(fleet.store.results.ResultStore.prune). Reading never needs Redis (`orchestrator history`).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import stat
import tempfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from fleet import records
from fleet.catalog import file_name_problem
from fleet.errors import RunNotFound, StoreCorrupt
from fleet.protocol import Result

SUFFIX = ".jsonl.gz"
VERSION = 1
# the longest line read back (a result with its outputs and error text is kilobytes)
MAX_LINE = 64 * 1024 * 1024
logger = logging.getLogger("fleet.archive")


def run_id_problem(run_id: str) -> str | None:
    """What keeps this run id from naming a file in the archive (a directory, a leading dot), or None."""
    return file_name_problem("run id", f"{run_id}{SUFFIX}", SUFFIX)


def path_of(folder: Path, run_id: str) -> Path:
    """The run's file: always inside folder (StoreCorrupt for a run id that would leave it)."""
    problem = run_id_problem(run_id)
    if problem:
        raise StoreCorrupt(f"run {run_id[:80]!r} cannot be archived: {problem}")
    return folder / f"{run_id}{SUFFIX}"


def write_run(folder: Path, meta: Mapping[str, Any], results: Sequence[Mapping[str, Any]], total: int) -> Path:
    """The run's file, atomically (OSError when it cannot be written, StoreCorrupt when the run
    id is not a file name: nothing is left behind)."""
    path = path_of(folder, str(meta["run_id"]))
    folder.mkdir(parents=True, exist_ok=True)
    header = {
        "archive": VERSION,
        "meta": meta,
        "total": total,
        "counts": dict(Counter(str(r.get("status")) for r in results)),
    }
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


def _lines(path: Path) -> Iterator[bytes]:
    """The file's lines as stored (StoreCorrupt when it cannot be read: not gzip, cut short, not
    a regular file). Only a regular file is read (a link to one included): a FIFO, a device or a
    socket that carries the archive's name is a foreign file, not something to wait on or read
    forever (opened without blocking, checked before a byte is read). A line is at most
    MAX_LINE bytes once decompressed: a file that inflates to one endless line is corrupt, not
    all of memory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StoreCorrupt(f"archive {path} is not a regular file")
            raw = os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        with raw, gzip.GzipFile(fileobj=raw, mode="rb") as fh:
            while line := fh.readline(MAX_LINE + 1):
                if len(line) > MAX_LINE:
                    raise StoreCorrupt(f"archive {path} has a line longer than {MAX_LINE} bytes")
                yield line
    except (OSError, EOFError, zlib.error) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise StoreCorrupt(f"archive {path} cannot be read: {why}") from None


def _header_problem(value: dict[str, Any], path: Path) -> str | None:
    meta, counts, total = value.get("meta"), value.get("counts"), value.get("total")
    if value.get("archive") != VERSION or not isinstance(meta, dict):
        return "the first line is not an archive header"
    started, run_id = meta.get("started_at"), meta.get("run_id")
    if isinstance(started, str) or records.decode_time(started) is None:
        return f"its start time {str(started)[:40]!r} is not a time"
    if not isinstance(run_id, str) or f"{run_id}{SUFFIX}" != path.name:
        return f"its header names run {str(run_id)[:80]!r}, not the file's"
    if not isinstance(counts, dict) or not all(_is_count(v) for v in counts.values()) or not _is_count(total):
        return "its counts or total are missing or not whole numbers"
    return None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def header(path: Path) -> dict[str, Any]:
    """The first line of a run's file (reading nothing more); StoreCorrupt when it is not a run's header."""
    for raw in _lines(path):
        value = records.decode_object(raw)
        problem = _header_problem(value, path) if value is not None else "the first line is not a JSON object"
        if problem or value is None:
            raise StoreCorrupt(f"archive {path}: {problem}")
        return value
    raise StoreCorrupt(f"archive {path} is empty")


def runs(folder: Path, on_bad: Callable[[str], None] = logger.warning) -> list[dict[str, Any]]:
    """The header of every archived run, newest first (by start time). A file that is not a run's
    archive (not gzip, no header, a start that is not a time) is left out, and on_bad is told
    why, once per file."""
    if not folder.is_dir():
        return []
    found = []
    for p in sorted(folder.glob(f"*{SUFFIX}")):
        if p.name.startswith("."):
            continue
        try:
            found.append(header(p))
        except StoreCorrupt as exc:
            on_bad(f"{exc}: skipped")
    return sorted(found, key=lambda h: (-float(h["meta"]["started_at"]), str(h["meta"]["run_id"])))


def results(folder: Path, run_id: str) -> Iterator[Result]:
    """The results of one archived run, in job id order; a line that is not a sound result is its
    corrupt_record marker (fleet.records), a file that cannot be read StoreCorrupt."""
    if run_id_problem(run_id) or not path_of(folder, run_id).is_file():
        raise RunNotFound(f"no archived run {run_id!r} in {folder}")
    path = path_of(folder, run_id)
    header(path)
    for n, raw in enumerate(_lines(path)):
        if n:
            yield records.decode_listed(raw, run_id, n + 1, f"archived result (line {n + 1})", "line")
