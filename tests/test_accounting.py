"""Accounting, completeness, black holes, liveness that means work, and isolation after a device
fault: real workers, real Redis, figures checked against the jobs' own timestamps."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import socket
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from fleet.broker import make_app
from fleet.catalog import Catalog
from fleet.errors import FleetError, UnknownJob
from fleet.jobs import job_problem
from fleet.protocol import base_result
from fleet.settings import RunSettings
from fleet.store import ResultStore, keys
from fleet.store.ledger import Taker
from orchestrator import accounting, liveness, metrics, report, runs
from orchestrator.runs import wait
from orchestrator.submit import plan_jobs, submit
from tests.helpers import orchestrator, raw_redis
from tests.models import family
from tests.test_faults import wait_until


def catalog(*checks: str, **kw: object) -> Catalog:
    """One tiny llama family per check name given (names may repeat: slow0, slow1, ...)."""
    fams = {}
    for i, check in enumerate(checks):
        name = f"{check}{i}"
        f = family("llama", name=name, **kw)
        fams[name] = type(f)(**{**f.__dict__, "check": check})
    return Catalog("test", fams)


def test_accounting_of_a_run_on_two_workers_matches_the_jobs_own_timestamps(
    redis_url: str, start_worker, tmp_path: Path
) -> None:
    start_worker(redis_url, name="w1", FLEET_TEST_SLOW_S="0.5")
    start_worker(redis_url, name="w2", FLEET_TEST_SLOW_S="0.5")
    store = ResultStore(redis_url)
    run_id = submit(store, make_app(redis_url), catalog(*["slow"] * 6), None, ["cpu"], RunSettings(repeats=1))
    assert wait(store, run_id) == {"SYNTHETIC": 6}
    results = store.results(run_id)
    meta = store.meta(run_id)

    data = report.build(store, run_id, prices={"cpu": 0.1, "cuda": 2.5})
    acc = data["accounting"]
    # busy per worker and per device type: the sum of each job's own finished_at - started_at
    busy: dict[str, float] = defaultdict(float)
    for r in results:
        assert r["sent_at"] <= r["started_at"] <= r["finished_at"]
        busy[r["worker"]] += r["finished_at"] - r["started_at"]
    by_worker = {w["name"]: w for w in acc["workers"]}
    assert set(by_worker) == {"cpu@w1", "cpu@w2"}  # the launcher names a worker device@name
    for name, w in by_worker.items():
        assert w["busy_s"] == pytest.approx(busy.get(name, 0.0), abs=2e-3)
        assert w["results"] == sum(r["worker"] == name for r in results)
        # the ledger the workers wrote agrees with the results they wrote
        assert (w["received"], w["finished"], w["died"]) == (w["results"], w["results"], 0)
        # idle: one slot for the whole run (both were live at submit), less the busy time
        window = meta["finished_at"] - meta["started_at"]
        assert w["slots"] == 1
        assert w["idle_s"] == pytest.approx(window - w["busy_s"], abs=2e-3)
    (cpu,) = acc["devices"]
    assert cpu["device_type"] == "cpu"
    assert cpu["busy_s"] == pytest.approx(sum(busy.values()), abs=5e-3)
    assert cpu["cost_busy"] == pytest.approx(cpu["busy_s"] / 3600 * 0.1, abs=1e-4)
    assert acc["cost"]["busy"] == cpu["cost_busy"]
    # queue wait: started_at - sent_at of each job, nearest-rank p50/p90 and max
    waits = sorted(r["started_at"] - r["sent_at"] for r in results)
    (q,) = acc["queue_wait"]
    assert (q["queue"], q["jobs"]) == ("cpu", 6)
    assert q["max_s"] == pytest.approx(waits[-1], abs=2e-3)
    assert q["p50_s"] == pytest.approx(waits[2], abs=2e-3)  # ceil(0.5 * 6) = 3rd smallest
    assert q["p90_s"] == pytest.approx(waits[5], abs=2e-3)
    assert acc["time_to_first_result_s"] == pytest.approx(
        min(r["finished_at"] for r in results) - meta["started_at"], abs=2e-3
    )
    assert acc["completeness"] == {
        "asked": 6,
        "final": 6,
        "missing": [],
        "pending": 0,
        "reasons": {},
        "stray": [],
        "over": True,
        "complete": True,
    }
    assert acc["black_holes"] == []

    md = report.render_markdown(data)
    assert md.splitlines()[0].startswith("# model-fleet report")  # complete: no warning first
    assert "## Accounting" in md and "| cpu@w1 | cpu | 1 |" in md
    html = report.render_html(data)
    assert 'id="accounting-workers"' in html and "6 of 6 jobs have a final result" in html
    js = json.loads(report.to_json(data))
    assert js["incomplete"] is None and js["jobs_with_final_result"] == 6
    assert js["accounting"]["workers"][0]["busy_s"] == by_worker["cpu@w1"]["busy_s"]

    prom = metrics.exposition(store, run_id)
    assert 'fleet_run_queue_wait_seconds_count{queue="cpu"} 6' in prom
    assert 'fleet_run_queue_wait_seconds_bucket{queue="cpu",le="+Inf"} 6' in prom
    assert "# TYPE fleet_run_queue_wait_seconds histogram" in prom
    assert 'fleet_run_worker_busy_seconds{worker="cpu@w1"}' in prom
    assert 'fleet_queue_running{queue="cpu"} 0' in prom  # every job done: nothing counted as running

    # the CLI: --price, and bad prices refused in one line, exit 2
    env = {"FLEET_REDIS_URL": redis_url}
    out = orchestrator("report", run_id, "--price", "cpu=0.1", env=env)
    assert out.returncode == 0, out.stderr
    assert "Estimated cost:" in out.stdout
    bad = orchestrator("report", run_id, "--price", "tpu=3", env=env)
    assert bad.returncode == 2 and "--price" in bad.stderr and bad.stdout == ""


def test_incomplete_run_says_so_in_its_first_line_with_every_missing_job_and_why(redis_url: str, start_worker) -> None:
    """One worker, one slot: slow0 is taken and outlives the deadline (lost, held by w1); slow1
    never leaves its queue (expired); the cuda job has no worker (no worker)."""
    start_worker(redis_url, name="w1", FLEET_TEST_SLOW_S="20")
    store = ResultStore(redis_url)
    app = make_app(redis_url)
    run_id = submit(
        store, app, catalog("slow", "slow"), None, ["cpu", "cuda"], RunSettings(repeats=1, deadline_s=6), order="none"
    )
    wait_until(lambda: time.time() > store.meta(run_id)["deadline"] + 0.5, timeout=90, what="deadline")
    out = orchestrator("report", run_id, env={"FLEET_REDIS_URL": redis_url})
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith("# INCOMPLETE: 0 of 4 jobs have a final result (1 expired, 1 lost, 2 no worker)"), first
    acc = report.build(store, run_id)["accounting"]
    why = {m["job_id"]: (m["why"], m.get("worker")) for m in acc["completeness"]["missing"]}
    taken = next(j for j, (w, _) in why.items() if w == "lost")
    assert why[taken] == ("lost", "cpu@w1")
    assert {j for j, (w, _) in why.items() if w == "expired"} == {"slow0@cpu", "slow1@cpu"} - {taken}
    assert {j for j, (w, _) in why.items() if w == "no worker"} == {"slow0@cuda", "slow1@cuda"}
    html = report.render_html(report.build(store, run_id))
    assert "<title>INCOMPLETE: 0 of 4 jobs" in html
    js = json.loads(report.to_json(report.build(store, run_id)))
    assert next(iter(js)) == "incomplete" and js["incomplete"].startswith("INCOMPLETE")
    junit = report.to_junit(report.build(store, run_id))
    assert '<property name="jobs_with_final_result" value="0" />' in junit


def test_a_poisoned_process_is_replaced_before_the_next_job(redis_url: str, start_worker) -> None:
    start_worker(redis_url, name="w1")
    store, app = ResultStore(redis_url), make_app(redis_url)

    def one(check: str) -> dict:
        run_id = submit(store, app, catalog(check), None, ["cpu"], RunSettings(repeats=1))
        wait(store, run_id)
        (result,) = store.results(run_id)
        return result

    first = one("tracked")
    second = one("tracked")
    assert first["status"] == second["status"] == "SYNTHETIC"
    assert second["process"]["pid"] == first["process"]["pid"]  # a clean process is kept
    assert second["process"]["jobs"] == first["process"]["jobs"] + 1
    faulted = one("device_fault")
    assert faulted["status"] == "FAILED" and faulted["error"]["kind"] == "device_fault"
    assert faulted["process"]["pid"] == first["process"]["pid"]
    after = one("tracked")
    assert after["status"] == "SYNTHETIC"
    assert after["process"]["pid"] != faulted["process"]["pid"]  # a fresh process ran it
    assert after["process"]["jobs"] == 1
    assert after["process"]["started_at"] > faulted["finished_at"] - 1


def test_black_hole_worker_is_named_in_the_report_and_in_workers(redis_url: str, start_worker) -> None:
    """w2's pool process hangs (SIGSTOP) with the job it took; w1 finishes the rest. While the
    run goes on, a held job is no evidence (a long job looks the same); past the deadline, w2 is
    named."""
    start_worker(redis_url, name="w1", FLEET_TEST_SLOW_S="1")
    w2 = start_worker(redis_url, name="w2", FLEET_TEST_SLOW_S="1")
    store = ResultStore(redis_url)
    run_id = submit(
        store, make_app(redis_url), catalog(*["slow"] * 4), None, ["cpu"], RunSettings(repeats=1, deadline_s=30)
    )
    wait_until(
        lambda: store.ledger.run_counts(run_id).get("cpu@w2", {}).get("received"), timeout=90, what="w2 takes a job"
    )
    (child,) = w2.pool_children()
    child.send_signal(signal.SIGSTOP)
    try:
        held = store.ledger.holders(run_id)
        mine = [j for j, w in held.items() if w == "cpu@w2"]
        wait_until(lambda: store.result_count(run_id) >= 4 - len(mine), timeout=90, what="w1 finishes the rest")
        if any(r["worker"] == "cpu@w2" for r in store.results(run_id)):
            pytest.skip("w2 finished its job before it was stopped (a loaded machine)")
        running = report.build(store, run_id)
        assert running["accounting"]["black_holes"] == []  # its job is in flight: no evidence yet
        assert report.render_markdown(running).splitlines()[0].startswith("# INCOMPLETE (still running): 3 of 4")
        holds = lambda: any(w["name"] == "cpu@w2" and w.get("holding") for w in store.registry.live_workers())  # noqa: E731
        wait_until(holds, timeout=30, what="a heartbeat of w2 that says it holds a job (one every 10 s)")
        out = orchestrator("workers", env={"FLEET_REDIS_URL": redis_url})
        line = next(x for x in out.stdout.splitlines() if x.startswith("cpu@w2 "))
        assert "received=1" in line and "finished=0" in line and "BLACK HOLE" not in line  # holds it now
        assert "cpu@w2  consuming" in line  # every slot busy: not polling is no sign of a stuck consumer
        w1 = next(x for x in out.stdout.splitlines() if x.startswith("cpu@w1 "))
        assert "BLACK HOLE" not in w1 and "finished=0" not in w1
        assert store.ledger.running_count("cpu") == 1  # the held job is still running

        wait_until(lambda: time.time() > store.meta(run_id)["deadline"] + 0.5, timeout=90, what="deadline")
        data = report.build(store, run_id)
        (hole,) = data["accounting"]["black_holes"]
        assert hole["worker"] == "cpu@w2" and hole["finished"] == 0 and hole["received"] == 1
        assert "finished none while other workers finished 3" in hole["why"]
        md = report.render_markdown(data)
        assert md.splitlines()[0].startswith("# INCOMPLETE: 3 of 4 jobs have a final result (1 lost)")
        assert "**cpu@w2**: received" in md
        (lost,) = data["accounting"]["completeness"]["missing"]
        assert (lost["why"], lost["worker"]) == ("lost", "cpu@w2")
    finally:
        child.send_signal(signal.SIGCONT)


def test_jobs_that_keep_dying_are_counted_against_the_worker(redis_url: str, start_worker) -> None:
    start_worker(redis_url, name="w1")
    store = ResultStore(redis_url)
    run_id = submit(store, make_app(redis_url), catalog("crash"), None, ["cpu"], RunSettings(max_attempts=2))
    assert wait(store, run_id) == {"FAILED": 1}
    assert store.ledger.run_counts(run_id) == {"cpu@w1": {"received": 3, "finished": 1, "died": 2}}
    (hole,) = report.build(store, run_id)["accounting"]["black_holes"]
    assert hole["worker"] == "cpu@w1" and "2 of its jobs died" in hole["why"]
    out = orchestrator("workers", env={"FLEET_REDIS_URL": redis_url})
    assert "died=2" in out.stdout and "BLACK HOLE" in out.stdout


class FreezingProxy:
    """A TCP proxy to Redis that, once frozen, stops forwarding on every connection that has
    carried a BRPOP (the consumer's): a hung broker connection, while the heartbeat's flows."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.frozen = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            polls = threading.Event()
            threading.Thread(target=self._pipe, args=(client, upstream, polls, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, polls, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, polls: threading.Event, outbound: bool) -> None:
        try:
            while data := src.recv(65536):
                if outbound and b"BRPOP" in data:
                    polls.set()
                while polls.is_set() and self.frozen.is_set():
                    time.sleep(0.1)  # hung: nothing passes, nothing is closed
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.server.close()


def test_a_worker_whose_consumer_hangs_is_shown_stuck_while_its_heartbeat_runs(redis_url: str, start_worker) -> None:
    host, port = redis_url.removeprefix("redis://").split("/")[0].split(":")
    proxy = FreezingProxy((host, int(port)))
    try:
        via = f"redis://127.0.0.1:{proxy.port}/{redis_url.rsplit('/', 1)[-1]}"
        start_worker(via, name="w1")
        store = ResultStore(redis_url)
        wait_until(
            lambda: any(w.get("polled_at") for w in store.registry.live_workers()), timeout=90, what="first poll"
        )
        env = {"FLEET_REDIS_URL": redis_url}
        before = orchestrator("workers", "--stuck-after", "3", env=env).stdout
        assert "cpu@w1  consuming" in before
        proxy.frozen.set()
        frozen_at = time.time()
        time.sleep(14)  # past --stuck-after and at least one heartbeat (every 10 s)
        (w,) = store.registry.live_workers()
        assert w["seen_at"] > frozen_at  # the heartbeat thread still writes
        assert w["polled_at"] < frozen_at + 2  # the consumer has had no reply since
        out = orchestrator("workers", "--stuck-after", "3", env=env).stdout
        assert "cpu@w1  stuck since" in out, out
        assert liveness.stuck_since(w, after_s=3) == w["polled_at"]  # what fleet_workers_stuck counts
        proxy.frozen.clear()
        wait_until(lambda: store.registry.live_workers()[0]["polled_at"] > time.time() - 3, timeout=30)
        assert "cpu@w1  consuming" in orchestrator("workers", "--stuck-after", "3", env=env).stdout
    finally:
        proxy.frozen.clear()
        proxy.close()


def test_running_tokens_of_gone_workers_and_answered_jobs_are_pruned(redis_url: str) -> None:
    """What KEDA counts as running (fleet:running:gpu) keeps only jobs a live worker start holds."""
    store = ResultStore(redis_url)
    ledger = store.ledger
    store.create_run({"run_id": "r", "started_at": 1.0, "deadline": 2e9, "deadline_s": 60}, [_job("a"), _job("b")])
    ledger.started("r", "a@cuda", "gpu", "gpu0@x", "inst-x", 1)
    ledger.started("r", "b@cuda", "gpu", "gpu0@y", "inst-y", 1)
    assert ledger.running_count("gpu") == 2
    assert ledger.prune_running(["gpu"], {"inst-x", "inst-y"}) == 0  # both live, no result: kept
    assert ledger.prune_running(["gpu"], {"inst-x"}) == 1  # y's worker start is gone
    assert ledger.running_count("gpu") == 1
    store.write_results("r", [{"job_id": "a@cuda", "status": "REAL"}])  # answered, token left behind
    assert ledger.prune_running(["gpu"], {"inst-x"}) == 1
    assert ledger.running_count("gpu") == 0
    # a redelivery counts the earlier holder's delivery as died
    assert ledger.started("r", "b@cuda", "gpu", "gpu0@x", "inst-x", 2) == "gpu0@y"
    assert ledger.run_counts("r")["gpu0@y"] == {"received": 1, "finished": 0, "died": 1}
    ledger.finished("r", "b@cuda", "gpu", "gpu0@x", "inst-x")
    assert ledger.running_count("gpu") == 0
    assert ledger.worker_stats()["gpu0@x"]["finished"] == 1


def test_a_worker_writes_the_ledger_with_the_delivery_count_and_with_the_result(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker's four writes per job go in two round trips (fleet/store/begin.lua, put_result.lua
    with the result): what they record is what Ledger.started and Ledger.finished record one by one."""
    store, r = ResultStore(redis_url), raw_redis(redis_url)
    store.create_run({"run_id": "r", "started_at": 1.0, "deadline": 2e9, "deadline_s": 60}, [_job("a"), _job("b")])
    me = Taker("gpu", "gpu0@x", "inst-x")
    assert store.begin_delivery("r", "a@cuda", None, me) == (False, 1, True)  # counted, and taken
    assert store.ledger.holders("r") == {"a@cuda": "gpu0@x"} and store.ledger.running_count("gpu") == 1
    assert store.ledger.run_counts("r")["gpu0@x"]["received"] == 1
    assert store.begin_delivery("r", "a@cuda", None, me) == (False, 2, False)  # a redelivery: the caller counts it
    assert store.ledger.run_counts("r")["gpu0@x"]["received"] == 1
    with pytest.raises(UnknownJob):  # not a job of the run: nothing counted, no ledger
        store.begin_delivery("r", "ghost@cuda", None, me)
    assert "ghost@cuda" not in store.attempts("r") and "ghost@cuda" not in store.ledger.holders("r")

    result = {**base_result(_job("a")), "status": "SYNTHETIC"}  # type: ignore[arg-type]
    assert store.put_result(result, finished_by=me)  # type: ignore[arg-type]
    assert store.ledger.run_counts("r")["gpu0@x"] == {"received": 1, "finished": 1, "died": 0}
    assert store.ledger.running_count("gpu") == 0 and store.ledger.worker_stats()["gpu0@x"]["finished"] == 1
    # a ledger key of another type: logged, and the delivery and the result still count
    r.set(keys.running("gpu"), "not a list")
    with caplog.at_level("WARNING", logger="fleet.store"):
        assert store.begin_delivery("r", "b@cuda", None, me) == (False, 1, True)  # taken: not written again
        assert store.put_result({**result, "job_id": "b@cuda"}, finished_by=me)  # type: ignore[arg-type]
    assert sum("could not write the ledger" in m for m in caplog.messages) == 2
    assert store.ledger.holders("r")["b@cuda"] == "gpu0@x" and store.result_count("r") == 2
    r.script_flush()  # a Redis that has not seen the scripts (restarted): sent again, counted once
    store.create_run({"run_id": "s", "started_at": 1.0, "deadline": 2e9, "deadline_s": 60}, [_job("c")])
    r.delete(keys.running("gpu"))
    assert store.begin_delivery("s", "c@cuda", None, me) == (False, 1, True)
    assert store.put_result({**result, "run_id": "s", "job_id": "c@cuda"}, finished_by=me)  # type: ignore[arg-type]
    assert store.ledger.run_counts("s")["gpu0@x"] == {"received": 1, "finished": 1, "died": 0}


def test_a_first_delivery_is_received_once_when_a_ledger_write_fails(redis_url: str) -> None:
    """A ledger key of another type fails one of begin.lua's writes; the others land. The worker
    (workers.app.run_check) writes the ledger again only for a delivery not taken by the script:
    doing so here counted the one delivery twice (Ledger.started's MULTI/EXEC applies every
    write but the failing one)."""
    store, r = ResultStore(redis_url), raw_redis(redis_url)
    store.create_run({"run_id": "r", "started_at": 1.0, "deadline": 2e9, "deadline_s": 60}, [_job("a")])
    r.set(keys.running("gpu"), "not a list")
    me = Taker("gpu", "gpu0@x", "inst-x")
    done, delivery, taken = store.begin_delivery("r", "a@cuda", None, me)
    assert (done, delivery, taken) == (False, 1, True)
    if not taken:  # what run_check does
        with contextlib.suppress(FleetError):
            store.ledger.started("r", "a@cuda", me.queue, me.worker, me.instance, delivery)
    assert store.ledger.run_counts("r")["gpu0@x"]["received"] == 1
    assert store.ledger.worker_stats()["gpu0@x"]["received"] == 1


def test_a_ledger_key_of_another_type_never_stops_a_job(redis_url: str, start_worker) -> None:
    w = start_worker(redis_url, name="w1")
    raw_redis(redis_url).set(keys.running("cpu"), "not a list")  # corrupted on purpose
    store = ResultStore(redis_url)
    run_id = submit(store, make_app(redis_url), catalog("tracked"), None, ["cpu"], RunSettings(repeats=1))
    assert wait(store, run_id) == {"SYNTHETIC": 1}
    assert "could not write the ledger" in w.log.read_text()


def _job(name: str) -> dict:
    return {"run_id": "r", "job_id": f"{name}@cuda", "family": name, "device": "cuda", "queue": "gpu"}


def test_a_job_message_carries_sent_at_and_a_bad_one_is_refused() -> None:
    (job,) = plan_jobs("r", catalog("slow"), None, ["cpu"], RunSettings(), pins=[], lock=[])
    assert "sent_at" not in job  # set as each message is published (orchestrator.submit)
    assert job_problem({**job, "sent_at": time.time()}) is None
    for bad in ("yesterday", math.nan, math.inf, True):
        assert "sent_at must be a finite number" in str(job_problem({**job, "sent_at": bad}))
    assert base_result({**job, "sent_at": 12.5})["sent_at"] == 12.5  # every result keeps it


def test_prices_parse_and_refuse() -> None:
    assert accounting.parse_prices("cuda=2.5, cpu=0.1") == {"cuda": 2.5, "cpu": 0.1}
    assert accounting.parse_prices(None) == {}
    for bad in ("cuda", "cuda=-1", "cuda=nan", "gpu=1", "cuda=x"):
        with pytest.raises(Exception, match="--price"):
            accounting.parse_prices(bad)
    assert accounting.percentile([1.0, 2.0, 3.0, 4.0], 0.9) == 4.0
    assert accounting.histogram([0.5, 2.0, 7200.0])[-1] == ["+Inf", 3]


def _sane_run(store: ResultStore, run_id: str, start: float) -> None:
    """A run of one job on worker w, sent 1 s after the run's start, run 4 s later for 1 s."""
    job = {
        "run_id": run_id,
        "job_id": "a@cpu",
        "family": "a",
        "device": "cpu",
        "queue": "cpu",
        "family_spec": {},
        "time_limit_s": 60,
        "repeats": 1,
        "max_attempts": 1,
        "sent_at": start + 1,
    }
    meta = {"run_id": run_id, "started_at": start, "deadline": start + 3600, "deadline_s": 3600.0, "total": 1}
    store.create_run(meta, [job])
    result = base_result(job)
    result.update(status="REAL", worker="w", started_at=start + 5, finished_at=start + 6)
    store.put_result(result)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"not JSON (RFC 8259): {name}")


def test_json_report_is_strict_json_and_metrics_keep_full_precision(redis_url: str) -> None:
    """A normal run's JSON report parses as strict JSON (no Infinity: the histogram's last bucket
    is "+Inf"), and a Prometheus timestamp reads back to the millisecond (not `:g`'s 6 digits)."""
    store = ResultStore(redis_url)
    start = round(time.time() - 60, 3) + 0.0005
    _sane_run(store, "sane-1", start)
    out = orchestrator("report", "sane-1", "--format", "json", env={"FLEET_REDIS_URL": redis_url})
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout, parse_constant=_refuse_constant)  # Infinity / NaN: ValueError
    (wait_row,) = data["accounting"]["queue_wait"]
    assert wait_row["histogram"][-1] == ["+Inf", 1] and wait_row["histogram"][1] == [5.0, 1]
    # any non-finite number a report model holds is written as null
    strict = report.json.dumps({"a": [math.nan, 1.5, {"b": -math.inf}]})
    assert json.loads(strict, parse_constant=_refuse_constant) == {"a": [None, 1.5, {"b": None}]}

    prom = metrics.exposition(store, "sane-1")
    (stamp,) = [ln for ln in prom.splitlines() if ln.startswith("fleet_run_started_timestamp_seconds ")]
    assert float(stamp.split()[1]) == start  # repr: every digit of the float
    assert 'fleet_run_queue_wait_seconds_bucket{queue="cpu",le="+Inf"} 1' in prom
    assert 'fleet_run_queue_wait_seconds_sum{queue="cpu"} 4.0' in prom
    assert "fleet_run_jobs_total 1\n" in prom  # a count stays an integer


