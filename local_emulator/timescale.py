"""One local time scale, applied alike to every duration the stack keeps.

Waiting 750 s for a row to come back, or 5 minutes for the sweeper, makes a local stack
useless for tests and demos; shortening only some of those durations makes it lie: a
visibility timeout shorter than the function's Timeout delivers a batch twice while it is
still running, a sweeper quicker than a batch re-sends rows in flight, a download deadline
longer than the function's Timeout is cut off by it. So one factor multiplies them all:
each function's Timeout (the API's excepted: API Gateway's 29 s answers a person waiting),
each queue's visibility timeout, each rate() schedule, and the app's own durations
(download deadlines, connect and read timeouts, leases, the sweeper's stall, the webhook's
retry schedule). Every rule between them that holds on AWS (visibility >= 6 x Timeout,
stall > visibility + Timeout, ...) holds locally too. CPU work is not scaled: the worker
keeps back the same seconds per image, so a scale below about 0.1 leaves it little time.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

DEFAULT_TIME_SCALE = 0.25
TIME_SCALE_ENV = "LOCAL_TIME_SCALE"
MIN_VISIBILITY = 1  # seconds: SQS counts visibility in whole seconds

# The app's settings that are durations: environment variable -> Settings field.
FLOAT_SECONDS = {
    "CONNECT_TIMEOUT": "connect_timeout",
    "READ_TIMEOUT": "read_timeout",
    "DOWNLOAD_DEADLINE": "download_deadline",
    "WEBHOOK_TIMEOUT": "webhook_timeout",
    "FETCH_BACKOFF": "fetch_backoff",
}
WHOLE_SECONDS = {
    "STALL_AFTER": "stall_after",
    "INGEST_LEASE": "ingest_lease",
    "FINALIZE_LEASE": "finalize_lease",
    "JOB_ACTION_INTERVAL": "job_action_interval",
    "SECRETS_CACHE_SECONDS": "secrets_cache_seconds",
}
SCHEDULES = {"WEBHOOK_RETRY_SCHEDULE": "webhook_retry_schedule"}


def time_scale_from_env(env: Mapping[str, str] | None = None) -> float:
    raw = (os.environ if env is None else env).get(TIME_SCALE_ENV, "").strip()
    if not raw:
        return DEFAULT_TIME_SCALE
    value = float(raw)
    if not 0 < value <= 1:
        raise ValueError(f"{TIME_SCALE_ENV} must be in (0, 1], got {raw!r}")
    return value


def scaled_timeout(seconds: float, scale: float) -> float:
    """A function's Timeout, locally."""
    return round(seconds * scale, 3)


def scaled_visibility(seconds: int, scale: float) -> int:
    """A visibility timeout, locally: rounded up, so that visibility >= 6 x Timeout still
    holds after scaling both; never below MIN_VISIBILITY (nor above the template's)."""
    if seconds <= MIN_VISIBILITY:
        return seconds
    return min(seconds, max(MIN_VISIBILITY, math.ceil(seconds * scale)))


def scaled_app_durations(template_env: Mapping[str, str], scale: float) -> dict[str, str]:
    """The app's durations, scaled: each from the template's environment when it sets one,
    else from the app's own default (chalicelib.config.Settings), never written twice. A
    stack whose code is not this app's (a test's stand-in) gets the template's only."""
    try:
        from chalicelib.config import Settings
    except ImportError:
        defaults: object = None
    else:
        defaults = Settings()
    out: dict[str, str] = {}
    for name, attr in FLOAT_SECONDS.items():
        base = template_env.get(name) or getattr(defaults, attr, None)
        if base is not None:
            out[name] = f"{round(float(base) * scale, 3):g}"
    for name, attr in WHOLE_SECONDS.items():
        base = template_env.get(name) or getattr(defaults, attr, None)
        if base is not None:
            out[name] = str(max(1, math.ceil(float(base) * scale)))
    for name, attr in SCHEDULES.items():
        raw = template_env.get(name)
        delays = (
            [float(part) for part in raw.split(",") if part.strip()]
            if raw
            else list(getattr(defaults, attr, ()))
        )
        if delays:
            out[name] = ",".join(str(max(1, math.ceil(delay * scale))) for delay in delays)
    return out
