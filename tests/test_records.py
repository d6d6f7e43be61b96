"""Hostile records in Redis and a full Redis: a corrupt result, meta, job spec or late entry is
reported as corrupt by every reader (never a traceback, never blocking other runs or submit);
submit at maxmemory keeps nothing half-written; pruning never deletes a run that is still
running."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from fleet.protocol import base_result
from fleet.store import ResultStore
from tests.helpers import orchestrator, raw_redis

OLD, NEW = "20260101T000000Z-aaaaaa", "20260102T000000Z-bbbbbb"
T0 = 1_767_225_600.0  # 2026-01-01, long past: both runs are over


METRICS = {
    "load_s": 0.5,
    "first_inference_s": 0.01,
    "latency_ms_p50": 5.0,
    "latency_ms_p95": 6.0,
    "throughput": 100.0,
    "throughput_unit": "tokens/s",
    "peak_rss_mb": 900.0,
    "parameters": 1000,
    "dtype": "float32",
}


def _result(run_id: str, fam: str, status: str, **kw: Any) -> Any:
    result = base_result({"run_id": run_id, "job_id": f"{fam}@cpu", "family": fam, "device": "cpu"})
    result.update(status=status, worker="w1", delivery=1, started_at=T0 + 1, finished_at=T0 + 3)
    result["metrics"] = dict(METRICS)
    result.update(kw)
    return result


def _run(store: ResultStore, run_id: str, started: float) -> None:
    """Three jobs: a REAL one with a known answer (pin), a SYNTHETIC one, one without a result."""
    jobs = [
        {"run_id": run_id, "job_id": f"{f}@cpu", "family": f, "device": "cpu", "queue": "cpu"}
        for f in ("alpha", "beta", "gamma")
    ]
    meta = {"run_id": run_id, "started_at": started, "deadline": started + 60, "deadline_s": 60, "origin": "test"}
    store.create_run(meta, jobs)
    known = {"pinned": False, "matched": None, "fingerprint": {"tokens": [1, 2]}, "check": "causal_lm"}
    store.put_result(
        _result(
            run_id, "alpha", "REAL", model_used="org/alpha", weights_sha256="ab" * 32, output={"known_answer": known}
        )
    )
    store.put_result(_result(run_id, "beta", "SYNTHETIC"))


def _corrupt(r: redis.Redis, kind: str) -> None:
    k = f"fleet:run:{OLD}:"
    if kind == "result-invalid-json":
        r.hset(k + "results", "beta@cpu", '{"status": "REAL", ')
    elif kind == "result-not-an-object":
        r.hset(k + "results", "beta@cpu", "[1, 2, 3]")
    elif kind == "result-missing-status":
        bad = _result(OLD, "beta", "REAL")
        del bad["status"]
        r.hset(k + "results", "beta@cpu", json.dumps(bad))
    elif kind == "result-wrong-types":
        r.hset(k + "results", "beta@cpu", json.dumps(_result(OLD, "beta", "REAL", metrics="fast", attempts={})))
    elif kind == "meta-invalid-json":
        r.set(k + "meta", "{{{")
    elif kind == "meta-wrong-types":
        r.set(k + "meta", json.dumps({"run_id": OLD, "started_at": "yesterday", "deadline": [], "deadline_s": 60}))
    elif kind == "job-invalid-json":
        r.hset(k + "jobs", "gamma@cpu", "not json")
    elif kind == "job-missing-keys":
        r.hset(k + "jobs", "gamma@cpu", json.dumps({"run_id": OLD, "job_id": "gamma@cpu"}))
    elif kind == "late-invalid-json":
        r.rpush(k + "late", json.dumps(_result(OLD, "beta", "FAILED")), "{oops", '"a string"')
    else:
        raise AssertionError(kind)


KINDS = [
    "result-invalid-json",
    "result-not-an-object",
    "result-missing-status",
    "result-wrong-types",
    "meta-invalid-json",
    "meta-wrong-types",
    "job-invalid-json",
    "job-missing-keys",
    "late-invalid-json",
]


@pytest.fixture
def two_runs(redis_url: str) -> Iterator[redis.Redis]:
    store = ResultStore(redis_url)
    _run(store, OLD, T0)
    _run(store, NEW, T0 + 86400)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def _ok(res: Any, what: str) -> str:
    assert "Traceback" not in res.stderr, f"{what}: {res.stderr[-2000:]}"
    assert res.returncode == 0, f"{what}: exit {res.returncode}: {res.stderr[-2000:]}"
    return str(res.stdout)


def _corrupt_rows(data: dict[str, Any]) -> dict[str, str]:
    return {
        r["job_id"]: r["error"]["message"]
        for r in data["results"]
        if r["error"] is not None and r["error"]["kind"] == "corrupt_record"
    }


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_a_corrupt_record_is_reported_by_every_reader(
    two_runs: redis.Redis, redis_url: str, tmp_path: Path, kind: str
) -> None:
    _corrupt(two_runs, kind)
    url = ("--redis-url", redis_url)
    run = lambda *a: orchestrator(*a, *url)  # noqa: E731

    data = json.loads(_ok(run("report", OLD, "--format", "json"), "report json"))
    corrupt = _corrupt_rows(data)
    if kind.startswith("result"):
        assert list(corrupt) == ["beta@cpu"], corrupt
        assert "is corrupt" in corrupt["beta@cpu"]
        row = next(r for r in data["results"] if r["job_id"] == "beta@cpu")
        assert row["status"] == "FAILED"
    elif kind.startswith("job"):
        assert list(corrupt) == ["gamma@cpu"], corrupt
        assert "job spec" in corrupt["gamma@cpu"]
    elif kind.startswith("meta"):
        assert "meta of run" in data["corrupt_meta"]
        assert list(corrupt) == ["gamma@cpu"]  # no result, and its deadline cannot be read: LOST
        assert next(r for r in data["results"] if r["job_id"] == "gamma@cpu")["status"] == "LOST"
    else:
        assert corrupt == {}  # late attempts are not rows: the markdown report lists them
    # the rest of the run still reports
    assert next(r for r in data["results"] if r["job_id"] == "alpha@cpu")["status"] == "REAL"

    for fmt in ("md", "html", "junit"):
        text = _ok(run("report", OLD, "--format", fmt), f"report {fmt}").replace("\\_", "_")  # markdown escapes
        if kind.startswith(("result", "job")) or (kind.startswith("late") and fmt == "md"):
            assert "corrupt_record" in text, fmt
        if kind.startswith("late") and fmt == "md":
            late = text[text.index("## Late attempts") :]
            assert late.count("corrupt_record") == 2 and "| beta@cpu | FAILED |" in late, late
    # the clean later run: its baselines and history read the corrupt one
    later = json.loads(_ok(run("report", NEW, "--format", "json"), "report later"))
    assert {r["job_id"]: r["status"] for r in later["results"]} == {
        "alpha@cpu": "REAL",
        "beta@cpu": "SYNTHETIC",
        "gamma@cpu": "SKIPPED",  # no worker serves cpu here
    }
    for fmt in ("md", "html", "junit"):
        _ok(run("report", NEW, "--format", fmt), f"report later {fmt}")

    listing = _ok(run("runs"), "runs")
    assert OLD in listing and NEW in listing
    for rid in (OLD, NEW):
        assert rid in _ok(run("status", rid), "status")
        json.loads(_ok(run("status", rid, "--json"), "status --json"))
        assert "fleet_run_jobs" in _ok(run("metrics", rid), "metrics")
    diff = json.loads(_ok(run("diff", OLD, NEW, "--json"), "diff"))
    assert diff["from"] == OLD
    _ok(run("diff"), "diff latest")
    for rid in (OLD, NEW):
        pins = tmp_path / f"pins-{rid}.toml"
        _ok(run("pin", rid, "--output", str(pins)), "pin")
        assert "org/alpha" in pins.read_text()
    expected = tmp_path / "expect.toml"
    _ok(run("expect", OLD, "--output", str(expected)), "expect")
    _ok(run("report", NEW, "--expectations", str(expected), "--format", "json"), "report --expectations")


def test_submit_after_a_run_with_a_corrupt_result(redis_url: str) -> None:
    """The default order reads the latest run's results: a corrupt one does not stop submit."""
    store = ResultStore(redis_url)
    _run(store, OLD, T0)
    raw = raw_redis(redis_url)  # corrupted on purpose
    raw.hset(f"fleet:run:{OLD}:results", "beta@cpu", "{corrupt")
    raw.hset(f"fleet:run:{OLD}:results", "alpha@cpu", json.dumps({"started_at": "x"}))
    res = orchestrator("submit", "--family", "llama", "--redis-url", redis_url)
    out = _ok(res, "submit")
    run_id = out.strip().splitlines()[-1]
    assert store.run_ids() == [run_id, OLD]
    assert store.job_count(run_id) == 1


