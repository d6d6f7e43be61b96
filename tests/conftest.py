"""Fixtures: real redis-server processes, real Celery worker processes, a local Hub stand-in,
and a hermetic HF cache per test. Nothing stands in for Redis or Celery."""

from __future__ import annotations

import os
import subprocess
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from fleet.launcher import command_line
from orchestrator.redis_server import RedisServer
from tests.fakehub import FakeHub
from tests.helpers import PLUGINS, ROOT, Worker, wait_for_worker, worker_env
from tests.plugins import faulty

os.environ["FLEET_PLUGINS"] = PLUGINS  # orchestrator processes and in-process run_job() see the faulty checks
faulty.register()  # ... and so does get_check() in this process


# Fixtures that start a server or a worker process: a test using any of them (directly or through
# another fixture) is marked `service`. Tests that start one without these fixtures (an embedded
# `orchestrator run`, a RedisServer of their own, the benchmarks) carry the marker by hand.
SERVICE_FIXTURES = frozenset({"redis_server", "redis_url", "start_worker", "fake_hub"})


def _runs_models(module: Any) -> bool:
    """A test module that builds or loads transformers models in its own process: it imports
    torch, transformers, the workers' code or the test models (tests/models.py)."""
    names = {getattr(v, "__name__", "") for v in vars(module).values() if isinstance(v, types.ModuleType)}
    names |= {getattr(v, "__module__", "") or "" for v in vars(module).values() if callable(v)}
    return any(n.split(".")[0] in ("torch", "transformers", "workers") or n == "tests.models" for n in names)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The layers: `service` (starts redis-server, workers, the Hub stand-in), `model` (runs
    transformers models in the test's own process); `-m "not service and not model"` is the
    pure-logic layer."""
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.service)
        module = getattr(item, "module", None)
        if module is not None and _runs_models(module):
            item.add_marker(pytest.mark.model)


@pytest.fixture(scope="session", autouse=True)
def fleet_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One GGUF conversion cache for the session (workers inherit it): converting SmolLM2 takes
    15-25 s, reusing it well under a second. A FLEET_CACHE_DIR set outside is kept (with
    $FLEET_HOST_KEY or the default host key that signed it); otherwise the session's cache is
    signed with a host key of its own, outside the cache folder (workers.hostkey)."""
    if not os.environ.get("FLEET_HOME"):  # compiled templates and state: never the user's own folder
        os.environ["FLEET_HOME"] = str(tmp_path_factory.mktemp("fleet-home"))
    if not os.environ.get("FLEET_CACHE_DIR"):
        os.environ["FLEET_CACHE_DIR"] = str(tmp_path_factory.mktemp("fleet-cache"))
        if not os.environ.get("FLEET_HOST_KEY"):
            os.environ["FLEET_HOST_KEY"] = str(tmp_path_factory.mktemp("host-key") / "host.key")
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
    # The stand-in plays the official Hub: workers take its answers as a witness of identity
    # (a test of a mirror removes this; workers/identity.py).
    monkeypatch.setenv("FLEET_TRUSTED_ENDPOINTS", url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield hub
    hub.stop()


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
