"""Checking a job message as a worker receives it: whoever can write to Redis can send one,
so a worker checks every field before it acts on any (one line saying what is wrong)."""

from __future__ import annotations

import math
from typing import Any

from fleet.catalog import MAX_REPEATS, Family
from fleet.timing import MAX_TIME_LIMIT_S

_TEXT = ("run_id", "job_id", "family", "device", "queue")
MAX_TEXT = 300
MAX_ATTEMPTS = 100  # deliveries of a job (--max-attempts)
MAX_RERUNS = 100  # runs of a FAILED job again (--reruns)


def _number_problem(value: Any, name: str, maximum: float) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"{name} must be a finite number, got {value!r}"
    if not 0 < value <= maximum:
        return f"{name} must be in (0, {maximum:g}], got {value!r}"
    return None


def job_problem(job: Any) -> str | None:
    """What is wrong with a job message, or None when a worker can run it."""
    if not isinstance(job, dict):
        return f"a job is a JSON object, got {type(job).__name__}"
    for key in _TEXT:
        if not isinstance(job.get(key), str) or not 0 < len(job[key]) <= MAX_TEXT:
            return f"{key} must be a string of 1-{MAX_TEXT} characters"
    for key, maximum in (("time_limit_s", MAX_TIME_LIMIT_S), ("repeats", MAX_REPEATS), ("max_attempts", MAX_ATTEMPTS)):
        problem = _number_problem(job.get(key), key, maximum)
        if problem:
            return problem
    for key in ("reruns", "rerun"):
        value = job.get(key) or 0
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RERUNS:
            return f"{key} must be a whole number from 0 to {MAX_RERUNS}, got {value!r}"
    if "task" in job and (not isinstance(job["task"], str) or not 0 < len(job["task"]) <= 64):
        return "task must be a string of 1-64 characters"
    spec = job.get("family_spec")
    if not isinstance(spec, dict):
        return "family_spec must be an object"
    for key, maximum in (("time_limit_s", MAX_TIME_LIMIT_S), ("memory_limit_mb", float(1 << 30))):
        if spec.get(key) is not None:
            problem = _number_problem(spec[key], f"family_spec.{key}", maximum)
            if problem:
                return problem
    try:
        Family.from_dict(spec)
    except (TypeError, KeyError, ValueError) as exc:
        return f"family_spec is not a family: {exc}"[:300]
    return None
