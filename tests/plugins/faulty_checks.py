"""Checks that misbehave on purpose (registered by tests.plugins.faulty.register()).

They run real tiny models; only their inference step is replaced by the fault.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
import weakref
from typing import Any, ClassVar

import torch

from workers.checks import register
from workers.checks.base import Bundle
from workers.checks.causal_lm import CausalLMCheck


class Hang(CausalLMCheck):
    name = "hang"

    def infer(self, bundle: Bundle, inputs: dict[str, Any]) -> Any:
        if os.environ.get("FLEET_TEST_BLOCK_ALARM"):
            # a hang inside native code, which never returns to Python to run a signal handler
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGUSR1})
            ctypes.CDLL(None).sleep(3600)
        while True:
            time.sleep(0.05)


class Oom(CausalLMCheck):
    """Allocates 64 MiB tensors until the allocator refuses."""

    name = "oom"

    def infer(self, bundle: Bundle, inputs: dict[str, Any]) -> Any:
        hoard = []
        for _ in range(10_000):
            hoard.append(torch.ones(16 * 2**20))
        return hoard


class Crash(CausalLMCheck):
    """Kills the process running it, every time."""

    name = "crash"

    def infer(self, bundle: Bundle, inputs: dict[str, Any]) -> Any:
        os.kill(os.getpid(), signal.SIGKILL)


class Slow(CausalLMCheck):
    """A real check that first waits FLEET_TEST_SLOW_S seconds (time to kill it mid-job)."""

    name = "slow"

    def prepare(self, bundle: Bundle, device: torch.device) -> dict[str, Any]:
        time.sleep(float(os.environ.get("FLEET_TEST_SLOW_S", "3")))
        return super().prepare(bundle, device)


class Raises(CausalLMCheck):
    name = "raises"

    def infer(self, bundle: Bundle, inputs: dict[str, Any]) -> Any:
        raise RuntimeError("deliberate failure inside inference")


class Tracked(CausalLMCheck):
    """A normal check that keeps a weak reference to the model it ran, to show it was freed."""

    name = "tracked"
    models: ClassVar[list[weakref.ref[Any]]] = []

    def prepare(self, bundle: Bundle, device: torch.device) -> dict[str, Any]:
        self.models.append(weakref.ref(bundle.model))
        return super().prepare(bundle, device)


def register_all() -> None:
    for check in (Hang(), Oom(), Crash(), Slow(), Raises(), Tracked()):
        register(check)
