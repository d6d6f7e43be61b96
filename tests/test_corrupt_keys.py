"""Fleet keys in Redis of another type (WRONGTYPE), holding bytes that are not UTF-8, or a time
no date can show (1e999), through the real CLI against a real Redis: a run's corrupt key is
reported as a corrupt record of that run (the run still reports, the clean later run is
unaffected); the list of runs of another type is one line with exit 7; a corrupt redelivery
record (fleet:held) leaves `submit --wait` and a real worker going. Never a traceback."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from fleet.errors import ExitCode
from fleet.store import ResultStore, keys
from tests.helpers import orchestrator
from tests.test_records import NEW, OLD, T0, _corrupt_rows, _run

K = f"fleet:run:{OLD}:"


def _finished_at_deadline(data: dict[str, Any], status: dict[str, Any], md: str) -> None:
    """A `finished` key that holds no time it can show: the run is over, at its deadline."""
    assert status["finished"] and status["finished_at"] == T0 + 60, status
    assert data["finished_at"] == "2026-01-01T00:01:00Z", data["finished_at"]  # T0 + 60


# name -> (how the old run's key is corrupted, what the JSON report and `status --json` of it show)
# (the JSON report, `status --json`, the markdown report).
CASES: dict[str, tuple[Callable[[redis.Redis], Any], Callable[[dict[str, Any], dict[str, Any], str], None]]] = {
    "finished a list": (lambda r: r.rpush(K + "finished", "1"), _finished_at_deadline),
    "finished not UTF-8": (lambda r: r.set(K + "finished", b"\xff\xfe"), _finished_at_deadline),
    "finished 1e999": (lambda r: r.set(K + "finished", "1e999"), _finished_at_deadline),
    "finished nan": (lambda r: r.set(K + "finished", "nan"), _finished_at_deadline),
    "jobs a string": (
        lambda r: (r.delete(K + "jobs"), r.set(K + "jobs", "x")),
        lambda data, status, md: _one_corrupt(data, "(jobs)", f"HGETALL '{K}jobs'"),
    ),
    "a job spec not UTF-8": (
        lambda r: r.hset(K + "jobs", "gamma@cpu", b'{"run_id": "\xff"}'),
        lambda data, status, md: _one_corrupt(data, "gamma@cpu", "not UTF-8"),
    ),
    "a job id not UTF-8": (
        lambda r: r.hset(K + "jobs", b"\xfe@cpu", b"{}"),
        lambda data, status, md: _one_corrupt(data, "\\xfe@cpu", "job spec"),
    ),
    "results a list": (
        lambda r: (r.delete(K + "results"), r.rpush(K + "results", "x")),
        lambda data, status, md: _one_corrupt(data, "(results)", f"HGETALL '{K}results'", real=False),
    ),
    "a result not UTF-8": (
        lambda r: r.hset(K + "results", "beta@cpu", b'{"status": "REAL\xc3"}'),
        lambda data, status, md: _one_corrupt(data, "beta@cpu", "not UTF-8"),
    ),
    "meta a hash": (
        lambda r: (r.delete(K + "meta"), r.hset(K + "meta", "run_id", OLD)),
        lambda data, status, md: _corrupt_meta(data, "WRONGTYPE"),
    ),
    "late a string": (
        lambda r: r.set(K + "late", "x"),
        lambda data, status, md: _late_corrupt(md),
    ),
    "ledger and holders of another type": (
        lambda r: (r.set(K + "ledger", "x"), r.rpush(K + "holders", "x"), r.set("fleet:running:cpu", "x")),
        lambda data, status, md: _no_ledger(data, md),
    ),
}


def _no_ledger(data: dict[str, Any], md: str) -> None:
    """The accounting goes on without what the workers' ledger would have added (orchestrator/accounting.py)."""
    assert data["accounting"]["black_holes"] == [] and "## Accounting" in md
    assert all(w["received"] is None for w in data["accounting"]["workers"])


def _one_corrupt(data: dict[str, Any], job_id: str, says: str, real: bool = True) -> None:
    corrupt = _corrupt_rows(data)
    assert list(corrupt) == [job_id], corrupt
    assert says in corrupt[job_id] and "is corrupt" in corrupt[job_id], corrupt[job_id]
    if real:  # the rest of the run still reports
        assert next(r for r in data["results"] if r["job_id"] == "alpha@cpu")["status"] == "REAL"


def _corrupt_meta(data: dict[str, Any], says: str) -> None:
    assert says in data["corrupt_meta"], data["corrupt_meta"]
    assert next(r for r in data["results"] if r["job_id"] == "alpha@cpu")["status"] == "REAL"


def _late_corrupt(md: str) -> None:
    late = md[md.index("## Late attempts") :].replace("\\_", "_")  # markdown escapes
    assert late.count("corrupt_record") == 1 and "| ?late#0 | FAILED | corrupt_record |" in late, late


@pytest.fixture
def two_runs(redis_url: str) -> Iterator[redis.Redis]:
    store = ResultStore(redis_url)
    _run(store, OLD, T0)
    _run(store, NEW, T0 + 86400)
    client = redis.Redis.from_url(redis_url)  # bytes: corrupted on purpose
    yield client
    client.close()


