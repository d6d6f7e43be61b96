"""Shared pieces of the benchmarks: a private Redis, real worker processes, JSON output."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from fleet.catalog import Catalog, Family
from fleet.launcher import command_line
from fleet.store import ResultStore
from orchestrator.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("BENCH_RESULTS") or ROOT / "bench" / "results")


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }


def save(name: str, figures: dict[str, Any], command: str | None = None) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    command = command or "python -m bench." + name + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    data = {"benchmark": name, "command": command, "machine": machine(), **figures}
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(data, indent=2))
    return path


def catalog(check: str, names: list[str], synthetic: str = "empty", repeats: int = 1) -> Catalog:
    fams = {
        n: Family(name=n, check=check, architectures=("Linear",), synthetic=synthetic, repeats=repeats) for n in names
    }
    return Catalog("bench", fams)


class Workers:
    """`fleet-worker` processes for the benchmark, each in its own process group."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.url, self.tmp = url, tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self,
        name: str,
        concurrency: int = 1,
        wait: bool = True,
        devices: str = "cpu",
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        full = dict(os.environ)
        full.update(
            FLEET_REDIS_URL=self.url,
            FLEET_PLUGINS="bench.plugin",
            HF_HOME=str(self.tmp / "hf"),
            HF_HUB_OFFLINE="1",
            PYTHONPATH=str(ROOT),
            OMP_NUM_THREADS="1",
        )
        full.update(env or {})
        cmd = command_line(self.url, devices, name, concurrency, "--loglevel", "WARNING")
        log = (self.tmp / f"worker-{name}.log").open("ab")
        proc = subprocess.Popen(cmd, env=full, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        if wait:
            self.wait_registered(name)
        return proc

    def wait_registered(self, name: str, timeout: float = 120) -> None:
        registry = ResultStore(self.url).registry
        deadline = time.monotonic() + timeout
        while not any(w.endswith(f"@{name}") for w in registry.worker_names()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {name} did not register")
            time.sleep(0.2)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)

    def stop_all(self) -> None:
        for name in list(self.procs):
            proc = self.procs[name]
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            self.kill(name)


def redis_server(tmp: Path) -> RedisServer:
    return RedisServer(tmp / "redis").start()


@contextmanager
def private_fleet(name: str) -> Iterator[tuple[RedisServer, Workers]]:
    """A private Redis and a (so far empty) set of workers, both stopped on exit."""
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    server = redis_server(tmp)
    workers = Workers(server.url, tmp)
    try:
        yield server, workers
    finally:
        workers.stop_all()
        server.stop()