# -- a full Redis -----------------------------------------------------------------------------
@pytest.fixture
def squeeze(redis_url: str) -> Iterator[Callable[[int], None]]:
    """Set the test server's maxmemory (bytes over what it uses now); restored afterwards."""
    client = redis.Redis.from_url(redis_url)
    before = client.config_get("maxmemory")["maxmemory"]

    def set_limit(extra: int) -> None:
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", max(used + extra, 64 * 1024))  # 0 would mean no limit

    yield set_limit
    client.config_set("maxmemory", before)
    client.close()


def _fleet_keys(client: redis.Redis) -> list[str]:
    return sorted(k.decode() for k in client.scan_iter("fleet:run*"))


def test_submit_at_maxmemory_keeps_nothing_half_written(redis_url: str, squeeze: Callable[[int], None]) -> None:
    client = redis.Redis.from_url(redis_url)
    devices = ",".join(["cpu"] + [f"cuda:{i}" for i in range(8)])
    args = ("submit", "--all", "--devices", devices, "--order", "catalog", "--redis-url", redis_url)
    # how much a whole run takes (record and messages), measured once
    used = int(client.info("memory")["used_memory"])
    run_id = _ok(orchestrator(*args), "submit").strip()
    whole = int(client.info("memory")["used_memory"]) - used
    assert int(client.llen("cpu")) > 0
    total = sum(int(client.llen(q)) for q in ("cpu", "gpu"))
    client.flushall()
    refused = 0
    for share in (0.02, 0.2, 0.4, 0.6, 0.8):  # fails writing the run, or midway through the messages
        squeeze(int(whole * share))
        res = orchestrator(*args)
        assert "Traceback" not in res.stderr
        if res.returncode == 0:  # it fitted after all (memory is not counted byte for byte): all of it
            assert sum(int(client.llen(q)) for q in ("cpu", "gpu")) == total
            squeeze(10 * whole)
            client.flushall()
            continue
        refused += 1
        assert res.returncode == 6, (share, res.returncode, res.stderr[-2000:])
        assert "Redis is out of memory" in res.stderr, res.stderr
        assert _fleet_keys(client) == [], share
        assert client.llen("cpu") == 0 and client.llen("gpu") == 0, share
    assert refused >= 2
    squeeze(10 * whole)
    assert _ok(orchestrator(*args), "submit after memory is freed").strip() != run_id
    client.close()


