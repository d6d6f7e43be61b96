"""Per-job summaries (orchestrator.summaries) give the report what reading every earlier run gives
(baselines.collect): generated histories with status changes, flaky and absent jobs, weights
changes, harness gaps, lost jobs and metric regressions, in a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import Any

import redis

from bench.history_scale import fill, history
from fleet import records
from fleet.store import ResultStore, keys
from orchestrator import report, summaries
from orchestrator import runs as runs_mod
from tests.helpers import ROOT, orchestrator

RUNS, JOBS = 36, 60  # more runs than the window (30) and than the summaries keep (31)


def _rows(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    keep = ("previous_status", "baseline", "change", "history", "trends", "attribution")
    return {r["job_id"]: {k: r.get(k) for k in keep} for r in data["rows"]}


def _strip(data: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """The history strip as the renderers read it: the statuses of this run's jobs."""
    jobs = {r["job_id"] for r in data["results"]}
    return [(rid, {j: s for j, s in st.items() if j in jobs}) for rid, st in data["history"]]


def _same(store: ResultStore, run_id: str) -> dict[str, Any]:
    summed = report.build(store, run_id)
    full = report.build(store, run_id, full_read=True)
    assert _rows(summed) == _rows(full)
    assert _strip(summed) == _strip(full)
    assert summed["metric_regressions"] == full["metric_regressions"]
    for fmt in ("md", "json", "html"):
        assert report.RENDERERS[fmt](summed) == report.RENDERERS[fmt](full), fmt
    return summed


def test_summaries_equal_the_full_read_on_a_generated_history(redis_url: str) -> None:
    store = ResultStore(redis_url)
    fill(store, RUNS, JOBS)
    ids = store.run_ids(RUNS)
    data = _same(store, ids[0])  # the newest run, folded
    changes = {r["change"] for r in data["rows"]}
    labels = {t["label"] for r in data["rows"] for t in (r.get("trends") or {}).values()}
    # the generated history has what the comparison must cover
    assert {"regressed", "improved", "unchanged", "harness"} <= changes
    assert {"regression", "ok"} <= labels
    assert any(r.get("attribution") for r in data["rows"])
    assert any(r["status"] == "FLAKY" for r in data["rows"])
    assert any(r["history"]["first_failure"] for r in data["rows"])
    _same(store, ids[1])  # the run before: its window is still held
    # what a report read: the run and one record per job, not the earlier runs' results
    read = _keys_read_whole(redis_url, lambda: report.build(store, ids[0]))
    earlier = [k for k in read if any(f":{rid}:" in k for rid in ids[1:])]
    assert not earlier, f"the report read earlier runs whole: {earlier[:5]}"
    assert f"fleet:run:{ids[0]}:results" in read  # the run's own results


def _keys_read_whole(redis_url: str, action: Any) -> set[str]:
    """The keys read whole (HGETALL, HVALS, LRANGE, SMEMBERS) while action runs, from Redis'
    own MONITOR stream."""
    seen: set[str] = set()
    stop = "fleet-test-monitor-stop"
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    with r.monitor() as monitor:
        ready = threading.Event()

        def listen() -> None:
            ready.set()
            for event in monitor.listen():
                words = event["command"].split()
                if words and words[0].upper() == "ECHO" and stop in event["command"]:
                    return
                if len(words) > 1 and words[0].upper() in ("HGETALL", "HVALS", "LRANGE", "SMEMBERS"):
                    seen.add(words[1])

        thread = threading.Thread(target=listen, daemon=True)
        thread.start()
        ready.wait(5)
        action()
        redis.Redis.from_url(redis_url).echo(stop)
        thread.join(30)
    r.close()
    return seen


