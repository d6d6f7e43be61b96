"""Redis with a password and with TLS, end to end through real workers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fleet.broker import make_app
from fleet.catalog import load_catalog
from fleet.settings import RunSettings, Settings
from fleet.store import ResultStore
from orchestrator.redis_server import RedisServer, free_port
from orchestrator.runs import wait
from orchestrator.submit import submit


def _store(url: str) -> ResultStore:
    """A store configured like the CLI's: from the environment ($FLEET_REDIS_CA included)."""
    return ResultStore.from_settings(Settings.from_env().with_redis_url(url))


def _one_job(url: str) -> dict:
    store = _store(url)
    run_id = submit(store, make_app(url), load_catalog(), ["t5"], ["cpu"], RunSettings(repeats=1))
    assert wait(store, run_id) == {"SYNTHETIC": 1}
    return store.results(run_id)[0]


def test_password_protected_redis(tmp_path: Path, start_worker) -> None:
    server = RedisServer(tmp_path / "redis", password="s3cret-pw").start()
    try:
        start_worker(server.url)
        assert _one_job(server.url)["status"] == "SYNTHETIC"
        assert "s3cret-pw" not in (tmp_path / "worker-w1.log").read_text()
    finally:
        server.stop()


def _tls_redis() -> str:
    binary = "/usr/bin/redis-server"
    if not Path(binary).exists() or not shutil.which("openssl"):
        pytest.skip("needs Debian's redis-server and openssl")
    return binary


def test_tls_redis(tmp_path: Path, start_worker, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = _tls_redis()
    ca_key, ca, key, csr, cert = (tmp_path / n for n in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem"))
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "2",
        "-subj",
        "/CN=fleet-test-ca",
    )
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "2",
        "-extfile",
        str(ext),
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(ca),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"rediss://127.0.0.1:{port}/0"
        monkeypatch.setenv("FLEET_REDIS_CA", str(ca))
        import time

        for _ in range(50):
            try:
                _store(url).ping()
                break
            except Exception:
                if proc.poll() is not None:
                    pytest.skip(f"redis-server without TLS support: {proc.stdout.read()[-300:]!r}")  # type: ignore[union-attr]
                time.sleep(0.1)
        start_worker(url, FLEET_REDIS_CA=str(ca))
        result = _one_job(url)
        assert result["status"] == "SYNTHETIC"
        # and without the CA the certificate is refused: TLS is really verified
        monkeypatch.delenv("FLEET_REDIS_CA")
        from fleet.errors import RedisUnreachable

        with pytest.raises(RedisUnreachable):
            _store(url).ping()
    finally:
        proc.kill()
        proc.wait()


def test_remote_control_that_changes_a_worker_is_refused(redis_url: str, start_worker) -> None:  # type: ignore[no-untyped-def]
    """Rule: a worker answers only read-only inspect commands. Remote control arrives by PUBLISH,
    which anyone who can write to Redis can send: `cancel_consumer cpu` made a worker stop taking
    jobs while its heartbeat still said consuming; `rate_limit`, `time_limit`, `revoke`,
    `pool_shrink`, `shutdown` change or stop it just as well."""
    start_worker(redis_url, "w1")
    app = make_app(redis_url)
    try:
        for command, arguments in [
            ("cancel_consumer", {"queue": "cpu"}),
            ("rate_limit", {"task_name": "fleet.run_check", "rate_limit": "1/h"}),
            ("pool_shrink", {"n": 1}),
            ("autoscale", {"max": 0, "min": 0}),
            ("shutdown", {}),
        ]:
            replies = app.control.broadcast(command, arguments=arguments, reply=True, timeout=3)
            assert replies, command
            for reply in replies:
                (answer,) = reply.values()
                assert "refused" in str(answer.get("error")), (command, answer)
        assert app.control.inspect(timeout=3).ping()  # still there, and inspect still answers
        queues = app.control.inspect(timeout=3).active_queues() or {}
        assert [q["name"] for qs in queues.values() for q in qs] == ["cpu"]
    finally:
        app.close()


def test_a_password_in_a_redis_url_query_is_masked_wherever_the_url_is_shown(tmp_path: Path) -> None:
    """Rule: every credential a Redis URL can carry is masked in messages, not only the
    userinfo's: redis-py authenticates with `?password=` (any query option is a connection
    keyword), so its value is as secret as `redis://:PASSWORD@`."""
    import sys

    from fleet.settings import redact_url

    secret = "s3cr3t-in-the-query"
    port = free_port()
    sock = tmp_path / "r.sock"
    conf = tmp_path / "redis.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\nsave ''\nappendonly no\nrequirepass {secret}\nunixsocket {sock}\n")
    server = subprocess.Popen([shutil.which("redis-server") or "redis-server", str(conf)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            subprocess.run(["sleep", "0.05"], check=True)
        urls = [
            f"redis://127.0.0.1:{port}/0?password={secret}",  # right: authenticates, "no runs"
            f"unix://{sock}?db=0&password={secret}x",  # wrong: refused credentials
            f"redis://127.0.0.1:1/0?socket_timeout=2&password={secret}",  # unreachable
        ]
        for url in urls:
            assert secret not in redact_url(url)
            out = subprocess.run(
                [sys.executable, "-m", "orchestrator", "status", "--redis-url", url],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode != 0
            assert secret not in out.stdout + out.stderr, out.stderr
            assert "password=***" in out.stderr, out.stderr
    finally:
        server.terminate()
        server.wait(10)
    # the userinfo form stays masked, and a URL with no credential is shown as given
    assert redact_url("redis://user:pw@h:1/0?db=0") == "redis://user:***@h:1/0?db=0"
    assert redact_url("unix:///run/r.sock?db=2") == "unix:///run/r.sock?db=2"


def test_a_redis_url_option_no_connection_takes_is_refused_in_one_line() -> None:
    """Rule: a Redis URL's query options are checked against what redis-py's connection takes
    (it passes each one on as a keyword): an unknown name, a misspelling or a credential in the
    wrong case, is exit 2 naming it (masked when it names a credential), never a traceback at
    the first command."""
    import sys

    for url, named in (
        ("redis://127.0.0.1:1/0?PASSWORD=s3cr3t-upper", "'PASSWORD'"),
        ("unix:///nonexistent/r.sock?db=0&sockettimeout=1", "'sockettimeout'"),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "orchestrator", "status", "--redis-url", url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2, out.stderr
        assert "Traceback" not in out.stderr and named in out.stderr, out.stderr
        assert "s3cr3t" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