def test_pruning_spares_a_running_run(redis_url: str) -> None:
    store = ResultStore(redis_url, keep_runs=1)
    raw = raw_redis(redis_url)  # inspected and aged by hand
    now = time.time()
    running = {"run_id": "r1", "started_at": now, "deadline": now + 600, "deadline_s": 600}
    job = {"run_id": "r1", "job_id": "alpha@cpu", "family": "alpha", "device": "cpu", "queue": "cpu"}
    store.create_run(running, [job])
    store.create_run({**running, "run_id": "r2", "started_at": now + 1}, [{**job, "run_id": "r2"}])
    assert store.run_ids() == ["r2", "r1"]  # r1 runs: kept beyond keep_runs
    assert store.put_result(_result("r1", "alpha", "REAL"))
    assert store.is_finished("r1")
    store.create_run({**running, "run_id": "r3", "started_at": now + 2}, [{**job, "run_id": "r3"}])
    assert store.run_ids() == ["r3", "r2"]  # r1 finished: pruned; r2 still runs
    assert not raw.keys("fleet:run:r1:*")
    # a late worker of the pruned run writes nothing back
    assert store.begin_attempt("r1", "alpha@cpu") == (True, 1)
    assert not store.put_result(_result("r1", "alpha", "REAL"))
    assert not raw.keys("fleet:run:r1:*")
    # a run past its deadline is over, even if nobody marked it finished
    raw.set("fleet:run:r2:meta", json.dumps({**running, "run_id": "r2", "deadline": now - 1}))
    store.create_run({**running, "run_id": "r4", "started_at": now + 3}, [{**job, "run_id": "r4"}])
    assert store.run_ids() == ["r4", "r3"]


