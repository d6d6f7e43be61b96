"""Helpers the tests share that are not fixtures: the environment a worker or CLI process gets,
a handle on a real fleet-worker process group, waiting for a worker to register, running the
`orchestrator` command, and writing a catalog file from plain data. Fixtures are in conftest.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import redis

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = "tests.plugins.faulty"


def worker_env(redis_url: str, hf_home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("FLEET_ALLOW_PATHS", None)  # a worker's trust policy comes from its own flags (args=...)
    env.update(
        FLEET_REDIS_URL=redis_url,
        FLEET_PLUGINS=PLUGINS,
        HF_HOME=str(hf_home),
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
    )
    env.update(extra)
    return env


class Worker:
    """A real fleet-worker process group (launcher, Celery main process, pool children)."""

    def __init__(self, proc: subprocess.Popen[bytes], name: str, log: Path) -> None:
        self.proc, self.name, self.log = proc, name, log

    def celery_main(self) -> psutil.Process:
        for child in psutil.Process(self.proc.pid).children(recursive=False):
            return child
        raise RuntimeError("no celery process")

    def pool_children(self) -> list[psutil.Process]:
        return self.celery_main().children(recursive=False)

    def kill_all(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        self.kill_all()


def raw_redis(url: str) -> redis.Redis:
    """A bare client, for a test that inspects or corrupts Redis state on purpose (key names:
    fleet.store.keys). Everything else goes through fleet.store."""
    return redis.Redis.from_url(url, decode_responses=True)


def wait_for_worker(redis_url: str, name: str, w: Worker, timeout: float = 90) -> None:
    from fleet.store import ResultStore

    registry = ResultStore(redis_url, redis_ca=os.environ.get("FLEET_REDIS_CA")).registry
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if w.proc.poll() is not None:
            raise RuntimeError(f"worker exited: {w.log.read_text()[-3000:]}")
        if any(name in k for k in registry.worker_names()):
            return
        time.sleep(0.2)
    raise TimeoutError(f"worker {name} did not come up: {w.log.read_text()[-3000:]}")


def orchestrator(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.pop("FLEET_ALLOW_PATHS", None)  # the CLI and the workers it starts: only what a test gives
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=timeout,
    )


def write_catalog(path: Path, families: dict[str, dict[str, Any]]) -> Path:
    """A catalog file from plain data (TOML written by hand: the subset we need)."""
    lines = []
    for name, spec in families.items():
        lines.append(f"[families.{name}]")
        for key, value in spec.items():
            if key == "candidates":
                continue
            lines.append(f"{key} = {json.dumps(value)}")
        for cand in spec.get("candidates", []):
            lines.append(f"[[families.{name}.candidates]]")
            lines.extend(f"{k} = {json.dumps(v)}" for k, v in cand.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path
