"""The cyclic garbage collector paused while plain acyclic data is built (a run's jobs and
messages at submit, a report's model and its rendering): reference counting frees that data;
the collector's full passes would only walk it again and again (a quarter of the CPU of a
100,000-job submit, bench.submit_many; about a fifth of a report's build)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """The collector off for a while, on again after if it was on."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