HOSTILE_HEARTBEATS = {
    "w": '{"name":"w","queues":["cpu"],"polled_at":null,"concurrency":1' + "0" * 400 + "}",  # 10**400 slots
    "old": '{"name":"old","queues":["cpu"],"polled_at":null,"started_at":1' + "0" * 400 + "}",
    "noname": '{"queues":["cpu"],"devices":5}',
    "q12": '{"name":"q12","queues":[1,2],"holding":"abc","polled_at":-1e300,"concurrency":1.5}',
    "qs": '{"name":"qs","queues":"cpu","gpus":[3]}',
    "nl": json.dumps({"name": "nl\nfleet:worker:good  consuming  queues=cuda", "queues": ["cpu"]}),
    "s1": '{"name":"s1","queues":["cpu"]}',
    "s2": '{"name":"s2","queues":["cpu"]}',
}


def test_hostile_heartbeats_and_worker_stats_never_crash_nor_inflate(redis_url: str) -> None:
    """Every heartbeat and worker-stats field is read typed and in range (fleet.records): a
    malformed one is unknown, shown as "?" or left out; slots are capped at records.MAX_SLOTS."""
    from fleet import records

    store, r = ResultStore(redis_url), raw_redis(redis_url)
    start = time.time() - 100
    _sane_run(store, "hb-1", start)
    for key, text in HOSTILE_HEARTBEATS.items():
        r.set(keys.worker(key), text)
    r.hset(keys.worker_stats("w"), mapping={"received": "nan", "finished": "inf", "died": "-4"})
    r.hset(keys.worker_stats("s1"), mapping={"received": "5", "last_result_at": "1e300"})
    r.hset(keys.worker_stats("s2"), mapping={"received": "inf", "finished": "2"})
    assert store.ledger.worker_stats()["s1"] == {"received": 5.0}  # 1e300 is no time
    assert store.ledger.worker_stats()["s2"] == {"finished": 2.0}
    assert store.ledger.worker_stats()["w"] == {}
    live = {w["name"]: w for w in store.registry.live_workers()}
    assert live["noname"]["devices"] is None  # named after its key; the int is no device list
    assert live["w"]["concurrency"] == records.MAX_SLOTS
    assert live["q12"]["queues"] is None and live["q12"]["holding"] is None and live["q12"]["polled_at"] is None
    assert live["q12"]["concurrency"] is None and live["qs"]["gpus"] is None
    assert live["old"]["started_at"] is None

    env = {"FLEET_REDIS_URL": redis_url}
    listing = orchestrator("workers", env=env)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert any(ln.startswith("noname  ") for ln in lines)
    assert any(ln.startswith("q12  ") and "queues=?" in ln for ln in lines)
    assert not any(ln.startswith("fleet:worker:good") for ln in lines)  # a name is one line
    for args in (("metrics", "hb-1"), ("report", "hb-1", "--format", "md"), ("report", "hb-1", "--format", "json")):
        out = orchestrator(*args, env=env)
        assert out.returncode == 0 and "Traceback" not in out.stderr, (args, out.stderr)
    acc = accounting.collect(store, "hb-1", runs.view(store, "hb-1"))
    (w,) = [x for x in acc["workers"] if x["name"] == "w"]
    assert w["slots"] == records.MAX_SLOTS and w["idle_s"] <= records.MAX_SLOTS * acc["window"]["seconds"]

    # liveness reads a raw heartbeat the same way, whatever it holds
    now = time.time()
    for hb in (
        {"polled_at": "x", "started_at": "y"},
        {"polled_at": None, "started_at": math.nan},
        {"polled_at": 1.0, "holding": 10**400, "concurrency": 1.5},
        {"polled_at": [], "started_at": 10**400},
    ):
        assert liveness.stuck_since(hb, now) in (None, 1.0), hb
    assert liveness.stuck_since({"polled_at": None, "started_at": now - 60}, now) == now - 60


