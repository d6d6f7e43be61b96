"""Checks that misbehave on purpose (registered by tests.plugins.faulty.register()).

They run real tiny models; only their inference step is replaced by the fault.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import time
import weakref
from pathlib import Path
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


class Flaky(CausalLMCheck):
    """Fails one time in two: odd runs fail, even runs pass, counted per family in a file under
    $FLEET_TEST_FLAKY_DIR (shared by every process of the worker)."""

    name = "flaky"

    def prepare(self, bundle: Bundle, device: torch.device) -> dict[str, Any]:
        counter = Path(os.environ["FLEET_TEST_FLAKY_DIR"]) / f"{bundle.name.replace(':', '_')}.count"
        with counter.open("a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            count = int(f.read() or 0) + 1
            f.seek(0)
            f.truncate()
            f.write(str(count))
        if count % 2:
            raise RuntimeError(f"deliberate flaky failure (run {count})")
        return super().prepare(bundle, device)


class Stepped(CausalLMCheck):
    """A real check whose inference first sleeps as many seconds as $FLEET_TEST_STEP_FILE says:
    a latency step that the test controls between runs."""

    name = "stepped"

    def infer(self, bundle: Bundle, inputs: dict[str, Any]) -> Any:
        time.sleep(float(Path(os.environ["FLEET_TEST_STEP_FILE"]).read_text()))
        return super().infer(bundle, inputs)


class DeviceFault(CausalLMCheck):
    """Fails as a device-side assert does on CUDA: the message torch raises, which marks the
    process poisoned through the same classifier (workers/failures.py) a real one goes through."""

    name = "device_fault"

    def infer(self, bundle: Bundle, inputs: dict[str, Any]) -> Any:
        raise RuntimeError(
            "CUDA error: device-side assert triggered\n"
            "CUDA kernel errors might be asynchronously reported at some other API call"
        )


def register_all() -> None:
    for check in (Hang(), Oom(), Crash(), Slow(), Raises(), Tracked(), Flaky(), Stepped(), DeviceFault()):
        register(check)
