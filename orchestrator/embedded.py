"""The embedded fleet: a private Redis and this host's workers, for one machine with
nothing configured. Everything started here is stopped on exit, Ctrl-C included."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import IO

from fleet.errors import ServiceError
from fleet.launcher import command_line, plan
from fleet.store import ResultStore
from orchestrator.redis_server import RedisServer


class EmbeddedFleet:
    def __init__(self, state: Path, worker_devices: str, worker_timeout_s: float = 180.0) -> None:
        self.state = state
        self.worker_devices = worker_devices
        self.worker_timeout_s = worker_timeout_s
        self.redis = RedisServer(state / "redis")
        self.launcher: subprocess.Popen[bytes] | None = None
        self.log_path = state / "logs" / f"workers-{os.getpid()}.log"
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return self.redis.url

    def __enter__(self) -> EmbeddedFleet:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.redis.start()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        cmd = command_line(self.url, self.worker_devices, f"embedded-{os.getpid()}")
        self.launcher = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_for_workers()

    def _wait_for_workers(self) -> None:
        store = ResultStore(self.url)
        expected = len(plan(self.worker_devices, None))  # one worker per device, as the launcher plans them
        deadline = time.monotonic() + self.worker_timeout_s
        while time.monotonic() < deadline:
            if self.launcher is not None and self.launcher.poll() is not None:
                raise ServiceError(
                    f"the workers exited with code {self.launcher.returncode}; see {self.log_path}:\n{self._tail()}"
                )
            if len(store.live_workers()) >= expected:
                return
            time.sleep(0.25)
        raise ServiceError(f"workers did not come up within {self.worker_timeout_s:.0f} s; see {self.log_path}")

    def _tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.launcher is not None and self.launcher.poll() is None:
            pgid = self.launcher.pid
            try:
                os.killpg(pgid, signal.SIGTERM)
                self.launcher.wait(30)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
            try:
                os.killpg(pgid, signal.SIGKILL)  # anything left of the group (pool children)
            except ProcessLookupError:
                pass
            self.launcher.wait(10)
        elif self.launcher is not None:
            try:
                os.killpg(self.launcher.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.launcher = None
        self.redis.stop()
        if self._log is not None:
            self._log.close()
            self._log = None
