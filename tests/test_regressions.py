"""Regressions a user can act on (issue 17), through real runs on one real worker: per-job
baselines across an unrelated run, expectations met and broken, a job that fails one time in
two, the change attributed, a latency step that needs two violations, alerts received and
timed out. One redis-server and one worker serve the module; each test uses its own families."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.broker import make_app
from fleet.catalog import Candidate, Catalog
from fleet.launcher import command_line
from fleet.settings import RunSettings
from fleet.store import ResultStore
from orchestrator import expectations, notify, report
from orchestrator.redis_server import RedisServer
from orchestrator.runs import wait
from orchestrator.submit import submit
from orchestrator.trends import TrendSettings
from tests.helpers import ROOT, Worker, orchestrator, wait_for_worker, worker_env, write_catalog
from tests.models import MINILM_LOCKED, family, minilm_repo

pytestmark = [pytest.mark.slow, pytest.mark.service]  # the module fixture starts redis-server and a worker


class Fleet:
    def __init__(self, url: str, flaky_dir: Path, step_file: Path) -> None:
        self.url, self.flaky_dir, self.step_file = url, flaky_dir, step_file
        self.store = ResultStore(url)
        self.app = make_app(url)

    def run(self, catalog: Catalog, **settings: Any) -> str:
        run_id = submit(self.store, self.app, catalog, None, ["cpu"], RunSettings(**{"repeats": 1, **settings}))
        wait(self.store, run_id)
        return run_id


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    base = tmp_path_factory.mktemp("regressions")
    server = RedisServer(base / "redis").start()
    flaky_dir, step_file = base / "flaky", base / "step"
    flaky_dir.mkdir()
    step_file.write_text("0.02")
    log = base / "worker.log"
    env = worker_env(server.url, base / "hf", FLEET_TEST_FLAKY_DIR=str(flaky_dir), FLEET_TEST_STEP_FILE=str(step_file))
    proc = subprocess.Popen(
        # the worker may read the tests' folders (the real MiniLM copied to a local folder)
        command_line(
            server.url, "cpu", "wr", 1, "--loglevel", "INFO", "--allow-path", str(tmp_path_factory.getbasetemp())
        ),
        env=env,
        cwd=ROOT,
        start_new_session=True,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    worker = Worker(proc, "wr", log)
    try:
        wait_for_worker(server.url, "wr", worker)
        yield Fleet(server.url, flaky_dir, step_file)
    finally:
        worker.stop()
        server.stop()


def synthetic_family(name: str, check: str = "causal_lm") -> Any:
    f = family("llama", name=name)
    return type(f)(**{**f.__dict__, "check": check})


def test_degradation_across_an_unrelated_run_is_a_regression_with_its_cause(fleet: Fleet, tmp_path: Path) -> None:
    weights = minilm_repo(tmp_path / "minilm")  # the real MiniLM weights in a local folder
    copy = Candidate(path=str(weights), alias_of=MINILM_LOCKED)  # declared the same model as the locked one
    mini = Catalog("test", {"mini": family("bert", candidates=(copy,), name="mini")})
    other = Catalog("test", {"other": synthetic_family("other")})
    first = fleet.run(mini)
    r1 = fleet.store.results(first)[0]
    assert (r1["status"], r1["source"]) == ("REAL", "local") and r1["weights_sha256"]
    between = fleet.run(other)  # an unrelated family's run in between
    shutil.rmtree(weights)  # the weights are gone: the family falls back to synthetic weights
    third = fleet.run(mini)

    data = report.build(fleet.store, third)
    assert data["previous_run_id"] == between
    row = next(r for r in data["rows"] if r["job_id"] == "mini@cpu")
    assert (row["baseline"]["run_id"], row["baseline"]["status"], row["status"], row["change"]) == (
        first,
        "REAL",
        "SYNTHETIC",
        "regressed",
    )
    assert row["baseline"]["date"].endswith("Z")
    assert [r["job_id"] for r in data["regressions"]] == ["mini@cpu"]
    changed = {c["fact"]: (c["from"], c["to"]) for c in row["attribution"]["changed"]}
    assert changed["source"] == ("local", "synthetic")
    assert changed["weights"] == (r1["weights_sha256"], None)
    assert "torch" not in changed and "host" not in changed  # same worker, same libraries
    assert row["attribution"]["summary"].startswith("REAL → SYNTHETIC; changed: source local → synthetic")
    assert f"weights {r1['weights_sha256'][:12]}… → none" in row["attribution"]["summary"]
    assert row["history"]["streak_start"]["run_id"] == third
    assert row["history"]["last_success"]["run_id"] == third  # SYNTHETIC passed its check
    text = report.render_markdown(data)
    assert f"against run `{first}`" in text and "source local → synthetic" in text

    # diff does not compare the latency of MiniLM with that of a random tiny BERT
    d = report.diff(fleet.store, first, third)
    assert not [c for c in d["metric_changes"] if c["job_id"] == "mini@cpu"]
    assert d["metrics_not_compared"][0]["job_id"] == "mini@cpu"
    assert d["metrics_not_compared"][0]["reason"].startswith("weights sha256:")


def test_expectations_met_broken_and_written(fleet: Fleet, tmp_path: Path) -> None:
    catalog = write_catalog(
        tmp_path / "catalog.toml",
        {
            "exok": {"check": "causal_lm", "architectures": ["LlamaForCausalLM"], "synthetic": "llama"},
            "exbad": {"check": "raises", "architectures": ["LlamaForCausalLM"], "synthetic": "llama"},
        },
    )
    met = tmp_path / "met.toml"
    met.write_text('[expect]\n"exbad@cpu" = "FAILED: deliberate, until transformers 999.0"\n"ex*@cpu" = "SYNTHETIC"\n')
    common = ("--all", "--catalog", str(catalog), "--repeats", "1", "--reruns", "0", "--redis-url", fleet.url)
    plain = orchestrator("submit", "--wait", *common)
    assert plain.returncode == 5, plain.stderr  # without expectations: a FAILED job fails the run
    ok = orchestrator("submit", "--wait", "--expectations", str(met), *common)
    assert ok.returncode == 0, ok.stderr  # the same outcome, expected
    run_id = ok.stdout.strip()

    broken = tmp_path / "broken.toml"
    broken.write_text('[expect]\n"exok@cpu" = "FAILED: kernel gap"\n"exbad@cpu" = "FAILED: deliberate"\n')
    bad = orchestrator("submit", "--wait", "--expectations", str(broken), *common)
    assert bad.returncode == 5
    assert "exok@cpu: unexpected pass: SYNTHETIC, expected FAILED" in bad.stderr
    assert "exbad@cpu" not in bad.stderr

    rep = orchestrator("report", run_id, "--format", "json", "--expectations", str(broken), "--redis-url", fleet.url)
    data = json.loads(rep.stdout)
    assert data["unexpected"] == ["exok@cpu"]
    verdicts = {c["job_id"]: c["expectation"] for c in data["changes"]}
    assert verdicts["exbad@cpu"]["expected"] == "FAILED" and not verdicts["exbad@cpu"]["unexpected"]
    assert data["started_at"].endswith("Z") and isinstance(data["started_at_unix"], float)
    md = orchestrator("report", run_id, "--expectations", str(broken), "--redis-url", fleet.url).stdout
    assert "### Unexpected outcomes (1" in md and "**exok@cpu**: unexpected pass" in md
    junit = ET.fromstring(
        orchestrator(
            "report", run_id, "--format", "junit", "--expectations", str(broken), "--redis-url", fleet.url
        ).stdout
    )
    cases = {c.get("name"): c for c in junit.iter("testcase")}
    assert cases["exok@cpu"].find("failure") is not None  # unexpected pass
    assert cases["exbad@cpu"].find("skipped") is not None  # expected failure
    assert junit.get("timestamp", "").count("T") == 1

    written = tmp_path / "written.toml"
    out = orchestrator("expect", run_id, "--output", str(written), "--redis-url", fleet.url)
    assert out.returncode == 0, out.stderr
    exp = expectations.load(written)
    assert exp is not None
    assert {e.pattern: e.status for e in exp.entries} == {"exbad@cpu": "FAILED", "exok@cpu": "SYNTHETIC"}
    again = orchestrator("submit", "--wait", "--expectations", str(written), *common)
    assert again.returncode == 0, again.stderr

    (tmp_path / "typo.toml").write_text('[expect]\n"exok@cpu" = "PASSED"\n')
    typo = orchestrator("submit", "--wait", "--expectations", str(tmp_path / "typo.toml"), *common)
    assert typo.returncode == 2 and "unknown status 'PASSED'" in typo.stderr and "Traceback" not in typo.stderr


def test_a_job_that_fails_one_time_in_two_is_flaky(fleet: Fleet, tmp_path: Path) -> None:
    catalog = write_catalog(
        tmp_path / "catalog.toml",
        {
            "flk": {"check": "flaky", "architectures": ["LlamaForCausalLM"], "synthetic": "llama"},
            "brk": {"check": "raises", "architectures": ["LlamaForCausalLM"], "synthetic": "llama"},
        },
    )
    sub = orchestrator(
        "submit",
        "--wait",
        "--all",
        "--catalog",
        str(catalog),
        "--repeats",
        "1",
        "--reruns",
        "2",
        "--redis-url",
        fleet.url,
    )
    run_id = sub.stdout.strip()
    assert sub.returncode == 5, sub.stderr  # brk failed all three runs; flk alone would not fail the run
    assert "1 job(s) FLAKY" in sub.stderr
    results = {r["job_id"]: r for r in fleet.store.results(run_id)}
    assert len(results) == 2 and fleet.store.is_finished(run_id)  # only final results are written
    flk, brk = results["flk@cpu"], results["brk@cpu"]
    assert flk["status"] == "FLAKY" and flk["pass_ratio"] == 0.5
    assert [x["status"] for x in flk["reruns"]] == ["FAILED", "SYNTHETIC"]  # passed on the first rerun
    assert flk["reruns"][0]["pid"] != flk["reruns"][1]["pid"]  # in a fresh process
    assert flk["error"]["kind"] == "inference_error"
    assert brk["status"] == "FAILED" and brk["pass_ratio"] == 0.0
    assert [x["rerun"] for x in brk["reruns"]] == [0, 1, 2]
    assert len({x["pid"] for x in brk["reruns"]}) == 3

    data = report.build(fleet.store, run_id)
    assert [r["job_id"] for r in data["flaky"]] == ["flk@cpu"]
    assert "### Flaky" in report.render_markdown(data)
    junit = ET.fromstring(report.to_junit(data))
    cases = {c.get("name"): c for c in junit.iter("testcase")}
    assert cases["flk@cpu"].find("failure") is None and len(cases["flk@cpu"].findall("flakyFailure")) == 1
    assert len(cases["brk@cpu"].findall("rerunFailure")) == 2 and junit.get("flaky") == "1"


def test_a_latency_step_is_a_regression_only_after_two_violations(fleet: Fleet) -> None:
    catalog = Catalog("test", {"step": synthetic_family("step", check="stepped")})
    trend = TrendSettings(window=3, violations=2, threshold=0.2)

    def latency_label() -> tuple[str, dict[str, Any]]:
        run_id = fleet.run(catalog, repeats=3)
        row = report.build(fleet.store, run_id, trend=trend)["rows"][0]
        assert row["status"] == "SYNTHETIC", row["error"]
        return row["trends"]["latency_ms_p50"]["label"], row

    # a base of 100 ms: the machine's own noise (10-20 ms under load) stays under the 20 % threshold
    fleet.step_file.write_text("0.1")
    labels = [latency_label()[0] for _ in range(5)]
    assert labels == ["insufficient data"] * 4 + ["ok"]  # a median of 3 runs before the 2 newest
    fleet.step_file.write_text("0.4")  # the step: 100 ms -> 400 ms per inference
    label, row = latency_label()
    assert label == "suspicious" and row["trends"]["latency_ms_p50"]["violations"] == 1
    label, row = latency_label()
    # 300 ms more on a base of 100 ms plus the inference itself
    assert label == "regression" and row["trends"]["latency_ms_p50"]["relative"] > 0.3
    data = report.build(fleet.store, row["run_id"], trend=trend)
    assert ("step@cpu", "latency_ms_p50") in [(m["job_id"], m["metric"]) for m in data["metric_regressions"]]
    assert "### Metric trends" in report.render_markdown(data)


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    _Receiver.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/SECRET-TOKEN", _Receiver.received
    server.shutdown()


def test_alerts_are_received_and_a_silent_endpoint_never_fails_the_run(
    fleet: Fleet, tmp_path: Path, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = receiver
    catalog = write_catalog(
        tmp_path / "catalog.toml",
        {"alrt": {"check": "raises", "architectures": ["LlamaForCausalLM"], "synthetic": "llama"}},
    )
    common = ("--all", "--catalog", str(catalog), "--repeats", "1", "--reruns", "0", "--redis-url", fleet.url)
    sub = orchestrator("submit", "--wait", "--notify", url, *common)
    assert sub.returncode == 5, sub.stderr
    assert len(received) == 1
    alert = received[0]
    assert alert["run_id"] == sub.stdout.strip() and "alrt@cpu" in alert["text"]
    assert [u["job_id"] for u in alert["unexpected"]] == ["alrt@cpu"] and alert["summary"]["FAILED"] == 1
    assert alert["unexpected"][0]["error_kind"] == "inference_error"
    # the same failure again is no change without expectations; against them it is unexpected
    exp = tmp_path / "e.toml"
    exp.write_text('[expect]\n"*" = "SYNTHETIC"\n')
    sub = orchestrator("submit", "--wait", "--notify", url, "--expectations", str(exp), *common)
    assert sub.returncode == 5 and len(received) == 2
    assert (
        received[1]["unexpected"][0]["job_id"] == "alrt@cpu" and received[1]["unexpected"][0]["expected"] == "SYNTHETIC"
    )

    # an endpoint that accepts the connection and never answers: 3 tries of 5 s, then the run's own verdict
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        silent_url = f"http://127.0.0.1:{silent.getsockname()[1]}/hooks/SECRET-TOKEN"
        started = time.monotonic()
        sub = orchestrator("submit", "--wait", "--notify", silent_url, "--expectations", str(exp), *common)
        took = time.monotonic() - started
    finally:
        silent.close()
    assert sub.returncode == 5  # the unexpected failure's exit code, not an alert error
    assert sub.stderr.count("timed out") == 3 and "try 3/3" in sub.stderr
    assert "SECRET-TOKEN" not in sub.stderr and took >= 15
    assert notify.check_url(url) == url
    bad = orchestrator("submit", "--notify", "ftp://x/y", *common)
    assert bad.returncode == 2 and "--notify" in bad.stderr


def test_a_library_upgrade_on_another_worker_is_attributed(redis_url: str, start_worker, tmp_path: Path) -> None:
    """Two real workers in turn: the job fails on the first, passes on the second, which runs
    another transformers release; the change names both facts."""
    flaky_dir = tmp_path / "flaky"
    flaky_dir.mkdir()
    catalog = Catalog("test", {"upg": synthetic_family("upg", check="flaky")})  # fails, then passes
    store, app = ResultStore(redis_url), make_app(redis_url)
    old = start_worker(redis_url, name="old", FLEET_TEST_FLAKY_DIR=str(flaky_dir))
    first = submit(store, app, catalog, None, ["cpu"], RunSettings(repeats=1))
    wait(store, first)
    old.stop()
    start_worker(redis_url, name="new", FLEET_TEST_FLAKY_DIR=str(flaky_dir), FLEET_TEST_TRANSFORMERS_VERSION="9.1.0")
    second = submit(store, app, catalog, None, ["cpu"], RunSettings(repeats=1))
    wait(store, second)
    row = report.build(store, second)["rows"][0]
    assert (row["baseline"]["status"], row["status"], row["change"]) == ("FAILED", "SYNTHETIC", "improved")
    changed = {c["fact"]: (c["from"], c["to"]) for c in row["attribution"]["changed"]}
    installed = store.results(first)[0]["environment"]["transformers"]
    assert changed == {"transformers": (installed, "9.1.0"), "worker": ("cpu@old", "cpu@new")}
    assert f"transformers {installed} → 9.1.0" in row["attribution"]["summary"]
    assert row["history"]["first_failure"] is None and row["history"]["last_success"]["run_id"] == second