def test_execution_intervals_are_clipped_to_the_run_and_malformed_entries_skipped() -> None:
    """Busy time counts only what lies in the run's window: a forged or far-off start or finish
    (of a result or of any entry of its `reruns`) never adds more; malformed entries are skipped."""
    now = time.time()
    start = now - 100
    meta = {
        "run_id": "x",
        "started_at": start,
        "deadline": start + 1000,
        "finished_at": None,
        # a name that is no string, an entry that is no object: skipped, never a crash
        "workers_at_submit": [{"name": ["x"]}, 5, {"name": "w", "concurrency": 10**12, "devices": 5}],
    }
    res = [
        {"job_id": "a@cpu", "status": "REAL", "worker": "w", "device": "cpu", "started_at": 86400.0},  # 1970
        {
            "job_id": "b@cpu",
            "status": "REAL",
            "worker": "w",
            "device": "cpu",
            "started_at": start + 10,
            "finished_at": start + 11,
            "reruns": [5, "x", None, {"worker": "w", "started_at": -1e308, "finished_at": 1e308}, {"worker": 3}],
        },
    ]
    res[0]["finished_at"] = start + 20
    acc = accounting.account(meta, res, 2, False, now=now, prices={"cpu": 1.0})
    (w,) = acc["workers"]
    window = acc["window"]["seconds"]
    # 20 s of the 1970 job inside the window, 1 s of b, the forged rerun: the whole window
    assert w["busy_s"] == pytest.approx(20 + 1 + window, abs=1e-3)
    assert w["slots"] == 1024 and math.isfinite(acc["cost"]["held"])
    assert w["idle_s"] == pytest.approx(1024 * window - w["busy_s"], abs=1e-2)


