"""Decoding what the store holds: a raw Redis value becomes a record, or a corrupt marker.

Whoever can write to Redis can leave anything under a run's keys: invalid JSON, a list where an
object belongs, a result without a status, bytes that are not UTF-8, a key of another Redis
type, a time of 1e999. Every reader goes through the decode_* functions here (the store calls
them instead of json.loads and float), so that one corrupt record shows as that record being
corrupt -- a FAILED row with error kind `corrupt_record`, a run whose meta is marked corrupt --
and never as a traceback, nor as a broken report of every later run. A raw value may be the
StoreCorrupt that fleet.store.connection gave for a key of another type: that is the problem.
Times (seconds since 1970) must be finite and before the year 10000, which every date
formatting can show.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

from fleet.errors import ErrorKind, StoreCorrupt
from fleet.numbers import MAX_TIME
from fleet.protocol import STATUSES, Job, Result, Status, base_result, error_info, now

CORRUPT_KEY = "corrupt"  # set on a marker (meta, job spec): what is wrong with the stored value
_TIMES = ("started_at", "finished_at", "deadline")  # fields that are times, in results and meta
# A byte that is not UTF-8, as fleet.store.connection decodes it (backslashreplace): never valid JSON.
_NOT_UTF8 = re.compile(r"\\x[89a-f][0-9a-f]")
_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")  # a JSON escape of half a UTF-16 pair
# orjson reads an integer beyond 64 bits as a float where json.loads keeps it whole: a text with a
# run of 19 digits or more (the only place such an integer can be) is left to json.loads. Found by
# one translate (every digit to "0", anything else to a space) and one search, both in C.
_DIGITS = bytes(0x30 if 0x30 <= c <= 0x39 else 0x20 for c in range(256))
_LONG_RUN = b"0" * 19
_TEXT = (str,)
_SOUND = frozenset((str, int, dict, list))  # exact types that need no check beyond their type
_NUMBER = (int, float)
# Result fields and the types they must have (None allowed where the schema says so).
_RESULT_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "run_id": (_TEXT, False),
    "job_id": (_TEXT, False),
    "family": (_TEXT, False),
    "device": (_TEXT, False),
    "status": (_TEXT, False),
    "model_used": (_TEXT, True),
    "architecture": (_TEXT, True),
    "source": (_TEXT, True),
    "revision": (_TEXT, True),
    "revision_basis": (_TEXT, True),
    "weights_sha256": (_TEXT, True),
    "weights": ((dict,), True),
    "provenance": ((dict,), False),
    "attempts": ((list,), False),
    "metrics": ((dict,), False),
    "environment": ((dict,), False),
    "output": ((dict,), False),
    "error": ((dict,), True),
    "worker": (_TEXT, True),
    "delivery": ((int,), True),
    "started_at": (_NUMBER, True),
    "finished_at": (_NUMBER, True),
}
# Older results may lack fields added since: those are filled with their empty value.
_RESULT_REQUIRED = ("run_id", "job_id", "family", "device", "status")
_ATTEMPT_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "candidate": (_TEXT, False),
    "outcome": (_TEXT, False),
    "error_kind": (_TEXT, True),
    "detail": (_TEXT, False),
    "seconds": (_NUMBER, False),
}
_META_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "run_id": (_TEXT, False),
    "started_at": (_NUMBER, False),
    "deadline": (_NUMBER, False),
    "deadline_s": (_NUMBER, False),
}


# Optional meta fields that readers use, and the types they must have to be kept.
_META_OPTIONAL: dict[str, tuple[type, ...]] = {
    "catalog": (str,),
    "origin": (str,),
    "families": (list,),
    "devices": (list,),
    "total": (int,),
    "workers_at_submit": (list,),
    "transformers": (str,),
    "architectures": (str,),
    "orchestrator_version": (str,),
}


def _optional_meta_ok(key: str, value: Any) -> bool:
    """An optional meta field of the wrong type is left out (readers treat it as absent)."""
    types = _META_OPTIONAL.get(key)
    if types is None or value is None:
        return True
    if key == "workers_at_submit":
        return isinstance(value, list) and all(isinstance(w, dict) for w in value)
    return isinstance(value, types) and not isinstance(value, bool)


def decode_time(raw: Any) -> float | None:
    """A stored time (a number, or its text: a run's `finished` key, a sorted set's score), or
    None when it is none: not a number, not finite, before 1970 or after the year 9999."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        return None
    try:
        value = float(raw)
    except (ValueError, OverflowError):
        return None
    return value if 0.0 <= value <= MAX_TIME else None  # NaN compares false: None too


