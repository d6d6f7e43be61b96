"""Hostile input to the `orchestrator` command: each gives one line on stderr and a documented
exit code (2 bad input, 3 Redis unreachable), never a traceback, and writes nothing."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fleet.catalog import MAX_REPEATS
from fleet.jobs import MAX_ATTEMPTS, MAX_RERUNS, job_problem
from fleet.timing import MAX_DEADLINE_S
from tests.helpers import ROOT, orchestrator

NOWHERE = "redis://127.0.0.1:1/0"  # nothing listens: a test that reaches Redis fails with exit 3


def one_line_error(res: subprocess.CompletedProcess[str], code: int, needle: str) -> str:
    assert res.returncode == code, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("orchestrator: error:"), res.stderr
    assert needle in lines[0], res.stderr
    return lines[0]


def deep_toml(path: Path, prefix: str = "", depth: int = 5000) -> Path:
    path.write_text(prefix + "x = " + "[" * depth + "]" * depth + "\n")
    return path


def test_deeply_nested_toml_is_bad_input(tmp_path: Path) -> None:
    """tomllib recurses: a deep array is a RecursionError unless the loader says what it is."""
    catalog = deep_toml(tmp_path / "catalog.toml")
    expectations = deep_toml(tmp_path / "expect.toml", "[expect]\n")
    tables = tmp_path / "tables.toml"
    tables.write_text("[expect]\nx = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n")
    pins = deep_toml(tmp_path / "pins.toml")
    for args, path in [
        (["--catalog", str(catalog)], catalog),
        (["--expectations", str(expectations)], expectations),
        (["--expectations", str(tables)], tables),
        (["--pins", str(pins)], pins),
    ]:
        res = orchestrator("submit", "--all", *args, "--redis-url", NOWHERE)
        one_line_error(res, 2, f"{path}: not valid TOML: arrays or tables nested too deeply")


@pytest.mark.parametrize("command", ["submit", "run", "beat"])
def test_deadlines_beyond_any_date_are_refused(command: str) -> None:
    selection = [] if command == "beat" else ["--all"]
    for value in ("1e308", str(MAX_DEADLINE_S + 1)):
        res = orchestrator(command, *selection, "--deadline", value)
        one_line_error(res, 2, f"argument --deadline: must be at most {MAX_DEADLINE_S:.0f} s")


@pytest.mark.parametrize(
    "option, value, needle",
    [
        ("--repeats", "1000000000", f"must be a whole number >= 1 and <= {MAX_REPEATS}"),
        ("--repeats", str(MAX_REPEATS + 1), f"must be a whole number >= 1 and <= {MAX_REPEATS}"),
        ("--reruns", "1000000", f"must be a whole number >= 0 and <= {MAX_RERUNS}"),
        ("--reruns", "-1", "must be a whole number >= 0"),
        ("--max-attempts", str(MAX_ATTEMPTS + 1), f"must be a whole number >= 1 and <= {MAX_ATTEMPTS}"),
    ],
)
def test_option_limits_are_the_workers_limits(option: str, value: str, needle: str) -> None:
    res = orchestrator("submit", "--all", option, value, "--redis-url", NOWHERE)
    one_line_error(res, 2, f"argument {option}: {needle}")
    if option == "--reruns":
        one_line_error(orchestrator("beat", option, value), 2, f"argument {option}: {needle}")


def test_the_largest_accepted_options_make_jobs_a_worker_accepts(redis_url: str) -> None:
    """The other side of the limits: what the CLI accepts, a worker runs; one more, it refuses."""
    res = orchestrator(
        "submit",
        "--family",
        "llama",
        "--repeats",
        str(MAX_REPEATS),
        "--reruns",
        str(MAX_RERUNS),
        "--max-attempts",
        str(MAX_ATTEMPTS),
        "--deadline",
        str(MAX_DEADLINE_S),
        "--redis-url",
        redis_url,
    )
    assert res.returncode == 0, res.stderr
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    jobs = [json.loads(v) for v in client.hgetall(f"fleet:run:{res.stdout.strip()}:jobs").values()]
    assert jobs and all(job_problem(j) is None for j in jobs), [job_problem(j) for j in jobs]
    for key, over in (("repeats", MAX_REPEATS + 1), ("reruns", MAX_RERUNS + 1), ("max_attempts", MAX_ATTEMPTS + 1)):
        assert key in (job_problem({**jobs[0], key: over}) or ""), key


def test_unwritable_stdout_is_one_line_not_a_traceback(redis_url: str) -> None:
    """`> /dev/full`: the write fails (ENOSPC) at a flush; a closed pipe (| head) stays exit 0."""
    submitted = orchestrator("submit", "--all", "--redis-url", redis_url)
    assert submitted.returncode == 0, submitted.stderr
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "FLEET_REDIS_URL": redis_url}
    for args in (["--help"], ["report", "--help"], ["report"], ["report", "--format", "json"], ["runs"], ["status"]):
        with open("/dev/full", "w") as full:
            res = subprocess.run(
                [sys.executable, "-m", "orchestrator", *args],
                stdout=full,
                stderr=subprocess.PIPE,
                text=True,
                cwd=ROOT,
                env=env,
                timeout=120,
            )
        one_line_error(res, 2, "cannot write the output: No space left on device")
    head = subprocess.run(
        f"{sys.executable} -m orchestrator report | head -1",
        shell=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert head.stdout.startswith("#") and head.stderr == "", head.stderr


@pytest.mark.parametrize(
    "url, needle",
    [
        ("redis://127.0.0.1:6380:7/0", "Port could not be cast to integer value as '6380:7'"),
        ("redis://:s3cret@127.0.0.1:6380:7/0", "<unparsable url> is not a usable Redis URL"),
        ("redis://127.0.0.1:99999/0", "Port out of range"),
        ("redis://127.0.0.1:6379/99999999999999999999", "the database must be a number"),
        ("redis://127.0.0.1:6379/0?db=99999999999999999999", "db must be a whole number from 0 to 2147483647"),
        ("redis://127.0.0.1:6379/0?socket_timeout=1e308", "socket_timeout must be a number from 0 to 86400"),
        ("redis://127.0.0.1:6379/0?socket_connect_timeout=1e308", "socket_connect_timeout must be a number"),
        ("redis://127.0.0.1:6379/0?health_check_interval=1.5", "health_check_interval must be a whole number"),
        ("redis://127.0.0.1:6379/0?max_connections=0", "max_connections must be a whole number from 1"),
    ],
)
def test_redis_urls_redis_py_cannot_use_are_bad_input(url: str, needle: str) -> None:
    line = one_line_error(orchestrator("runs", "--redis-url", url), 2, needle)
    assert "s3cret" not in line
    env_line = one_line_error(orchestrator("runs", env={"FLEET_REDIS_URL": url}), 2, needle)
    assert env_line.startswith("orchestrator: error: $FLEET_REDIS_URL:") and "s3cret" not in env_line


@pytest.mark.parametrize("name", ["FLEET_VISIBILITY_TIMEOUT", "FLEET_KEEP_RUNS", "FLEET_HUB_TIMEOUT"])
def test_huge_numbers_in_the_environment_are_bad_input(name: str) -> None:
    one_line_error(orchestrator("runs", env={name: "1e308"}), 2, f"${name} must be at most")


def test_a_database_the_server_does_not_have_is_one_line(redis_url: str) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/4000"
    one_line_error(orchestrator("runs", "--redis-url", url), 3, "has no such database")


@pytest.fixture
def http_server() -> Iterator[str]:
    """Something that is not Redis on the Redis port: it answers every request with HTTP 400."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                while conn.recv(4096):
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                pass

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"redis://127.0.0.1:{port}/0"
    listener.close()


