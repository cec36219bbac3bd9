"""While a batch's images run, which of its jobs are cancelled (or gone): one read for the
batch before any image starts, then one every CANCEL_CHECK_SECONDS while some image still
waits for a thread. A waiting image of such a job never starts (`Stopped`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chalicelib.services.deps import Dependencies
from chalicelib.services.row_messages import RowTask
from chalicelib.services.row_records import jobs_halted

# While a batch's images run, which of its jobs are cancelled is read again this often.
CANCEL_CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class Stopped:
    """An image that never started: its job was seen cancelled while it waited for a thread."""


class CancelWatch:
    """Which of a batch's jobs are cancelled (or asked to be): read once before any image of
    the batch starts, then again every CANCEL_CHECK_SECONDS while some are still running,
    one read for the batch each time, never one per image. An image still waiting for a
    pool thread when its job is seen cancelled does not start (`Stopped`); one already
    running ends as it would."""

    def __init__(self, deps: Dependencies, tasks: Sequence[RowTask]) -> None:
        self._deps = deps
        self._events = {task.request_id: threading.Event() for task in tasks}
        self.stopped: set[str] = set()
        self.gone: set[str] = set()  # of the stopped, those that no longer exist
        self._checked = time.monotonic()
        self._mark(*jobs_halted(deps, tasks))

    def _mark(self, cancelled: set[str], gone: set[str]) -> None:
        self.gone |= gone
        for request_id in cancelled | gone:
            self.stopped.add(request_id)
            if request_id in self._events:
                self._events[request_id].set()

    def wait_seconds(self) -> float:
        """How long until the next read is due."""
        return max(0.0, self._checked + CANCEL_CHECK_SECONDS - time.monotonic())

    def check(self, tasks: Sequence[RowTask]) -> None:
        """Read again, when due, which of these rows' jobs are cancelled."""
        if self.wait_seconds() > 0:
            return
        self._checked = time.monotonic()
        going = [task for task in tasks if task.request_id not in self.stopped]
        if going:
            self._mark(*jobs_halted(self._deps, going))

    def guarded[T](self, request_id: str, work: Callable[[], T]) -> Callable[[], T | Stopped]:
        """`work`, unless the job is seen cancelled by the time a thread takes it."""
        stop = self._events[request_id]

        def start() -> T | Stopped:
            return Stopped() if stop.is_set() else work()

        return start