_NOT_PARSED: Any = object()


def _parsed(raw: str | bytes) -> Any:
    """What json.loads(raw) gives, read by orjson (about three times faster: a report decodes
    tens of megabytes of results and summaries), or _NOT_PARSED where orjson could differ or
    refuses the text: NaN and Infinity, numbers beyond a double, a lone surrogate (\\ud800), bytes
    that are not UTF-8, invalid JSON, integers of 19 digits or more. json.loads then decides, and
    says what is wrong. Where orjson reads a text at all it gives json.loads's value (the same
    types, floats rounded the same, the last of duplicate keys; tests/test_records.py)."""
    try:
        text = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
        if _LONG_RUN in text.translate(_DIGITS):
            return _NOT_PARSED
        return orjson.loads(text)
    except ValueError:  # orjson.JSONDecodeError, or a str that cannot be UTF-8
        return _NOT_PARSED


def json_loads(raw: str | bytes) -> Any:
    """json.loads(raw), read by orjson where orjson gives the same value (_parsed); json.loads
    itself for the rest, raising what it raises. Bytes must be UTF-8 (json.loads would also read
    UTF-16 and UTF-32): others raise UnicodeDecodeError."""
    data = _parsed(raw)
    if data is not _NOT_PARSED:
        return data
    return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)


def _load(raw: Any) -> tuple[Any, str | None]:
    """JSON text -> value, or why it is not JSON."""
    if isinstance(raw, StoreCorrupt):  # the key holds another Redis type (fleet.store.connection)
        return None, raw.message
    if not isinstance(raw, (str, bytes)):
        return None, f"not text ({type(raw).__name__})"
    data = _parsed(raw)
    if data is not _NOT_PARSED:
        return data, None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        if isinstance(raw, str) and _NOT_UTF8.search(raw):
            return None, "not UTF-8 (its invalid bytes show as \\xNN)"
        return None, f"invalid JSON ({str(exc)[:120]})"
    if _SURROGATE.search(raw if isinstance(raw, str) else raw.decode("utf-8", "replace")):
        try:  # an escape of half a UTF-16 pair (\ud800) alone: no text can hold it, nor be printed
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return None, "holds a lone surrogate (\\ud800-\\udfff), which is not text"
    return data, None


def _type_name(types: tuple[type, ...]) -> str:
    return {str: "a string", int: "an integer", float: "a number", dict: "an object", list: "a list"}[types[-1]]


def _field_problem(
    data: dict[str, Any], fields: dict[str, tuple[tuple[type, ...], bool]], what: str, required: tuple[str, ...] = ()
) -> str | None:
    """The first field of the wrong type; a missing field is a problem when required (all by default)."""
    for key, (types, nullable) in fields.items():
        if key not in data:
            if required and key not in required:
                continue
            return f"{what} has no {key!r}"
        value = data[key]
        if value is None and nullable:
            continue
        if type(value) in _SOUND and type(value) in types and key not in _TIMES:
            continue  # the common case, one lookup: text, a whole number, an object, a list (a float: below)
        if isinstance(value, bool) or not isinstance(value, types):
            return f"{what} field {key!r} must be {_type_name(types)}, got {type(value).__name__}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{what} field {key!r} must be finite, got {value!r}"
        if key in _TIMES and decode_time(value) is None:
            return f"{what} field {key!r} must be a time between 1970 and 9999, got {value!r}"
    return None