def test_an_old_run_or_an_open_run_in_the_window_reads_the_runs_instead(redis_url: str) -> None:
    store = ResultStore(redis_url)
    fill(store, RUNS, 20)
    ids = store.run_ids(RUNS)
    old = ids[5]  # its window reaches runs the summaries no longer hold
    meta = store.meta(old)
    assert summaries.histories(store, old, meta["started_at"], store.results(old)) is None
    _same(store, old)
    # a newer run that is still open: the summaries stop before it; the report reads the runs
    runs = list(history(RUNS + 2, 20))
    for meta, jobs, results in runs[RUNS:]:
        store.create_run(meta, jobs)
        store.write_results(meta["run_id"], results)
    store.mark_finished(runs[-1][0]["run_id"])
    assert summaries.catch_up(store) == 0  # blocked by the open one
    _same(store, runs[-1][0]["run_id"])
    store.mark_finished(runs[RUNS][0]["run_id"])
    assert summaries.catch_up(store) == 2
    _same(store, runs[-1][0]["run_id"])


def test_rebuild_derives_the_same_summaries(redis_url: str) -> None:
    store = ResultStore(redis_url)
    fill(store, 12, 30)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    before = r.hgetall(keys.SUMMARIES), json.loads(r.get(keys.SUMMARIES_META) or "{}")
    assert summaries.rebuild(store) == 12
    assert (r.hgetall(keys.SUMMARIES), json.loads(r.get(keys.SUMMARIES_META) or "{}")) == before
    # a record that cannot be read starts again rather than failing the report
    r.hset(keys.SUMMARIES, "family00000@cpu", "{not json")
    latest = store.run_ids(1)[0]
    assert report.build(store, latest)["rows"]
    r.close()


def test_runs_and_status_read_the_counts_kept_for_finished_runs(redis_url: str) -> None:
    store = ResultStore(redis_url)
    fill(store, 3, 25)
    ids = store.run_ids(3)
    kept = summaries.counts(store, ids)
    assert set(kept) == set(ids)
    for rid in ids:
        assert kept[rid] == store.progress(rid)


# What `runs` and `status` must not import: the renderers, Celery, the model stack.
HEAVY = ("jinja2", "orchestrator.report", "celery", "kombu", "torch", "transformers")
_IMPORTED = (
    "import sys\nfrom orchestrator.cli import main\nrc = main(sys.argv[1:])\n"
    f"print('IMPORTED', sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\nsys.exit(rc)"
)


def test_runs_and_status_import_neither_renderers_nor_celery(redis_url: str) -> None:
    """Their work is a few reads: the interpreter's imports are their wall time."""
    fill(ResultStore(redis_url), 2, 5)
    for argv in (["runs"], ["status"], ["status", "--json"]):
        res = subprocess.run(
            [sys.executable, "-c", _IMPORTED, *argv, "--redis-url", redis_url],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=120,
        )
        assert res.returncode == 0, res.stderr
        assert res.stderr.strip().splitlines()[-1] == "IMPORTED []", (argv, res.stderr)


def test_summaries_of_another_type_leave_reports_to_the_full_read(redis_url: str) -> None:
    store = ResultStore(redis_url)
    fill(store, 4, 20, fold=False)
    r = redis.Redis.from_url(redis_url)
    r.rpush(keys.SUMMARIES, "not a hash")
    assert summaries.catch_up(store) == 0
    latest = store.run_ids(1)[0]
    assert summaries.histories(store, latest, store.meta(latest)["started_at"], store.results(latest)) is None
    _same(store, latest)
    r.close()


def test_a_fold_that_stopped_before_its_meta_is_folded_again(redis_url: str) -> None:
    store = ResultStore(redis_url)
    fill(store, 6, 20)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    meta_before = r.get(keys.SUMMARIES_META)
    newest = store.run_ids(1)[0]
    r.delete(keys.run(newest, "counts"))
    # the newest run's records were written, its meta was not (a process killed in between)
    older = json.loads(meta_before or "{}")
    older["seq"] -= 1
    older["runs"] = older["runs"][:-1]
    r.set(keys.SUMMARIES_META, json.dumps(older))
    assert summaries.catch_up(store) == 1
    assert json.loads(r.get(keys.SUMMARIES_META) or "{}") == json.loads(meta_before or "{}")
    for record in r.hvals(keys.SUMMARIES):  # the newest outcome once, not twice
        seqs = [row[0] for row in json.loads(record)["s"]]
        assert len(seqs) == len(set(seqs))
    _same(store, newest)
    r.close()


