"""Fixtures: real redis-server processes, real Celery worker processes, a local Hub stand-in,
and a hermetic HF cache per test. Nothing stands in for Redis or Celery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from fleet.launcher import command_line
from orchestrator.redis_server import RedisServer
from tests.fakehub import FakeHub
from tests.plugins import faulty

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = "tests.plugins.faulty"
os.environ["FLEET_PLUGINS"] = PLUGINS  # orchestrator processes and in-process run_job() see the faulty checks
faulty.register()  # ... and so does get_check() in this process


@pytest.fixture(scope="session", autouse=True)
def fleet_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One GGUF conversion cache for the session (workers inherit it): converting SmolLM2 takes
    15-25 s, reusing it well under a second. A FLEET_CACHE_DIR set outside is kept."""
    if not os.environ.get("FLEET_CACHE_DIR"):
        os.environ["FLEET_CACHE_DIR"] = str(tmp_path_factory.mktemp("fleet-cache"))
    return Path(os.environ["FLEET_CACHE_DIR"])


@pytest.fixture(autouse=True)
def in_process_paths(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Code run in this process (run_job, resolve) may read the tests' temporary folders, as a
    worker started with --allow-path for them would. Worker and CLI processes never inherit
    it (worker_env, orchestrator): their policy is what each test gives them."""
    monkeypatch.setenv("FLEET_ALLOW_PATHS", str(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield redis_server.url
    client.flushall()
    client.close()


@pytest.fixture(autouse=True)
def digest_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fleet_cache: Path) -> Path:
    """Each test hashes into its own digest cache (workers inherit it through the environment),
    while GGUF conversions are shared by the session (converted/ links to the session's)."""
    path = tmp_path / "fleet-cache"
    (fleet_cache / "converted").mkdir(parents=True, exist_ok=True)
    path.mkdir()
    (path / "converted").symlink_to(fleet_cache / "converted", target_is_directory=True)
    monkeypatch.setenv("FLEET_CACHE_DIR", str(path))
    return path


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    hub = FakeHub()
    url = hub.start()
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield hub
    hub.stop()


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


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(
        redis_url: str,
        name: str = "w1",
        devices: str = "cpu",
        concurrency: int = 1,
        wait: bool = True,
        args: tuple[str, ...] = (),
        **env: str,
    ) -> Worker:
        hf = Path(env.pop("HF_HOME", str(tmp_path / "hf")))
        log = tmp_path / f"worker-{name}.log"
        cmd = command_line(redis_url, devices, name, concurrency, "--loglevel", "INFO", *args)
        proc = subprocess.Popen(
            cmd,
            env=worker_env(redis_url, hf, **env),
            cwd=ROOT,
            start_new_session=True,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        w = Worker(proc, name, log)
        started.append(w)
        if wait:
            wait_for_worker(redis_url, name, w)
        return w

    yield start
    for w in started:
        w.stop()


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