def result_problem(data: Any, run_id: str | None = None, job_id: str | None = None) -> str | None:
    """What is wrong with a decoded result (None: a result every reader can use)."""
    if not isinstance(data, dict):
        return f"a result is a JSON object, got {type(data).__name__}"
    problem = _field_problem(data, _RESULT_FIELDS, "the result", _RESULT_REQUIRED)
    if problem:
        return problem
    if data["status"] not in STATUSES:
        return f"unknown status {str(data['status'])[:40]!r}"
    # Fields an older result may lack (not in _RESULT_REQUIRED) are read as their empty value.
    for i, attempt in enumerate(data.get("attempts") or []):
        if not isinstance(attempt, dict):
            return f"attempt {i} is not an object"
        problem = _field_problem(attempt, _ATTEMPT_FIELDS, f"attempt {i}")
        if problem:
            return problem
    error = data.get("error")
    if error is not None and not (isinstance(error.get("kind"), str) and isinstance(error.get("message"), str)):
        return "the result's error needs a string kind and message"
    if run_id is not None and data["run_id"] != run_id:
        return f"the result names run {str(data['run_id'])[:80]!r}"
    if job_id is not None and data["job_id"] != job_id:
        return f"the result names job {str(data['job_id'])[:80]!r}"
    return None


def _placeholder_job(run_id: str, job_id: str) -> Job:
    """A job that only names itself (family@device from its id): what a corrupt record stands for."""
    family, _, device = job_id.rpartition("@")
    return {
        "run_id": run_id,
        "job_id": job_id,
        "family": family or job_id,
        "device": device if family else "?",
        "queue": "?",
        "family_spec": {},
        "time_limit_s": 0.0,
        "repeats": 0,
        "max_attempts": 0,
    }


def corrupt_result(run_id: str, job_id: str, problem: str, what: str = "stored result") -> Result:
    """The marker a corrupt record becomes: FAILED, error kind corrupt_record, saying what is wrong."""
    result = base_result(_placeholder_job(run_id, job_id))
    result["status"] = str(Status.FAILED)
    result["error"] = error_info(ErrorKind.CORRUPT_RECORD, f"{what} of {job_id} in run {run_id} is corrupt: {problem}")
    return result


def decode_result(raw: Any, run_id: str, job_id: str) -> Result:
    """A result as stored under (run_id, job_id), or its corrupt_record marker."""
    data, problem = _load(raw)
    problem = problem or result_problem(data, run_id, job_id)
    if problem:
        return corrupt_result(run_id, job_id, problem)
    return _filled(data)


def _filled(data: dict[str, Any]) -> Result:
    """A sound result with every field of the schema (fields it predates: their empty value)."""
    missing = [key for key in _RESULT_FIELDS if key not in data]
    if missing:
        empty = base_result(data)  # type: ignore[arg-type]  # reads only the ids
        data.update({key: empty[key] for key in missing})  # type: ignore[literal-required]
    result: Result = data  # type: ignore[assignment]
    return result


def decode_late(raw: Any, run_id: str, index: int) -> Result:
    """A late attempt kept in a run's list, or its corrupt_record marker."""
    return decode_listed(raw, run_id, index, "late attempt", "late")


def decode_listed(raw: Any, run_id: str, index: int, what: str, tag: str) -> Result:
    """A result kept in a list (late attempts, an archive's lines) where its own job id names it,
    or its corrupt_record marker (named ?TAG#INDEX when no job id can be read)."""
    data, problem = _load(raw)
    job_id = data.get("job_id") if isinstance(data, dict) and isinstance(data.get("job_id"), str) else None
    problem = problem or result_problem(data, run_id)
    if problem:
        return corrupt_result(run_id, (job_id or f"?{tag}#{index}")[:300], problem, what=what)
    return _filled(data)


