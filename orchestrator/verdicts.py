"""What a finished run's outcome means as an exit code, with one line per reason.

Without expectations a run fails (exit 5) when it has FAILED or LOST jobs (FLAKY jobs are
noted, never failed on); with expectations only outcomes that differ from them fail it,
unexpected passes included. A run whose jobs ended SKIPPED because no worker served their
device did not test what was asked (submit --wait fails on it). The notes are for stderr:
callers print them, this module prints nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fleet.errors import ErrorKind, ExitCode, RunFailed
from fleet.protocol import FAILING, Result, Status
from fleet.store import ResultStore
from orchestrator import notify, report
from orchestrator.expectations import Expectations


@dataclass(frozen=True)
class Verdict:
    exit_code: int
    notes: tuple[str, ...] = ()  # one line each, why (without the program's name)


def of_counts(run_id: str, counts: Counter[str]) -> Verdict:
    """Exit 5 when any job FAILED or was LOST; FLAKY and UNVERIFIED jobs are only noted."""
    bad = sum(counts.get(s, 0) for s in FAILING)
    flaky = counts.get("FLAKY", 0)
    unverified = counts.get("UNVERIFIED", 0)
    notes = []
    if flaky:
        notes.append(f"run {run_id}: {flaky} job(s) FLAKY (passed on a rerun)")
    if unverified:
        notes.append(
            f"run {run_id}: {unverified} job(s) UNVERIFIED (nothing outside the weights' supplier vouches "
            "for them: add a lock entry with --lock FILE; the report says what would anchor each)"
        )
    if bad:
        notes.append(f"run {run_id}: {bad} job(s) FAILED or LOST")
        return Verdict(RunFailed.exit_code, tuple(notes))
    return Verdict(ExitCode.OK, tuple(notes))


def against_expectations(run_id: str, results: Iterable[Result], expected: Expectations) -> Verdict:
    """Exit 5 only for outcomes that differ from the expectations (unexpected passes included)."""
    judged = [(r, expected.judge(r)) for r in results]
    bad = [(r, v) for r, v in judged if v["unexpected"]]
    notes = tuple(f"{run_id}: {r['job_id']}: {v['kind']}: {_outcome(r, v)}" for r, v in bad)
    return Verdict(RunFailed.exit_code if bad else ExitCode.OK, notes)


def _outcome(result: Result, verdict: dict[str, Any]) -> str:
    """What came out against what was expected: the status, and the variants that differ."""
    parts = (
        []
        if verdict["kind"] == "unexpected variant"
        else [f"{result['status']}, expected {verdict['expected'] or 'a pass'}"]
    )
    parts += [f"variant {x['variant']} {x['got']}, expected {x['expected']}" for x in verdict.get("variants", [])]
    return "; ".join(parts)


def unserved(run_id: str, results: Iterable[Result]) -> Verdict | None:
    """Exit 5 when jobs ended SKIPPED because no worker served their device (None: all served)."""
    devices = sorted(
        {
            r["device"]
            for r in results
            if r["status"] == Status.SKIPPED and r["error"] is not None and r["error"]["kind"] == ErrorKind.NO_WORKER
        }
    )
    if not devices:
        return None
    return Verdict(RunFailed.exit_code, (f"run {run_id}: no worker served {', '.join(devices)}",))


def conclude(
    store: ResultStore,
    run_id: str,
    counts: Counter[str],
    expected: Expectations | None,
    notify_url: str | None,
) -> Verdict:
    """A finished run: alert (when asked, never failing the run), then its verdict."""
    if notify_url:
        notify.send(notify_url, report.build(store, run_id, expectations=expected))
    if expected is not None:
        return against_expectations(run_id, store.results(run_id), expected)
    return of_counts(run_id, counts)
