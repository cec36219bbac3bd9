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

Receiving and deleting scanned the whole queue too: `ReceiveMessage` built the list of every
visible message to take the first ten (seconds on a queue of 100,000; measured: see
docs/performance.md), and `DeleteMessage` looked for the receipt handle in every message,
twice, then rebuilt the list. Here a receive walks the queue only until it has its
messages, and a delete finds the message among those in flight (where a receipt handle it
can still delete lives) and removes just that one; a handle not in flight goes to moto's own
delete.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
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
        if COUNT_TTL > 0 and cached is not None and now < cached[0]:  # 0: exact counts
            return cached[1]
        value = compute(queue)
        took = time.monotonic() - now
        # a long queue takes long to count: count it at most 5% of the time
        setattr(queue, slot, (now + max(COUNT_TTL, 20 * took), value))
        return value

    return property(get)


class _VisibleMessages:
    """`Queue.messages` as moto defines it (visible, not delayed), without building the list:
    iterating walks a snapshot of the queue lazily, and truth stops at the first one."""

    __slots__ = ("_queue",)

    def __init__(self, queue: Any) -> None:
        self._queue = queue

    def __iter__(self) -> Iterator[Any]:
        return (m for m in list(self._queue._messages) if m.visible and not m.delayed)

    def __bool__(self) -> bool:
        return any(True for _ in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _delete_in_flight(original: Callable[[Any, str], None]) -> Callable[[Any, str], None]:
    def delete_message(queue: Any, receipt_handle: str) -> None:
        with queue._messages_lock:
            if receipt_handle in queue.deleted_messages:
                return
            found = next(
                (m for m in list(queue.pending_messages) if m.had_receipt_handle(receipt_handle)),
                None,
            )
            if found is None:
                original(queue, receipt_handle)
                return
            queue.pending_messages.discard(found)
            queue.deleted_messages.update(found.all_receipt_handles)
            # one C call (atomic under the GIL; moto's receive moves messages to the
            # dead-letter queue without this lock), by identity: Message has no __eq__
            with contextlib.suppress(ValueError):
                queue._messages.remove(found)

    return delete_message


def apply() -> None:
    """Patch moto's Queue and its module list once per process (idempotent)."""
    with _lock:
        if "sqs" not in _applied:
            from moto.sqs.models import Queue

            for name in _COUNTS:
                original = getattr(Queue, name)
                if isinstance(original, property) and original.fget is not None:
                    setattr(Queue, name, _cached(name, original.fget))
            Queue.messages = property(_VisibleMessages)  # type: ignore[assignment, method-assign]
            Queue.delete_message = _delete_in_flight(Queue.delete_message)  # type: ignore[assignment, method-assign]
            _applied.add("sqs")
        if "modules" not in _applied:
            from moto import backends

            modules = tuple(backends.list_of_moto_modules())
            backends.list_of_moto_modules = lambda: modules
            _applied.add("modules")