def decode_meta(raw: Any, run_id: str, started_at: float | None) -> dict[str, Any]:
    """A run's meta, or a marker (CORRUPT_KEY set) whose start and deadline are the time the run
    was listed: a run whose deadline cannot be read is treated as over."""
    data, problem = _load(raw)
    if problem is None:
        if not isinstance(data, dict):
            problem = f"the run's meta is a JSON object, got {type(data).__name__}"
        else:
            problem = _field_problem(data, _META_FIELDS, "the run's meta")
    if problem is None and data["run_id"] != run_id:
        problem = f"the run's meta names run {str(data['run_id'])[:80]!r}"
    if problem is None:
        meta: dict[str, Any] = {k: v for k, v in data.items() if _optional_meta_ok(k, v)}
        return meta
    listed = decode_time(started_at)  # its score in the list of runs
    start = listed if listed is not None else now()
    return {
        "run_id": run_id,
        "started_at": start,
        "deadline": start,
        "deadline_s": 0.0,
        CORRUPT_KEY: f"meta of run {run_id} is corrupt: {problem}",
    }


_JOB_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "run_id": (_TEXT, False),
    "job_id": (_TEXT, False),
    "family": (_TEXT, False),
    "device": (_TEXT, False),
    "queue": (_TEXT, False),
}


def job_spec_problem(data: Any) -> str | None:
    """What a reader needs of a stored job spec (a worker checks far more: fleet.jobs)."""
    if not isinstance(data, dict):
        return f"a job spec is a JSON object, got {type(data).__name__}"
    problem = _field_problem(data, _JOB_FIELDS, "the job spec")
    if problem:
        return problem
    for key, types in (("family_spec", (dict,)), ("task", (str,)), ("pins", (list,))):
        if key in data and not isinstance(data[key], types):
            return f"the job spec field {key!r} must be {_type_name(types)}, got {type(data[key]).__name__}"
    return None


def decode_job(raw: Any, run_id: str, job_id: str) -> Job:
    """A job spec as stored, or a marker (CORRUPT_KEY set) that carries only its ids."""
    data, problem = _load(raw)
    problem = problem or job_spec_problem(data)
    if problem is None and (data["run_id"] != run_id or data["job_id"] != job_id):
        problem = "the spec names another run or job"
    if problem is None:
        job: Job = data
        return job
    marker: dict[str, Any] = {**_placeholder_job(run_id, job_id), CORRUPT_KEY: problem}
    return marker  # type: ignore[return-value]


def is_corrupt(record: Any) -> bool:
    """A meta or job marker from decode_meta/decode_job."""
    return isinstance(record, dict) and CORRUPT_KEY in record


def corruption(record: Any) -> str | None:
    """What is wrong with a meta or job marker (None for a sound record)."""
    return str(record[CORRUPT_KEY]) if is_corrupt(record) else None


def decode_object(raw: Any) -> dict[str, Any] | None:
    """Any JSON object kept in the store (a worker heartbeat, a rerun record), or None."""
    data, problem = _load(raw)
    return data if problem is None and isinstance(data, dict) else None


def decode_rerun(raw: Any, run_id: str, job_id: str, rerun: int) -> dict[str, Any]:
    """One kept outcome of a rerun job (workers/reruns.py), or a FAILED corrupt_record one."""
    data = decode_object(raw)
    if (
        data is not None
        and data.get("status") in STATUSES
        and isinstance(data.get("error_kind"), (str, type(None)))
        and isinstance(data.get("message"), str)
    ):
        return data
    return {
        "rerun": rerun,
        "status": str(Status.FAILED),
        "error_kind": str(ErrorKind.CORRUPT_RECORD),
        "message": f"the kept outcome of rerun {rerun} of {job_id} in run {run_id} is corrupt",
        "worker": None,
        "delivery": None,
        "started_at": None,
    }


# A result's "variants" record (workers/variants.py, docs/variants.md): what every report reads.
_VARIANT_TEXT = ("variant", "verdict")  # required strings of a variant's entry
_VARIANT_OPTIONAL_TEXT = ("kind", "message", "reason", "kernel", "against")
_VARIANT_NUMBERS = (
    "max_abs_diff",
    "max_rel_diff",
    "atol",
    "rtol",
    "non_finite",
    "latency_ms_p50",
    "speed_vs_reference",
    "peak_memory_mb",
    "first_call_s",
)
_FINDING_TEXT = ("finding", "variant")
_FINDING_OPTIONAL_TEXT = ("claim", "detail", "verdict")