def test_a_server_that_is_not_redis_is_unreachable(http_server: str) -> None:
    for args in (["runs"], ["status"], ["submit", "--all"]):
        one_line_error(orchestrator(*args, "--redis-url", http_server), 3, "does not answer as a Redis server")


def test_control_characters_in_names_are_escaped(tmp_path: Path) -> None:
    """A catalog's family name or a --family value with ESC cannot recolour the terminal."""
    catalog = tmp_path / "esc.toml"
    catalog.write_text('[families."bad\\u001b[31mname"]\ncheck = "causal_lm"\n')
    res = orchestrator("submit", "--all", "--catalog", str(catalog), "--redis-url", NOWHERE)
    one_line_error(res, 2, "families.bad\\x1b[31mname")
    res = orchestrator("submit", "--family", "x\x1b[2J\u202e", "--redis-url", NOWHERE)
    one_line_error(res, 2, "x\\x1b[2J\\u202e")
    res = orchestrator("\x1b]0;title\x07")
    one_line_error(res, 2, "invalid choice: '\\x1b]0;title\\x07'")
    assert "\x1b" not in res.stderr and "\x07" not in res.stderr


def test_control_characters_from_redis_are_escaped_on_stdout(redis_url: str) -> None:
    """Whoever can write to Redis cannot write escape sequences to the terminal of `orchestrator runs`."""
    client = redis.Redis.from_url(redis_url)
    client.zadd("fleet:runs", {"run\x1b[31m-red": 1.0})
    res = orchestrator("runs", "--redis-url", redis_url)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("run\\x1b[31m-red  0/0") and "\x1b" not in res.stdout, res.stdout


