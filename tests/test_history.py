"""The archive: runs older than keep_runs leave Redis for one compressed JSON-lines file each,
written whole before the run is deleted; `orchestrator history` lists and reads them."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import redis

from bench.history_scale import fill, history
from fleet import archive
from fleet.errors import ExitCode, StoreCorrupt
from fleet.store import ResultStore, keys
from tests.helpers import orchestrator


def test_pruned_runs_are_archived_whole_and_read_back(redis_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "archive"
    store = ResultStore(redis_url, keep_runs=3, archive_dir=folder)
    fill(store, 6, 30)
    runs = list(history(6, 30))
    assert store.run_ids(10) == [m["run_id"] for m, _, _ in reversed(runs[3:])]
    assert sorted(p.name for p in folder.iterdir()) == [f"{m['run_id']}.jsonl.gz" for m, _, _ in runs[:3]]
    for meta, jobs, results in runs[:3]:
        back = list(archive.results(folder, meta["run_id"]))
        # every result as the store read it (decoded: fields it fills in come along)
        assert [r["job_id"] for r in back] == sorted(r["job_id"] for r in results)
        assert all(
            b[k] == v
            for b, r in zip(back, sorted(results, key=lambda r: r["job_id"]), strict=True)
            for k, v in r.items()
        )
        head = archive.header(archive.path_of(folder, meta["run_id"]))
        assert head["total"] == len(jobs) and sum(head["counts"].values()) == len(results)

    env = {"FLEET_REDIS_URL": redis_url, "FLEET_ARCHIVE_DIR": str(folder)}
    listed = orchestrator("history", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [ln.split()[0] for ln in listed.stdout.splitlines()] == [m["run_id"] for m, _, _ in reversed(runs[:3])]
    first = runs[0][0]["run_id"]
    failed = orchestrator(
        "history", first, "--status", "FAILED", "--status", "LOST", "--device", "cuda", "--json", env=env
    )
    assert failed.returncode == 0, failed.stderr
    got = [json.loads(x) for x in failed.stdout.splitlines()]
    want = [r for r in runs[0][2] if r["status"] in ("FAILED", "LOST") and r["device"] == "cuda"]
    assert got and sorted(r["job_id"] for r in got) == sorted(r["job_id"] for r in want)
    # what is not there, or not a status, or not readable: one line and its exit code
    missing = orchestrator("history", "no-such-run", env=env)
    assert missing.returncode == ExitCode.NOT_FOUND and "no archived run 'no-such-run'" in missing.stderr
    bogus = orchestrator("history", first, "--status", "PASSED", env=env)
    assert bogus.returncode == ExitCode.BAD_INPUT and "not a status" in bogus.stderr
    (folder / "broken.jsonl.gz").write_bytes(gzip.compress(b"{not json\n"))
    broken = orchestrator("history", "broken", env=env)
    assert broken.returncode == ExitCode.STORE_CORRUPT and "first line is not a JSON object" in broken.stderr
    rebuilt = orchestrator("history", "--rebuild-summaries", env=env)
    assert rebuilt.returncode == 0 and "from 3 run(s)" in rebuilt.stdout


def test_a_run_whose_archive_cannot_be_written_stays_in_redis(redis_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "archive"
    folder.write_text("a file where the folder should be")  # cannot be written, even as root
    store = ResultStore(redis_url, keep_runs=2, archive_dir=folder)
    fill(store, 3, 10)
    assert len(store.run_ids(10)) == 3 and not list(tmp_path.glob("*.gz")) and not list(tmp_path.glob(".*"))
    folder.unlink()
    meta, jobs, _ = list(history(4, 10))[3]
    store.create_run(meta, jobs)  # the next prune archives both
    assert len(store.run_ids(10)) == 2 and len(list(folder.iterdir())) == 2


def test_a_run_id_that_would_leave_the_archive_is_not_archived(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The rule results() reads by (a bare file name: no "/", no leading dot) also bounds writing:
    such a run stays in Redis, with a warning, and nothing is written outside the folder."""
    folder = tmp_path / "a" / "b" / "archive"
    r = redis.Redis.from_url(redis_url)
    hostile = "../../outside"
    r.zadd(keys.RUNS, {hostile: 1})
    r.set(keys.run(hostile, "meta"), "{corrupt")
    store = ResultStore(redis_url, keep_runs=2, archive_dir=folder)
    fill(store, 4, 5)
    assert not (tmp_path / "a" / "outside.jsonl.gz").exists()
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.parent != folder]
    assert sorted(p.name for p in folder.iterdir()) == [
        f"{m['run_id']}.jsonl.gz" for m, _, _ in list(history(4, 5))[:2]
    ]
    assert r.zscore(keys.RUNS, hostile) == 1  # left in Redis
    assert "cannot be archived" in caplog.text and "stays in Redis" in caplog.text
    for bad in (hostile, ".hidden", "a/b", "a\\b", ""):
        with pytest.raises(StoreCorrupt):
            archive.path_of(folder, bad)
    r.close()