def _entry_problem(entry: Any, what: str, text: tuple[str, ...], optional: tuple[str, ...]) -> str | None:
    if not isinstance(entry, dict):
        return f"{what} is not an object"
    for key in text:
        if not isinstance(entry.get(key), str):
            return f"{what} needs a string {key!r}"
    for key in optional:
        if entry.get(key) is not None and not isinstance(entry[key], str):
            return f"{what} field {key!r} must be a string, got {type(entry[key]).__name__}"
    return None


def variants_problem(record: Any) -> str | None:
    """What is wrong with a result's variants record (None: one every report can show)."""
    if not isinstance(record, dict):
        return f"the variants record is a JSON object, got {type(record).__name__}"
    for key, types in (("reference", (dict,)), ("claims", (dict,)), ("results", (list,)), ("findings", (list,))):
        if key == "results" and key not in record:
            return "the variants record has no 'results'"
        if key in record and not isinstance(record[key], types):
            return f"the variants record field {key!r} must be {_type_name(types)}, got {type(record[key]).__name__}"
    for i, entry in enumerate(record["results"]):
        problem = _entry_problem(entry, f"variant entry {i}", _VARIANT_TEXT, _VARIANT_OPTIONAL_TEXT)
        if problem:
            return problem
        for key in _VARIANT_NUMBERS:
            value = entry.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, _NUMBER)):
                return f"variant entry {i} field {key!r} must be a number, got {type(value).__name__}"
    for i, finding in enumerate(record.get("findings", [])):
        problem = _entry_problem(finding, f"finding {i}", _FINDING_TEXT, _FINDING_OPTIONAL_TEXT)
        if problem:
            return problem
    return None


MAX_SLOTS = 1024  # a worker's slots (Celery concurrency) as the accounting counts them, at most
MAX_HOLDING = 1_000_000  # jobs a worker says it holds: more is not a count
_HEARTBEAT_TIMES = ("started_at", "polled_at", "seen_at")
_HEARTBEAT_LISTS = ("queues", "devices", "gpus")


def _count(value: Any, most: int) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value
    return min(value, most) if ok else None


def decode_heartbeat(data: Any, name: str | None = None) -> dict[str, Any] | None:
    """A worker heartbeat (fleet.store.registry, or a run's meta `workers_at_submit`) with its
    fields typed and in range; a field that is not becomes None (unknown), never a crash of its
    reader. name: the name its key gives, when the heartbeat has none. None: no name at all."""
    if not isinstance(data, dict):
        return None
    out = dict(data)
    if not isinstance(out.get("name"), str):
        if name is None:
            return None
        out["name"] = name
    for key in _HEARTBEAT_TIMES:
        if key in out and out[key] is not None:
            out[key] = decode_time(out[key]) if not isinstance(out[key], str) else None
    for key in _HEARTBEAT_LISTS:
        if key in out and not (isinstance(out[key], list) and all(isinstance(v, str) for v in out[key])):
            out[key] = None
    if "concurrency" in out:
        slots = _count(out["concurrency"], MAX_SLOTS)  # capped: a forged 10**12 is not 10**12 slots
        out["concurrency"] = slots if slots else None
    if "holding" in out:
        out["holding"] = _count(out["holding"], MAX_HOLDING)
    for key in ("instance", "host", "torch", "transformers"):
        if key in out and not isinstance(out[key], (str, type(None))):
            out[key] = None
    return out


def decode_worker_stats(raw: Any) -> dict[str, float]:
    """A worker's counters and last times across runs (fleet.store.ledger): the fields that are
    finite and non-negative numbers (times: before the year 10000), the others left out."""
    stats: dict[str, float] = {}
    for k, v in (raw if isinstance(raw, dict) else {}).items():
        try:
            value = float(v)
        except (TypeError, ValueError, OverflowError):
            continue
        if 0.0 <= value <= (MAX_TIME if str(k).endswith("_at") else 1e15):  # NaN compares false
            stats[str(k)] = value
    return stats
