"""The embedded fleet: a private Redis and this host's workers, for one machine with
nothing configured. Everything started here is stopped on exit, Ctrl-C included.

The Redis is private: bound to 127.0.0.1, a new random password each start (kept in a 0600
file, never on a command line), its data in a 0700 state directory. One embedded run per
state directory at a time (a lock file); the queued jobs of earlier unfinished runs are
dropped (those runs are finalised: their missing jobs end LOST), and so are the heartbeats of
earlier workers (a worker that was killed never shows as live to a later run).

The children are tied to this process: each starts with a clean signal mask (fleet.children:
spawned while SIGINT/SIGTERM are held here, unblocked in the child before exec), in its own
process group, and gets SIGTERM when this process dies, however it dies (SIGKILL included):
Redis shuts down, the launcher stops its workers. Stopping is a handled SIGTERM: Redis writes
its AOF and logs its shutdown, each worker removes its heartbeat. A run whose every result is in
and every message acknowledged stops its workers at once instead (finish): the warm stop has
nothing left to protect then but the heartbeats and billiard's temp directory, which finish
removes itself, and it would cost 1.5 s of fixed sleeps in Celery's and billiard's pool shutdown
plus the interpreters' teardown (BENCHMARKS.md, "Embedded run"). The pid, process group and
start time of each child are recorded in the state directory (children.json): a later run
stops whatever of an earlier one is still there (checked to be ours by process group, start
time and command line) before it starts anything.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import psutil

from fleet.children import tethered
from fleet.devices import QUEUES
from fleet.errors import BadInput, ServiceError
from fleet.launcher import command_line, plan
from fleet.store import ResultStore
from orchestrator import runs
from orchestrator.redis_server import RedisServer

ABANDONED = "the embedded run that submitted it ended before it finished"
RECORD = "children.json"  # in the state directory: what this run started (see stop_leftovers)
# A warm shutdown of idle workers takes about a second; a job still running (Ctrl-C mid-run,
# or this process died) is given WORKER_GRACE_S to end before the launcher kills its worker,
# and the process group is killed STOP_WORKERS_S after the SIGTERM whatever happened.
WORKER_GRACE_S = 5.0
STOP_WORKERS_S = 15.0
# finish(): how long the workers' last acknowledgements may take to land once every result is in
# (milliseconds, normally) before the warm stop is taken instead.
ACKED_WAIT_S = 2.0
POLL_S = 0.02  # waiting for the workers' first heartbeats, and for the last acknowledgements


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
        concurrency: int | None = None,
        wait: bool = True,
    ) -> None:
        self.state = state
        self.worker_devices = worker_devices
        self.worker_timeout_s = worker_timeout_s
        self.worker_flags = worker_flags or []  # only the trust flags the user gave
        self.concurrency = concurrency  # CPU pool processes (None: the launcher's default, cores / 2)
        self.redis = RedisServer(state / "redis", password=secrets.token_urlsafe(24), tether=True)
        self.launcher: subprocess.Popen[bytes] | None = None
        self.name = f"embedded-{os.getpid()}"  # the workers' name suffix: cpu@embedded-PID
        self.log_path = state / "logs" / f"workers-{os.getpid()}.log"
        self._log: IO[bytes] | None = None
        self._lock: IO[bytes] | None = None
        self._released: float | None = None  # when release_workers() sent the launcher SIGTERM
        # start() returns once every worker sent its heartbeat; with wait=False at once, and the
        # caller calls wait_for_workers() (the orchestrator prepares its submit meanwhile).
        self.wait = wait
        self.workers: set[str] = set()  # the names of the workers started, as they heartbeat
        self.queues: set[str] = set()  # the queues they serve

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
        except BlockingIOError:  # the operator's choice to make, not an internal error: exit 2
            raise BadInput(
                f"another `orchestrator run` is using {self.state}; wait for it or use --state-dir"
            ) from None

    def start(self) -> None:
        self._take_lock()
        with signals_held():
            stop_leftovers(self.state)  # of an earlier run that was killed: its workers too
            self.redis.stop_orphan()  # a server no record names (never a second server)
            self.redis.start()
            self._remember()
        self.purge_earlier_runs()
        self.log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        specs = plan(self.worker_devices, None)  # one worker per device, as the launcher plans them
        self.workers = {f"{spec.label}@{self.name}" for spec in specs}
        self.queues = {spec.queue for spec in specs}
        grace = ["--stop-timeout", f"{WORKER_GRACE_S:g}"]
        cmd = command_line(None, self.worker_devices, self.name, self.concurrency, *grace, *self.worker_flags)
        env = dict(os.environ, FLEET_REDIS_URL=self.url)  # the password stays off every command line
        with signals_held():
            self.launcher = subprocess.Popen(
                tethered(cmd), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )
            self._remember()
        if self.wait:
            self.wait_for_workers()

    def _remember(self) -> None:
        """Record the children (pid = process group: each leads its own session) for a later
        run to stop, should this one be killed before it stops them."""
        children = []
        for role, proc in (("redis", self.redis.proc), ("workers", self.launcher)):
            if proc is not None:
                children.append({"role": role, "pid": proc.pid, "started": _started(proc.pid)})
        tmp = self.state / f".{RECORD}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"orchestrator": os.getpid(), "children": children}, fh)
        os.replace(tmp, self.state / RECORD)

    def purge_earlier_runs(self) -> None:
        """No worker is up yet: every queued message and every heartbeat belongs to an earlier
        run. Drop them and finalise those runs, so that the new run never waits behind stale
        jobs nor takes a dead worker for a live one."""
        store = ResultStore(self.url)
        store.transport.clear_queues(QUEUES)
        for worker in store.registry.live_workers():
            store.registry.forget_worker(str(worker.get("name")))
        for run_id in store.unfinished_run_ids():
            runs.abandon(store, run_id, ABANDONED)

    def wait_for_workers(self) -> None:
        """Until every worker started sent its heartbeat (an error when the launcher exits first,
        or after worker_timeout_s)."""
        store = ResultStore(self.url)
        expected = self.workers
        deadline = time.monotonic() + self.worker_timeout_s
        while time.monotonic() < deadline:
            if self.launcher is not None and self.launcher.poll() is not None:
                raise ServiceError(
                    f"the workers exited with code {self.launcher.returncode}; see {self.log_path}:\n{self._tail()}"
                )
            if expected <= set(store.registry.worker_names()):
                return
            time.sleep(POLL_S)
        raise ServiceError(f"workers did not come up within {self.worker_timeout_s:.0f} s; see {self.log_path}")

    def workers_gone(self) -> str | None:
        """Why this fleet's workers can run nothing more (the launcher exited: it stops every
        worker once one dies, kill -9 included), or None while they can."""
        if self.launcher is None or self.launcher.poll() is None:
            return None
        code = self.launcher.returncode
        return f"the embedded workers exited (code {code}) before the run finished; see {self.log_path}"

    def _tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        with signals_held():
            self._stop_workers()
            self.redis.stop()
            (self.state / RECORD).unlink(missing_ok=True)
            if self._log is not None:
                self._log.close()
                self._log = None
            if self._lock is not None:
                self._lock.close()  # releases the lock
                self._lock = None

    def release_workers(self) -> None:
        """Begin stopping the workers without waiting (the run is over: their warm shutdown,
        about a second of Celery's own, overlaps the report); stop() waits for them."""
        if self.launcher is not None and self.launcher.poll() is None and self._released is None:
            # The launcher only: it passes SIGTERM on to each Celery main process, whose warm
            # shutdown stops its pool and removes its heartbeat (Redis is still up).
            self.launcher.send_signal(signal.SIGTERM)
            self._released = time.monotonic()

    def finish(self) -> bool:
        """Stop the workers of a run whose every result is in, at once when they hold nothing:
        their queues empty and no message unacknowledged (kombu's unacked hash; the last
        acknowledgement lands milliseconds after the last result, waited for up to ACKED_WAIT_S).
        A warm stop then has nothing left to protect but each worker's heartbeat and billiard's
        temp directory, removed here once the workers are gone (a beat in flight lands before);
        Redis is still up and stops cleanly in stop(). Otherwise the warm stop begins
        (release_workers) and stop() waits for it. Returns whether the workers were stopped here."""
        if self.launcher is None or self.launcher.poll() is not None:
            return False
        store = ResultStore(self.url)
        deadline = time.monotonic() + ACKED_WAIT_S
        while not self._holding_nothing(store):
            if time.monotonic() > deadline:
                self.release_workers()
                return False
            time.sleep(POLL_S)
        with signals_held():  # a Ctrl-C now waits until the heartbeats are gone
            self._kill_workers()
            for name in sorted(self.workers):
                store.registry.forget_worker(name)
        return True

    def _holding_nothing(self, store: ResultStore) -> bool:
        transport = store.transport
        return transport.unacked_count() == 0 and all(transport.queue_length(q) == 0 for q in self.queues)

    def _kill_workers(self) -> None:
        """SIGKILL whatever is left of the launcher's process group (the launcher, each Celery
        worker, their pool children), wait until it is gone, and remove the temp directory a
        killed Celery worker leaves (billiard's /tmp/pymp-*, removed by its own exit otherwise)."""
        if self.launcher is None:
            return
        pgid = self.launcher.pid
        procs = _group(pgid)
        temp = _temp_dirs(procs)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.launcher.wait(10)
        except subprocess.TimeoutExpired:
            pass
        _wait_dead(procs, timeout_s=10)
        for path in temp:
            shutil.rmtree(path, ignore_errors=True)
        self.launcher = None

    def _stop_workers(self) -> None:
        if self.launcher is None:
            return
        if self.launcher.poll() is None:
            try:
                self.release_workers()
                waited = time.monotonic() - (self._released or time.monotonic())
                self.launcher.wait(max(0.0, STOP_WORKERS_S - waited))
            except subprocess.TimeoutExpired:
                pass
        self._kill_workers()  # anything left of the group (pool children, a worker still busy)


def _group(pgid: int) -> list[psutil.Process]:
    """The live processes of a process group (the launcher's: it leads its own session)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                found.append(proc)
        except (OSError, psutil.Error):
            continue
    return found


def _wait_dead(procs: list[psutil.Process], timeout_s: float) -> None:
    """Until each process is gone or a zombie (dead: its parent, or init, reaps it; psutil's
    wait_procs waits for that reaping, which init may do only a second later)."""
    deadline = time.monotonic() + timeout_s
    left = list(procs)
    while left and time.monotonic() < deadline:
        left = [p for p in left if _alive(p)]
        if left:
            time.sleep(0.005)


def _alive(proc: psutil.Process) -> bool:
    try:
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


PYMP = re.compile(r"\s(/\S+/pymp-[A-Za-z0-9_]+)/")


def _temp_dirs(procs: list[psutil.Process]) -> set[Path]:
    """The multiprocessing temp directories (pymp-*) these processes hold a file of (billiard's
    shared-memory arena, mapped from a deleted file in it): what their exit would remove."""
    found: set[Path] = set()
    for proc in procs:
        try:
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
        except OSError:
            continue
        found.update(Path(m) for m in PYMP.findall(maps))
    return found


def _started(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _ours(proc: psutil.Process) -> bool:
    """A process an embedded run starts: redis-server, the launcher, a Celery worker of
    workers.app (main or pool child), or the exec shim in front of one of them."""
    try:
        if "redis" in proc.name():
            return True
        cmdline = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    return any(mark in cmdline for mark in ("fleet.launcher", "workers.app", "PR_SET_PDEATHSIG"))


def leftovers(state: Path) -> list[psutil.Process]:
    """The processes an earlier run on this state directory started that still run: members
    of a recorded process group, started no earlier than its leader, with our command lines.
    A recorded group whose leader is alive but started at another time is someone else's (the
    pid was reused) and is left alone."""
    try:
        record: dict[str, Any] = json.loads((state / RECORD).read_text())
        children = [(int(c["pid"]), c.get("started")) for c in record.get("children", [])]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return []
    found: list[psutil.Process] = []
    for pgid, started in children:
        if started is None:
            continue
        leader = _started(pgid)
        if leader is not None and abs(leader - float(started)) > 0.05:
            continue  # the leader's pid now belongs to another process
        for proc in psutil.process_iter():
            try:
                if os.getpgid(proc.pid) != pgid or proc.create_time() < float(started) - 0.05:
                    continue
            except (OSError, psutil.Error):
                continue
            if proc.pid != os.getpid() and _ours(proc):
                found.append(proc)
    return found


def stop_leftovers(state: Path, timeout_s: float = 10.0) -> list[int]:
    """Stop what an earlier, killed run left behind (SIGTERM, then SIGKILL after timeout_s);
    the pids stopped. The record is removed: nothing of it runs any more."""
    procs = leftovers(state)
    for proc in procs:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.resume()  # a stopped process (SIGSTOP, Ctrl-Z) acts on the SIGTERM only once resumed
        except psutil.Error:
            pass
    _gone, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    (state / RECORD).unlink(missing_ok=True)
    return [p.pid for p in procs]
