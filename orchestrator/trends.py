"""Metric trends: a performance regression is called against a median, not against one run.

For each job and metric, the samples are the job's passing outcomes (REAL or SYNTHETIC) with
the same weights (weights_sha256, or the synthetic revision) on the same device, newest first.
The newest `violations` samples are compared with the median of the `window` samples before
them: all of them beyond `threshold` (relative, higher is worse) is a regression; only some
(the newest included) is suspicious; fewer than `window` earlier samples is insufficient data.
Metrics measured on different weights are never compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import Any

from fleet.protocol import PASSED, Result, Status
from orchestrator.baselines import FROM_RESULT, JobHistory, Sample

TREND_METRICS = ("latency_ms_p50", "load_s", "peak_rss_mb", "cuda_peak_allocated_mb")


@dataclass(frozen=True)
class TrendSettings:
    window: int = 5  # runs in the median
    violations: int = 2  # consecutive violations that make a regression
    threshold: float = 0.2  # relative change beyond the median that counts as a violation

    @property
    def samples_needed(self) -> int:
        return self.window + self.violations


def weights_key(result: Result) -> str | None:
    """What identifies the weights measured: their digest, or the synthetic model's revision."""
    if result.get("weights_sha256"):
        return f"sha256:{result['weights_sha256']}"
    if result.get("status") == Status.SYNTHETIC and result.get("revision"):
        return f"synthetic:{result['model_used']}:{result['revision']}"
    return None


def sample_key(sample: Sample) -> str | None:
    """The sample's weights key: kept with it (from a summary), or read from its result."""
    return weights_key(sample.result) if sample.key is FROM_RESULT else sample.key


def trends(history: JobHistory, settings: TrendSettings) -> dict[str, dict[str, Any]]:
    """{metric: {label, value, median, relative, violations, runs}} for the job's current result."""
    first = history.current
    if first is None:
        return {}
    current = first.result
    key = sample_key(first)
    if key is None or current.get("status") not in PASSED:
        return {}
    # the metrics the current result has a number for: no other has a trend
    metrics = tuple(m for m in TREND_METRICS if isinstance(current["metrics"].get(m), (int, float)))
    if not metrics:
        return {}
    violations, window, threshold = settings.violations, settings.window, settings.threshold
    needed = violations + window  # the newest numbers of a metric are all it reads
    same = history.trend_values(key, current["device"], metrics, sample_key, needed)
    out: dict[str, dict[str, Any]] = {}
    # same holds the current result first (it passed, with this key and device); one column per metric
    for metric, values in zip(metrics, zip(*same, strict=True), strict=True):
        series = [float(v) for v in islice(filter(_is_number, values), needed)]
        recent = series[:violations]
        base = series[violations : violations + window]
        entry: dict[str, Any] = {"value": series[0], "runs": len(base)}
        if len(base) < window or len(recent) < violations:
            entry["label"] = "insufficient data"
            out[metric] = entry
            continue
        median = _median(base)
        violating = [median > 0 and v > median * (1 + threshold) for v in recent]
        entry.update(
            median=round(median, 4),
            relative=round((series[0] - median) / median, 3) if median else None,
            violations=sum(violating),
        )
        if all(violating):
            entry["label"] = "regression"
        elif violating[0]:
            entry["label"] = "suspicious"
        else:
            entry["label"] = "ok"
        out[metric] = entry
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float))


def _median(values: list[float]) -> float:
    """statistics.median of floats, without its checks and conversions (a report takes 10,000s)."""
    data = sorted(values)
    i = len(data) // 2
    return data[i] if len(data) % 2 else (data[i - 1] + data[i]) / 2
