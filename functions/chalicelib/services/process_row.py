"""The worker: each row's images fetched, compressed, stored and recorded exactly once."""

from __future__ import annotations

import contextvars
import functools
import logging
import math
import random
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from chalicelib import observability
from chalicelib.config import Settings
from chalicelib.domain.budget import Budget, OutOfTime
from chalicelib.domain.models import (
    ImageErrorCode,
    ImageResult,
    Progress,
    RowStatus,
    output_key,
)
from chalicelib.domain.output_options import OutputOptions
from chalicelib.domain.retention import output_cache_control
from chalicelib.errors import ImageFailure, InvalidRequest, JobGone
from chalicelib.lazy_imaging import CompressOptions, compress, work_allowance
from chalicelib.ports import BatchRecorder
from chalicelib.services import reuse
from chalicelib.services.deps import Dependencies
from chalicelib.services.finalize import queue_finalization

log = logging.getLogger(__name__)

# Rows whose images end within this many seconds of each other are recorded in one update:
# on the embedded MongoDB each write holds the GIL the images need, and recording every row
# alone cost the pipeline benchmark speed (docs/performance.md).
RECORD_LINGER = 0.5


@dataclass(frozen=True)
class Kept:
    """An image finished in an earlier delivery of its row: a success of a retried row (its
    output reused, not redone), or either outcome carried by a continuation message."""

    key: str
    bytes_in: int = 0
    bytes_out: int = 0
    error_code: ImageErrorCode | None = None
    error_message: str = ""

    @property
    def done(self) -> bool:
        return bool(self.key) or self.error_code is not None

    def result(self, url: str) -> ImageResult:
        return ImageResult(
            url,
            output_key=self.key,
            error_code=self.error_code,
            error_message=self.error_message,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
        )

    @classmethod
    def of(cls, result: ImageResult) -> Kept:
        return cls(
            result.output_key,
            result.bytes_in,
            result.bytes_out,
            result.error_code,
            result.error_message,
        )

    @classmethod
    def from_message(cls, item: Mapping[str, Any]) -> Kept:
        code = item.get("errorCode")
        return cls(
            str(item.get("key", "")),
            int(item.get("bytesIn", 0)),
            int(item.get("bytesOut", 0)),
            ImageErrorCode(code) if code else None,
            str(item.get("errorMessage", "")),
        )

    def to_message(self) -> dict[str, object]:
        item: dict[str, object] = {
            "key": self.key,
            "bytesIn": self.bytes_in,
            "bytesOut": self.bytes_out,
        }
        if self.error_code is not None:
            item["errorCode"] = str(self.error_code)
            item["errorMessage"] = self.error_message
        return item


@dataclass(frozen=True)
class Deferred:
    """An image not finished for want of time: it resumes in a later invocation, with the
    fetch attempts it already spent counted."""

    attempts: int


