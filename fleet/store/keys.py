"""Every Redis key the fleet reads or writes, spelled once.

Our own keys start with "fleet:"; kombu's Redis transport owns the queue lists (named after the
queue, with a list per priority step) and the unacked hash and index.
"""

from __future__ import annotations

PREFIX = "fleet"
RUNS = f"{PREFIX}:runs"  # sorted set: run id -> start time
# A run's keys: fleet:run:<run id>:<part>
RUN_PARTS = (
    "meta",
    "jobs",
    "results",
    "attempts",
    "finished",
    "report",
    "late",
    "reruns",
    "holders",
    "ledger",
    "counts",
)
# Per-job summaries (fleet/store/summaries.py): job id -> the job's recent outcomes, compact
SUMMARIES = f"{PREFIX}:summaries"
SUMMARIES_META = f"{PREFIX}:summaries:meta"  # which runs the summaries hold, oldest first
SUMMARIES_LOCK = f"{PREFIX}:summaries:lock"  # one process folds at a time
HELD = f"{PREFIX}:held"  # delivery tag -> instance id of the worker process that received it
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"  # kombu's Redis transport
DEAD_LETTERS = f"{PREFIX}:dead_letters"  # messages workers refused, newest first (bounded)
DEAD_LETTERS_COUNT = f"{PREFIX}:dead_letters:count"  # how many were refused since the store began
PRIORITY_STEPS = (3, 6, 9)  # kombu's priority lists beside a queue's own list


def run(run_id: str, part: str) -> str:
    """A key of one run (part: one of RUN_PARTS; run_id or part may be a SCAN/KEYS pattern)."""
    return f"{PREFIX}:run:{run_id}:{part}"


def lease(run_id: str, counter: str) -> str:
    """The process running one delivery counter of a run's job, with a TTL (fleet.store.ledger)."""
    return f"{PREFIX}:lease:{run_id}:{counter}"


def worker(name: str) -> str:
    """A worker's heartbeat (name may be a pattern)."""
    return f"{PREFIX}:worker:{name}"


def worker_stats(name: str) -> str:
    """What a worker received, finished and saw die, across runs (fleet.store.ledger; name may be a pattern)."""
    return f"{PREFIX}:worker_stats:{name}"


def running(queue: str) -> str:
    """The jobs running now that came from this queue: a list KEDA's Redis scaler can count (LLEN)."""
    return f"{PREFIX}:running:{queue}"


def slot(name: str) -> str:
    """The run that claimed a schedule slot (name may be a pattern)."""
    return f"{PREFIX}:slot:{name}"


def architectures(transformers_version: str) -> str:
    """The architecture listing a worker with this transformers version published."""
    return f"{PREFIX}:architectures:{transformers_version}"


def queue_lists(queue: str) -> list[str]:
    """The lists kombu keeps a queue's messages in: the queue's own, then one per priority step."""
    return [queue] + [f"{queue}\x06\x16{p}" for p in PRIORITY_STEPS]