BAD_RECORDS = {
    "a status that is none": '{"k":["cpu"],"s":[[1,"BOGUS",null,0]]}',
    "a seq beyond a float": '{"k":["cpu"],"s":[[1e400,"REAL",null,0]]}',
    "a seq that is text": '{"k":["cpu"],"s":[["1","REAL",null,0]]}',
    "metrics that are text": '{"k":["cpu","w"],"s":[[1,"REAL",null,0,1,"fast","x","y","z"]]}',
    "an error kind that is a list": '{"k":["cpu"],"s":[[1,"FAILED",["x"],0]]}',
    "a device index out of range": '{"k":["cpu"],"s":[[1,"REAL",null,9]]}',
    "not an object": "[1, 2]",
    "a row that is not a list": '{"k":["cpu"],"s":[{"seq":1}]}',
    "a row of five": '{"k":["cpu","w"],"s":[[1,"REAL",null,0,1]]}',
    "a seq that is true": '{"k":["cpu"],"s":[[true,"REAL",null,0]]}',
    "a metric beyond a float": '{"k":["cpu","w"],"s":[[1,"REAL",null,0,1,1e400,null,null,null]]}',
    "a long row without its weights index": '{"k":["cpu"],"s":[[2,"REAL",null,0],[1,"REAL",null,0,null,1.0]]}',
    "a weights index out of range": '{"k":["cpu"],"s":[[1,"REAL",null,0,4,1.0,null,null,null]]}',
    "device names that are not text": '{"k":[1],"s":[[1,"REAL",null,0]]}',
}


def test_sound_records_decode_whatever_rows_they_hold() -> None:
    """Rows are checked column by column: short rows, fewer metrics, a whole number too large for
    a float are all sound; the same checks find a corrupt one (BAD_RECORDS)."""
    record = {
        "k": ["cpu", "w"],
        "s": [[3, "REAL", None, 0, 1, 1.5, 10**400, None, None], [2, "FAILED", "boom", 0], [1, "REAL", None, 0, 1, 2]],
    }
    assert summaries._decode(record) == [
        (3, "REAL", None, "cpu", "w", [1.5, 10**400, None, None]),
        (2, "FAILED", "boom", "cpu", None, []),
        (1, "REAL", None, "cpu", "w", [2]),
    ]
    assert summaries._decode({"k": [], "s": []}) == [] == summaries._decode(None)
    for label, bad in BAD_RECORDS.items():  # as fleet.store.summaries reads them
        assert summaries._decode(records.decode_object(bad) or {records.CORRUPT_KEY: "?"}) is None, label


def _finished(store: ResultStore, runs: list[Any]) -> None:
    """Each generated run stored with its results and marked finished."""
    for meta, jobs, results in runs:
        store.create_run(meta, jobs)
        store.write_results(meta["run_id"], results)
        store.mark_finished(meta["run_id"])


def test_a_corrupt_summary_record_is_read_the_full_way(redis_url: str) -> None:
    """fleet.records' rule: a corrupt record is never guessed at; the report reads the earlier
    runs instead and says what the full read says, in every format."""
    store = ResultStore(redis_url)
    runs = list(history(8, 20))
    _finished(store, runs[:6])
    summaries.catch_up(store)
    latest = runs[5][0]["run_id"]
    job = store.results(latest)[0]["job_id"]
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    good = r.hget(keys.SUMMARIES, job)
    for label, bad in BAD_RECORDS.items():
        r.hset(keys.SUMMARIES, job, bad)
        assert summaries.histories(store, latest, runs[5][0]["started_at"], store.results(latest)) is None, label
        _same(store, latest)
    r.hset(keys.SUMMARIES, job, good or "")
    assert summaries.histories(store, latest, runs[5][0]["started_at"], store.results(latest)) is not None
    # a corrupt record is started again by the next fold: it holds nothing older, so the report
    # of every run whose window reaches before that fold reads the runs
    r.hset(keys.SUMMARIES, job, BAD_RECORDS["a status that is none"])
    _finished(store, runs[6:])
    assert summaries.catch_up(store) == 2
    newest = runs[7][0]["run_id"]
    assert "since" in json.loads(r.hget(keys.SUMMARIES, job) or "{}")
    assert summaries.histories(store, newest, runs[7][0]["started_at"], store.results(newest)) is None
    _same(store, newest)
    r.close()


