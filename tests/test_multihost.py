"""Three hosts on one machine: Redis and two workers, each in its own network namespace,
joined by a bridge. One worker host is cut off mid-run; the run still accounts for every job."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fleet.broker import make_app
from fleet.catalog import Catalog
from fleet.launcher import command_line
from fleet.settings import RunSettings
from fleet.store import ResultStore, keys
from orchestrator.runs import wait
from orchestrator.submit import submit
from tests.helpers import ROOT, worker_env
from tests.models import family

SUBNET = "10.213.77"


def message_body(raw: str | None) -> str:
    """The decoded body of a message in kombu's unacked hash ([message, exchange, routing key])."""
    if not raw:
        return ""
    message = json.loads(raw)[0]
    body = message["body"]
    if message.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body).decode()
    return str(body)


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


class Net:
    """A bridge in this namespace and one namespace per host, each with a veth on the bridge."""

    def __init__(self) -> None:
        self.tag = str(os.getpid() % 100000)
        self.bridge = f"fbr{self.tag}"
        self.hosts: dict[str, str] = {}  # name -> ip
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{SUBNET}.254/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")

    def ns(self, name: str) -> str:
        return f"f{name}{self.tag}"

    def veth(self, name: str) -> str:
        return f"v{name}{self.tag}"

    def add_host(self, name: str, octet: int) -> str:
        ns, veth = self.ns(name), self.veth(name)
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", veth, "master", self.bridge)
        sh("ip", "link", "set", veth, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{SUBNET}.{octet}/24", "dev", "eth0")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        self.hosts[name] = f"{SUBNET}.{octet}"
        return self.hosts[name]

    def cut(self, name: str) -> None:
        sh("ip", "link", "set", self.veth(name), "down")

    def run(self, name: str, cmd: list[str], **kw: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["ip", "netns", "exec", self.ns(name), *cmd], start_new_session=True, **kw)  # type: ignore[call-overload]

    def close(self) -> None:
        for name in self.hosts:
            pids = sh("ip", "netns", "pids", self.ns(name), check=False).stdout.split()
            for pid in pids:
                sh("kill", "-9", pid, check=False)
            sh("ip", "netns", "del", self.ns(name), check=False)
            sh("ip", "link", "del", self.veth(name), check=False)
        sh("ip", "link", "del", self.bridge, check=False)


@pytest.fixture
def net() -> Iterator[Net]:
    if os.geteuid() != 0 or sh("ip", "netns", "list", check=False).returncode != 0:
        pytest.skip("needs root and ip netns")
    n = Net()
    try:
        yield n
    finally:
        n.close()


@pytest.mark.slow
@pytest.mark.service
def test_worker_host_cut_off_mid_run_every_job_accounted_for(net: Net, tmp_path: Path) -> None:
    redis_ip = net.add_host("r", 1)
    net.add_host("a", 2)
    net.add_host("b", 3)
    from orchestrator.redis_server import find_binary

    (tmp_path / "redis").mkdir()
    net.run(
        "r",
        [
            find_binary(),
            "--bind",
            redis_ip,
            "--port",
            "6379",
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--dir",
            str(tmp_path / "redis"),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://{redis_ip}:6379/0"
    client = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=1)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.RedisError:
            assert time.monotonic() < deadline, "redis in its namespace did not come up"
            time.sleep(0.2)
    env = worker_env(url, tmp_path / "hf", FLEET_TEST_SLOW_S="2", FLEET_VISIBILITY_TIMEOUT="8")
    for host in ("a", "b"):
        net.run(
            host,
            command_line(url, "cpu", host, 1),
            env=env,
            cwd=ROOT,
            stdout=(tmp_path / f"{host}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
    while len(ResultStore(url).registry.worker_names()) < 2:
        assert time.monotonic() < deadline + 90, "workers did not register"
        time.sleep(0.3)

    fams = {}
    for i in range(6):
        f = family("llama", name=f"slow{i}")
        fams[f.name] = type(f)(**{**f.__dict__, "check": "slow"})
    store = ResultStore(url)
    run_id = submit(store, make_app(url), Catalog("test", fams), None, ["cpu"], RunSettings(repeats=1))

    # cut host a off while it is running a job: it has finished one, and holds another that is
    # still unacknowledged (in kombu's `unacked` hash), has no result yet, and was delivered
    # under a second ago, so its 2 s check cannot finish before the cut (a job whose result is
    # written but not yet acknowledged would be redelivered and found done, not run again)
    def a_holds_a_job() -> bool:
        a = next((w for w in store.registry.live_workers() if w.get("name") == "cpu@a"), None)
        results = store.results(run_id)
        if a is None or not any(r.get("worker") == "cpu@a" for r in results):
            return False
        done = {r["job_id"] for r in results}
        tags = [tag for tag, instance in store.transport.held().items() if instance == a.get("instance")]
        for tag, since in store.transport.unacked_since(tags).items():
            body = message_body(client.hget(keys.UNACKED, tag))
            running = [job for job in (f"{n}@cpu" for n in fams) if job in body and job not in done]
            if running and time.time() - since < 1.0:
                return True
        return False

    while not a_holds_a_job():
        assert time.monotonic() < deadline + 180
        time.sleep(0.1)
    net.cut("a")
    counts = wait(store, run_id)
    results = store.results(run_id)
    assert sorted(r["job_id"] for r in results) == sorted(f"{n}@cpu" for n in fams)
    assert counts == {"SYNTHETIC": 6}
    assert client.hlen(keys.run(run_id, "results")) == 6
    assert any(r["worker"] == "cpu@b" and r["delivery"] == 2 for r in results), (
        "the job that host a held was delivered again to host b"
    )
