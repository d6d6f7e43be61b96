"""Offline resolution of a six-candidate family with nothing cached: our resolver against a
plain `from_pretrained` loop over the same candidates, in the same run. Two kinds of
"offline": the Hub host does not resolve (DNS fails at once), and the Hub address accepts
connections but never answers (a black hole, like a dropped network). Target: under 1 s.

    python -m bench.offline_resolution [--skip-naive]
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import threading
import time

import torch

from bench.common import save
from fleet.catalog import Candidate, Family
from workers import hub
from workers.checks import get_check
from workers.resolver import resolve

CANDIDATES = [
    "JackFram/llama-68m",
    "EleutherAI/pythia-70m",
    "facebook/opt-125m",
    "HuggingFaceTB/SmolLM2-135M",
    "EleutherAI/pythia-160m",
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
]


def black_hole() -> str:
    """A listener that accepts connections and never says a word."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            conn, _ = srv.accept()
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    return f"http://127.0.0.1:{srv.getsockname()[1]}"


def ours() -> tuple[float, list[str]]:
    hub._probe_cache.clear()
    fam = Family(
        "llama",
        "causal_lm",
        ("LlamaForCausalLM", "GPTNeoXForCausalLM", "OPTForCausalLM"),
        "llama",
        tuple(Candidate(id=c) for c in CANDIDATES),
    )
    t0 = time.perf_counter()
    res = resolve(fam, get_check("causal_lm"), torch.device("cpu"))
    took = time.perf_counter() - t0
    return took, [a["error_kind"] or a["outcome"] for a in res.attempts]


def naive(limit_s: float) -> tuple[float, list[str]]:
    """What the replaced system did: from_pretrained on each candidate until one loads."""
    from transformers import AutoModelForCausalLM

    t0 = time.perf_counter()
    errors = []
    for c in CANDIDATES:
        try:
            AutoModelForCausalLM.from_pretrained(c)
            errors.append("loaded")
            break
        except Exception as exc:
            errors.append(type(exc).__name__)
        if time.perf_counter() - t0 > limit_s:
            errors.append(f"stopped after {limit_s:.0f} s")
            break
    return time.perf_counter() - t0, errors


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--skip-naive", action="store_true")
    p.add_argument("--naive-limit", type=float, default=600.0)
    args = p.parse_args()
    os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="bench-offline-")
    os.environ.pop("HF_HUB_OFFLINE", None)
    figures: dict[str, object] = {"candidates": len(CANDIDATES), "target_s": 1.0}
    # A worker imports the modeling code before its first job (workers.app); do the same here
    # so that the figure is the resolution, not Python importing transformers' Llama module.
    os.environ["HF_HUB_OFFLINE"] = "1"
    ours()
    os.environ.pop("HF_HUB_OFFLINE")
    for label, endpoint in (("dns_failure", "https://hub.invalid"), ("black_hole", black_hole())):
        os.environ["HF_ENDPOINT"] = endpoint
        took, kinds = ours()
        figures[f"{label}_ours_s"] = round(took, 4)
        figures[f"{label}_ours_attempts"] = kinds
        if not args.skip_naive and label == "dns_failure":
            # huggingface_hub read HF_ENDPOINT at import: the loop goes to huggingface.co, which
            # does not resolve here either (no network) -- the case the 139 s figure came from.
            took, errors = naive(args.naive_limit)
            figures[f"{label}_from_pretrained_loop_s"] = round(took, 2)
            figures[f"{label}_from_pretrained_errors"] = errors
    save("offline_resolution", figures)


if __name__ == "__main__":
    main()
