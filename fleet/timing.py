"""Time limits, redelivery and deadlines, derived from one another so that they agree.

    hard(job)   = soft + max(5 s, 0.25 x soft)             Celery's hard time limit
    visibility  >= max hard(job) + REDELIVERY_MARGIN_S       checked at submit (FLEET_VISIBILITY_TIMEOUT)
    deadline    = visibility + max hard(job) + REDELIVERY_MARGIN_S   when --deadline is not given

A job whose worker is known dead (its heartbeat expired) is delivered again within
DEAD_WORKER_RESTORE_S (fleet.redelivery); the visibility timeout is only the backstop for a
worker that vanished without anyone noticing, and the default deadline leaves room for that
backstop plus one more full run of the longest job. A job can therefore never be redelivered
while it is still running (visibility > hard limit), and never be LOST merely because
redelivery waited out the visibility timeout.
"""

from __future__ import annotations

import math

from fleet.errors import BadInput

REDELIVERY_MARGIN_S = 60.0
DEFAULT_VISIBILITY_S = 3900  # fits the longest soft limit a catalog may ask for (MAX_TIME_LIMIT_S)
MAX_TIME_LIMIT_S = 3000.0  # hard(3000) = 3750; + 60 s margin < 3900
MIN_DEADLINE_S = 3600.0  # the default deadline is never shorter than an hour
MAX_DEADLINE_S = 30 * 86400.0  # a run's deadline: at most 30 days (message expiry must stay a valid date)
WORKER_TTL_S = 30  # a worker's heartbeat key lives this long; it is renewed every 10 s
DEAD_WORKER_RESTORE_S = WORKER_TTL_S + 10 + 30  # heartbeat expiry + one check + the observation (fleet.redelivery)


def hard_time_limit(soft_s: float) -> float:
    """Celery's hard limit: the backstop for code that never returns to Python after the
    soft limit (our own SIGALRM) fired."""
    return soft_s + max(5.0, 0.25 * soft_s)


def finite_positive(value: float, what: str, maximum: float = math.inf) -> float:
    """value when it is a finite number in (0, maximum]; BadInput naming `what` otherwise."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise BadInput(f"{what} must be a finite number > 0, got {value!r}")
    if value > maximum:
        raise BadInput(f"{what} must be at most {maximum:g}, got {value!r}")
    return float(value)


def check_visibility(time_limits_s: list[float], visibility_s: float) -> None:
    """A job may not run longer than the visibility timeout (it would be delivered twice)."""
    if not time_limits_s:
        return
    longest = max(time_limits_s)
    needed = hard_time_limit(longest) + REDELIVERY_MARGIN_S
    if needed > visibility_s:
        raise BadInput(
            f"a time limit of {longest:g} s needs a visibility timeout of at least {needed:.0f} s "
            f"(FLEET_VISIBILITY_TIMEOUT is {visibility_s:g}); lower the time limit or raise the timeout"
        )


def default_deadline(time_limits_s: list[float], visibility_s: float) -> float:
    """Long enough for a job whose worker vanished unnoticed to be redelivered by the
    visibility backstop and then run to its hard limit."""
    longest = hard_time_limit(max(time_limits_s)) if time_limits_s else 0.0
    return max(MIN_DEADLINE_S, visibility_s + longest + REDELIVERY_MARGIN_S)
