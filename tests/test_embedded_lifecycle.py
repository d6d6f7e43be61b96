"""The embedded run's children: a clean signal mask, a handled SIGTERM (Redis logs a real
shutdown, each worker removes its heartbeat), tied to the orchestrator (SIGKILL of it leaves
nothing), and a later run stops whatever an earlier one left behind. Real processes only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import redis

from fleet.store import ResultStore, keys
from orchestrator.embedded import RECORD, EmbeddedFleet, _temp_dirs, leftovers
from orchestrator.redis_server import RedisServer
from tests.helpers import ROOT

pytestmark = pytest.mark.service  # embedded runs: their own Redis and workers

BLOCKABLE = (signal.SIGINT, signal.SIGTERM)


def _sigblk(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no SigBlk for {pid}")


def _env(tmp_path: Path) -> dict[str, str]:
    return {"FLEET_HOME": str(tmp_path / "state"), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}


def _wait_for(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _workers_in_aof(state: Path) -> list[dict[str, object]]:
    """The heartbeats the stopped Redis kept (its AOF), read by starting it again without a password."""
    server = RedisServer(state / "redis").start()
    try:
        return ResultStore(server.url).registry.live_workers()
    finally:
        server.stop()


def test_children_start_unmasked_and_stop_on_a_handled_sigterm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in _env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    state = tmp_path / "state"
    with EmbeddedFleet(state, "cpu") as fleet:  # spawns while SIGINT/SIGTERM are held here
        assert fleet.redis.proc is not None and fleet.launcher is not None
        launcher = psutil.Process(fleet.launcher.pid)
        (celery,) = launcher.children()
        _wait_for(lambda: bool(celery.children()), 30, "the pool child")
        procs = {
            "redis-server": fleet.redis.proc.pid,
            "launcher": launcher.pid,
            "celery main": celery.pid,
            "pool child": celery.children()[0].pid,
        }
        assert "redis" in psutil.Process(procs["redis-server"]).name()
        assert "workers.app" in " ".join(celery.cmdline())
        for what, pid in procs.items():
            assert _sigblk(pid) & ((1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1))) == 0, what
            assert _sigblk(pid) == 0, what
        record = json.loads((state / RECORD).read_text())
        assert {c["pid"] for c in record["children"]} == {procs["redis-server"], procs["launcher"]}
        alive = ResultStore(fleet.url).registry.live_workers()
        assert [w["name"] for w in alive] == [f"cpu@{fleet.name}"]
        launcher_proc = fleet.launcher
        t0 = time.monotonic()
    stop_s = time.monotonic() - t0
    assert launcher_proc.returncode == 0  # stopped by its own SIGTERM handler, not killed
    assert stop_s < 10, f"stopping took {stop_s:.1f} s"
    log = (state / "redis" / "redis.log").read_text()
    assert "ready to exit" in log  # a real shutdown, not a SIGKILL
    assert "Warm shutdown" in fleet.log_path.read_text()
    assert not (state / RECORD).exists()
    assert not [p for p in procs.values() if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert _workers_in_aof(state) == []  # the worker removed its heartbeat on stop


def _worker_procs(fleet: EmbeddedFleet) -> list[psutil.Process]:
    """The launcher, its Celery worker and the worker's pool child, once all are up."""
    assert fleet.launcher is not None
    launcher = psutil.Process(fleet.launcher.pid)
    (celery,) = launcher.children()
    _wait_for(lambda: bool(celery.children()), 30, "the pool child")
    return [launcher, celery, *celery.children()]


