"""Shared harness for the adversarial reproducers: an isolated environment (HF cache,
fleet cache, offline Hub), a job built the way orchestrator.submit.plan_jobs builds it
(shipped pins included), and run_job in-process.

Every reproducer is run as `python -m tests.adversary.NAME` from the repository root and prints
the result's key fields as JSON. It exits 1 when the attack succeeds (the code is wrong),
0 when the attack is refused."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def isolate(base: Path | None = None, cache_dir: Path | None = None) -> Path:
    """Point HF_HOME, FLEET_CACHE_DIR and the host key (outside the cache) at fresh paths under
    `base`; Hub offline."""
    base = base or Path(tempfile.mkdtemp(prefix="fleet-adv-"))
    os.environ["HF_HOME"] = str(base / "hf")
    os.environ.pop("HF_HUB_CACHE", None)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["FLEET_CACHE_DIR"] = str(cache_dir or base / "fleet-cache")
    os.environ["FLEET_HOST_KEY"] = str(base / "host-key" / "host.key")
    os.environ.pop("FLEET_PINS", None)
    return base


def family(name: str, candidates: list[dict[str, Any]] | None = None) -> Any:
    from fleet.catalog import Candidate, Family, load_catalog

    fam = load_catalog().families[name]
    if candidates is not None:
        fam = Family(**{**fam.__dict__, "candidates": tuple(Candidate(**c) for c in candidates)})
    return fam


def job(fam: Any, device: str = "cpu", repeats: int = 1) -> dict[str, Any]:
    """A job as orchestrator.submit.plan_jobs makes it (shipped pins included)."""
    from fleet.settings import RunSettings
    from orchestrator import pins as pinning
    from orchestrator.submit import plan_jobs

    catalog_like = type("C", (), {"select": lambda self, names: [fam]})()
    jobs = plan_jobs("adv-run", catalog_like, None, [device], RunSettings(repeats=repeats), pinning.load())
    return jobs[0]


def run(j: dict[str, Any]) -> dict[str, Any]:
    from workers.core import run_job

    return dict(run_job(j))


def summary(r: dict[str, Any]) -> dict[str, Any]:
    out = r.get("output") or {}
    return {
        "status": r.get("status"),
        "error": r.get("error"),
        "model_used": r.get("model_used"),
        "source": r.get("source"),
        "revision": r.get("revision"),
        "revision_basis": r.get("revision_basis"),
        "weights_sha256": r.get("weights_sha256"),
        "verified_by": (r.get("weights") or {}).get("verified_by"),
        "quality": {k: (out.get("quality") or {}).get(k) for k in ("metric", "value", "bound", "passed", "tokens")},
        "known_answer": {k: (out.get("known_answer") or {}).get(k) for k in ("pinned", "matched")},
        "attempts": [(a["candidate"], a["outcome"], a["error_kind"]) for a in r.get("attempts") or []],
    }


def report(r: dict[str, Any], attack_succeeded: bool, why: str) -> int:
    print(json.dumps(summary(r), indent=2, default=str))
    print(("ATTACK SUCCEEDED: " if attack_succeeded else "attack refused: ") + why)
    return 1 if attack_succeeded else 0