BAD_METAS = [
    '{"seq":2,"runs":[5]}',
    '{"seq":2,"runs":"s-1"}',
    '{"seq":"x","runs":[]}',
    '{"seq":1e400,"runs":[]}',
    "[1,2]",
]


def test_corrupt_summaries_meta_is_not_used_and_never_fails_finalisation(redis_url: str, caplog: Any) -> None:
    store = ResultStore(redis_url)
    runs = list(history(5, 15))
    _finished(store, runs[:4])
    summaries.catch_up(store)
    latest = runs[3][0]["run_id"]
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    meta, jobs, results = runs[4]
    meta = {**meta, "deadline": meta["started_at"] + 1}  # long past: the run is finalised now
    store.create_run(meta, jobs)
    store.write_results(meta["run_id"], results[:-1])
    for bad in BAD_METAS:
        r.set(keys.SUMMARIES_META, bad)
        caplog.clear()
        assert summaries.catch_up(store) == 0
        assert "summaries' meta is corrupt" in caplog.text
        assert summaries.histories(store, latest, runs[3][0]["started_at"], store.results(latest)) is None
        _same(store, latest)
        # finalising a run (and every later call on a finished one) is not stopped by it
        assert runs_mod.finalize_if_due(store, meta["run_id"]) is True
        assert store.is_finished(meta["run_id"])
        assert runs_mod.finalize_if_due(store, meta["run_id"]) is True
        listed = orchestrator("runs", env={"FLEET_REDIS_URL": redis_url})
        assert listed.returncode == 0, listed.stderr
        assert meta["run_id"] in listed.stdout
        assert r.get(keys.SUMMARIES_META) == bad  # left for a rebuild
    assert summaries.rebuild(store) == 5
    _same(store, meta["run_id"])
    r.close()


def test_a_trend_reads_the_newest_numbers_of_its_weights_and_device() -> None:
    """The median is of the `window` numbers after the newest `violations`, counting only outcomes
    that passed on the same weights and device and have the metric (older ones are not read)."""
    from orchestrator.baselines import JobHistory, Sample
    from orchestrator.trends import TrendSettings, trends

    def sample(i: int, latency: float | None, status: str = "REAL", sha: str = "a", device: str = "cpu") -> Sample:
        metrics = {} if latency is None else {"latency_ms_p50": latency}
        result: Any = {"status": status, "device": device, "weights_sha256": sha * 64, "metrics": metrics}
        return Sample(f"run{i:02d}", 1_790_000_000.0 + i, result)

    newest_first = [15.0, 14.0, None, 10.0, ("FAILED", 99.0), 11.0, ("b", 50.0), ("cuda", 60.0), 9.0, 10.5, 100.0]
    samples = []
    for i, x in enumerate(newest_first):
        if isinstance(x, tuple):
            kind, value = x
            if kind == "FAILED":
                samples.append(sample(i, value, status="FAILED"))
            elif kind == "cuda":
                samples.append(sample(i, value, device="cuda"))
            else:
                samples.append(sample(i, value, sha=kind))
        else:
            samples.append(sample(i, x))
    got = trends(JobHistory(samples), TrendSettings(window=3, violations=2, threshold=0.2))["latency_ms_p50"]
    # the numbers read: 15, 14 | 10, 11, 9 (median 10); 10.5 and 100 are older than needed
    assert got == {"value": 15.0, "runs": 3, "median": 10.0, "relative": 0.5, "violations": 2, "label": "regression"}
    short = trends(JobHistory(samples[:6]), TrendSettings(window=3, violations=2, threshold=0.2))
    assert short["latency_ms_p50"] == {"value": 15.0, "runs": 2, "label": "insufficient data"}