def _dead(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_finish_stops_idle_workers_at_once_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every message answered: finish() stops the workers without their warm shutdown (1.5 s of
    fixed sleeps in Celery's pool stop), removes their heartbeats and billiard's temp directory
    itself; Redis still shuts down cleanly and keeps no worker."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    state = tmp_path / "state"
    with EmbeddedFleet(state, "cpu") as fleet:
        procs = _worker_procs(fleet)
        temp = _temp_dirs(procs)
        assert temp and all(p.is_dir() and p.name.startswith("pymp-") for p in temp)  # what a kill would leave
        store = ResultStore(fleet.url)
        assert [w["name"] for w in store.registry.live_workers()] == [f"cpu@{fleet.name}"]
        assert fleet.finish() is True
        assert fleet.launcher is None
        assert all(_dead(p) for p in procs), [p.pid for p in procs if not _dead(p)]
        assert store.registry.live_workers() == []  # removed by finish, after the workers were gone
        assert not [p for p in temp if p.exists()]
        assert fleet.redis.proc is not None and fleet.redis.proc.poll() is None  # Redis stops in stop()
    assert "ready to exit" in (state / "redis" / "redis.log").read_text()
    assert "Warm shutdown" not in fleet.log_path.read_text()
    assert not (state / RECORD).exists()
    assert _workers_in_aof(state) == []


def test_finish_with_a_message_still_held_stops_the_workers_warm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message still unacknowledged (a worker may be running it): finish() does not kill the
    workers; after ACKED_WAIT_S it begins their warm shutdown, which stop() waits for."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    state = tmp_path / "state"
    with EmbeddedFleet(state, "cpu") as fleet:
        procs = _worker_procs(fleet)
        redis.Redis.from_url(fleet.url).hset(keys.UNACKED, "held-tag", '[{"body": ""}, "", "cpu"]')
        assert fleet.finish() is False
        assert fleet.launcher is not None  # released, not killed: stop() waits for its warm shutdown
    assert fleet.log_path.read_text().count("Warm shutdown") == 1
    assert all(_dead(p) for p in procs)
    assert "ready to exit" in (state / "redis" / "redis.log").read_text()
    assert _workers_in_aof(state) == []  # the worker removed its own heartbeat


def test_a_restarted_embedded_redis_shows_no_worker_of_an_earlier_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A heartbeat an earlier run left in the AOF (its worker was killed, so never removed it)
    with a TTL still running: the next embedded start drops it before its own worker comes up."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    state = tmp_path / "state"
    earlier = RedisServer(state / "redis").start()
    try:
        ResultStore(earlier.url).registry.heartbeat("cpu@embedded-1", {"name": "cpu@embedded-1"}, ttl=3600)
    finally:
        earlier.stop()  # a real shutdown: the heartbeat is in the AOF
    assert [w["name"] for w in _workers_in_aof(state)] == ["cpu@embedded-1"]
    with EmbeddedFleet(state, "cpu") as fleet:
        store = ResultStore(fleet.url)
        assert [w["name"] for w in store.registry.live_workers()] == [f"cpu@{fleet.name}"]
        assert store.registry.worker_names() == [f"cpu@{fleet.name}"]
    assert _workers_in_aof(state) == []


def _children_up(proc: subprocess.Popen[str]) -> list[psutil.Process]:
    """redis-server, launcher, Celery main and its pool child of an `orchestrator run`."""
    me = psutil.Process(proc.pid)
    found: list[psutil.Process] = []

    def up() -> bool:
        found[:] = me.children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in found if p.is_running())
        return len(found) >= 4 and "redis" in names and "workers.app" in names

    _wait_for(up, 240, "redis-server, launcher, worker and pool child")
    return found


def _start_run(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **_env(tmp_path))
    env.pop("FLEET_ALLOW_PATHS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_of_the_orchestrator_leaves_nothing_running(tmp_path: Path) -> None:
    proc = _start_run(tmp_path, "--all")
    children = _children_up(proc)
    proc.kill()
    proc.communicate(timeout=30)
    _gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [p.cmdline() for p in alive]
    assert leftovers(tmp_path / "state") == []


def test_a_new_run_stops_the_leftovers_of_an_old_one(tmp_path: Path) -> None:
    state = tmp_path / "state"
    old = _start_run(tmp_path, "--all")
    children = _children_up(old)
    record = json.loads((state / RECORD).read_text())
    for child in record["children"]:  # frozen: the SIGTERM of the orchestrator's death stays pending
        os.killpg(child["pid"], signal.SIGSTOP)
    old.kill()
    old.communicate(timeout=30)
    time.sleep(1)
    assert all(p.is_running() for p in children)  # what an old run left behind
    assert {p.pid for p in leftovers(state)} == {p.pid for p in children}
    res = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", "--family", "t5", "--repeats", "1"],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if k != "FLEET_ALLOW_PATHS"},
            "PYTHONPATH": str(ROOT),
            **_env(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, [p.cmdline() for p in alive]
    assert leftovers(state) == [] and not (state / RECORD).exists()
    report = json.loads(next(Path(p) for p in res.stdout.split() if p.endswith(".json")).read_text())
    assert [r["status"] for r in report["results"]] == ["SYNTHETIC"]


def test_a_record_naming_someone_elses_process_is_left_alone(tmp_path: Path) -> None:
    """A recorded pid now used by another process (another start time, or not our command)."""
    state = tmp_path / "state"
    state.mkdir()
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        started = psutil.Process(other.pid).create_time()
        for when in (started - 100, started):  # pid reused / same start but not one of ours
            (state / RECORD).write_text(
                json.dumps({"children": [{"role": "workers", "pid": other.pid, "started": when}]})
            )
            assert leftovers(state) == []
        (state / RECORD).write_text("not json")
        assert leftovers(state) == []
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_run_whose_workers_die_ends_now_with_the_rest_lost(tmp_path: Path) -> None:
    """Rule: an embedded run waits only while something can answer it. Its workers all gone
    (here the Celery main process killed with SIGKILL mid-run: the launcher then stops and
    exits), the jobs without a result end LOST at once, with the reason, exit 5, nothing left
    running; before, the run waited at 0/N until its deadline (an hour)."""
    classes = "BertModel,GPT2Model,T5Model,BartModel,RobertaModel,DistilBertModel,AlbertModel,ElectraModel"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    err = tmp_path / "err"
    state = ["--state-dir", str(tmp_path / "state")]
    with err.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "run", "--architectures", classes, "--concurrency", "1", *state],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=fh,
        )
    try:
        deadline = time.monotonic() + 180
        while "job(s)" not in err.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        mains = [
            c
            for c in psutil.Process(proc.pid).children(recursive=True)
            if "celery" in " ".join(c.cmdline()) and "celery" not in " ".join(c.parent().cmdline())
        ]
        assert mains, err.read_text()
        mains[0].kill()
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = err.read_text()
    assert code == 5, text
    assert "the embedded workers exited" in text and "LOST=" in text, text
    # the launcher fails with the killed worker's code (128 + SIGKILL), as a supervisor must see it
    # (it exited 0: a Kubernetes restartPolicy OnFailure or systemd's Restart=on-failure would not restart it)
    assert "the embedded workers exited (code 137)" in text, text
    assert "Traceback" not in text
    assert not (tmp_path / "state" / RECORD).exists()
