"""Checks for the benchmarks (registered by bench.plugin.register(), FLEET_PLUGINS=bench.plugin).

noop: does nothing on a one-parameter model (framework overhead). spin: a fixed amount of
single-threaded CPU work (BENCH_SPIN_S seconds, or the family's repeats x 10 ms for unequal
work). They go through the same resolver, measurement and store as every other check.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import torch

from fleet.catalog import Family
from workers import quality
from workers.checks import register
from workers.checks.base import Bundle, Check
from workers.tiny import synthetic


@dataclass
class EmptyBundle(Bundle):
    """The one-parameter model, with the family it was built for (spin reads its duration there)."""

    family: str = ""


def _empty(family: Family, check: Check, device: torch.device) -> Bundle:
    model = torch.nn.Linear(1, 1, bias=False).to(device)
    return EmptyBundle(
        model=model,
        name="synthetic:empty",
        source="synthetic",
        revision="empty",
        architecture="Linear",
        family=family.name,
    )


class Noop(Check):
    name = "noop"

    def prepare(self, bundle: Bundle, device: torch.device) -> dict[str, Any]:
        return {}

    def infer(self, bundle: Bundle, inputs: dict[str, Any]) -> Any:
        return None

    def validate(self, bundle: Bundle, inputs: dict[str, Any], first: Any, repeat: Any) -> dict[str, Any]:
        return {}

    def quality(self, bundle: Bundle, inputs: dict[str, Any]) -> dict[str, Any]:
        # no model worth judging (a one-parameter Linear, always synthetic): information only
        return quality.gate("none", 0.0, 0.0, "benchmark check, nothing to judge", higher_is_better=True)


# Work is a fixed number of loop iterations (the same in every process, so a raw Celery task
# and a fleet job do exactly the same work); "seconds" are nominal, about right on a current
# x86 core. Benchmarks compare against the durations the jobs measure themselves.
ITERATIONS_PER_S = 55_000_000


def spin(seconds: float) -> int:
    """Busy single-threaded CPU work: seconds * ITERATIONS_PER_S loop iterations."""
    x = 0
    for i in range(int(seconds * ITERATIONS_PER_S)):
        x ^= i
    return x


class Spin(Noop):
    """Work happens once per job, in prepare (timed repeats stay at no cost): a family named
    NAME_<ms>ms spins that long, others BENCH_SPIN_S seconds."""

    name = "spin"

    def prepare(self, bundle: Bundle, device: torch.device) -> dict[str, Any]:
        m = re.search(r"_(\d+)ms$", bundle.family if isinstance(bundle, EmptyBundle) else "")
        spin(int(m.group(1)) / 1000 if m else float(os.environ.get("BENCH_SPIN_S", "0.25")))
        return {}


def register_all() -> None:
    register(Noop())
    register(Spin())
    synthetic.register_builder("empty", _empty)
