"""The task of an architecture class: its first task in workers.architectures.TASKS. One lookup
for architecture jobs (by their synthetic builder "auto:<Class>") and ad hoc jobs (by the
config's architecture)."""

from __future__ import annotations

import functools
from typing import Any

from fleet.names import AUTO_SYNTHETIC_PREFIX


@functools.cache
def class_tasks() -> dict[str, str]:
    """Every class the installed transformers knows -> its task."""
    from workers.architectures import enumerate_classes

    return {row["class"]: row["task"] for row in enumerate_classes()}


def task_of_class(class_name: str) -> str | None:
    """The class's task, or None for a class in no task mapping."""
    return class_tasks().get(class_name)


def task_of(family: Any) -> str:
    """The task of an architecture job's class ('' for a family that is no architecture job)."""
    synthetic = str(family.synthetic)
    if not synthetic.startswith(AUTO_SYNTHETIC_PREFIX):
        return ""
    return task_of_class(synthetic.removeprefix(AUTO_SYNTHETIC_PREFIX)) or ""