@dataclass(frozen=True)
class RowTask:
    request_id: str
    position: int
    serial: int
    urls: tuple[str, ...]
    keep: tuple[Kept, ...] = ()
    attempts: tuple[int, ...] = ()  # fetch attempts already spent, per image
    generation: int = 0
    redelivered: bool = False  # received before (SQS's ApproximateReceiveCount > 1)
    options: OutputOptions = field(default_factory=OutputOptions)  # the job's, in every message
    tenant: str = ""  # the job's owner ("": a message from before tenants; no reuse)

    def kept(self, index: int) -> Kept | None:
        if index < len(self.keep) and self.keep[index].done:
            return self.keep[index]
        return None

    def attempts_spent(self, index: int) -> int:
        return self.attempts[index] if index < len(self.attempts) else 0

    @classmethod
    def from_message(cls, body: Mapping[str, Any]) -> RowTask:
        try:
            urls = body["inputImageUrls"]
            if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
                raise TypeError("inputImageUrls must be a list of strings")
            return cls(
                request_id=str(body["requestId"]),
                position=int(body["position"]),
                serial=int(body["serialNumber"]),
                urls=tuple(urls),
                keep=tuple(Kept.from_message(k) for k in body.get("keep", [])),
                attempts=tuple(int(n) for n in body.get("attempts", [])),
                generation=int(body.get("generation", 0)),
                options=OutputOptions.from_dict(body.get("options")),
                tenant=str(body.get("tenant", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidRequest(f"malformed row message: {exc}") from exc

    def to_message(self) -> dict[str, object]:
        """The row message's body (what `from_message` reads): the one place its shape is
        written, for the fan-out, a retry and a continuation alike."""
        message: dict[str, object] = {
            "requestId": self.request_id,
            "position": self.position,
            "serialNumber": self.serial,
            "inputImageUrls": list(self.urls),
            "generation": self.generation,
        }
        if not self.options.is_default:
            message["options"] = self.options.to_dict()
        if self.tenant:
            message["tenant"] = self.tenant
        if self.keep or any(self.attempts):
            message["keep"] = [k.to_message() for k in self.keep]
            message["attempts"] = [self.attempts_spent(i) for i in range(len(self.urls))]
        return message

    def continuation(
        self, done: Mapping[int, ImageResult], attempts: Mapping[int, int]
    ) -> dict[str, object]:
        """The message that resumes this row: what is done so far kept, image by image."""
        n = range(len(self.urls))
        keep = tuple(Kept.of(done[i]) if i in done else (self.kept(i) or Kept("")) for i in n)
        spent = tuple(attempts.get(i, self.attempts_spent(i)) for i in n)
        return replace(self, keep=keep, attempts=spent).to_message()


@dataclass(frozen=True)
class Stopped:
    """An image that never started: its job was seen cancelled while it waited for a thread."""


ImageOutcome = ImageResult | Deferred | Stopped
# While a batch's images run, which of its jobs are cancelled is read again this often.
CANCEL_CHECK_SECONDS = 1.0


def process_rows(
    deps: Dependencies, tasks: Sequence[RowTask], budget: Budget | None = None
) -> list[BaseException | None]:
    """Process a batch within `budget`; every image of every row runs on the shared pool.

    A row already recorded costs a read, not a download. Each row is recorded as soon as its
    own images are done; a row whose images could not all be finished in time is sent on as
    a continuation message that keeps what is done (or, with nothing done, handed back).
    Returns, per task, None when the row is dealt with, or the error for which its message
    should be redelivered."""
    budget = budget or Budget.unlimited()
    outcomes: list[BaseException | None] = [None] * len(tasks)
    watch = CancelWatch(deps, tasks)
    stopped = set(watch.stopped)
    if stopped:
        members = [n for n, task in enumerate(tasks) if task.request_id in stopped]
        let_go(deps, tasks, [n for n in members if tasks[n].request_id in watch.gone], outcomes)
        members = [n for n in members if tasks[n].request_id not in watch.gone]
        cancel_tasks(deps, tasks, members, outcomes)
        tasks_left = [task for task in tasks if task.request_id not in stopped]
    else:
        tasks_left = list(tasks)
    recorded = _recorded_rows(deps, tasks_left)
    live: dict[int, dict[int, Future[ImageOutcome]]] = {}
    in_batch: dict[tuple[str, str], Future[ImageOutcome]] = {}
    cache = reuse_cache(deps)
    remembered = reuse.Pending()
    for n, task in enumerate(tasks):
        if task.request_id in stopped or (task.request_id, task.position) in recorded:
            continue
        futures: dict[int, Future[ImageOutcome]] = {}
        first_index: dict[str, int] = {}
        for index, url in enumerate(task.urls):
            if task.kept(index) is not None:
                continue
            if url in first_index:  # the same URL twice in a row: fetched once
                futures[index] = futures[first_index[url]]
                continue
            first_index[url] = index
            # The same URL anywhere in the job is fetched and compressed once: within the
            # batch the rows share one future; later rows reuse the stored output.
            job_url = (task.request_id, url)
            reused = cache.get(job_url)
            if reused is not None:
                futures[index] = _resolved(reused)
                continue
            if job_url not in in_batch:
                # each image runs in the caller's context: its log lines keep the requestId
                work = functools.partial(
                    contextvars.copy_context().run,
                    _one_image,
                    deps,
                    task,
                    url,
                    index,
                    budget,
                    remembered,
                )
                in_batch[job_url] = deps.image_pool.run(
                    task.request_id, watch.guarded(task.request_id, work), tenant=task.tenant
                )
            futures[index] = in_batch[job_url]
        live[n] = futures
    for request_id in sorted(
        {t.request_id for t in tasks_left} - {tasks[n].request_id for n in live}
    ):
        # every row of this job in the batch was recorded before: a redelivery, whose first
        # delivery may have died between its last record and asking for finalization
        _finalize_if_done(deps, request_id, [])
    try:
        _settle(deps, tasks, live, outcomes, budget, watch=watch)
    finally:
        remembered.flush(deps)
    return outcomes


def stopped_jobs(deps: Dependencies, tasks: Sequence[RowTask]) -> set[str]:
    """The jobs of these rows that are cancelled, or asked to be, or gone: one read."""
    cancelled, gone = jobs_halted(deps, tasks)
    return cancelled | gone


def jobs_halted(deps: Dependencies, tasks: Sequence[RowTask]) -> tuple[set[str], set[str]]:
    """(cancelled or asked to be, gone) among the jobs of these rows: one read for them all.
    A failed read stops nothing (the cancel still ends the job; its rows would only be done
    for nothing)."""
    request_ids = sorted({task.request_id for task in tasks})
    if not request_ids:
        return set(), set()
    try:
        return deps.store.jobs_stopped_or_gone(request_ids)
    except Exception:
        log.exception("could not read which of jobs %s are cancelled", ",".join(request_ids))
        return set(), set()


def let_go(
    deps: Dependencies,
    tasks: Sequence[RowTask],
    members: Sequence[int],
    outcomes: list[BaseException | None],
    stored: Mapping[int, Sequence[str]] | None = None,
) -> None:
    """Rows (indexes in `tasks`) of jobs that no longer exist: no image starts, the message
    is let go (JobGone, which the handler acknowledges and counts). Outputs of the job that
    this delivery stored, or that an earlier one kept in the message, are removed: the
    deletion that listed the job's outputs may have come before they were stored."""
    keys: set[str] = set()
    for n in members:
        task = tasks[n]
        outcomes[n] = JobGone(task.request_id)
        keys.update(k.key for k in task.keep if k.key)
        keys.update((stored or {}).get(n, ()))
    for key in sorted(keys):
        try:
            deps.outputs.delete(key)
        except Exception:  # what is left is deleted by the outputs' lifecycle retention
            log.exception("could not remove %s, stored for a job that no longer exists", key)


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

    def guarded(
        self, request_id: str, work: Callable[[], ImageOutcome]
    ) -> Callable[[], ImageOutcome]:
        """`work`, unless the job is seen cancelled by the time a thread takes it."""
        stop = self._events[request_id]

        def start() -> ImageOutcome:
            return Stopped() if stop.is_set() else work()

        return start


def cancel_tasks(
    deps: Dependencies,
    tasks: Sequence[RowTask],
    members: Sequence[int],
    outcomes: list[BaseException | None],
) -> None:
    """Record these rows (indexes in `tasks`) of cancelled jobs `cancelled` (a row recorded
    meanwhile keeps what it has); a row that could not be recorded so comes back."""
    by_job: dict[str, list[int]] = {}
    for n in members:
        by_job.setdefault(tasks[n].request_id, []).append(n)
    for request_id, rows in by_job.items():
        try:
            deps.store.cancel_rows(request_id, deps.clock.now(), [tasks[n].position for n in rows])
        except Exception as exc:
            log.exception("job %s is cancelled, but its rows could not be recorded so", request_id)
            for n in rows:
                outcomes[n] = exc
            continue
        log.info(
            "job %s is cancelled: %d row(s) recorded cancelled, their images not started",
            request_id,
            len(rows),
        )


def _settle(
    deps: Dependencies,
    tasks: Sequence[RowTask],
    live: dict[int, dict[int, Future[ImageOutcome]]],
    outcomes: list[BaseException | None],
    budget: Budget,
    *,
    watch: CancelWatch,
) -> None:
    """Wait for the rows' images; record each row as its images finish (rows finishing
    together in one call), until every row is dealt with or the budget is spent. While
    waiting, look again now and then whether a job of the batch was cancelled."""
    while live:
        ready = _ready(live)
        left = budget.remaining()
        if not ready:
            if left <= 0:
                break
            # only an image not started yet can still be stopped by a cancel: once every
            # one has a thread (none is added later), wait for them without looking again
            waiting = _waiting(live)
            wait(
                _running(live),
                timeout=min(left, watch.wait_seconds()) if waiting else _seconds(left),
                return_when=FIRST_COMPLETED,
            )
            if waiting:
                watch.check([tasks[n] for n in live])
            continue
        if len(ready) < len(live) and left > 0:
            # rows finishing close together go in one update (one write, not one per row)
            wait(_running(live), timeout=min(RECORD_LINGER, left), return_when=ALL_COMPLETED)
            ready = _ready(live)
        done: list[tuple[int, RowTask, list[ImageResult]]] = []
        continued: list[tuple[int, dict[str, object]]] = []
        halted: list[int] = []  # rows of a job cancelled meanwhile, an image not started
        stops: dict[int, dict[int, Future[ImageOutcome]]] = {}
        for n in ready:
            futures = live.pop(n)
            task = tasks[n]
            try:
                row = _row_outcome(task, {i: f.result() for i, f in futures.items()})
            except Exception as exc:
                _log_retry(task)
                outcomes[n] = exc
                continue
            if isinstance(row, Stopped):
                halted.append(n)
                stops[n] = futures
            elif isinstance(row, list):
                done.append((n, task, row))
            elif row is None:
                log.info(
                    "row %s of job %s: no image could start in time; handed back",
                    task.serial,
                    task.request_id,
                )
                outcomes[n] = OutOfTime("no image of the row could start in time")
            else:
                continued.append((n, row))
        gone = [n for n in halted if tasks[n].request_id in watch.gone]
        let_go(deps, tasks, gone, outcomes, {n: _stored(stops[n]) for n in gone})
        cancel_tasks(deps, tasks, [n for n in halted if n not in gone], outcomes)
        _unless_deleted(
            deps, tasks, {n: _stored(stops[n]) for n in halted if n not in gone}, outcomes
        )
        _continue_rows(deps, tasks, continued, outcomes)
        for n, error in record_batch(deps, done):
            outcomes[n] = error
    for n in live:  # the budget ran out with images still running: the row comes back
        task = tasks[n]
        log.warning(
            "row %s of job %s: out of time with images still running; handed back",
            task.serial,
            task.request_id,
        )
        outcomes[n] = OutOfTime("the invocation's time ran out before the row's images ended")


def _unless_deleted(
    deps: Dependencies,
    tasks: Sequence[RowTask],
    stored: Mapping[int, Sequence[str]],
    outcomes: list[BaseException | None],
) -> None:
    """Rows of a cancelled job halted after some of their images were stored: when the row
    is gone by now (the job's deletion removes its rows before it lists its outputs), what
    they stored may have come after that listing, and is removed. One read per such row."""
    for n, keys in stored.items():
        task = tasks[n]
        try:
            if not keys or deps.store.list_rows(task.request_id, task.position, 1):
                continue
        except Exception:
            log.exception(
                "job %s: could not read whether its rows are still there", task.request_id
            )
            continue
        let_go(deps, tasks, [n], outcomes, {n: keys})


def _stored(futures: Mapping[int, Future[ImageOutcome]]) -> list[str]:
    """The output keys these (done) images stored."""
    done = (f.result() for f in futures.values())
    return [r.output_key for r in done if isinstance(r, ImageResult) and r.output_key]


def _ready(live: Mapping[int, Mapping[int, Future[ImageOutcome]]]) -> list[int]:
    """The rows whose images are all done."""
    return [n for n, futures in live.items() if all(f.done() for f in futures.values())]


def _seconds(left: float) -> float | None:
    """A wait's timeout for the time left (None: an unlimited budget, wait for good)."""
    return left if math.isfinite(left) else None


def _waiting(live: Mapping[int, Mapping[int, Future[ImageOutcome]]]) -> bool:
    """Whether an image of these rows still waits for a pool thread (a cancel can stop it);
    while every one has started, reading which jobs are cancelled would change nothing."""
    return any(not (f.running() or f.done()) for futures in live.values() for f in futures.values())


def _running(live: Mapping[int, Mapping[int, Future[ImageOutcome]]]) -> set[Future[ImageOutcome]]:
    return {f for futures in live.values() for f in futures.values() if not f.done()}


def _row_outcome(
    task: RowTask, by_index: Mapping[int, ImageOutcome]
) -> list[ImageResult] | dict[str, object] | Stopped | None:
    """The row's results when every image is done; Stopped when an image did not start for
    its job was cancelled; else its continuation message when it moved on (an image done or
    a fetch attempt spent), or None when nothing could start."""
    results: dict[int, ImageResult] = {}
    attempts: dict[int, int] = {}
    for index, url in enumerate(task.urls):
        kept = task.kept(index)
        if kept is not None:
            results[index] = kept.result(url)
            continue
        outcome = by_index[index]
        if isinstance(outcome, Stopped):
            return outcome
        if isinstance(outcome, Deferred):
            attempts[index] = outcome.attempts
        else:
            results[index] = outcome
    if not attempts:
        return [results[i] for i in range(len(task.urls))]
    fresh = {i for i in results if task.kept(i) is None}
    spent_more = any(n > task.attempts_spent(i) for i, n in attempts.items())
    if not fresh and not spent_more:
        return None
    return task.continuation(results, attempts)


def _continue_rows(
    deps: Dependencies,
    tasks: Sequence[RowTask],
    continued: Sequence[tuple[int, dict[str, object]]],
    outcomes: list[BaseException | None],
) -> None:
    """Send the continuations of rows that moved on: a new message each, so the row's
    receive count starts again (progress is not a failure) and its original is deleted."""
    if not continued:
        return
    try:
        deps.rows_queue.send_batch([message for _, message in continued])
    except Exception as exc:
        log.exception("could not send %d continuation(s); the rows come back", len(continued))
        for n, _ in continued:
            outcomes[n] = exc
        return
    for n, _ in continued:
        task = tasks[n]
        log.info(
            "row %s of job %s: out of time; continues in a new message with what is done",
            task.serial,
            task.request_id,
        )


def _recorded_rows(deps: Dependencies, tasks: Sequence[RowTask]) -> set[tuple[str, int]]:
    """(job, position) of the batch's redelivered rows already recorded: one read per run of
    adjacent positions (a batch of the fan-out is ten rows in a row), so a redelivered
    message costs a read, not a download. A message received for the first time is not
    looked up (its read would cost every batch a store round trip; should it be a copy of a
    recorded row, recording it again changes nothing). A failed read skips nothing."""
    found: set[tuple[str, int]] = set()
    by_job: dict[str, list[int]] = {}
    for task in tasks:
        if task.redelivered:
            by_job.setdefault(task.request_id, []).append(task.position)
    for request_id, positions in by_job.items():
        wanted = set(positions)
        try:
            for start, end in _runs(sorted(wanted)):
                for row in deps.store.list_rows(request_id, start, end - start):
                    if row.position in wanted and row.status != RowStatus.PENDING:
                        found.add((request_id, row.position))
        except Exception:
            log.exception("job %s: could not read which rows are recorded", request_id)
    return found


def _runs(positions: Sequence[int]) -> Iterator[tuple[int, int]]:
    """[start, end) ranges covering sorted `positions`, one per run of adjacent ones."""
    start = previous = positions[0]
    for position in positions[1:]:
        if position != previous + 1:
            yield start, previous + 1
            start = position
        previous = position
    yield start, previous + 1


class ReuseCache:
    """Outputs already stored in this container, by (job, URL): a URL repeated anywhere in
    a job is downloaded and compressed once per container (each Lambda instance keeps its
    own, as each of the emulator's worker processes does). Only successes are kept, after their
    output is stored; the oldest entries go first beyond `limit`."""

    def __init__(self, limit: int = 20_000) -> None:
        self._limit = limit
        self._items: OrderedDict[tuple[str, str], ImageResult] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def get(self, job_url: tuple[str, str]) -> ImageResult | None:
        with self._lock:
            found = self._items.get(job_url)
            if found is not None:
                self._items.move_to_end(job_url)
                self.hits += 1
            return found

    def put(self, job_url: tuple[str, str], result: ImageResult) -> None:
        with self._lock:
            self._items[job_url] = result
            self._items.move_to_end(job_url)
            while len(self._items) > self._limit:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = 0


_REUSE: weakref.WeakKeyDictionary[object, ReuseCache] = weakref.WeakKeyDictionary()
_REUSE_LOCK = threading.Lock()


def reuse_cache(deps: Dependencies) -> ReuseCache:
    """The reuse cache of the output store these dependencies write to (one per container;
    tests get one per fake world)."""
    with _REUSE_LOCK:
        cache = _REUSE.get(deps.outputs)
        if cache is None:
            cache = _REUSE[deps.outputs] = ReuseCache()
        return cache


def _resolved(result: ImageResult) -> Future[ImageOutcome]:
    future: Future[ImageOutcome] = Future()
    future.set_result(result)
    return future


def record_batch(
    deps: Dependencies, done: Sequence[tuple[int, RowTask, list[ImageResult]]]
) -> list[tuple[int, BaseException | None]]:
    """Record the finished rows of a batch: per job, in one call when the store can (each
    row still counted once), else row by row. Returns (index, error or None) per row."""
    outcomes: list[tuple[int, BaseException | None]] = []
    by_job: dict[str, list[tuple[int, RowTask, list[ImageResult]]]] = {}
    for item in done:
        by_job.setdefault(item[1].request_id, []).append(item)
    store = deps.store
    for request_id, items in by_job.items():
        if isinstance(store, BatchRecorder) and len(items) > 1:
            try:
                progress = store.record_rows(
                    request_id, [(t.position, r) for _, t, r in items], deps.clock.now()
                )
            except JobGone:
                outcomes.extend(_gone_rows(deps, items))
                continue
            except Exception:
                log.exception("job %s: batch record failed; recording row by row", request_id)
            else:
                for (n, task, results), counted in zip(items, progress, strict=True):
                    outcomes.append((n, None))
                    if counted is not None:
                        observability.record_images(results)
                    else:
                        log.info("row %s of job %s was already recorded", task.serial, request_id)
                _finalize_if_done(deps, request_id, [p for p in progress if p is not None])
                continue
        for n, task, results in items:
            try:
                record_results(deps, task, results)
                outcomes.append((n, None))
            except JobGone:
                outcomes.extend(_gone_rows(deps, [(n, task, results)]))
            except Exception as exc:
                _log_retry(task)
                outcomes.append((n, exc))
    return outcomes


def _gone_rows(
    deps: Dependencies, items: Sequence[tuple[int, RowTask, list[ImageResult]]]
) -> list[tuple[int, BaseException | None]]:
    """Rows whose job was found gone as they were recorded: their outputs, stored before the
    deletion's rows went and perhaps after its listing of outputs, are removed."""
    outcomes: list[BaseException | None] = [None] * len(items)
    tasks = [task for _, task, _ in items]
    stored = {
        i: [r.output_key for r in results if r.output_key]
        for i, (_, _, results) in enumerate(items)
    }
    let_go(deps, tasks, range(len(items)), outcomes, stored)
    return [(n, outcome) for (n, _, _), outcome in zip(items, outcomes, strict=True)]


def _finalize_if_done(deps: Dependencies, request_id: str, counted: Sequence[Progress]) -> None:
    """Ask for finalization when the rows just counted finished the job; when nothing was
    counted (all redelivered) ask whenever the job is complete, as `record_results` does."""
    if counted:
        progress = max(counted, key=lambda p: p.processed_products)
    else:
        job = deps.store.get_job(request_id)
        if job is None or job.status.terminal:
            return
        progress = job.progress
    if progress.processed_products >= progress.total_products:
        request_finalization(deps, request_id)


def _log_retry(task: RowTask) -> None:
    log.exception("row %s of job %s failed; it will be retried", task.serial, task.request_id)


def record_results(deps: Dependencies, task: RowTask, results: list[ImageResult]) -> None:
    progress = deps.store.record_row(task.request_id, task.position, results, deps.clock.now())
    if progress is not None:  # counted once: a redelivered row records nothing
        observability.record_images(results)
    else:
        # A redelivery: the first delivery may have died between recording the last row
        # and asking for finalization, so ask again (the claim keeps it to one).
        log.info("row %s of job %s was already recorded", task.serial, task.request_id)
    _finalize_if_done(deps, task.request_id, [progress] if progress is not None else [])


def request_finalization(deps: Dependencies, request_id: str) -> bool:
    """Send the finalize message once, whoever calls, however many race (again only when
    the claimant died: its claim outlived the lease)."""
    lease = timedelta(seconds=deps.settings.finalize_lease)
    if not deps.store.claim_finalization(request_id, deps.clock.now(), lease):
        return False
    queue_finalization(deps, request_id)
    return True


def fetch_with_retries(
    deps: Dependencies,
    url: str,
    budget: Budget | None = None,
    spent: int = 0,
    output_format: str = "jpeg",
) -> bytes:
    """Download, retrying transient failures (connect and read timeouts, 5xx, 429, dropped
    connections) with exponential backoff and full jitter; permanent ones (404, blocked, not
    an image, a body still trickling at the deadline) at once.

    No attempt starts unless its whole deadline and the image's decode and encode fit in
    `budget`: then `NoTimeLeft` says how many attempts were spent (`spent` counts those of
    earlier invocations), and the image resumes in a later one. The decode and encode are
    those of the largest image accepted into `output_format` (the job's)."""
    budget = budget or Budget.unlimited()
    settings = deps.settings
    needed = settings.download_deadline + work_allowance(settings.max_image_pixels, output_format)
    attempt = spent
    while True:
        if not budget.fits(needed):
            raise NoTimeLeft(attempt)
        attempt += 1
        try:
            return deps.fetcher.fetch(url)
        except ImageFailure as failure:
            if not failure.retryable or attempt >= settings.fetch_attempts:
                raise
            delay = random.uniform(0, settings.fetch_backoff * 2 ** (attempt - 1))
            if not budget.fits(delay + needed):
                raise NoTimeLeft(attempt) from failure
            log.info("fetch %s: %s; retry %d in %.2fs", url, failure.message, attempt, delay)
            deps.sleep(delay)


class NoTimeLeft(Exception):
    """The budget cannot hold another attempt; `attempts` were spent on the image so far."""

    def __init__(self, attempts: int) -> None:
        super().__init__(f"no time left for a fetch attempt after {attempts}")
        self.attempts = attempts


def _one_image(  # noqa: PLR0917 - a partial's arguments, in one place
    deps: Dependencies,
    task: RowTask,
    url: str,
    index: int,
    budget: Budget,
    remembered: reuse.Pending,
) -> ImageOutcome:
    """Fetch and compress one image. Expected failures become a result with a code; an image
    that cannot start in time is Deferred; a storage failure raises, so the row is retried."""
    settings = deps.settings
    options = compress_options(settings, task.options)
    data = b""
    key = output_key(task.request_id, task.serial, index, task.options.format.extension)
    where: str | None = None
    try:
        with observability.phase("download"):
            data = fetch_with_retries(deps, url, budget, task.attempts_spent(index), options.format)
        with observability.phase("records"):
            where = reuse.address(deps, task.tenant, options, data)
            copied = reuse.reuse(deps, task.tenant, where, key, remembered)
        if copied is not None:  # made before for this tenant: copied, not compressed again
            found = ImageResult(url, output_key=key, bytes_in=len(data), bytes_out=copied)
            reuse_cache(deps).put((task.request_id, url), found)
            return found
        with observability.phase("compress"):
            compressed = compress(data, options)
    except NoTimeLeft as short:
        return Deferred(short.attempts)
    except ImageFailure as failure:
        return ImageResult(
            url, error_code=failure.code, error_message=failure.message, bytes_in=len(data)
        )
    except Exception as exc:  # a bug or an unforeseen decoder error must not stall the job
        code = ImageErrorCode.DECODE_FAILED if data else ImageErrorCode.FETCH_FAILED
        log.exception("unexpected error on %s", url)
        return ImageResult(url, error_code=code, error_message=str(exc)[:300], bytes_in=len(data))
    cache_control = output_cache_control(settings)
    with observability.phase("storage"):
        deps.outputs.put_bytes(key, compressed.data, compressed.content_type, cache_control)
    with observability.phase("records"):
        reuse.remember(task.tenant, where, key, len(compressed.data), remembered)
    result = ImageResult(url, output_key=key, bytes_in=len(data), bytes_out=len(compressed.data))
    reuse_cache(deps).put((task.request_id, url), result)
    return result


def compress_options(settings: Settings, options: OutputOptions) -> CompressOptions:
    """What the compressor is asked for: the job's options over the settings (JPEG's quality
    is OUTPUT_QUALITY unless the job names one)."""
    return CompressOptions(
        quality=options.quality_or(settings.output_quality),
        max_pixels=settings.max_image_pixels,
        optimize=settings.output_optimize,
        format=options.format,
        max_width=options.max_width,
        max_height=options.max_height,
    )
