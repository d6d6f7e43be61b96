"""The schedule: two beat processes on a short test schedule give exactly one run and one
report per slot; the launcher starts one pinned worker per device; parse errors are clear."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet.errors import SelectionError
from fleet.store import ResultStore, keys
from orchestrator.schedule import parse_schedule, slot_name
from tests.helpers import ROOT, raw_redis, worker_env, write_catalog


def test_schedule_specs() -> None:
    assert parse_schedule("cron:0 6 * * *")[1] == 60
    assert parse_schedule("every:30")[1] == 30
    for bad in ("cron:0 6 * *", "every:0", "daily", "cron:99 6 * * *"):
        with pytest.raises(SelectionError):
            parse_schedule(bad)
    assert slot_name(1_790_000_007.0, 10) == slot_name(1_790_000_001.0, 10) != slot_name(1_790_000_011.0, 10)


@pytest.mark.slow
def test_two_beats_one_run_and_one_report_per_slot(redis_url: str, start_worker, tmp_path: Path) -> None:
    start_worker(redis_url)
    cat = write_catalog(
        tmp_path / "cat.toml",
        {"t5": {"check": "seq2seq", "architectures": ["T5ForConditionalGeneration"], "synthetic": "t5"}},
    )
    reports = tmp_path / "reports"
    beats = []
    for i in range(2):
        log = (tmp_path / f"beat{i}.log").open("wb")
        beats.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "orchestrator",
                    "beat",
                    "--schedule",
                    "every:5",
                    "--catalog",
                    str(cat),
                    "--reports-dir",
                    str(reports),
                    "--state-dir",
                    str(tmp_path / f"state{i}"),
                    "--redis-url",
                    redis_url,
                ],
                cwd=ROOT,
                env=worker_env(redis_url, tmp_path / "hf"),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    client = raw_redis(redis_url)  # inspects the slot keys themselves
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(client.keys(keys.slot("*"))) < 2:
            time.sleep(0.5)
        time.sleep(6)  # a slot more: both beats fire, nobody may claim it twice
    finally:
        for b in beats:
            os.killpg(b.pid, signal.SIGTERM)
        for b in beats:
            b.wait(30)
    store = ResultStore(redis_url)
    slots = client.keys(keys.slot("*"))
    runs = store.run_ids(100)
    assert len(slots) >= 2
    assert sorted(runs) == sorted(client.get(s) for s in slots)  # one run per slot, no more
    logs = "".join((tmp_path / f"beat{i}.log").read_text() for i in range(2))
    assert "already taken" in logs  # the second beat's message for a slot was refused
    published = sorted(p.name for p in reports.glob("*.md") if p.name != "latest.md")
    assert len(published) >= 2  # the first slots ran to their report (the last may have been cut short)
    assert set(published) <= {f"{r}.md" for r in runs}  # one report per run, so one per slot
    for name in published:
        run_id = name.removesuffix(".md")
        assert (reports / f"{run_id}.json").is_file() and store.registry.saved_report(run_id)
        assert (reports / f"{run_id}.html").is_file()
    assert (reports / "latest.md").resolve().name == published[-1]
    assert (reports / "latest.html").resolve().name == published[-1].replace(".md", ".html")


def test_launcher_starts_one_pinned_worker_per_device(redis_url: str, start_worker) -> None:
    # A host that shows two GPUs (the launcher refuses cuda:N for a GPU it cannot see).
    w = start_worker(
        redis_url, name="host1", devices="cpu,cuda:0,cuda:1", wait=False, concurrency=1, CUDA_VISIBLE_DEVICES="0,1"
    )
    registry = ResultStore(redis_url).registry
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(registry.worker_names()) < 3:
        assert w.proc.poll() is None, w.log.read_text()[-2000:]
        time.sleep(0.3)
    workers = {x["name"]: x for x in ResultStore(redis_url).registry.live_workers()}
    assert set(workers) == {"cpu@host1", "gpu0@host1", "gpu1@host1"}
    assert workers["gpu0@host1"]["queues"] == ["gpu"] and workers["gpu0@host1"]["cuda_visible_devices"] == "0"
    assert workers["gpu1@host1"]["cuda_visible_devices"] == "1"
    assert workers["cpu@host1"]["queues"] == ["cpu"] and workers["cpu@host1"]["cuda_visible_devices"] == ""
    assert not any(x["parent_cuda_initialized"] for x in workers.values())
    # the processes themselves: prefork, concurrency 1 for each GPU, pinned by environment
    import psutil

    mains = psutil.Process(w.proc.pid).children()
    pinned = sorted(p.environ().get("CUDA_VISIBLE_DEVICES", "?") for p in mains)
    assert pinned == ["", "0", "1"]
    for p in mains:
        cmd = p.cmdline()
        assert cmd[cmd.index("-P") + 1] == "prefork"
        if "gpu" in cmd[cmd.index("-Q") + 1]:
            assert cmd[cmd.index("-c") + 1] == "1"


def test_a_scheduled_run_whose_reports_cannot_be_written_still_alerts(redis_url: str, tmp_path: Path) -> None:
    """Rule: a scheduled run's alert does not depend on its report files: the reports folder
    failing at report time (a disk that filled, a folder replaced since the beat started) loses
    the day's files, said in the task's error, not its alert. No worker here: the job ends
    SKIPPED at the deadline, which the expectations file did not expect."""
    import http.server
    import threading

    from fleet.devices import parse_devices
    from fleet.errors import FleetError
    from fleet.settings import Settings
    from orchestrator.schedule import ScheduleOptions, run_slot

    got: list[bytes] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cat = write_catalog(
        tmp_path / "cat.toml",
        {"t5": {"check": "seq2seq", "architectures": ["T5ForConditionalGeneration"], "synthetic": "t5"}},
    )
    expected = tmp_path / "expected.toml"
    expected.write_text('[expect]\n"*" = "REAL: it always ran"\n')
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    options = ScheduleOptions(
        spec="every:60",
        devices=tuple(parse_devices("cpu")),
        reports_dir=blocker / "reports",
        catalog=str(cat),
        deadline_s=2.0,
        expectations=str(expected),
        notify=f"http://127.0.0.1:{server.server_port}/hook",
    )
    try:
        with pytest.raises(FleetError, match="cannot write"):
            run_slot(Settings(redis_url=redis_url), options, "2026-12-07T23:00")
    finally:
        server.shutdown()
    assert len(got) == 1 and b"t5" in got[0], got
    assert blocker.read_text() == "x"
