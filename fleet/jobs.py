"""Checking a job message as a worker receives it: whoever can write to Redis can send one,
so a worker checks every field before it acts on any (one line saying what is wrong).

Every field is checked by kind and length, with the catalog's own limits (fleet.catalog): a
revision is a commit or a git ref, never a path; a file name has no directories; lists and
texts are bounded. The Celery message around the job is checked before it (fleet.messages)."""

from __future__ import annotations

import json
from typing import Any

import orjson

from fleet import lock
from fleet.catalog import (
    CANDIDATE_KEYS,
    MAX_ARCHITECTURE_LENGTH,
    MAX_ARCHITECTURES,
    MAX_CANDIDATES,
    MAX_LENGTH,
    MAX_REPEATS,
    Family,
    candidate_problem,
)
from fleet.errors import LockError
from fleet.numbers import finite, sent_at_problem, shown
from fleet.timing import MAX_TIME_LIMIT_S
from fleet.variants import VariantError, check_list

_TEXT = ("run_id", "job_id", "family", "device", "queue")
MAX_TEXT = 300
MAX_ATTEMPTS = 100  # deliveries of a job (--max-attempts)
MAX_RERUNS = 100  # runs of a FAILED job again (--reruns)
MAX_PINS = 256  # known answers carried by one job (orchestrator.pins picks those of its family)
MAX_LOCK = 256  # model lock entries carried by one job (fleet.lock.for_job: its family's first)


def _number_problem(value: Any, name: str, maximum: float) -> str | None:
    number = finite(value)
    if number is None:
        return f"{name} must be a finite number, got {shown(value)}"
    if not 0 < number <= maximum:
        return f"{name} must be in (0, {maximum:g}], got {shown(value)}"
    return None


# What a message adds to the job the run stored: when it was sent, and which run of the job it is
# (a rerun, published by the worker that kept the failed run's outcome; workers/reruns.py).
MESSAGE_ONLY = ("sent_at", "rerun")


def as_stored(job: dict[str, Any]) -> dict[str, Any]:
    """A job without its message-only fields: what a message and the run's stored job must agree on."""
    return {k: v for k, v in job.items() if k not in MESSAGE_ONLY}


def stored_text(job: dict[str, Any]) -> str:
    """The job as the run stores it (`fleet:run:<id>:jobs`), and as a worker re-encodes a message's
    job to compare with it, text for text (fleet/store/begin.lua): its message-only fields left
    out, keys sorted, Python's own JSON. Decoding then encoding gives the same text back for every
    JSON value (floats by repr, integers of any size, NaN and Infinity, escapes), and texts that
    differ are different values: {} is not [], 2**53 is not 2**53 + 1, 1 is not 1.0.
    Raises TypeError or ValueError for a value JSON cannot carry."""
    return json.dumps(as_stored(job), sort_keys=True)


def differing_fields(stored: Any, claimed: dict[str, Any]) -> str:
    """Why a message's job is not the stored one, for its dead letter: the top-level fields whose
    encodings differ."""
    if not isinstance(stored, dict):
        return "the run's stored job cannot be read"
    a, b = as_stored(stored), as_stored(claimed)
    names = sorted(k for k in a.keys() | b.keys() if k not in a or k not in b or not _same_value(a[k], b[k]))
    if not names:
        return "its encoding differs from the stored job's (stored by another version of model-fleet?)"
    return "it differs in " + ", ".join(str(k)[:60] for k in names[:20])


def _same_value(a: Any, b: Any) -> bool:
    text = _text(a)
    return text is not None and text == _text(b)


def same_job(stored: Any, claimed: dict[str, Any]) -> bool:
    """Whether a message's job is the run's stored one, as begin.lua decides it (stored_text)."""
    return isinstance(stored, dict) and _same_value(as_stored(stored), as_stored(claimed))


