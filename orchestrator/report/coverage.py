"""Coverage of an architecture run (families "arch:<Class>"): per task and device, how many
classes were attempted, passed, failed (the model) and not yet supported by the harness, and
the failures grouped by kind with the harness gaps apart."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from fleet.errors import ErrorKind
from fleet.names import ARCH_FAMILY_PREFIX
from fleet.protocol import PASSED, Result, Status

HARNESS = str(ErrorKind.HARNESS_UNSUPPORTED)
PASSING = (*PASSED, str(Status.FLAKY))
EXAMPLES = 5


def is_harness_gap(result: Result | None) -> bool:
    error = result.get("error") if result else None
    return bool(error and error.get("kind") == HARNESS)


def outcome(result: Result) -> str:
    """passed | failed | harness | skipped (device or worker) | lost"""
    status = str(result["status"])
    if status in PASSING:
        return "passed"
    if is_harness_gap(result):
        return "harness"
    if status == Status.FAILED:
        return "failed"
    return "lost" if status == Status.LOST else "skipped"


LIBRARY = "the library's"  # what the builder says of a miss its class's own default config repeats
HOST = frozenset({str(ErrorKind.TIMEOUT), str(ErrorKind.OOM), str(ErrorKind.WORKER_LOST)})


def fault(result: Result) -> str:
    """Whose miss this is: harness (our builder or inputs cannot do it yet), library (it
    reproduces with the class's own unshrunk default config: workers.tiny.build), host (a limit
    of this machine: time, memory, a lost process) or unclassed (the shrunk twin ran a forward
    pass, and the check failed after it)."""
    if is_harness_gap(result):
        return "harness"
    error: dict[str, Any] = dict(result.get("error") or {})
    attempts = result.get("attempts") or []
    detail = str(attempts[-1].get("detail") or "") if attempts else ""
    if LIBRARY in str(error.get("message", "")) or LIBRARY in detail:
        return "library"
    return "host" if str(error.get("kind")) in HOST else "unclassed"


def misses(results: list[Result]) -> list[dict[str, str]]:
    """Every architecture job that did not pass: class, kind, whose fault, the one-line reason."""
    rows = []
    for r in results:
        if not str(r["family"]).startswith(ARCH_FAMILY_PREFIX) or outcome(r) == "passed":
            continue
        error: dict[str, Any] = dict(r.get("error") or {})
        rows.append(
            {
                "class": str(r["family"]).removeprefix(ARCH_FAMILY_PREFIX),
                "device": r["device"],
                "kind": str(error.get("kind") or r["status"]),
                "fault": fault(r),
                "reason": str(error.get("message") or "").split("\n", 1)[0][:160],
            }
        )
    return sorted(rows, key=lambda m: (m["fault"], m["kind"], m["class"]))


def _group(message: str) -> str:
    """A failure's group: the exception type and the first words, without the numbers."""
    text = "".join("#" if c.isdigit() else c for c in message.split("\n", 1)[0])
    return text[:80]


def coverage(results: list[Result]) -> dict[str, Any] | None:
    arch = [r for r in results if str(r["family"]).startswith(ARCH_FAMILY_PREFIX)]
    if not arch:
        return None
    cells: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    kinds: dict[str, Counter[str]] = defaultdict(Counter)
    examples: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in arch:
        o = outcome(r)
        cells[(r.get("task") or "?", r["device"])][o] += 1
        if o in ("failed", "harness"):
            err = r.get("error") or {"kind": "?", "message": ""}
            group = _group(str(err.get("message", "")).split(": ", 1)[-1] if o == "harness" else str(err["message"]))
            kinds[str(err["kind"])][group] += 1
            if len(examples[(str(err["kind"]), group)]) < EXAMPLES:
                examples[(str(err["kind"]), group)].append(r["job_id"])
    rows = []
    for (task, device), c in sorted(cells.items()):
        attempted = sum(c.values())
        rows.append(
            {
                "task": task,
                "device": device,
                "attempted": attempted,
                **{k: c.get(k, 0) for k in ("passed", "failed", "harness", "skipped", "lost")},
                "pass_rate": round(c.get("passed", 0) / attempted, 4) if attempted else None,
            }
        )
    total = Counter(outcome(r) for r in arch)
    groups: list[dict[str, Any]] = [
        {"kind": kind, "group": group, "count": n, "examples": examples[(kind, group)]}
        for kind, counter in kinds.items()
        for group, n in counter.items()
    ]
    groups.sort(key=lambda g: (g["kind"] == HARNESS, -int(g["count"]), g["kind"], g["group"]))
    return {
        "classes": len({r["family"] for r in arch}),
        "jobs": len(arch),
        "totals": {k: total.get(k, 0) for k in ("passed", "failed", "harness", "skipped", "lost")},
        "pass_rate": round(total.get("passed", 0) / len(arch), 4),
        "by_task": rows,
        "failures": [g for g in groups if g["kind"] != HARNESS],
        "harness_gaps": [g for g in groups if g["kind"] == HARNESS],
        "misses": misses(arch),
        "faults": dict(Counter(m["fault"] for m in misses(arch))),
    }