def test_ledger_counts_are_non_negative_and_results_floor_finished(redis_url: str) -> None:
    """A forged counter never names a worker with final results a black hole: the results it
    wrote are the floor of `finished`; a negative count is no count."""
    store, r = ResultStore(redis_url), raw_redis(redis_url)
    r.hset(
        keys.run("neg", "ledger"), mapping={"a\treceived": 1, "b\tfinished": -3, "b\treceived": "-7", "c\tdied": "2x"}
    )
    assert store.ledger.run_counts("neg") == {"a": {"received": 1, "finished": 0, "died": 0}}

    now = time.time()
    start = now - 100
    meta = {"started_at": start, "deadline": start + 50, "finished_at": now - 1}
    res = [
        {"job_id": f"j{i}@cpu", "status": "REAL", "worker": "honest", "device": "cpu"}
        | {"started_at": start + i, "finished_at": start + i + 1}
        for i in range(3)
    ]
    res.append({"job_id": "k@cpu", "status": "LOST", "worker": None, "device": "cpu", "error": {"kind": "worker_lost"}})
    forged = {"honest": {"received": 12, "finished": 0, "died": 0}, "sink": {"received": 1, "finished": 5, "died": 0}}
    acc = accounting.account(meta, res, 4, True, ledger=forged, holders={"k@cpu": "honest"}, now=now)
    honest = next(w for w in acc["workers"] if w["name"] == "honest")
    assert honest["finished"] == 3 and honest["results"] == 3
    assert [b["worker"] for b in acc["black_holes"]] == []

    corrupt = [
        {
            "job_id": f"c{i}@cpu",
            "status": "FAILED",
            "worker": None,
            "device": "cpu",
            "error": {"kind": "corrupt_record"},
        }
        for i in range(3)
    ]
    one = accounting.account(meta, corrupt[:1], 1, True, now=now)
    assert "(1 corrupt record)" in str(accounting.headline(one))
    three = accounting.account(meta, corrupt, 3, True, now=now)
    assert "(3 corrupt records)" in str(accounting.headline(three))