def _ok(res: Any, what: str) -> str:
    assert "Traceback" not in res.stderr, f"{what}: {res.stderr[-2000:]}"
    assert res.returncode == 0, f"{what}: exit {res.returncode}: {res.stderr[-2000:]}"
    return str(res.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_a_corrupt_run_key_is_a_corrupt_record(
    two_runs: redis.Redis, redis_url: str, tmp_path: Path, case: str
) -> None:
    corrupt, shows = CASES[case]
    corrupt(two_runs)
    run = lambda *a: orchestrator(*a, "--redis-url", redis_url)  # noqa: E731
    data = json.loads(_ok(run("report", OLD, "--format", "json"), "report json"))
    status = json.loads(_ok(run("status", OLD, "--json"), "status --json"))
    shows(data, status, _ok(run("report", OLD, "--format", "md"), "report md"))
    assert OLD in _ok(run("status", OLD), "status")
    assert "fleet_run_jobs" in _ok(run("metrics", OLD), "metrics")
    _ok(run("expect", OLD, "--output", str(tmp_path / "expect.toml")), "expect")
    listing = _ok(run("runs"), "runs")
    assert OLD in listing and NEW in listing
    # the clean later run: its baselines and history read the corrupt one
    later = json.loads(_ok(run("report", NEW, "--format", "json"), "report later"))
    assert {r["job_id"]: r["status"] for r in later["results"]} == {
        "alpha@cpu": "REAL",
        "beta@cpu": "SYNTHETIC",
        "gamma@cpu": "SKIPPED",  # no worker serves cpu here
    }


def test_the_list_of_runs_of_another_type_is_one_line(two_runs: redis.Redis, redis_url: str) -> None:
    two_runs.delete(keys.RUNS)
    two_runs.sadd(keys.RUNS, OLD)
    before = sorted(two_runs.scan_iter("fleet:run:*"))
    for args in (("submit", "--family", "llama"), ("submit", "--family", "llama", "--order", "catalog"), ("runs",)):
        res = orchestrator(*args, "--redis-url", redis_url)
        assert "Traceback" not in res.stderr, res.stderr
        assert res.returncode == ExitCode.STORE_CORRUPT == 7, (args, res.returncode, res.stderr)
        (message,) = [x for x in res.stderr.splitlines() if "error:" in x]  # after warnings, if any
        assert "'fleet:runs'" in message and "WRONGTYPE" in message and "delete that key" in message, message
    assert sorted(two_runs.scan_iter("fleet:run:*")) == before  # a refused submit leaves nothing
    assert two_runs.llen("cpu") == 0
    two_runs.delete(keys.RUNS)  # what the message says to do
    run_id = _ok(orchestrator("submit", "--family", "llama", "--redis-url", redis_url), "submit").strip()
    assert run_id in _ok(orchestrator("runs", "--redis-url", redis_url), "runs")
    _ok(orchestrator("status", run_id, "--redis-url", redis_url), "status")


def test_held_deliveries_of_another_type_leave_a_run_going(redis_url: str, start_worker) -> None:
    """fleet:held (which worker process holds which message: fleet.redelivery) as a set: the
    worker still takes and finishes jobs, `submit --wait` warns once and ends with the run."""
    raw = redis.Redis.from_url(redis_url)
    raw.sadd(keys.HELD, "x")
    w = start_worker(redis_url)
    pid = w.celery_main().pid
    args = ("submit", "--family", "t5", "--devices", "cpu", "--repeats", "1", "--wait", "--redis-url", redis_url)
    res = orchestrator(*args)
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 0, (res.returncode, res.stderr)
    warnings = [x for x in res.stderr.splitlines() if "fleet:held" in x]
    assert len(warnings) == 1 and "visibility timeout" in warnings[0], res.stderr
    run_id = res.stdout.strip().splitlines()[0]
    data = json.loads(_ok(orchestrator("report", run_id, "--format", "json", "--redis-url", redis_url), "report"))
    assert [r["status"] for r in data["results"]] == ["SYNTHETIC"]
    assert w.proc.poll() is None and w.celery_main().pid == pid
    assert raw.type(keys.HELD) == b"set"  # left as it was: only a person deletes it
    raw.close()


def test_dead_letters_are_counted_from_the_list_when_their_counter_is_lost(redis_url: str) -> None:
    """Rule: the dead letters shown are never fewer than the list holds. The counter (messages
    dead-lettered since the store began) was the only count read, so a counter deleted or reset
    by hand made `orchestrator workers` say "no dead letters" over a list full of them."""
    r = redis.Redis.from_url(redis_url)
    letters = [{"reason": f"bad job: refused {i}", "queue": "cpu", "worker": "w1", "at": T0 + i} for i in range(3)]
    for letter in letters:
        r.lpush(keys.DEAD_LETTERS, json.dumps(letter))
    for counter in (None, "1", "not a number"):  # lost, behind the list, unreadable
        r.delete(keys.DEAD_LETTERS_COUNT)
        if counter is not None:
            r.set(keys.DEAD_LETTERS_COUNT, counter)
        res = orchestrator("workers", "--redis-url", redis_url)
        assert "Traceback" not in res.stderr, res.stderr
        assert "no dead letters" not in res.stdout, (counter, res.stdout)
        assert "dead letters: 3 message(s)" in res.stdout, (counter, res.stdout)
        assert "refused 2" in res.stdout
    r.set(keys.DEAD_LETTERS_COUNT, "40")  # the list keeps only the newest: the counter says more
    assert "dead letters: 40 message(s)" in orchestrator("workers", "--redis-url", redis_url).stdout
