"""Measurement as context managers and one benchmark loop: warm-up, repeated runs, CUDA
synchronisation, percentiles. Every figure here is measured in this process, this job."""

from __future__ import annotations

import os
import resource
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import psutil
import torch

from workers import quality
from workers.checks.base import Bundle, Check

WARMUP = 1


def warmup_passes(bundle: Bundle) -> int:
    """Passes before the timed ones: none for a twin the builder already ran a forward pass on
    (workers/tiny/build.py records its input plan then): the probe, the check's first pass and
    its repeat are three passes on the same model and inputs already, and a fourth cost every
    architecture job one more forward (or generate) pass."""
    return 0 if bundle.synthetic and getattr(bundle.model, "fleet_inputs", None) else WARMUP


class JobTimeout(Exception):
    """Raised inside the job when its time limit passes."""


_PAGE = os.sysconf("SC_PAGE_SIZE")


def _read(path: str) -> bytes:
    """A /proc file's text in one read (os-level: no buffered or text wrapper, a few µs)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 8192)
    finally:
        os.close(fd)


def rss_now() -> int:
    """This process's resident memory in bytes: one read of /proc/self/statm (psutil's
    Process() costs a /proc/self/stat read of its own first); psutil where there is no /proc."""
    try:
        return int(_read("/proc/self/statm").split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return int(psutil.Process().memory_info().rss)


def _vm_hwm() -> int | None:
    """The kernel's peak RSS of this process (VmHWM), in bytes."""
    try:
        text = _read("/proc/self/status")
    except OSError:
        return None
    at = text.find(b"\nVmHWM:")
    if at < 0:
        return None
    return int(text[at + 7 : text.index(b"\n", at + 1)].split()[0]) * 1024


def _reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        fd = os.open("/proc/self/clear_refs", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.write(fd, b"5")
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


class RssSampler:
    """Peak resident memory of this process while the block runs. Exact where the kernel lets
    us reset its high-water mark (VmHWM); otherwise sampled every 10 ms by a thread."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.before = self.peak = rss_now()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, rss_now())

    def __enter__(self) -> RssSampler:
        if not _reset_hwm():
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        else:
            self.peak = max(self.peak, _vm_hwm() or 0)
        self.peak = max(self.peak, rss_now())


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise JobTimeout in the main thread after `seconds` (SIGALRM). The Celery hard time
    limit stays as the backstop for code that never returns to Python."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise JobTimeout(f"time limit of {seconds:g} s reached")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def memory_limit(limit_mb: float | None) -> Iterator[None]:
    """Let this process grow by at most limit_mb of address space while the block runs, so
    an allocation past it fails with an error (reported as oom) instead of killing the host."""
    if not limit_mb:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    current = psutil.Process().memory_info().vms
    cap = current + int(limit_mb * 2**20)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True)
class Measurement:
    """What one check measured: the validated output's fingerprint with its quality record
    (output["quality"]), and the timing metrics. Judging them is the gates' business."""

    output: dict[str, Any]
    timing: dict[str, Any]

    @property
    def quality(self) -> dict[str, Any]:
        q: dict[str, Any] = self.output["quality"]
        return q


def benchmark(check: Check, bundle: Bundle, dev: torch.device, repeats: int) -> Measurement:
    """Run the check: first inference, a repeat for validation, the quality figure (timed on its
    own as quality_s, not part of the latency figures), warm-up, timed repeats. Decides nothing:
    the quality record says whether its bound held (for synthetic weights it is information
    only, passed None); the job's quality gate acts on it. Raises only what the check raises
    (an invalid output, an inference error)."""
    with torch.inference_mode():
        inputs = check.prepare(bundle, dev)
        _sync(dev)
        t0 = time.perf_counter()
        first = check.infer(bundle, inputs)
        _sync(dev)
        first_s = time.perf_counter() - t0
        repeat = check.infer(bundle, inputs)
        output = check.validate(bundle, inputs, first, repeat)
        if not bundle.synthetic:  # the same output for different inputs: degenerate_weights
            quality.refuse_identical_outputs(check.distinct_outputs(bundle, inputs, first))
        _sync(dev)
        t0 = time.perf_counter()
        q = check.quality(bundle, inputs)
        # a gate (a bound) measured through a tokenizer that garbles its text proves nothing
        if not bundle.synthetic and q.get("bound") is not None:
            unfaithful = quality.tokenizer_problem(bundle.tokenizer, check.gate_texts(bundle))
            if unfaithful is not None:
                q = {**q, "passed": False, "tokenizer_unfaithful": unfaithful}
        _sync(dev)
        quality_s = time.perf_counter() - t0
        warmup = warmup_passes(bundle)
        for _ in range(warmup):
            check.infer(bundle, inputs)
        latencies = []
        for _ in range(repeats):
            _sync(dev)
            t0 = time.perf_counter()
            check.infer(bundle, inputs)
            _sync(dev)
            latencies.append(time.perf_counter() - t0)
    if bundle.synthetic:
        q = {**q, "passed": None, "informational": True}
    output["quality"] = q
    p50 = percentile(latencies, 0.5)
    units = check.units(inputs, first)
    timing = {
        "first_inference_s": round(first_s, 5),
        "latency_ms_p50": round(p50 * 1000, 3),
        "latency_ms_p95": round(percentile(latencies, 0.95) * 1000, 3),
        "latency_ms_mean": round(statistics.fmean(latencies) * 1000, 3),
        "repeats": repeats,
        "warmup": warmup,
        "throughput": round(units / p50, 3) if p50 > 0 else None,
        "throughput_unit": f"{check.unit}/s",
        "quality_s": round(quality_s, 5),
    }
    return Measurement(output, timing)


def model_metrics(model: torch.nn.Module) -> dict[str, Any]:
    params = list(model.parameters())
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in params})
    return {
        "parameters": sum(p.numel() for p in params),
        "weight_bytes": sum(p.numel() * p.element_size() for p in params),
        "dtype": ",".join(dtypes),
    }


def cuda_reset(dev: torch.device) -> int:
    if dev.type != "cuda":
        return 0
    torch.cuda.reset_peak_memory_stats(dev)
    return int(torch.cuda.memory_allocated(dev))


def cuda_metrics(dev: torch.device, baseline: int) -> dict[str, Any]:
    if dev.type != "cuda":
        return {}
    return {
        "cuda_peak_allocated_mb": round(torch.cuda.max_memory_allocated(dev) / 2**20, 2),
        "cuda_baseline_allocated_mb": round(baseline / 2**20, 2),
    }
