"""Alerts: POST a JSON summary of a run's unexpected changes to a webhook (--notify URL).

The body has a Slack-compatible `text` and structured fields. Standard library only; each try
has a timeout, failed tries are repeated with backoff, and nothing here ever raises: a failed
alert never fails the run. The URL is a secret (webhook URLs carry their token): only its
scheme and host are ever printed.
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from fleet.errors import BadInput
from orchestrator.output import dumps as strict_json

TIMEOUT_S = 5.0
TRIES = 3
BACKOFF_S = 0.5


def check_url(url: str | None) -> str | None:
    """A usable http(s) URL, or a BadInput naming what is wrong (checked before the run starts)."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (ValueError for a port that is not a number 0-65535)
    except ValueError as exc:
        raise BadInput(f"--notify: not a usable URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput(f"--notify: expected an http:// or https:// URL, got {where(url)!r}")
    return url


def where(url: str) -> str:
    """Scheme and host only: the path and query of a webhook URL are its secret."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable url>"
    return f"{parts.scheme}://{host}{port}/…"


def _unexpected(row: dict[str, Any]) -> bool:
    """Against expectations when the run has them; otherwise a job that newly fails (new or
    regressed, ending FAILED, LOST or FLAKY): a failure that persists is no change."""
    if row.get("expectation") is not None:
        return bool(row["expectation"]["unexpected"])
    return row["status"] in ("FAILED", "LOST", "FLAKY") and row["change"] in ("new", "regressed")


def summary(report: dict[str, Any]) -> dict[str, Any] | None:
    """What an alert says about a run (from the report model), or None when nothing is unexpected."""
    rows = report["rows"]
    regressions = [r for r in rows if r["change"] == "regressed"]
    unexpected = [r for r in rows if _unexpected(r)]
    flaky = [r for r in rows if r["status"] == "FLAKY"]
    metrics = report.get("metric_regressions", [])
    if not (regressions or unexpected or flaky or metrics):
        return None

    def item(r: dict[str, Any]) -> dict[str, Any]:
        base = r.get("baseline") or {}
        return {
            "job_id": r["job_id"],
            "status": r["status"],
            "baseline": base or None,
            "change": r["change"],
            "expected": (r.get("expectation") or {}).get("expected"),
            "attribution": (r.get("attribution") or {}).get("summary"),
            "error_kind": (r.get("error") or {}).get("kind"),
        }

    lines = [f"model-fleet run {report['run_id']}:"]
    for r in unexpected or regressions:
        attr = (r.get("attribution") or {}).get("summary")
        lines.append(f"• {r['job_id']}: {attr or r['status']}")
    for r in flaky:
        lines.append(f"• {r['job_id']}: FLAKY (pass ratio {r.get('pass_ratio')})")
    for m in metrics:
        lines.append(f"• {m['job_id']}: {m['metric']} {m['label']} ({m['relative']:+.0%} vs median {m['median']})")
    return {
        "text": "\n".join(lines),
        "run_id": report["run_id"],
        "started_at": report.get("started_at_iso"),
        "summary": report["summary"],
        "unexpected": [item(r) for r in unexpected],
        "regressions": [item(r) for r in regressions],
        "flaky": [{"job_id": r["job_id"], "pass_ratio": r.get("pass_ratio")} for r in flaky],
        "metric_regressions": metrics,
    }


def post(url: str, payload: dict[str, Any], timeout_s: float = TIMEOUT_S, tries: int = TRIES) -> bool:
    """POST payload as JSON; True when a 2xx answer came. Never raises."""
    body = strict_json(payload).encode()  # strict JSON: a non-finite number is null
    delay = BACKOFF_S
    for attempt in range(1, tries + 1):
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "model-fleet"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # http(s) only: check_url
                if 200 <= response.status < 300:
                    return True
                why = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            why = f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections
            why = type(exc).__name__ if "timed out" not in str(exc) else "timed out"
        print(f"orchestrator: warning: alert to {where(url)} failed (try {attempt}/{tries}): {why}", file=sys.stderr)
        if attempt < tries:
            time.sleep(delay)
            delay *= 2
    return False


def send(url: str | None, report: dict[str, Any], timeout_s: float = TIMEOUT_S) -> bool | None:
    """Alert about this report when there is something to say. None: nothing sent."""
    if not url:
        return None
    try:
        payload = summary(report)
    except Exception as exc:  # an alert must never fail the run
        print(f"orchestrator: warning: could not build the alert: {exc}", file=sys.stderr)
        return False
    if payload is None:
        return None
    return post(url, payload, timeout_s=timeout_s)
