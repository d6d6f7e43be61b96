"""Issue 15, finding by finding: each test reproduces what an operator did, against a real
redis-server, real fleet-worker processes and the real `orchestrator` command."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import redis

from fleet.broker import make_app
from fleet.catalog import Candidate, Catalog
from fleet.protocol import base_result
from fleet.settings import RunSettings
from fleet.store import ResultStore, keys
from fleet.timing import DEFAULT_VISIBILITY_S, hard_time_limit
from orchestrator.embedded import ABANDONED
from orchestrator.redis_server import RedisServer
from orchestrator.runs import wait
from orchestrator.submit import plan_jobs, submit
from tests.helpers import ROOT, orchestrator, raw_redis, write_catalog
from tests.models import family, save_tiny
from tests.test_faults import catalog_of, started, wait_until


def _one_line_error(res: subprocess.CompletedProcess[str], code: int = 2) -> None:
    assert res.returncode == code, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "error:" in res.stderr


# -- 1. a job message cannot make a worker run code, read paths or unpickle --------------------
def test_message_cannot_run_repo_code_or_read_paths(redis_url: str, start_worker, tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    model = save_tiny("llama", tmp_path / "evil", architecture="CustomLM")
    cfg = json.loads((model / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomLM"}
    (model / "config.json").write_text(json.dumps(cfg))
    (model / "modeling_custom.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    fam = family(
        "llama",
        name="evil",
        candidates=(Candidate(path=str(model), trust_remote_code=True), Candidate(path=str(model))),
    )
    fam = type(fam)(**{**fam.__dict__, "architectures": ("CustomLM", "LlamaForCausalLM")})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    start_worker(redis_url, args=("--allow-path", str(elsewhere)))  # allows a folder, not this one
    store = ResultStore(redis_url)
    run_id = submit(store, make_app(redis_url), Catalog("t", {"evil": fam}), None, ["cpu"], RunSettings(repeats=1))
    assert wait(store, run_id) == {"SYNTHETIC": 1}
    (result,) = store.results(run_id)
    first, second = result["attempts"][:2]
    assert first["error_kind"] == second["error_kind"] == "not_allowed"
    assert "--trust-remote-code" in first["detail"] and "--allow-path" in second["detail"]
    assert not marker.exists()


@pytest.mark.service
def test_embedded_redis_is_private(tmp_path: Path) -> None:
    from orchestrator.embedded import EmbeddedFleet

    fleet = EmbeddedFleet(tmp_path / "state", "cpu")
    fleet.redis.start()  # the Redis part only: no workers needed to see who may connect
    try:
        port = fleet.redis.port
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        assert redis.Redis.from_url(fleet.url).ping()
        proc = psutil.Process(fleet.redis.running_pid() or 0)
        assert fleet.redis.password not in " ".join(proc.cmdline())  # not on a command line
        assert all(c.laddr.ip == "127.0.0.1" for c in proc.net_connections() if c.status == "LISTEN")
        assert stat.S_IMODE((tmp_path / "state" / "redis").stat().st_mode) == 0o700
        assert stat.S_IMODE((tmp_path / "state" / "redis" / "redis.conf").stat().st_mode) == 0o600
    finally:
        fleet.redis.stop()


# -- 2. Ctrl-C during shutdown, and a server left behind ----------------------------------------
def _redis_on(data_dir: Path) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["name"]):
        try:
            if "redis" in (p.info["name"] or "") and Path(p.cwd()) == data_dir:
                out.append(p)
        except psutil.Error:
            continue
    return out


@pytest.mark.service
def test_repeated_ctrl_c_and_an_orphan_server_leave_no_redis_behind(tmp_path: Path) -> None:
    state = tmp_path / "state"
    # A redis-server left behind by a run that was killed: its parent is gone (re-parented to init).
    start = f"from orchestrator.redis_server import RedisServer; RedisServer({str(state / 'redis')!r}).start()"
    subprocess.run([sys.executable, "-c", start], check=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    (orphan,) = _redis_on(state / "redis")
    env = dict(os.environ, PYTHONPATH=str(ROOT), FLEET_HOME=str(state), HF_HOME=str(tmp_path / "hf"))
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", "--family", "t5", "--repeats", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: bool(list((state / "logs").glob("*.log"))), timeout=60, what="workers starting")
    assert not orphan.is_running()
    assert len(_redis_on(state / "redis")) == 1  # the orphan was stopped; never a second server
    # Ctrl-C, then more Ctrl-C while it shuts down: a burst, so that some land in the middle of
    # whatever the shutdown runs (a finalizer, an import, a socket close), then a slower tail
    for pause in [0.01] * 40 + [0.3] * 4:
        proc.send_signal(signal.SIGINT)
        time.sleep(pause)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    time.sleep(0.5)
    assert _redis_on(state / "redis") == []


_FINALIZER_SCRIPT = """
import os, signal, sys, time
from orchestrator.cli import install_interrupt_handlers

