"""Capability variants (fleet/variants.py, workers/variants.py, orchestrator/report/capability.py)
on real tiny models: the parser's errors, the float32 weights back bit for bit, a wrong attention
function registered through transformers' AttentionInterface reported `mismatch` with figures,
NaN from weights that overflow float16, the packaged MiniLM and SmolLM2 through bf16/fp16 with
their quality gates, a class whose claim transformers gets wrong, and a run through a real worker
whose report shows the capability matrix."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch

from fleet import variants as parsing
from fleet.catalog import load_catalog
from fleet.errors import BadInput, CatalogError, ExitCode
from fleet.jobs import job_problem
from fleet.protocol import Status
from fleet.settings import RunSettings
from orchestrator import architectures
from orchestrator.report import assemble, capability, render_html
from orchestrator.submit import plan_jobs
from tests.helpers import PLUGINS, orchestrator, write_catalog
from tests.models import family
from tests.plugins import wrong_attention
from tests.test_checks import job_for
from tests.test_report import _result
from workers import variants
from workers.architectures import enumerate_classes
from workers.checks import get_check
from workers.core import run_job
from workers.tiny import synthetic

CPU = torch.device("cpu")
wrong_attention.register()


def _llama() -> synthetic.Bundle:
    return synthetic.build(family("llama"), get_check("causal_lm"), CPU)


def _by_name(record: dict) -> dict[str, dict]:
    return {r["variant"]: r for r in record["results"]}


# -- the parser ---------------------------------------------------------------------------------
def test_parser_names_default_all_and_combinations() -> None:
    assert parsing.names(parsing.parse("default")) == list(parsing.DEFAULT)
    assert parsing.names(parsing.parse("default", family_default=("fp16",))) == ["fp16"]
    assert parsing.names(parsing.parse("all")) == list(parsing.ALL)
    assert parsing.names(parsing.parse("sdpa+bf16, fp16,bf16+sdpa,attention:wrong")) == [
        "bf16+sdpa",
        "fp16",
        "attention:wrong",
    ]
    assert parsing.parse("none") == []
    assert parsing.parse("sdpa:math")[0] == parsing.Variant(attention="sdpa", sdpa_backend="MATH")
    assert parsing.parse("flex")[0].claim == "_supports_flex_attn"
    assert parsing.parse("compile")[0].claim == "_can_compile_fullgraph"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("bf16,fp64", "'fp64'"),
        ("bf16+fp16", "two precisions"),
        ("sdpa:fast", "'sdpa:fast'"),
        ("bf16,,fp16", "empty entry"),
        ("attention:a b", "bad attention name"),
        ("attention:paged|flash_attention_2", "no '/'"),
        ("attention:paged|eager", "from the Hub"),
        ("attention:flash_attention_4", "unknown FlashAttention 'flash_attention_4'"),
        ("bf16+attention:noflash", "unknown FlashAttention"),
        ("attention:FLASH_attention_2", "unknown FlashAttention"),
        ("fp32", "the reference itself"),
        ("", "empty"),
    ],
)
def test_parser_errors_name_the_bad_token(text: str, named: str) -> None:
    with pytest.raises(parsing.VariantError, match=named) as err:
        parsing.parse(text)
    assert err.value.exit_code == ExitCode.BAD_INPUT


def test_cli_refuses_a_bad_variant_in_one_line_before_anything_runs(tmp_path: Path) -> None:
    out = orchestrator("run", "--family", "llama", "--variants", "bf16,turbo", "--redis-url", "redis://127.0.0.1:1/0")
    assert out.returncode == ExitCode.BAD_INPUT
    assert "'turbo'" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_catalog_default_and_job_validation(tmp_path: Path) -> None:
    cat = write_catalog(
        tmp_path / "c.toml",
        {
            "tiny": {
                "check": "causal_lm",
                "architectures": ["LlamaForCausalLM"],
                "synthetic": "llama",
                "variants": ["fp16", "eager"],
            }
        },
    )
    catalog = load_catalog(cat)
    jobs = plan_jobs("r", catalog, None, ["cpu"], RunSettings(variants="default,batched"), pins=[], lock=[])
    assert jobs[0]["variants"] == ["fp16", "eager", "batched"] and job_problem(jobs[0]) is None
    assert "variants" not in plan_jobs("r", catalog, None, ["cpu"], RunSettings(), pins=[], lock=[])[0]
    assert "unknown variant 'turbo'" in str(job_problem({**jobs[0], "variants": ["turbo"]}))
    bad = write_catalog(
        tmp_path / "b.toml",
        {"tiny": {"check": "causal_lm", "architectures": ["X"], "synthetic": "llama", "variants": ["int3"]}},
    )
    with pytest.raises(CatalogError, match=r"families.tiny.variants: unknown variant 'int3'"):
        load_catalog(bad)


# -- on the same loaded weights -----------------------------------------------------------------
def test_variants_run_on_the_loaded_weights_and_put_them_back_bit_exact() -> None:
    bundle = _llama()
    model = bundle.model
    before = {k: v.detach().clone() for k, v in [*model.named_parameters(), *model.named_buffers()]}
    record = variants.run(
        get_check("causal_lm"), bundle, CPU, ["bf16", "fp16", "eager", "batched", "static_cache"], real=False
    )
    got = _by_name(record)
    assert record["reference"]["precision"] == "float32" and record["reference"]["attention"] == "sdpa"
    assert got["bf16"]["verdict"] == "works" and 0 < got["bf16"]["max_abs_diff"] <= got["bf16"]["atol"] == 1e-2
    assert got["fp16"]["atol"] == 5e-3 and got["eager"]["kernel"] == "eager"
    assert got["batched"]["verdict"] == "works" and got["batched"]["padding_side"] == bundle.tokenizer.padding_side
    assert got["static_cache"]["verdict"] == "works" and got["static_cache"]["tokens_differ"] == 0
    assert all(r["latency_ms_p50"] > 0 and r["speed_vs_reference"] > 0 for r in record["results"])
    after = dict([*model.named_parameters(), *model.named_buffers()])
    for name, tensor in before.items():  # every parameter and buffer (rotary inv_freq too), bit for bit
        assert after[name].dtype == tensor.dtype and torch.equal(after[name], tensor), name
    assert model.config._attn_implementation == "sdpa"


def test_a_wrong_attention_function_is_a_mismatch_with_figures() -> None:
    record = variants.run(get_check("causal_lm"), _llama(), CPU, ["attention:wrong", "sdpa"], real=False)
    got = _by_name(record)
    wrong = got["attention:wrong"]
    assert wrong["verdict"] == "mismatch" and wrong["kernel"] == wrong_attention.NAME
    assert wrong["max_abs_diff"] > wrong["atol"] == 1e-4 and wrong["max_rel_diff"] > 0
    # the default kernel is judged against eager, as transformers' own tests judge SDPA
    assert got["sdpa"]["verdict"] == "works" and got["sdpa"]["against"] == "eager"


def test_weights_that_overflow_float16_give_nan_a_finding() -> None:
    bundle = _llama()
    with torch.no_grad():
        bundle.model.model.embed_tokens.weight.mul_(1e8)  # fine in float32, inf in float16
    record = variants.run(get_check("causal_lm"), bundle, CPU, ["fp16", "bf16"], real=False)
    fp16 = _by_name(record)["fp16"]
    assert fp16["verdict"] == "mismatch" and fp16["non_finite"] > 0
    assert [f["finding"] for f in record["findings"]] == ["non_finite"]
    assert _by_name(record)["bf16"]["verdict"] == "works"  # bfloat16 has float32's range


def test_not_applicable_on_cpu_and_for_encoders() -> None:
    bundle = synthetic.build(family("bert"), get_check("embedding"), CPU)
    record = variants.run(get_check("embedding"), bundle, CPU, ["flash", "sdpa:flash", "static_cache"], real=False)
    reasons = {r["variant"]: (r["verdict"], r["reason"]) for r in record["results"]}
    assert reasons["flash"] == ("not_applicable", "flash_attention_2 runs on CUDA only")
    assert reasons["sdpa:flash"][0] == "not_applicable" and "CUDA" in reasons["sdpa:flash"][1]
    assert reasons["static_cache"][0] == "not_applicable" and "generate" in reasons["static_cache"][1]


# -- real weights: the quality gate in every reduced precision ------------------------------------
def test_packaged_minilm_through_bf16_and_fp16_with_its_gate(hf_home: object) -> None:
    result = run_job(job_for("minilm", variants=["bf16", "fp16", "batched"]))
    assert result["status"] == Status.REAL, result["error"]
    got = _by_name(result["variants"])
    for name in ("bf16", "fp16"):  # hidden states beyond the elementwise tolerance or not, the gate holds
        assert got[name]["verdict"] in ("works", "mismatch") and got[name]["non_finite"] == 0, got[name]
        assert got[name]["quality"]["metric"] == "semantic_margin" and got[name]["quality"]["passed"] is True
    assert got["fp16"]["max_abs_diff"] < got["bf16"]["max_abs_diff"]  # 10 mantissa bits against 7
    assert got["batched"]["verdict"] == "works"
    assert result["variants"]["findings"] == []


@pytest.mark.slow
def test_smollm2_through_bf16_and_fp16_with_its_gate(hf_home: object) -> None:
    result = run_job(job_for("llama", gguf=True, variants=["bf16", "fp16"]))
    assert result["status"] == Status.REAL, result["error"]
    for r in result["variants"]["results"]:
        assert r["quality"]["passed"] is True, r  # the LM loss bound holds in reduced precision
        assert r["verdict"] in ("works", "mismatch") and r["non_finite"] == 0


# -- a claim transformers gets wrong --------------------------------------------------------------
@pytest.mark.slow
def test_a_class_that_compiles_fullgraph_without_claiming_it_is_works_unclaimed() -> None:
    """TimesFmModel says _can_compile_fullgraph = False in transformers 5.x; the capability run
    over the architectures found that it compiles with fullgraph=True and matches (docs/variants.md)."""
    listing = {"transformers": "local", "classes": enumerate_classes()}
    catalog = architectures.catalog(listing, "TimesFmModel")
    (job,) = plan_jobs("r", catalog, None, ["cpu"], RunSettings(variants="compile"), pins=[], lock=[])
    result = run_job(job)
    assert result["status"] == Status.SYNTHETIC, result["error"]
    record = result["variants"]
    assert record["claims"]["_can_compile_fullgraph"] is False
    assert _by_name(record)["compile"]["verdict"] == "works" and _by_name(record)["compile"]["compile_s"] > 0
    assert [(f["finding"], f["claim"]) for f in record["findings"]] == [("works_unclaimed", "_can_compile_fullgraph")]


# -- a variant never changes the job's status ------------------------------------------------------
def _arch_job(cls: str, wanted: str) -> dict:
    listing = {"transformers": "local", "classes": enumerate_classes()}
    (job,) = plan_jobs(
        "r", architectures.catalog(listing, cls), None, ["cpu"], RunSettings(variants=wanted), pins=[], lock=[]
    )
    return job


def test_a_sub_model_keeps_its_own_attention_after_the_variants() -> None:
    """DETR runs SDPA; its ResNet backbone cannot and keeps eager. Putting the default back with
    set_attn_implementation("sdpa") asked the backbone for SDPA too, which it refuses: the job
    ended FAILED after variants that were only data, and the sdpa variant was a "claim broken"
    (found by the whole-matrix run). Every config's attention is put back as it was, the job keeps
    the status its check earned, and SDPA is asked where it is claimed."""
    from workers.tiny import build

    job = _arch_job("DetrModel", "eager,sdpa,bf16")
    result = run_job(job)
    assert result["status"] == Status.SYNTHETIC, result["error"]
    got = _by_name(result["variants"])
    assert set(got) == {"eager", "sdpa", "bf16"}
    # transformers refuses set_attn_implementation("sdpa") on the whole model (the backbone does not
    # claim SDPA): the model and what claims it are asked, the backbone keeps eager, and it is judged
    assert got["sdpa"]["verdict"] == "works" and got["sdpa"]["kept"] == {"ResNetBackbone": "eager"}, got["sdpa"]
    assert got["sdpa"]["against"] == "eager" and got["sdpa"]["read_back"]["attention"] == ["sdpa", "eager"]
    assert result["variants"]["findings"] == []
    model, _ = build.build_model("DetrModel", CPU)  # the restore itself, on the same twin
    before = [(type(c).__name__, c._attn_implementation) for c in variants._configs_of(model)]
    assert len({a for _, a in before}) > 1, before  # the top-level and the backbone differ
    snapshot = variants.Snapshot.of(model)
    model.set_attn_implementation("eager")
    snapshot.restore(model)
    assert [(type(c).__name__, c._attn_implementation) for c in variants._configs_of(model)] == before


def test_a_claim_only_parts_that_do_not_claim_it_could_run_is_broken() -> None:
    """AriaModel claims flex_attention; its text model, which holds the attention that runs, does
    not and refuses it. Asked where claimed, the rest keeping their own, the output is bit-identical
    to the reference: nothing ran flex. That is the claim broken (as a user asking for flex gets an
    error), not an attention setting the model ignores."""
    result = run_job(_arch_job("AriaModel", "flex"))
    assert result["status"] == Status.SYNTHETIC, result["error"]
    flex = _by_name(result["variants"])["flex"]
    assert flex["verdict"] == "error" and flex["kind"] == "attention_unsupported", flex
    assert flex["message"].startswith(
        "only sub-models that do not claim flex_attention run attention (AriaTextModel keeps"
    )
    assert [(f["finding"], f["variant"]) for f in result["variants"]["findings"]] == [("claim_broken", "flex")]


def test_a_check_output_with_no_floating_point_tensor_leaves_the_variants_not_applicable() -> None:
    """WavTokenizer's encoder returns only discrete codes: the variants have no reference to be
    compared with. Each is not_applicable with that reason, no finding, and the job keeps its
    status (it ended FAILED before, on the variants' own reference pass)."""
    result = run_job(_arch_job("WavTokenizerEncoderModel", "bf16,sdpa"))
    assert result["status"] == Status.SYNTHETIC, result["error"]
    got = _by_name(result["variants"])
    assert {r["verdict"] for r in got.values()} == {"not_applicable"}
    assert got["bf16"]["reason"].startswith("no reference to compare with: the check's plain forward pass returned no")
    assert result["variants"]["findings"] == []


# -- through a real worker, into the report ---------------------------------------------------------
def test_a_variant_that_kills_its_process_is_crashed_and_the_job_keeps_its_status(
    redis_url: str, start_worker, tmp_path: Path
) -> None:
    """A variant whose kernel kills the process (SIGSEGV: flex_attention on cpu for DogeModel)
    killed every delivery of the job, which ended FAILED worker_lost though its check had passed.
    The variant running is journaled on local disk: the next delivery records it `error` /
    `crashed`, runs the others, and the job ends with its own status."""
    start_worker(redis_url, FLEET_PLUGINS=f"{PLUGINS},tests.plugins.crashing_attention")
    cat = write_catalog(
        tmp_path / "c.toml",
        {"tiny": {"check": "causal_lm", "architectures": ["LlamaForCausalLM"], "synthetic": "llama"}},
    )
    args = ("--catalog", str(cat), "--family", "tiny", "--repeats", "1", "--redis-url", redis_url)
    sub = orchestrator("submit", *args, "--variants", "bf16,attention:crash,sdpa", "--wait", timeout=600)
    assert sub.returncode == 0, sub.stderr
    data = json.loads(orchestrator("report", sub.stdout.strip(), "--format", "json", "--redis-url", redis_url).stdout)
    (result,) = data["results"]
    assert result["status"] == "SYNTHETIC" and result["delivery"] == 2, (result["status"], result["error"])
    got = _by_name(result["variants"])
    assert got["attention:crash"]["verdict"] == "error" and got["attention:crash"]["kind"] == "crashed"
    assert "died" in got["attention:crash"]["message"]
    assert got["bf16"]["verdict"] == "works" and got["sdpa"]["verdict"] == "works"


def test_variants_through_a_worker_into_the_capability_report(redis_url: str, start_worker, tmp_path: Path) -> None:
    start_worker(redis_url, FLEET_PLUGINS=f"{PLUGINS},tests.plugins.wrong_attention")
    cat = write_catalog(
        tmp_path / "c.toml",
        {"tiny": {"check": "causal_lm", "architectures": ["LlamaForCausalLM"], "synthetic": "llama"}},
    )
    args = ("--catalog", str(cat), "--family", "tiny", "--repeats", "1", "--redis-url", redis_url)
    # expectations name variants: bf16 is expected to mismatch, yet it works -> exit 5, naming it
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('[expect]\n"tiny@cpu#bf16" = "mismatch: assumed"\n"*@cpu#flash" = "not_applicable"\n')
    sub = orchestrator(
        "submit", *args, "--variants", "bf16,attention:wrong,flash", "--expectations", str(wrong), "--wait", timeout=600
    )
    assert sub.returncode == ExitCode.RUN_FAILED, sub.stderr
    assert "tiny@cpu: unexpected variant: variant bf16 works, expected mismatch" in sub.stderr
    run_id = sub.stdout.strip()
    right = tmp_path / "right.toml"
    right.write_text(
        '[expect]\n"tiny@cpu#bf16" = "works"\n"tiny@cpu#attention:wrong" = "mismatch: the plugin is wrong"\n'
        '"tiny@cpu#fp16" = "error: not run, so not judged"\n'
    )
    judged = json.loads(
        orchestrator(
            "report", run_id, "--format", "json", "--expectations", str(right), "--redis-url", redis_url
        ).stdout
    )
    assert judged["unexpected"] == []
    expectation = judged["changes"][0]["expectation"]
    assert [(x["variant"], x["got"]) for x in expectation["variants_expected"]] == [
        ("bf16", "works"),
        ("attention:wrong", "mismatch"),
    ]
    md_right = orchestrator("report", run_id, "--expectations", str(right), "--redis-url", redis_url).stdout
    junit = orchestrator(
        "report", run_id, "--format", "junit", "--expectations", str(wrong), "--redis-url", redis_url
    ).stdout
    assert 'type="unexpected_variant" message="unexpected variant: bf16 works, expected mismatch"' in junit
    assert "variant `attention:wrong` mismatch as expected (the plugin is wrong)" in md_right
    data = json.loads(orchestrator("report", run_id, "--format", "json", "--redis-url", redis_url).stdout)
    (result,) = data["results"]
    assert result["status"] == "SYNTHETIC" and result["environment"]["model_device"] == "cpu"
    got = _by_name(result["variants"])
    assert got["bf16"]["verdict"] == "works" and got["attention:wrong"]["verdict"] == "mismatch"
    assert got["flash"]["verdict"] == "not_applicable"
    cpu = data["capability"]["devices"]["cpu"]
    assert cpu["counts"]["attention:wrong"]["mismatch"] == 1 and cpu["counts"]["bf16"]["works"] == 1
    md = orchestrator("report", run_id, "--redis-url", redis_url).stdout
    assert "## Capability matrix" in md and "| tiny | LlamaForCausalLM | ok" in md and "≠" in md
    html_path = tmp_path / "r.html"
    orchestrator("report", run_id, "--format", "html", "--output", str(html_path), "--redis-url", redis_url)
    html = html_path.read_text()
    assert '<section id="capability">' in html and 'class="v-mismatch"' in html


def test_regression_of_a_variant_is_a_finding_attributed_to_what_changed() -> None:
    def result(verdict: str, torch_version: str) -> dict:
        return {
            "run_id": "r2" if torch_version == "2.14" else "r1",
            "job_id": "tiny@cpu",
            "family": "tiny",
            "device": "cpu",
            "architecture": "LlamaForCausalLM",
            "status": "SYNTHETIC",
            "environment": {"torch": torch_version},
            "variants": {
                "results": [
                    {"variant": "bf16", "verdict": verdict, "kind": "inference_error" if verdict == "error" else None}
                ],
                "findings": [],
            },
        }

    cap = capability.build([result("error", "2.14")], {"tiny@cpu": result("works", "2.13")})  # type: ignore[list-item,dict-item]
    (finding,) = cap["findings"]
    assert finding["finding"] == "regression" and finding["variant"] == "bf16"
    assert "torch 2.13 → 2.14" in finding["detail"]


def test_html_grid_stays_compact_at_1100_rows() -> None:
    """An architecture run's page: one compact row per class, findings first."""
    results = [
        _result(
            "r",
            f"arch:C{i}",
            "cpu",
            "SYNTHETIC",
            architecture=f"C{i}",
            variants={
                "results": [{"variant": v, "verdict": "works", "speed_vs_reference": 1.0} for v in parsing.DEFAULT],
                "findings": [{"finding": "claim_broken", "variant": "sdpa", "claim": "_supports_sdpa", "detail": "x"}]
                if i == 700
                else [],
            },
        )
        for i in range(1100)
    ]
    data = assemble({"run_id": "r", "started_at": 1_790_000_000.0}, results, None, {}, [("r", {})])  # type: ignore[arg-type]
    rows = data["capability"]["devices"]["cpu"]["rows"]
    assert len(rows) == 1100 and rows[0]["family"] == "arch:C700"  # the row with a finding first
    html = render_html(data)
    start = html.index('<section id="capability">')
    section = html[start : html.index("</section>", start)]
    assert section.index("claim_broken") < section.index('data-capability-rows="1100"')  # findings before the grid
    assert section.count("<tr>") == 1100 + 4 + 2  # a row per class, the four verdict counts, two header rows
    assert len(section.encode()) / 1100 < 1500  # bytes per class row: small cells, a title each


def test_an_expectation_can_name_a_variant_verdict(tmp_path: Path) -> None:
    from orchestrator.expectations import parse

    text = (
        '[expect]\n"tiny@cpu#bf16" = "works: holds on every CPU"\n'
        '"*@cpu#flash" = "not_applicable"\n"*@cpu#fp16" = "works"\n'
        '"tiny@cpu#compile" = "error(compile_error): graph break"\n"tiny@cpu#export" = "error"\n'
    )
    expected = parse(text, "e.toml")
    ran = {
        "results": [
            {"variant": "bf16", "verdict": "mismatch"},
            {"variant": "flash", "verdict": "not_applicable"},
            {"variant": "compile", "verdict": "error", "kind": "oom"},
            {"variant": "export", "verdict": "error", "kind": "export_error"},
        ]
    }
    verdict = expected.judge(_result("r", "tiny", "cpu", "SYNTHETIC", variants=ran))  # type: ignore[arg-type]
    assert verdict["unexpected"] is True and verdict["kind"] == "unexpected variant"
    assert [(x["variant"], x["expected"], x["got"], x["reason"]) for x in verdict["variants"]] == [
        ("bf16", "works", "mismatch", "holds on every CPU"),
        ("compile", "error(compile_error)", "error(oom)", "graph break"),  # another error kind
    ]  # fp16 did not run: nothing to judge
    assert [(x["variant"], x["got"]) for x in verdict["variants_expected"]] == [
        ("export", "error(export_error)"),  # an error of any kind
        ("flash", "not_applicable"),
    ]
    assert expected.judge(_result("r", "tiny", "cpu", "SYNTHETIC"))["unexpected"] is False
    for bad, named in (
        ('"a@cpu#bf17" = "works"', "unknown variant 'bf17'"),
        ('"a@cpu#bf16" = "REAL"', "unknown verdict 'REAL'"),
        ('"a@cpu#all" = "works"', "name one variant, not a list or a group"),
        ('"a@cpu#" = "works"', 'no variant named after "#"'),
        ('"a@cpu#compile" = "error(segfault)"', "unknown error kind 'segfault'"),
        ('"a@cpu#compile" = "works(oom)"', "only an error has a kind"),
    ):
        with pytest.raises(BadInput, match=rf'^e\.toml: \[expect\] "a@cpu#.*{re.escape(named)}'):
            parse(f"[expect]\n{bad}\n", "e.toml")
    # on the command line: one line naming the file and the key, exit 2, before Redis is even reached
    bad_file = tmp_path / "bad.toml"
    bad_file.write_text('[expect]\n"llama@cpu#bf16" = "works"\n"llama@cpu#turbo" = "works"\n')
    out = orchestrator("submit", "--all", "--expectations", str(bad_file), "--redis-url", "redis://127.0.0.1:1/0")
    assert out.returncode == ExitCode.BAD_INPUT and out.stdout == ""
    assert out.stderr.count("\n") == 1 and f'{bad_file}: [expect] "llama@cpu#turbo": unknown variant' in out.stderr
    # a malformed variants record (anyone who can write to Redis can store one) is not judged, never a crash
    forged = _result("r", "tiny", "cpu", "SYNTHETIC", variants={"results": [{"variant": 3}]})  # type: ignore[arg-type]
    assert expected.judge(forged)["unexpected"] is False


def test_the_job_time_limit_inside_a_compile_ends_the_variants_not_the_job(
    hf_home: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """flex_attention compiles with inductor on cpu (seconds to tens of seconds): the job's time limit
    passes inside it, inductor wraps the JobTimeout; the variant and those after it are `timeout`
    errors, never a claim broken, and the job keeps the status its check earned. Inductor's code
    generation is slowed at the boundary (a sleep before each graph is compiled to a module), so the
    limit passes inside the compile however fast the host compiles."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # compiled from scratch
    torch._dynamo.reset()  # and nothing an earlier test compiled in this process to reuse
    from torch._inductor.graph import GraphLowering

    codegen = GraphLowering.compile_to_module

    def slow_codegen(self: GraphLowering) -> object:
        time.sleep(60)  # SIGALRM raises the job's JobTimeout in here
        return codegen(self)

    monkeypatch.setattr(GraphLowering, "compile_to_module", slow_codegen)
    job = job_for("llama", variants=["flex", "bf16"], time_limit_s=8.0)
    result = run_job(job)
    assert result["status"] == Status.SYNTHETIC, result["error"]
    got = _by_name(result["variants"])
    assert [got[n]["kind"] for n in ("flex", "bf16")] == ["timeout", "timeout"]
    assert result["variants"]["findings"] == []


def test_flex_runs_its_compiled_kernel_in_every_class_or_says_it_did_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker runs class after class. A class with an earlier class's shapes and functions reuses
    its compiled flex code (counted calls, no graph compiled); one whose guards differ compiles its
    own; when the cache is full (here a limit of 1) the cache is reset and the variant compiles
    afresh; a variant that needs more than a fresh cache holds is a compile_error saying so, never
    a verdict on flex's unfused eager fallback (what dynamo would run past its limit)."""
    check = get_check("causal_lm")
    torch._dynamo.reset()
    first = _by_name(variants.run(check, _llama(), CPU, ["flex"], real=False))["flex"]
    assert first["verdict"] == "works", first
    # one graph, the kernel: its block masks were built eagerly, their vmap not traced
    assert first["compiled"]["graphs"] == 1 and first["compiled"]["block_masks_eager"] >= 1, first
    again = _by_name(variants.run(check, _llama(), CPU, ["flex"], real=False))["flex"]  # same shapes: reused
    assert again["verdict"] == "works", again
    assert again["compiled"]["graphs"] == 0 and again["compiled"]["by"] == "compiled code reused"
    assert again["compiled"]["flex_calls"] == first["compiled"]["flex_calls"] > 0
    assert again["compiled"]["block_masks_eager"] == first["compiled"]["block_masks_eager"]
    monkeypatch.setattr(variants, "FLEX_RECOMPILE_LIMIT", 1)
    bundle = _llama()
    for layer in bundle.model.model.layers:  # another class: another attention scale (dynamo guards on it)
        layer.self_attn.scaling *= 0.5
    record = variants.run(check, bundle, CPU, ["flex", "flex+batched"], real=False)
    got = _by_name(record)
    assert got["flex"]["verdict"] == "works", got["flex"]
    compiled = got["flex"]["compiled"]
    assert compiled["by"] == "torch.compile (inductor)" and compiled["graphs"] >= 1
    assert compiled["fx_graph_cache_hits"] + compiled["fx_graph_cache_misses"] >= 1
    assert got["flex"]["first_call_s"] > 0 and got["flex"]["wall_s"] >= got["flex"]["first_call_s"]
    batched = got["flex+batched"]  # three shapes (the batch, each row alone) in a cache of one
    assert batched["verdict"] == "error" and batched["kind"] == "compile_error", batched
    assert "eager fallback was refused" in batched["message"]


def test_compare_leaves_out_padding_positions_and_counts_non_finite() -> None:
    ref = torch.zeros(2, 4, 3)
    out = ref.clone()
    out[1, 3] = float("nan")  # a padding position: no kernel defines its value
    keep = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    judged = variants.compare(ref, out, 1e-4, 1e-4, keep)
    assert judged["verdict"] == "works" and judged["padding_left_out"] == 1 and judged["non_finite"] == 0
    judged = variants.compare(ref, out, 1e-4, 1e-4)
    assert judged["verdict"] == "mismatch" and judged["non_finite"] == 3
    out[0, 0, 0] = 0.5
    judged = variants.compare(ref, out, 1e-4, 1e-4, keep)
    assert judged["verdict"] == "mismatch" and judged["max_abs_diff"] == 0.5


# -- read-back: a verdict only on what the model runs ------------------------------------------
def test_an_attention_the_class_cannot_switch_to_is_not_applicable_and_no_claim() -> None:
    """transformers only logs a warning when a class cannot switch attention: the variant must not
    judge the default kernel under the asked name (in any precision), nor call it works unclaimed."""
    bundle = _llama()
    model = bundle.model
    model.config._attn_implementation_internal = "eager"
    stuck = {"_can_set_attn_implementation": classmethod(lambda cls: False), "_supports_sdpa": False}
    model.__class__ = type("StuckLlama", (type(model),), stuck)
    record = variants.run(get_check("causal_lm"), bundle, CPU, ["sdpa", "bf16+sdpa", "fp16+sdpa", "bf16"], real=False)
    got = _by_name(record)
    for name in ("sdpa", "bf16+sdpa", "fp16+sdpa"):
        assert got[name]["verdict"] == "not_applicable", name
        assert got[name]["reason"] == "asked attention sdpa, model runs eager", name
    assert got["bf16"]["verdict"] == "works" and got["bf16"]["read_back"] == {
        "attention": ["eager"],
        "precision": ["bfloat16"],
    }
    assert record["findings"] == []  # no works_unclaimed from a kernel that never ran
    forged = {**got["bf16+sdpa"], "verdict": "works"}  # a works whose read-back disagrees derives nothing
    assert variants.findings([forged], {"_supports_sdpa": False}) == []
    assert (
        variants.findings(
            [{**forged, "read_back": {"attention": ["sdpa"], "precision": ["bfloat16"]}}], {"_supports_sdpa": False}
        )[0]["finding"]
        == "works_unclaimed"
    )


def test_the_default_kernel_is_not_judged_against_itself_when_eager_cannot_be_set() -> None:
    bundle = _llama()  # default sdpa, which is judged against an eager run
    model = bundle.model
    model.__class__ = type(
        "StuckLlama", (type(model),), {"_can_set_attn_implementation": classmethod(lambda cls: False)}
    )
    (sdpa,) = variants.run(get_check("causal_lm"), bundle, CPU, ["sdpa"], real=False)["results"]
    assert sdpa["verdict"] == "not_applicable" and "asked eager, model runs sdpa" in sdpa["reason"]


def test_a_precision_the_model_does_not_take_is_not_applicable() -> None:
    bundle = _llama()
    model = bundle.model
    model.__class__ = type("NoCastLlama", (type(model),), {"to": lambda self, *a, **k: self})
    record = variants.run(get_check("causal_lm"), bundle, CPU, ["bf16", "fp16", "eager"], real=False)
    got = _by_name(record)
    assert got["bf16"]["verdict"] == "not_applicable" and got["bf16"]["reason"] == "asked bfloat16, model runs float32"
    assert got["fp16"]["reason"] == "asked float16, model runs float32" and "max_abs_diff" not in got["fp16"]
    assert got["eager"]["verdict"] == "works"  # float32 asked, float32 read back


# -- no kernel from the Hub ----------------------------------------------------------------------
def test_no_attention_name_makes_transformers_fetch_a_kernel_from_the_hub() -> None:
    """A name transformers would route to kernels.get_kernel is never asked for: refused by the
    parser, and not applicable on the worker (as transformers' own checks read it)."""
    from transformers.utils import is_kernels_available

    assert parsing.parse("attention:flash_attention_3")[0].claim == "_supports_flash_attn"
    model = _llama().model
    for name in (
        "paged|flash_attention_2",
        "kernels-community/flash-attn2",
        "org/k:fn",
        "flash_attention_4",
        "noflash",
    ):
        assert variants._hub_kernel(model, name) is not None, name
    assert variants._hub_kernel(model, "sdpa") is None and variants._hub_kernel(model, "eager") is None
    usable = variants._flash_usable("flash_attention_2")
    assert (variants._hub_kernel(model, "flash_attention_2") is None) == (usable or not is_kernels_available())
    # a class listing other flash implementations: transformers would switch to one of those
    model.__class__ = type("ListsKernels", (type(model),), {"_compatible_flash_implementations": ["org/flash"]})
    assert "ListsKernels lists org/flash" in str(variants._hub_kernel(model, "flash_attention_3"))


# -- a malformed variants record in a stored result ------------------------------------------------
MALFORMED = {
    "results a string": ({"results": "abc"}, "'results' must be a list, got str"),
    "record a string": ("abc", "is a JSON object, got str"),
    "record a list": ([1], "is a JSON object, got list"),
    "no verdict": ({"results": [{"variant": "bf16"}]}, "needs a string 'verdict'"),
    "entry not an object": ({"results": [5]}, "variant entry 0 is not an object"),
    "max_abs_diff a string": (
        {
            "results": [
                {"variant": "bf16", "verdict": "works", "max_abs_diff": "x", "max_rel_diff": 1, "atol": 1, "rtol": 1}
            ]
        },
        "'max_abs_diff' must be a number, got str",
    ),
    "speed a string": (
        {"results": [{"variant": "bf16", "verdict": "works", "speed_vs_reference": "fast"}]},
        "'speed_vs_reference' must be a number",
    ),
    "findings ints": ({"results": [], "findings": [1, 2]}, "finding 0 is not an object"),
    "finding without keys": ({"results": [], "findings": [{"x": 1}]}, "needs a string 'finding'"),
    "variant unhashable": ({"results": [{"variant": ["a"], "verdict": "works"}]}, "needs a string 'variant'"),
    "reference a string": ({"results": [], "reference": "abc"}, "'reference' must be an object"),
}


@pytest.mark.parametrize("label", list(MALFORMED))
def test_a_malformed_variants_record_is_shown_corrupt_in_every_format(label: str) -> None:
    from orchestrator.report import render_markdown, to_json, to_junit

    record, problem = MALFORMED[label]
    good = {"results": [{"variant": "bf16", "verdict": "works", "speed_vs_reference": 1.5}], "findings": []}
    results = [
        _result("r", "bad", "cpu", "SYNTHETIC", architecture="X", variants=record),
        _result("r", "good", "cpu", "SYNTHETIC", architecture="Y", variants=good),
    ]
    previous = {"good@cpu": _result("r0", "good", "cpu", "SYNTHETIC", variants=record)}  # a corrupt baseline too
    cap = capability.build(results, previous)  # type: ignore[arg-type]
    (finding,) = cap["findings"]
    assert finding["finding"] == "corrupt_record" and finding["job_id"] == "bad@cpu" and problem in finding["detail"]
    rows = {row["family"]: row for row in cap["devices"]["cpu"]["rows"]}
    assert problem in rows["bad"]["corrupt"] and rows["good"]["cells"]["bf16"]["short"] == "ok"
    data = assemble({"run_id": "r", "started_at": 1_790_000_000.0}, results, None, {}, [("r", {})])  # type: ignore[arg-type]
    md = render_markdown(data)
    assert "| bad (corrupt variants record:" in md and "**corrupt\\_record**" in md
    assert "bad (corrupt)" in render_html(data)
    assert json.loads(to_json(data))["capability"]["findings"][0]["finding"] == "corrupt_record"
    assert to_junit(data).startswith("<?xml")


def test_unknown_verdicts_and_names_are_escaped_in_the_capability_report() -> None:
    record = {
        "results": [{"variant": "fp16", "verdict": "<b>works</b>|**x**", "reason": "<img src=x>", "kind": "<i>k</i>"}],
        "findings": [{"finding": "claim_broken", "variant": "<script>x</script>", "detail": "|<i>|", "claim": "<u>"}],
    }
    data = assemble(
        {"run_id": "r", "started_at": 1_790_000_000.0},
        [_result("r", "tiny", "cpu", "SYNTHETIC", variants=record)],  # type: ignore[list-item]
        None,
        {},
        [("r", {})],
    )
    cell = data["capability"]["devices"]["cpu"]["rows"][0]["cells"]["fp16"]
    assert cell["short"] == "<b>works</b>|**x**"  # data as stored; every renderer escapes it
    md = render_markdown_of(data)
    for raw in ("<b>", "<img", "<script>", "<i>", "|**x**"):
        assert raw not in md, raw
    assert "&lt;b&gt;works&lt;/b&gt;\\|\\*\\*x\\*\\*" in md
    html = render_html(data)
    assert "<b>works" not in html and "<img" not in html and "<script>x" not in html


def render_markdown_of(data: dict) -> str:
    from orchestrator.report import render_markdown

    return render_markdown(data)


def _tiny(builder: str):  # type: ignore[no-untyped-def]
    from workers.checks import get_check
    from workers.tiny import synthetic

    fam = family(builder)
    check = get_check(fam.check)
    return check, synthetic.build(fam, check, torch.device("cpu"))


def test_a_reference_that_cannot_tell_kernels_apart_gives_no_verdict() -> None:
    """Rule: a verdict judges a variant against the reference, so a reference with non-finite
    values (every variant would be `mismatch`, the class's claim blamed) or with one value
    everywhere (every kernel and precision keeping it would `work`) judges nothing: every
    variant is not_applicable, saying why, and no finding is derived."""
    from workers import variants as running

    check, bundle = _tiny("bert")
    layer_norm = bundle.model.encoder.layer[-1].output.LayerNorm
    with torch.no_grad():
        layer_norm.weight.zero_()
        layer_norm.bias.fill_(0.25)  # last_hidden_state is 0.25 everywhere, whatever the kernel
    record = running.run(check, bundle, torch.device("cpu"), ["sdpa", "eager", "fp16", "bf16"], real=False)
    assert "is constant" in record["reference"]["unusable"]
    assert {r["verdict"] for r in record["results"]} == {"not_applicable"}
    assert all("cannot tell kernels" in r["reason"] for r in record["results"])
    assert record["findings"] == []

    check, bundle = _tiny("llama")
    with torch.no_grad():
        bundle.model.lm_head.weight[1, 0] = float("inf")  # one logit column non-finite in every kernel
    record = running.run(check, bundle, torch.device("cpu"), ["sdpa", "eager", "bf16"], real=False)
    assert "non-finite" in record["reference"]["unusable"]
    assert {r["verdict"] for r in record["results"]} == {"not_applicable"}
    assert record["findings"] == []  # no claim_broken, no non_finite blamed on a variant

    # one value (a single score, a regression head at batch 1) is not "constant": it still moves
    # with the kernel; two equal values are, and no value at all judges nothing
    assert running.reference_problem(torch.tensor([[0.3]])) is None
    assert "is constant" in str(running.reference_problem(torch.tensor([[0.3, 0.3]])))
    assert running.reference_problem(torch.zeros(1, 0)) == "has no values"


@pytest.mark.parametrize(
    ("architecture", "verdict"), [("XLNetLMHeadModel", "not_applicable"), ("GPT2LMHeadModel", "works")]
)
def test_static_cache_works_only_when_generation_read_back_a_static_cache(architecture: str, verdict: str) -> None:
    """Rule: like attention and precision, the static cache is read back before it is judged:
    generate() ignores cache_implementation="static" for a model that keeps its own state
    (XLNet's mems, RWKV's state list), and its greedy tokens then equal the dynamic run's, a
    `works` for a cache that never ran. The verdict says which cache generation used."""
    from fleet.catalog import Family
    from workers import variants as running
    from workers.checks.forward import for_architecture
    from workers.tiny import synthetic

    check = for_architecture(architecture)
    fam = Family(
        name=architecture, check="auto", architectures=(architecture,), synthetic=f"auto:{architecture}", candidates=()
    )
    bundle = synthetic.build(fam, check, torch.device("cpu"))
    (result,) = running.run(check, bundle, torch.device("cpu"), ["static_cache"], real=False)["results"]
    assert result["verdict"] == verdict, result
    if verdict == "not_applicable":
        assert result["reason"].startswith("asked cache_implementation static, generation used ")
        assert "Static" not in result["reason"]


@pytest.mark.parametrize("how", ["TORCHDYNAMO_DISABLE", "config.disable", "config.suppress_errors"])
def test_compiled_variants_are_not_judged_where_torch_compile_cannot_compile(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rule: a verdict on a compiled kernel (compile, flex) needs a process where torch.compile
    compiles. With dynamo disabled torch.compile hands back the model itself (compile 'worked'
    in 5 ms) and flex_attention runs its unfused eager path ('compiled code reused', 0 graphs);
    with errors suppressed a failed compile runs eager. Such a process gives not_applicable."""
    from workers import variants as running

    if how == "TORCHDYNAMO_DISABLE":
        monkeypatch.setenv("TORCHDYNAMO_DISABLE", "1")
    else:
        monkeypatch.setattr(torch._dynamo.config, how.removeprefix("config."), True)
    check, bundle = _tiny("llama")
    record = running.run(check, bundle, torch.device("cpu"), ["compile", "flex", "sdpa"], real=False)
    verdicts = {r["variant"]: r for r in record["results"]}
    for name in ("compile", "flex"):
        assert verdicts[name]["verdict"] == "not_applicable", verdicts[name]
        assert "torch.compile is disabled" in verdicts[name]["reason"] or "suppress_errors" in verdicts[name]["reason"]
    assert verdicts["sdpa"]["verdict"] != "not_applicable"  # nothing compiled there: judged as before
