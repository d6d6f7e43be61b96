"""The archive: runs older than keep_runs leave Redis for one compressed JSON-lines file each,
written whole before the run is deleted; `orchestrator history` lists and reads them."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from bench.history_scale import fill, history
from fleet import archive
from fleet.errors import ExitCode
from fleet.store import ResultStore
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
    assert broken.returncode == ExitCode.STORE_CORRUPT and "line 1 is not JSON" in broken.stderr
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