class Slow:
    def __del__(self):  # the Ctrl-C lands while the garbage collector runs this
        os.kill(os.getpid(), signal.SIGINT)
        end = time.monotonic() + 0.2
        while time.monotonic() < end:
            pass

install_interrupt_handlers()
try:
    Slow()
    time.sleep(5)
    print("not interrupted")
    sys.exit(1)
except KeyboardInterrupt:
    for _ in range(3):  # more Ctrl-C while it shuts down: dropped
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
    print("interrupted")
"""


def test_a_ctrl_c_inside_a_finalizer_still_interrupts_and_later_ones_are_dropped() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _FINALIZER_SCRIPT],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "interrupted"), done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


# -- 3. a killed worker's job is delivered again well before the deadline (default settings) -----
def test_killed_worker_job_redelivered_within_a_minute(redis_url: str, start_worker) -> None:
    w1 = start_worker(redis_url, name="w1", FLEET_TEST_SLOW_S="3")
    store = ResultStore(redis_url)
    run_id = submit(store, make_app(redis_url), catalog_of("slow"), None, ["cpu"], RunSettings(repeats=1))
    meta = store.meta(run_id)
    assert meta["deadline_s"] >= DEFAULT_VISIBILITY_S + hard_time_limit(600)  # derived, not 3600 < 3900
    wait_until(lambda: started(store, run_id, "slow@cpu"), what="job start")
    w1.kill_all()  # the whole worker: main process and pool; nobody acks or requeues
    t0 = time.monotonic()
    start_worker(redis_url, name="w2", FLEET_TEST_SLOW_S="3")
    wait_until(lambda: store.results(run_id), timeout=90, what="redelivery")
    assert time.monotonic() - t0 < 75  # not the 3900 s visibility timeout
    (result,) = store.results(run_id)
    assert result["status"] == "SYNTHETIC" and result["delivery"] == 2 and "w2" in result["worker"]


# -- 4. results are write-once after the run ends ----------------------------------------------
def test_late_result_never_overwrites_a_finished_run(redis_url: str, start_worker, tmp_path: Path) -> None:
    start_worker(redis_url, FLEET_TEST_SLOW_S="6")
    store = ResultStore(redis_url)
    run_id = submit(store, make_app(redis_url), catalog_of("slow"), None, ["cpu"], RunSettings(deadline_s=2))
    assert wait(store, run_id) == {"LOST": 1}
    wait_until(lambda: store.late_results(run_id), timeout=60, what="the late result")
    assert [r["status"] for r in store.results(run_id)] == ["LOST"]
    assert [r["status"] for r in store.late_results(run_id)] == ["SYNTHETIC"]
    res = orchestrator("report", run_id, "--redis-url", redis_url)
    assert res.returncode == 0, res.stderr
    assert "## Late attempts" in res.stdout and "SYNTHETIC" in res.stdout.split("## Late attempts")[1]


# -- 5. stale jobs of an interrupted embedded run are purged ------------------------------------
@pytest.mark.service
def test_stale_jobs_of_an_interrupted_run_are_purged(tmp_path: Path) -> None:
    state = tmp_path / "state"
    server = RedisServer(state / "redis").start()  # an earlier embedded run, interrupted: no worker ran
    store = ResultStore(server.url)
    stale = submit(store, make_app(server.url), catalog_of("slow", n=3), None, ["cpu"], RunSettings(repeats=1))
    assert len(store.transport.queued("cpu")) == 3
    server.stop()
    env = {"FLEET_HOME": str(state), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env["FLEET_TEST_SLOW_S"] = "30"  # running the stale jobs first would take 90 s
    t0 = time.monotonic()
    res = orchestrator("run", "--family", "t5", "--repeats", "1", env=env)
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - t0 < 85
    server = RedisServer(state / "redis").start()
    try:
        store = ResultStore(server.url)
        assert store.is_finished(stale)
        assert {r["status"] for r in store.results(stale)} == {"LOST"}
        assert all(ABANDONED in r["error"]["message"] for r in store.results(stale))
        assert not store.attempts(stale)  # never delivered
        assert store.transport.queued("cpu") == []
    finally:
        server.stop()


# -- 6. messages expire; devices nobody serves ------------------------------------------------
def test_queues_drain_at_the_deadline_and_wait_reports_unserved_devices(redis_url: str) -> None:
    res = orchestrator(
        "submit", "--family", "t5", "--devices", "cuda", "--deadline", "2", "--wait", "--redis-url", redis_url
    )
    assert res.returncode == 5, res.stderr
    assert "no worker served cuda" in res.stderr
    # expired at the deadline and dropped: KEDA scales to zero
    assert ResultStore(redis_url).transport.queued("gpu") == []
    (run_id,) = res.stdout.split()
    (result,) = ResultStore(redis_url).results(run_id)
    assert result["status"] == "SKIPPED" and result["error"]["kind"] == "no_worker"


def test_fleet_worker_refuses_a_gpu_that_is_not_visible(redis_url: str) -> None:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "fleet.launcher", "--devices", "cuda:0", "--redis-url", redis_url]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    _one_line_error(res)
    assert "cuda:0" in res.stderr and "not visible" in res.stderr


# -- 7. report --output writes regular files only ----------------------------------------------
def _stored_run(redis_url: str) -> str:
    store = ResultStore(redis_url)
    job = {"run_id": "r1", "job_id": "t5@cpu", "family": "t5", "device": "cpu", "queue": "cpu"}
    meta = {"run_id": "r1", "started_at": time.time(), "deadline": time.time() + 60, "deadline_s": 60}
    store.create_run(meta, [job])  # type: ignore[list-item]
    result = base_result(job)  # type: ignore[arg-type]
    result.update(status="SYNTHETIC", finished_at=time.time())
    store.put_result(result)
    return "r1"


def test_output_regular_files_only(redis_url: str, tmp_path: Path) -> None:
    run_id = _stored_run(redis_url)
    target = tmp_path / "target.md"
    target.write_text("keep me")
    link = tmp_path / "link.md"
    link.symlink_to(target)
    for path in (link, tmp_path, Path("/dev/null"), Path("/proc/self/x.md")):
        _one_line_error(orchestrator("report", run_id, "--redis-url", redis_url, "--output", str(path)))
    assert target.read_text() == "keep me" and link.is_symlink()
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    res = orchestrator("report", run_id, "--redis-url", redis_url, "--output", str(link), "--force")
    assert res.returncode == 0, res.stderr
    assert not link.is_symlink() and target.read_text() == "keep me"  # the link replaced, not followed
    out = tmp_path / "new.md"
    cmd = f"umask 027 && {sys.executable} -m orchestrator report {run_id} --redis-url {redis_url} --output {out}"
    subprocess.run(["sh", "-c", cmd], check=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert stat.S_IMODE(out.stat().st_mode) == 0o640


# -- 8. one line and a documented exit code -----------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379/0",
        "not a url",
        "redis://127.0.0.1:99999/0",
        "redis://127.0.0.1:6379/abc",
        "redis://127.0.0.1:6379/0?socket_timeout=abc",
    ],
)
def test_bad_redis_urls_are_one_line_errors_and_leave_no_run(url: str, redis_url: str) -> None:
    _one_line_error(orchestrator("submit", "--family", "t5", "--redis-url", url))
    _one_line_error(orchestrator("status", "--redis-url", url))
    assert ResultStore(redis_url).run_ids() == []


def test_bad_paths_and_closed_output_are_one_line(redis_url: str, tmp_path: Path) -> None:
    _one_line_error(orchestrator("run", "--family", "t5", "--state-dir", "/proc/x"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    worker = [sys.executable, "-m", "fleet.launcher", "--redis-url", "not a url"]
    _one_line_error(subprocess.run(worker, capture_output=True, text=True, env=env, timeout=60))
    _stored_run(redis_url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "runs", "--redis-url", redis_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # `| head -0`: the reader is gone before anything is written
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and b"Traceback" not in err and b"BrokenPipe" not in err, err


# -- 9. finite numbers, size caps, descriptions out of messages ---------------------------------
@pytest.mark.parametrize(
    "option", [("--deadline", "nan"), ("--deadline", "inf"), ("--time-limit", "nan"), ("--time-limit", "1e9")]
)
def test_non_finite_options_refused(option: tuple[str, str], redis_url: str) -> None:
    _one_line_error(orchestrator("submit", "--family", "t5", "--redis-url", redis_url, *option))
    assert ResultStore(redis_url).run_ids() == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"time_limit_s": float("inf")}, "time_limit_s"),
        ({"candidates": [{"id": "a/b", "params_m": float("nan")}]}, "params_m"),
        ({"candidates": [{"id": "a/b", "params_m": -1}]}, "params_m"),
        ({"description": "x" * 5000}, "description"),
    ],
)
def test_catalog_values_checked(spec: dict, message: str, tmp_path: Path) -> None:
    base = {"check": "seq2seq", "architectures": ["T5ForConditionalGeneration"], "synthetic": "t5"}
    path = write_catalog(tmp_path / "c.toml", {"f": {**base, **spec}})
    text = path.read_text().replace("Infinity", "inf").replace("NaN", "nan")
    path.write_text(text)
    res = orchestrator("submit", "--all", "--catalog", str(path), "--redis-url", "redis://127.0.0.1:1/0")
    _one_line_error(res)
    assert message in res.stderr


def test_catalog_size_capped_and_descriptions_stay_out_of_jobs(tmp_path: Path) -> None:
    base = {"check": "seq2seq", "architectures": ["T5ForConditionalGeneration"], "synthetic": "t5"}
    big = {f"f{i}": {**base, "description": "d" * 1900} for i in range(600)}
    path = write_catalog(tmp_path / "big.toml", big)
    res = orchestrator("submit", "--all", "--catalog", str(path), "--redis-url", "redis://127.0.0.1:1/0")
    _one_line_error(res)
    assert "at most" in res.stderr
    from fleet.catalog import load_catalog

    small = write_catalog(tmp_path / "small.toml", {"f": {**base, "description": "d" * 1900}})
    (job,) = plan_jobs("r", load_catalog(small), None, ["cpu"], RunSettings())
    assert "description" not in job["family_spec"] and "d" * 100 not in json.dumps(job)


def test_worker_refuses_a_malformed_job_message(redis_url: str, start_worker) -> None:
    from fleet.broker import RUN_CHECK_TASK
    from fleet.catalog import load_catalog

    start_worker(redis_url)
    store, app = ResultStore(redis_url), make_app(redis_url)
    run_id = submit(store, app, load_catalog(), ["t5"], ["cpu"], RunSettings(repeats=1))
    wait(store, run_id)
    (job,) = plan_jobs(run_id, load_catalog(), ["t5"], ["cpu"], RunSettings(repeats=1))
    job["job_id"] = "t5@cpu-forged"
    job["time_limit_s"] = float("inf")  # JSON carries it as Infinity
    forger = raw_redis(redis_url)  # a forged job, as if written into the run by someone else
    forger.hset(keys.run(run_id, "jobs"), job["job_id"], json.dumps(job))
    forger.delete(keys.run(run_id, "finished"))
    app.send_task(RUN_CHECK_TASK, args=[job], queue="cpu")
    wait_until(lambda: len(store.results(run_id)) == 2, timeout=60, what="the refusal")
    forged = next(r for r in store.results(run_id) if r["job_id"] == "t5@cpu-forged")
    assert forged["status"] == "FAILED" and forged["error"]["kind"] == "bad_job"
    assert "time_limit_s" in forged["error"]["message"]