def test_trend_options_beyond_the_kept_runs_are_bad_input(redis_url: str) -> None:
    submitted = orchestrator("submit", "--all", "--redis-url", redis_url)
    assert submitted.returncode == 0, submitted.stderr
    for option, value in (("--trend-runs", str(10**20)), ("--trend-violations", "0"), ("--trend-threshold", "nan")):
        res = orchestrator("report", option, value, "--redis-url", redis_url)
        one_line_error(res, 2, "--trend-runs and --trend-violations must be at least 1")


@pytest.mark.parametrize("url", ["http://hooks.example:6380:7/x", "http://hooks.example:99999/x"])
def test_notify_urls_with_unusable_ports_are_bad_input(url: str) -> None:
    res = orchestrator("submit", "--all", "--notify", url, "--redis-url", NOWHERE)
    one_line_error(res, 2, "--notify: not a usable URL")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        # orchestrator run writes its reports after every job has run: the output directory is
        # proven usable before Redis or a worker starts (a file where it should be, or under it)
        (["run", "--architectures", "BertModel", "--output-dir", "{file}"], "the output directory"),
        (["run", "--architectures", "BertModel", "--output-dir", "{file}/reports"], "the output directory"),
        # the beat writes every day's reports: the same, at start, not at the first scheduled run
        (["beat", "--state-dir", "{file}"], "the state directory"),
        (["beat", "--state-dir", "{dir}", "--reports-dir", "{file}/daily"], "the reports directory"),
    ],
)
def test_a_folder_written_at_the_end_is_checked_at_the_start(tmp_path: Path, args: list[str], needle: str) -> None:
    """Rule: a directory a long command will write into later (an embedded run's reports, the
    beat's schedule and daily reports) is created and proven writable before any work starts;
    one that cannot be is one line, exit 2, and nothing is started (no Redis, no worker)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    state = tmp_path / "state"
    argv = [a.format(file=blocker, dir=state) for a in args]
    if args[0] == "run":
        argv += ["--state-dir", str(state)]
    res = orchestrator(*argv, env={"FLEET_REDIS_URL": NOWHERE, "FLEET_HOME": str(tmp_path / "home")}, timeout=60)
    one_line_error(res, 2, needle)
    assert blocker.read_text() == "not a directory\n"
    assert not (state / "children.json").exists()  # nothing was started
    assert not (state / "redis").exists()


def test_a_state_dir_in_use_is_bad_input(tmp_path: Path) -> None:
    """Rule: a state directory another `orchestrator run` holds is the operator's choice to
    change (exit 2, one line naming --state-dir), not an internal error (it was exit 1); the
    holder's files are left alone. The lock is held here as a running embedded run holds it."""
    import fcntl

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    with (state / "embedded.lock").open("ab") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        res = orchestrator(
            "run", "--architectures", "BertModel", "--state-dir", str(state), env={"FLEET_HOME": str(tmp_path)}
        )
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert lines[-1].startswith("orchestrator: error: another `orchestrator run` is using"), res.stderr
    assert "--state-dir" in lines[-1]
    assert {p.name for p in state.iterdir()} <= {"embedded.lock", "reports"}  # no Redis, no record of children
