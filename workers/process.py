"""The pool process a job runs in: its pid, how many jobs it has run, since when it lives, and
whether a device fault has poisoned it.

A CUDA error such as a device-side assert or an illegal memory access leaves the process's CUDA
context unusable: every later kernel in it fails too. workers/failures.py classifies such an
error (by its message) and calls poison(); workers/app.py stores the job's result, then replaces
the process (workers.core.leaves_process_unclean) before it takes the next job. Each result
carries record(), so the next job's result shows that it ran in a fresh process (another pid,
jobs == 1).

State is per process: a pool child forked from the worker's main process starts afresh.
"""

from __future__ import annotations

import os
import time
from typing import Any

_state: dict[str, Any] = {"pid": None, "jobs": 0, "started_at": None, "poisoned": None}


def _mine() -> dict[str, Any]:
    if _state["pid"] != os.getpid():  # a fresh fork: nothing of the parent's counts
        _state.update(pid=os.getpid(), jobs=0, started_at=round(time.time(), 3), poisoned=None)
    return _state


def begin_job() -> dict[str, Any]:
    """Count a job in this process; what its result records about the process."""
    state = _mine()
    state["jobs"] += 1
    return {"pid": state["pid"], "jobs": state["jobs"], "started_at": state["started_at"]}


def poison(why: str) -> None:
    """This process must not run another job (a device fault left it unusable)."""
    _mine()["poisoned"] = why


def poisoned() -> str | None:
    """Why this process must be replaced, or None."""
    why = _mine()["poisoned"]
    return str(why) if why else None
