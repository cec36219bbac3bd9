"""The memory the worker's images may hold together: an image starts decoding only once its
estimate (`chalicelib.image_memory`) fits beside those of the images in flight, within what
the function's `MemorySize` leaves above the process at rest.

Lambda ends an execution environment that goes over its `MemorySize` (the invocation fails,
its batch comes back): four images of 50 MP in flight at once would. Here an image waits for
memory as it waits for a thread, first come first served (a large image is not passed over
for ever by smaller ones behind it); one whose estimate alone is more than the whole budget
could never start, and fails at once with `too_large_to_encode`.

Memory freed is not always the system's again: each thread allocates from a glibc arena of
its own, and the freed buffers of an image (Pillow's blocks, libaom's frames, below glibc's
raised mmap threshold) stay resident in its thread's arena, so images taking turns on four
threads keep several images' worth resident that no reservation counts (measured on the
emulator: 399 MB at a 384 MB MemorySize whose budget held one 3 MP AVIF at a time). So
before an image starts, when the process's resident set (Linux's VmRSS) and the bytes held
and asked for together pass the `ceiling` (the budget plus the process at rest), the free
pages of every arena are handed back first (glibc's `malloc_trim`): the same job then peaked
at 259 MB. Only then: a trim costs a 3 MP image about a tenth more CPU, the pages faulted in
again (docs/performance.md, "Memory per image").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from chalicelib.domain.budget import OutOfTime
from chalicelib.domain.models import ImageErrorCode
from chalicelib.errors import ImageFailure

MIB = 1024 * 1024


class MemoryBudget:
    """`capacity` bytes shared by the images in flight (None: no bound, e.g. where the
    function's memory is not known)."""

    def __init__(
        self,
        capacity: int | None,
        *,
        ceiling: int | None = None,
        resident: Callable[[], int | None] | None = None,
        trim: Callable[[], bool] | None = None,
        on_wait: Callable[[int], None] | None = None,
    ) -> None:
        if capacity is not None and capacity < 0:
            raise ValueError(f"capacity must not be negative, got {capacity}")
        self.capacity = capacity
        # the resident set (bytes) that the process, with what is held and asked for, may
        # reach before freed memory is handed back (None: never looked at)
        self.ceiling = ceiling
        self._resident = resident or resident_bytes
        self._trim = trim or release_freed_memory
        self.trims = 0
        self._lock = threading.Condition()
        self._held = 0
        self._queue: deque[object] = deque()  # tickets of the reservations waiting, in order
        self._peak = 0
        # told the bytes of each reservation that has to wait (tests force races with it)
        self._on_wait = on_wait

    @classmethod
    def unlimited(cls) -> MemoryBudget:
        return cls(None)

    @property
    def held(self) -> int:
        with self._lock:
            return self._held

    @property
    def peak(self) -> int:
        """The most bytes held at once so far."""
        with self._lock:
            return self._peak

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._queue)

    @contextmanager
    def reserve(self, nbytes: int, timeout: float | None = None) -> Iterator[None]:
        """Hold `nbytes` for the block; wait (at most `timeout` seconds, None: as long as it
        takes) until they fit beside what is held, behind the reservations already waiting.

        Raises ImageFailure(`too_large_to_encode`) at once when `nbytes` could never fit,
        and OutOfTime when the wait ends before they do."""
        self.take(nbytes, timeout)
        try:
            yield
        finally:
            self.give_back(nbytes)

    def take(self, nbytes: int, timeout: float | None = None) -> None:
        """`reserve` without the block: the caller gives the bytes back (`give_back`)."""
        if self.capacity is None:
            return
        if not self.could_hold(nbytes):
            raise ImageFailure(
                ImageErrorCode.TOO_LARGE_TO_ENCODE,
                f"it needs about {-(-nbytes // MIB)} MiB to decode and encode, more than the "
                f"{self.capacity // MIB} MiB the worker's memory leaves for images",
            )
        ticket = object()
        with self._lock:
            self._queue.append(ticket)
            try:
                if not self._fits(ticket, nbytes) and self._on_wait is not None:
                    self._on_wait(nbytes)
                if not self._lock.wait_for(lambda: self._fits(ticket, nbytes), timeout):
                    raise OutOfTime(
                        f"no memory for {-(-nbytes // MIB)} MiB came free in {timeout:g}s"
                    )
                self._hand_back_if_tight(nbytes)
                self._held += nbytes
                self._peak = max(self._peak, self._held)
            finally:
                self._queue.remove(ticket)
                self._lock.notify_all()  # the next in line may fit now

    def could_hold(self, nbytes: int) -> bool:
        return self.capacity is None or nbytes <= self.capacity

    def give_back(self, nbytes: int) -> None:
        if self.capacity is None:
            return
        with self._lock:
            self._held -= nbytes
            self._lock.notify_all()

    def _hand_back_if_tight(self, nbytes: int) -> None:
        """Before `nbytes` start (the lock held: the next waits for it), hand freed memory
        back to the system when the resident set with all held and asked for passes the
        ceiling (the resident set counts the images in flight twice: their bytes so far, and
        their whole reservations; so this errs towards trimming)."""
        if self.ceiling is None:
            return
        resident = self._resident()
        if resident is not None and resident + self._held + nbytes > self.ceiling:
            self._trim()
            self.trims += 1

    def _fits(self, ticket: object, nbytes: int) -> bool:
        assert self.capacity is not None
        return self._queue[0] is ticket and self._held + nbytes <= self.capacity


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, loaded on first use; None without glibc (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        function: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return function


def release_freed_memory() -> bool:
    """Hand the allocator's free pages, in every thread's arena, back to the system; False
    where there is no glibc."""
    malloc_trim = _malloc_trim()
    if malloc_trim is None:
        return False
    malloc_trim(0)
    return True


def resident_bytes() -> int | None:
    """This process's resident set now (Linux's VmRSS), or None where it cannot be read."""
    return status_bytes("VmRSS")


def status_bytes(field: str, pid: int | str = "self") -> int | None:
    """A memory `field` of a process's /proc status (`VmRSS`, `VmHWM`: Linux gives kB) in
    bytes, or None where it cannot be read (not Linux, or the process is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
