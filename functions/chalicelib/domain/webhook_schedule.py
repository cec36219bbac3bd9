"""When a webhook's next attempt is due: the retry schedule, the receiver's `Retry-After`, and
the hops that carry a delay longer than SQS's through its 15-minute `DelaySeconds`.

- A `410 Gone` answer ends the retries at once (the receiver says the endpoint is gone).
- The next delay is the schedule's for this step, or the receiver's `Retry-After` when that
  is longer, but never longer than the schedule's longest delay: a receiver can slow the
  retries down, not stretch one of them past what the schedule would ever wait, nor speed
  them up. Every answer but a 2xx or a 410 counts as one step of the schedule, so the number
  of attempts is the schedule's whatever the receiver says.
- A delay longer than SQS_MAX_DELAY is waited out in hops: the message carries `notBefore`
  and is sent with the longest `DelaySeconds`; a hop that arrives early is sent again for
  what is left (no attempt, nothing recorded), until it is due.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

SQS_MAX_DELAY = 900  # seconds: the longest DelaySeconds SQS accepts
MAX_DELAY = 86_400  # seconds: the longest delay a schedule may hold (one day)
MAX_RETRIES = 19  # delays in a schedule: 20 attempts, all in the status's history
GONE = 410
# Longer than any answer we would act on; an absurd value is capped by the schedule anyway.
_MAX_RETRY_AFTER_DIGITS = 9


def parse_retry_after(value: str, now: datetime) -> float | None:
    """Seconds to wait from `now` per a `Retry-After` header (RFC 9110: delay-seconds or an
    HTTP-date); None when absent or unreadable. A date in the past is 0."""
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text[:_MAX_RETRY_AFTER_DIGITS]))
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # "-0000": UTC, as HTTP-dates always are
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - now).total_seconds())


def next_delay(schedule: Sequence[int], step: int, retry_after: float | None) -> int | None:
    """Seconds until the attempt after failed attempt `step` (1-based) of this delivery, or
    None when the schedule is spent."""
    if step < 1 or step > len(schedule):
        return None
    delay = schedule[step - 1]
    if retry_after is None or retry_after <= delay:
        return delay
    return min(math.ceil(retry_after), max(schedule))


def hop_delay(remaining_seconds: float) -> int:
    """The DelaySeconds of the next hop towards a moment this far off (at least 1 s, so that a
    hop never comes back sooner than it left, at most SQS's longest)."""
    return max(1, min(SQS_MAX_DELAY, math.ceil(remaining_seconds)))


def check_schedule(delays: Sequence[int]) -> str | None:
    """What is wrong with a schedule, or None."""
    if len(delays) > MAX_RETRIES:
        return f"at most {MAX_RETRIES} delays (the status keeps {MAX_RETRIES + 1} attempts)"
    if any(delay < 0 or delay > MAX_DELAY for delay in delays):
        return f"each delay must be between 0 and {MAX_DELAY} seconds"
    return None
