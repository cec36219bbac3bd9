"""Make moto's SQS queue attributes cheap on long queues, and its server's routing cheap.

moto computes `ApproximateNumberOfMessages` (and the delayed and not-visible counts) by
scanning every message of the queue, and reads the queue's attributes on every SendMessage
(for `ContentBasedDeduplication`): sending N messages costs O(N^2). A 100,000-row job's
fan-out would take hours. SQS documents these counts as approximate and eventually
consistent, so here each count is computed at most once per `COUNT_TTL` seconds per queue
(longer on a queue so long that counting it takes more than 5% of that);
everything else (visibility, receive, delete, redrive) is moto's own.

moto's server also lists its own package directory (a `listdir` and an `isdir` per entry)
on every request to find the service a host names; the list never changes while the
process runs, so it is read once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

COUNT_TTL = 1.0
_COUNTS = (
    "approximate_number_of_messages",
    "approximate_number_of_messages_delayed",
    "approximate_number_of_messages_not_visible",
)
_lock = threading.Lock()
_applied: set[str] = set()


def _cached(name: str, compute: Callable[[Any], int]) -> property:
    slot = f"_emulator_cache_{name}"

    def get(queue: Any) -> int:
        now = time.monotonic()
        cached: tuple[float, int] | None = getattr(queue, slot, None)
        if cached is not None and now < cached[0]:
            return cached[1]
        value = compute(queue)
        took = time.monotonic() - now
        # a long queue takes long to count: count it at most 5% of the time
        setattr(queue, slot, (now + max(COUNT_TTL, 20 * took), value))
        return value

    return property(get)


def apply() -> None:
    """Patch moto's Queue and its module list once per process (idempotent)."""
    with _lock:
        if "sqs" not in _applied:
            from moto.sqs.models import Queue

            for name in _COUNTS:
                original = getattr(Queue, name)
                if isinstance(original, property) and original.fget is not None:
                    setattr(Queue, name, _cached(name, original.fget))
            _applied.add("sqs")
        if "modules" not in _applied:
            from moto import backends

            modules = tuple(backends.list_of_moto_modules())
            backends.list_of_moto_modules = lambda: modules
            _applied.add("modules")
