"""Numbers that come from outside (a message, a stored record, a heartbeat): checked without raising.

JSON has integers of any size: `10**400` decodes to a Python int that math.isfinite() and
float() refuse with OverflowError. Every check of such a number goes through finite() here,
which never raises: an integer beyond the range of a float is out of range like infinity.
Times (seconds since 1970) must lie between 1970 and the year 9999, which every date
formatting can show (fleet.records reads stored times with the same range).
"""

from __future__ import annotations

import math
import time
from typing import Any

MAX_TIME = 253_402_300_799.0  # 9999-12-31T23:59:59Z: the last second datetime can show
CLOCK_SKEW_S = 86_400.0  # how far ahead of this machine's clock a sender's clock may be


def finite(value: Any) -> float | None:
    """value as a finite float, or None: not a number (a bool is not one), NaN, infinite, or an
    integer too large for a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def sent_at_problem(value: Any, now: float | None = None) -> str | None:
    """What is wrong with a message's `sent_at` (when it was sent), or None: a time after 1970
    and no later than now plus CLOCK_SKEW_S."""
    sent = finite(value)
    if sent is None:
        return f"sent_at must be a finite number, got {shown(value)}"
    latest = (time.time() if now is None else now) + CLOCK_SKEW_S
    if not 0 < sent <= min(latest, MAX_TIME):
        return f"sent_at must be a time after 1970 and at most {CLOCK_SKEW_S:g} s ahead of now, got {sent!r}"
    return None


def shown(value: Any, limit: int = 64) -> str:
    """value's repr for a message, cut to limit characters (an int of over 4300 digits has none)."""
    if isinstance(value, int) and not isinstance(value, bool) and finite(value) is None:
        return f"an integer of {value.bit_length()} bits (beyond the range of a number)"
    try:
        return repr(value)[:limit]
    except ValueError:
        return "an integer too long to show"
