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

Standard queues deliver as SQS fair queues do (moto delivers first in, first out): a message's
`MessageGroupId` is its tenant, and a receive takes first the messages of the tenants with the
fewest messages in flight (a message without a group is a tenant of its own, so it never
waits behind a group's backlog), each tenant's in the order they came. AWS marks a tenant
noisy when it has more than 10% of the messages in flight (and at least 30) or more than 10%
of the consumers' recent processing time, and then serves quiet tenants first, and noisy
ones by fewest in flight: with fewer than ten busy tenants each is over 10% of the time, so
fewest in flight first is what AWS does then. While N tenants have messages queued, each
thus gets about 1/N of the messages in flight. Only the order changes: which messages a
receive may take (visible, not delayed), how many, their visibility, receive counts and the
move to the dead-letter queue stay moto's own. FIFO queues keep moto's order.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections import Counter, deque
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


_HOME = "_fair_home"  # on a message: the token of the index of the queue that holds it
_SEQ = "_fair_seq"  # on a message: its arrival order in that queue
_tokens = itertools.count(1)
_sequence = itertools.count(1)


class _FairIndex:
    """A standard queue's messages by group, each group's in arrival order, kept as messages
    are added (so a receive need not walk the whole queue to find every tenant's first).
    Messages deleted, or moved to the dead-letter queue (whose index then holds them), stay
    in a group's list until passed over; the index is built again from the queue when its
    list was replaced (a purge, moto's own delete) or when it holds twice what the queue
    does."""

    def __init__(self, queue: Any) -> None:
        self.lock = threading.Lock()
        self.source: list[Any] = queue._messages
        self.token = next(_tokens)
        self.groups: dict[str | None, deque[Any]] = {}
        self.entries = 0
        for message in list(self.source):
            self.add(message)

    def add(self, message: Any) -> None:
        setattr(message, _HOME, self.token)
        setattr(message, _SEQ, next(_sequence))
        self.groups.setdefault(message.group_id, deque()).append(message)
        self.entries += 1

    def holds(self, message: Any) -> bool:
        return getattr(message, _HOME, None) == self.token

    def heads(self) -> list[tuple[str | None, Iterator[Any]]]:
        """Each group's messages, oldest first, read lazily (a receive needs only the first
        few of each; those gone from the front are dropped here)."""
        with self.lock:
            out = []
            for group, entries in list(self.groups.items()):
                while entries and not self.holds(entries[0]):
                    entries.popleft()
                    self.entries -= 1
                if entries:
                    out.append((group, _walk(entries)))
                else:
                    del self.groups[group]
            return out


def _walk(entries: deque[Any], chunk: int = 256) -> Iterator[Any]:
    """A deque's items from the front, a chunk at a time (each chunk copied in one C call,
    so items added or dropped meanwhile by other threads cannot break the walk)."""
    start = 0
    while batch := list(itertools.islice(entries, start, start + chunk)):
        yield from batch
        start += len(batch)


def _index(queue: Any) -> _FairIndex:
    index: _FairIndex | None = getattr(queue, "_fair_index", None)
    stale = index is None or index.source is not queue._messages
    if not stale and index is not None and index.entries > 2 * len(queue._messages) + 1000:
        stale = True
    if stale:
        with _lock:
            index = getattr(queue, "_fair_index", None)
            if (
                index is None
                or index.source is not queue._messages
                or index.entries > 2 * len(queue._messages) + 1000
            ):
                index = _FairIndex(queue)
                queue._fair_index = index
    assert index is not None
    return index


def _ready(message: Any) -> bool:
    return bool(message.visible and not message.delayed)


def fair_order(queue: Any) -> Iterator[Any]:
    """The queue's visible messages, fewest in flight first: at each step the oldest ready
    message of the group with the fewest messages in flight (counting those this receive
    took already; a message without a group counts none), ties to the oldest. A generator,
    so a receive that has its batch stops it."""
    index = _index(queue)
    in_flight = Counter(
        m.group_id for m in list(queue.pending_messages) if m.group_id is not None and not m.visible
    )
    walks: dict[str | None, Iterator[Any]] = {}
    heap: list[tuple[int, int, int, str | None, Any]] = []
    tie = itertools.count()

    def push(group: str | None) -> None:
        for message in walks[group]:
            if index.holds(message) and _ready(message):
                load = 0 if group is None else in_flight[group]
                heapq.heappush(heap, (load, getattr(message, _SEQ, 0), next(tie), group, message))
                return

    for group, messages in index.heads():
        walks[group] = messages
        push(group)
    while heap:
        _load, _seq, _tie, group, message = heapq.heappop(heap)
        yield message
        if group is not None:
            in_flight[group] += 1
        push(group)


class _FairMessages(_VisibleMessages):
    """`Queue.messages` of a standard queue, iterated in fair order (`fair_order`)."""

    __slots__ = ()

    def __iter__(self) -> Iterator[Any]:
        if self._queue.fifo_queue:
            return super().__iter__()
        return fair_order(self._queue)

    def __bool__(self) -> bool:  # whether any is ready: in any order
        return any(True for _ in super().__iter__())

    def __len__(self) -> int:
        return sum(1 for _ in super().__iter__())


def _indexed_add(original: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    def add_message(queue: Any, message: Any) -> None:
        original(queue, message)
        if not queue.fifo_queue:
            index = _index(queue)  # built from the list, which may hold the message already
            with index.lock:
                if not index.holds(message):
                    index.add(message)

    return add_message


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
            setattr(found, _HOME, None)  # gone from the fair index too
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
            Queue.messages = property(_FairMessages)  # type: ignore[assignment, method-assign]
            Queue.add_message = _indexed_add(Queue.add_message)  # type: ignore[assignment, method-assign]
            Queue.delete_message = _delete_in_flight(Queue.delete_message)  # type: ignore[assignment, method-assign]
            _applied.add("sqs")
        if "modules" not in _applied:
            from moto import backends

            modules = tuple(backends.list_of_moto_modules())
            backends.list_of_moto_modules = lambda: modules
            _applied.add("modules")