def _text(value: Any) -> str | None:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
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
    attempts = job["max_attempts"]  # a finite number in (0, MAX_ATTEMPTS]: now a whole one from 1
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        # run_check gives up once delivery > int(max_attempts): 0.5 gave up on the first delivery,
        # storing FAILED worker_lost for a job nothing ran (scripts/adversary/fractional_max_attempts.py)
        return f"max_attempts must be a whole number from 1 to {MAX_ATTEMPTS}, got {shown(attempts)}"
    for key in ("reruns", "rerun"):
        value = job.get(key) or 0
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RERUNS:
            return f"{key} must be a whole number from 0 to {MAX_RERUNS}, got {shown(value)}"
    if job.get("sent_at") is not None:
        problem = sent_at_problem(job["sent_at"])
        if problem:
            return problem
    if "task" in job and (not isinstance(job["task"], str) or not 0 < len(job["task"]) <= 64):
        return "task must be a string of 1-64 characters"
    pins = job.get("pins")
    if pins is not None and (
        not isinstance(pins, list) or len(pins) > MAX_PINS or not all(isinstance(p, dict) for p in pins)
    ):
        return f"pins must be a list of at most {MAX_PINS} objects"
    entries = job.get("lock")
    if entries is not None:
        if not isinstance(entries, list) or len(entries) > MAX_LOCK:
            return f"lock must be a list of at most {MAX_LOCK} entries"
        for i, entry in enumerate(entries):
            problem = _lock_entry_problem(i, entry)
            if problem:
                return problem
    if job.get("variants") is not None:
        try:
            check_list(job["variants"], "variants")
        except VariantError as exc:
            return exc.message[:300]
    spec = job.get("family_spec")
    if not isinstance(spec, dict):
        return "family_spec must be an object"
    problem = _spec_problem(spec)
    if problem:
        return f"family_spec: {problem}"
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


# The lock entries this process has found sound, as canonical JSON: every job of a run carries the
# same entries (fleet.lock.for_job), checked once per process instead of once per job. An entry
# holds only texts and objects of texts when sound, so no two values with one canonical text
# (orjson writes NaN as null) can be told apart by the check.
_SOUND_LOCK_ENTRIES: set[bytes] = set()
MAX_REMEMBERED = 4096


def _lock_entry_problem(i: int, entry: Any) -> str | None:
    try:
        text: bytes | None = orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # not JSON data orjson writes (an integer beyond 64 bits): checked each time
        text = None
    if text is not None and text in _SOUND_LOCK_ENTRIES:
        return None
    try:
        lock.parse_entry(f"lock[{i}]", entry)
    except LockError as exc:
        return exc.message
    if text is not None and len(_SOUND_LOCK_ENTRIES) < MAX_REMEMBERED:
        _SOUND_LOCK_ENTRIES.add(text)
    return None


def _text_problem(value: Any, name: str, limit: int) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > limit):
        return f"{name} must be a string of at most {limit} characters"
    return None


def _spec_problem(spec: dict[str, Any]) -> str | None:
    """Kinds and lengths of a family's fields (Family.to_dict()), with the catalog's limits."""
    for key, limit in (
        ("name", MAX_TEXT),
        ("check", MAX_LENGTH["check"]),
        ("synthetic", MAX_TEXT),  # "auto:<Class>" for architecture jobs
        ("description", MAX_LENGTH["description"]),
    ):
        problem = _text_problem(spec.get(key), key, limit)
        if problem:
            return problem
    archs = spec.get("architectures")
    if (
        not isinstance(archs, list)
        or len(archs) > MAX_ARCHITECTURES
        or not all(isinstance(a, str) and 0 < len(a) <= MAX_ARCHITECTURE_LENGTH for a in archs)
    ):
        return (
            f"architectures must be a list of at most {MAX_ARCHITECTURES} names "
            f"of 1-{MAX_ARCHITECTURE_LENGTH} characters"
        )
    if spec.get("variants") is not None:
        try:
            check_list(spec["variants"], "variants")
        except VariantError as exc:
            return exc.message[:300]
    candidates = spec.get("candidates")
    if not isinstance(candidates, list) or len(candidates) > MAX_CANDIDATES:
        return f"candidates must be a list of at most {MAX_CANDIDATES}"
    for i, cand in enumerate(candidates):
        problem = _candidate_problem(cand)
        if problem:
            return f"candidates[{i}]: {problem}"
    return None


def _candidate_problem(cand: Any) -> str | None:
    if not isinstance(cand, dict):
        return "a candidate is an object"
    unknown = set(cand) - set(CANDIDATE_KEYS)
    if unknown:
        return f"unknown key {sorted(unknown)[0][:64]!r} (valid: {', '.join(CANDIDATE_KEYS)})"
    given = {k: v for k, v in cand.items() if v is not None}
    for key, value in given.items():
        want = CANDIDATE_KEYS[key]
        ok = isinstance(value, bool) if want is bool else (not isinstance(value, bool) and isinstance(value, want))
        if not ok:
            return f"{key} has the wrong type ({type(value).__name__})"
        if isinstance(value, str) and not 0 < len(value) <= MAX_LENGTH[key]:
            return f"{key} must have 1-{MAX_LENGTH[key]} characters, got {len(value)}"
    return candidate_problem(given)
