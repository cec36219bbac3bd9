"""The worker's batch run: every image of every row of a rows batch on the shared pool, each
row recorded as soon as its images are done (rows finishing together in one update), or
handed on as a continuation when time runs short, or back to the queue.

Imports one image's work, and so imaging: only the worker's handler imports it at init; the
queue glue imports it when a rows batch arrives (entrypoints/queue_handlers.py)."""

from __future__ import annotations

import contextvars
import functools
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, wait

from chalicelib.domain.budget import Budget, OutOfTime
from chalicelib.domain.models import ImageResult, RowStatus
from chalicelib.services import one_image, reuse
from chalicelib.services.cancel_watch import CancelWatch, Stopped
from chalicelib.services.deps import Dependencies
from chalicelib.services.job_url_cache import job_url_cache
from chalicelib.services.one_image import Deferred
from chalicelib.services.row_messages import RowTask
from chalicelib.services.row_records import (
    cancel_tasks,
    finalize_if_done,
    let_go,
    log_retry,
    record_batch,
)

log = logging.getLogger(__name__)


# Rows whose images end within this many seconds of each other are recorded in one update:
# on the embedded MongoDB each write holds the GIL the images need, and recording every row
# alone cost the pipeline benchmark speed (docs/performance.md).
RECORD_LINGER = 0.5

ImageOutcome = ImageResult | Deferred | Stopped


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
    cache = job_url_cache(deps)
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
            # batch the rows share one future; later rows take the stored output's result.
            job_url = (task.request_id, url)
            done_before = cache.get(job_url)
            if done_before is not None:
                futures[index] = _resolved(done_before)
                continue
            if job_url not in in_batch:
                # each image runs in the caller's context: its log lines keep the requestId
                work = functools.partial(
                    contextvars.copy_context().run,
                    one_image.process_image,
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
        finalize_if_done(deps, request_id, [])
    try:
        _settle(deps, tasks, live, outcomes, budget, watch=watch)
    finally:
        remembered.flush(deps)
    return outcomes


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
                log_retry(task)
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


def _resolved(result: ImageResult) -> Future[ImageOutcome]:
    future: Future[ImageOutcome] = Future()
    future.set_result(result)
    return future