# Texts where orjson and json.loads could part: what fleet.records reads must be json.loads's value.
_HOSTILE_TEXTS = [
    '{"a": 1, "b": 2, "a": 3}',  # duplicate keys: the last value, at the first key's place
    "123456789012345678901234567890",  # beyond 64 bits: orjson alone would give a float
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    '{"seq": 99999999999999999999, "x": [1.5]}',
    "-0",
    "-0.0",
    "1e400",
    "-1e400",
    "1.7976931348623157e308",
    "5e-324",
    "2.4703282292062328e-324",
    "0.1000000000000000055511151231257827",
    "NaN",
    "[Infinity, -Infinity]",
    '"\\ud800"',  # half a UTF-16 pair
    '"\\udc00 and more"',
    '"\\ud83d\\ude00"',
    '"\\u0000"',
    '"é\\u00e9"',
    "[1, 2,]",
    '{"a": 1}  ',
    "\ufeff{}",
    "\t[1]\n",
    '"\\x41"',
    '"\\xff"',  # an invalid byte as fleet.store.connection decodes it
    "[" * 5000 + "]" * 5000,
    "",
]


def _as_loaded(text: str | bytes) -> tuple[str, Any]:
    """json.loads's value with each number's type, or 'error'."""
    try:
        return "ok", _typed(json.loads(text))
    except (ValueError, RecursionError):
        return "error", None


def _typed(value: Any) -> Any:
    if isinstance(value, dict):
        return [(k, _typed(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, repr(value))


def test_records_decode_as_json_loads_does() -> None:
    """fleet.records reads JSON with orjson where that gives json.loads's value, else json.loads:
    the same values, types and refusals on hostile texts and on random numbers."""
    import random
    import struct

    from fleet import records

    rng = random.Random(27)
    texts: list[str | bytes] = list(_HOSTILE_TEXTS)
    texts += [t.encode() for t in _HOSTILE_TEXTS if "\ufeff" not in t] + ["{}".encode("utf-16"), b'"\xff"']
    for _ in range(20_000):
        bits = struct.unpack("d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        digits = f"{rng.randint(0, 10 ** rng.randint(1, 17))}.{rng.randint(0, 10 ** rng.randint(1, 25))}"
        texts.append(f"[{bits!r}, -{digits}e{rng.randint(-340, 320)}, {rng.randint(-(2**70), 2**70)}]")
    for text in texts:
        data, problem = records._load(text)
        expected = _as_loaded(text)
        if expected[0] == "error":
            assert problem is not None, text[:80]
        elif problem is None:
            assert ("ok", _typed(data)) == expected, text[:80]
        else:  # json.loads reads it, but it is not text (a lone surrogate): refused as before
            assert "surrogate" in problem, (text[:80], problem)


def test_a_result_lacking_any_field_it_may_lack_is_read_not_raised() -> None:
    """Rule: every field a stored result may lack (all but the required ids and status: older
    results predate them) is read as its empty value by every check, never indexed: a result
    without `error` or `attempts` raised KeyError in diff, metrics and report."""
    from fleet import records

    full = dict(_result("r1", "llama", "FAILED"), error={"kind": "load_error", "message": "m"})
    full["attempts"] = [{"candidate": "c", "outcome": "failed", "error_kind": None, "detail": "", "seconds": 1.0}]
    optional = [k for k in records._RESULT_FIELDS if k not in records._RESULT_REQUIRED]
    assert {"attempts", "error", "metrics"} <= set(optional)
    for key in optional:
        partial = {k: v for k, v in full.items() if k != key}
        got = records.decode_result(json.dumps(partial), "r1", full["job_id"])
        assert got["status"] == "FAILED" and (got["error"] or {}).get("kind") != "corrupt_record", key
        assert key in got, key