def test_history_skips_files_that_are_no_archive_and_shows_corrupt_lines(tmp_path: Path) -> None:
    folder = tmp_path / "archive"
    meta, _, results = next(history(1, 4))
    archive.write_run(folder, meta, results, len(results))
    odd = {**meta, "run_id": "odd", "started_at": meta["started_at"] - 10}
    good_line = {**results[0], "run_id": "odd"}
    lines = [
        {"archive": 1, "meta": odd, "total": 4, "counts": {"REAL": 1, "FAILED": 3}},
        good_line,
        {**good_line, "job_id": "b@cpu", "status": "FAILED", "error": "not-a-dict"},
        [1, 2],
    ]
    body = b"".join(json.dumps(x).encode() + b"\n" for x in lines) + b"{not json\n"
    (folder / "odd.jsonl.gz").write_bytes(gzip.compress(body))
    (folder / "notgzip.jsonl.gz").write_bytes(b"hello")
    yesterday = {"archive": 1, "meta": {"run_id": "yesterday", "started_at": "yesterday"}, "total": 0, "counts": {}}
    (folder / "yesterday.jsonl.gz").write_bytes(gzip.compress(json.dumps(yesterday).encode()))
    (folder / "cut.jsonl.gz").write_bytes((folder / f"{meta['run_id']}.jsonl.gz").read_bytes()[:-12])

    env = {"FLEET_ARCHIVE_DIR": str(folder), "FLEET_REDIS_URL": "redis://127.0.0.1:1/0"}  # never read
    listed = orchestrator("history", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [ln.split()[0] for ln in listed.stdout.splitlines()] == [meta["run_id"], "odd"]
    warnings = listed.stderr.splitlines()
    assert len(warnings) == 3 and all(w.startswith("orchestrator: warning: archive ") for w in warnings)
    assert any("notgzip" in w for w in warnings) and any("'yesterday' is not a time" in w for w in warnings)
    assert "Traceback" not in listed.stderr

    shown = orchestrator("history", "odd", env=env)
    assert shown.returncode == 0, shown.stderr
    rows = shown.stdout.splitlines()
    assert len(rows) == 4 and rows[0].startswith(f"{good_line['job_id']}  {good_line['status']}")
    assert rows[1].startswith("b@cpu  FAILED") and "corrupt_record" in rows[1] and "error" in rows[1]
    assert all("corrupt_record" in row for row in rows[2:]) and rows[3].startswith("?line#5")
    for unreadable in ("yesterday", "cut", "notgzip"):
        out = orchestrator("history", unreadable, env=env)
        assert out.returncode == ExitCode.STORE_CORRUPT and not out.stdout, (unreadable, out.stderr)
        assert out.stderr.startswith("orchestrator: error: archive ") and "Traceback" not in out.stderr


def test_an_archive_that_cannot_be_written_is_said_once_a_prune(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rule: a run kept in Redis past keep_runs because its archive cannot be written is never
    kept silently: each prune says so, once (not once a run). Here the folder is under a file."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    store = ResultStore(redis_url, keep_runs=1, archive_dir=blocker / "archive")
    with caplog.at_level("WARNING", logger="fleet.store"):
        fill(store, 4, 3)  # three prunes with runs to archive: the last one has three
    said = [r.getMessage() for r in caplog.records if "cannot be archived" in r.getMessage()]
    assert len(said) == 3, said
    assert all(str(blocker / "archive") in m and "stays in Redis" in m for m in said)
    assert len(store.run_ids(10)) == 4


def test_history_reads_only_regular_files(tmp_path: Path) -> None:
    """Rule: the archive reader opens regular files only (links to them included): a FIFO, a
    device or a directory carrying an archive's name is a foreign file, skipped with a warning
    (a FIFO hung `orchestrator history` forever); a file that inflates to one endless line is
    corrupt, not read into memory whole; an archive folder that is a file is an error, not
    'no archived runs'."""
    import os

    folder = tmp_path / "archive"
    meta = {"run_id": "kept", "started_at": 1.0e9}
    archive.write_run(folder, meta, [], 0)
    os.mkfifo(folder / f"fifo{archive.SUFFIX}")
    (folder / f"zeros{archive.SUFFIX}").symlink_to("/dev/zero")
    (folder / f"folder{archive.SUFFIX}").mkdir()
    (folder / f"linked{archive.SUFFIX}").symlink_to(folder / f"kept{archive.SUFFIX}")
    with gzip.open(folder / f"endless{archive.SUFFIX}", "wb") as fh:
        fh.write(b"a" * (archive.MAX_LINE + 2))
    res = orchestrator("history", "--dir", str(folder), timeout=60)
    assert res.returncode == ExitCode.OK, res.stderr
    assert res.stdout.splitlines()[0].startswith("kept ") and len(res.stdout.splitlines()) == 1
    warned = res.stderr.strip().splitlines()
    assert "Traceback" not in res.stderr and len(warned) == 5, res.stderr  # linked: its header names kept
    for name in ("fifo", "zeros", "folder"):
        assert any(f"{name}{archive.SUFFIX} is not a regular file" in w for w in warned), res.stderr
    assert any(f"longer than {archive.MAX_LINE} bytes" in w for w in warned), res.stderr
    with pytest.raises(StoreCorrupt, match="not a regular file"):
        archive.header(folder / f"fifo{archive.SUFFIX}")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for extra in ([], ["kept"]):
        res = orchestrator("history", "--dir", str(blocker), *extra, timeout=60)
        assert res.returncode == ExitCode.BAD_INPUT and "is not a directory" in res.stderr, res.stderr
