"""Which facts of the environment changed with a job's outcome.

For a job whose status changed against its baseline, every fact that differs between the two
results: library versions, torch/CUDA/driver, GPU, worker host, model, revision, weights digest,
source and the catalog entry. Facts about the machine are compared only when both results have
them (a job that failed before reaching its device has no environment to compare).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fleet.protocol import Job, Result

# (name, where) — evidence facts are always compared; environment facts only when both have them
EVIDENCE = ("source", "model", "revision", "weights", "catalog")
ENVIRONMENT = ("torch", "transformers", "cuda", "driver", "gpu", "host", "worker", "python", "platform")


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] + "…" if len(text) > 16 and all(c in "0123456789abcdef" for c in text) else text


def catalog_digest(job: Job | None) -> str | None:
    if not job or "family_spec" not in job:
        return None
    return hashlib.sha256(json.dumps(job["family_spec"], sort_keys=True).encode()).hexdigest()[:12]


def facts(result: Result, job: Job | None = None) -> dict[str, Any]:
    env = result.get("environment") or {}
    return {
        "source": result.get("source"),
        "model": result.get("model_used"),
        "revision": result.get("revision"),
        "weights": result.get("weights_sha256"),
        "catalog": catalog_digest(job),
        "torch": env.get("torch"),
        "transformers": env.get("transformers"),
        "cuda": env.get("cuda"),
        "driver": env.get("driver") or env.get("cuda_driver"),
        "gpu": env.get("gpu_name"),
        "host": env.get("host"),
        "worker": result.get("worker"),
        "python": env.get("python"),
        "platform": env.get("platform"),
    }


def changed(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name in EVIDENCE + ENVIRONMENT:
        a, b = before.get(name), after.get(name)
        if name in ENVIRONMENT and (a is None or b is None):
            continue
        if name == "catalog" and (a is None or b is None):
            continue
        if a != b:
            out.append({"fact": name, "from": a, "to": b})
    return out


def describe(before_status: str | None, status: str, changes: list[dict[str, Any]]) -> str:
    """e.g. "REAL → SYNTHETIC; changed: source cache → synthetic, weights 53aa51… → none"."""
    head = f"{before_status} → {status}"
    if not changes:
        return f"{head}; no change in the recorded environment"
    parts = [
        f"{c['fact']} {_short(c['from']) if c['from'] is not None else 'none'} → "
        f"{_short(c['to']) if c['to'] is not None else 'none'}"
        for c in changes
    ]
    return f"{head}; changed: " + ", ".join(parts)


def attribute(
    baseline: Result, current: Result, baseline_job: Job | None = None, current_job: Job | None = None
) -> dict[str, Any]:
    changes = changed(facts(baseline, baseline_job), facts(current, current_job))
    return {
        "changed": changes,
        "summary": describe(str(baseline.get("status")), str(current.get("status")), changes),
    }
