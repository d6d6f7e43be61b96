"""The embedded fleet: a private Redis and this host's workers, for one machine with
nothing configured. Everything started here is stopped on exit, Ctrl-C included.

The Redis is private: bound to 127.0.0.1, a new random password each start (kept in a 0600
file, never on a command line), its data in a 0700 state directory. One embedded run per
state directory at a time (a lock file); a redis-server an earlier, killed run left behind on
the data directory is stopped before a new one starts, and the queued jobs of earlier
unfinished runs are dropped (those runs are finalised: their missing jobs end LOST).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from fleet.devices import QUEUES
from fleet.errors import ServiceError
from fleet.launcher import command_line, plan
from fleet.store import ResultStore
from orchestrator import runs
from orchestrator.redis_server import RedisServer

ABANDONED = "the embedded run that submitted it ended before it finished"


@contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done (a second Ctrl-C cannot cut a shutdown
    short); a signal that arrived meanwhile is delivered at the end."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class EmbeddedFleet:
    def __init__(
        self,
        state: Path,
        worker_devices: str,
        worker_timeout_s: float = 180.0,
        worker_flags: list[str] | None = None,
    ) -> None:
        self.state = state
        self.worker_devices = worker_devices
        self.worker_timeout_s = worker_timeout_s
        self.worker_flags = worker_flags or []  # only the trust flags the user gave
        self.redis = RedisServer(state / "redis", password=secrets.token_urlsafe(24))
        self.launcher: subprocess.Popen[bytes] | None = None
        self.log_path = state / "logs" / f"workers-{os.getpid()}.log"
        self._log: IO[bytes] | None = None
        self._lock: IO[bytes] | None = None

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

    def _take_lock(self) -> None:
        self.state.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = (self.state / "embedded.lock").open("ab")
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ServiceError(
                f"another `orchestrator run` is using {self.state}; wait for it or use --state-dir"
            ) from None

    def start(self) -> None:
        self._take_lock()
        with signals_held():
            self.redis.stop_orphan()  # left by an earlier run that was killed: never a second server
            self.redis.start()
        self.purge_earlier_runs()
        self.log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        cmd = command_line(None, self.worker_devices, f"embedded-{os.getpid()}", None, *self.worker_flags)
        env = dict(os.environ, FLEET_REDIS_URL=self.url)  # the password stays off every command line
        with signals_held():
            self.launcher = subprocess.Popen(
                cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )
        self._wait_for_workers()

    def purge_earlier_runs(self) -> None:
        """No worker is up yet: every queued message belongs to an earlier run. Drop them and
        finalise those runs, so that the new run never waits behind stale jobs."""
        store = ResultStore(self.url)
        store.transport.clear_queues(QUEUES)
        for run_id in store.unfinished_run_ids():
            runs.abandon(store, run_id, ABANDONED)

    def _wait_for_workers(self) -> None:
        store = ResultStore(self.url)
        expected = len(plan(self.worker_devices, None))  # one worker per device, as the launcher plans them
        deadline = time.monotonic() + self.worker_timeout_s
        while time.monotonic() < deadline:
            if self.launcher is not None and self.launcher.poll() is not None:
                raise ServiceError(
                    f"the workers exited with code {self.launcher.returncode}; see {self.log_path}:\n{self._tail()}"
                )
            if len(store.registry.live_workers()) >= expected:
                return
            time.sleep(0.25)
        raise ServiceError(f"workers did not come up within {self.worker_timeout_s:.0f} s; see {self.log_path}")

    def _tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        with signals_held():
            self._stop_workers()
            self.redis.stop()
            if self._log is not None:
                self._log.close()
                self._log = None
            if self._lock is not None:
                self._lock.close()  # releases the lock
                self._lock = None

    def _stop_workers(self) -> None:
        if self.launcher is None:
            return
        pgid = self.launcher.pid
        if self.launcher.poll() is None:
            try:
                os.killpg(pgid, signal.SIGTERM)
                self.launcher.wait(30)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        try:
            os.killpg(pgid, signal.SIGKILL)  # anything left of the group (pool children)
        except ProcessLookupError:
            pass
        try:
            self.launcher.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.launcher = None
