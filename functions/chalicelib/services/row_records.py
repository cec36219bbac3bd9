"""What becomes of a row in the job's records, and the request that ends the job: a row's
results recorded (a batch's per job in one call), a cancelled job's rows recorded cancelled,
a gone job's rows let go (and what they stored removed), and, once the last row is counted,
the finalize message sent once (`request_finalization`, which the sweeper calls as well).

Light: the API, the sweeper and the dead-letter function import it without imaging."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta

from chalicelib import observability
from chalicelib.domain.models import ImageResult, Progress
from chalicelib.errors import JobGone
from chalicelib.ports import BatchRecorder
from chalicelib.services.deps import Dependencies
from chalicelib.services.finalize import queue_finalization
from chalicelib.services.row_messages import RowTask

log = logging.getLogger(__name__)


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


def cancel_tasks(
    deps: Dependencies,
    tasks: Sequence[RowTask],
    members: Sequence[int],
    outcomes: list[BaseException | None],
) -> None:
    """Record these rows (indexes in `tasks`) of cancelled jobs cancelled (a row recorded
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
                finalize_if_done(deps, request_id, [p for p in progress if p is not None])
                continue
        for n, task, results in items:
            try:
                record_results(deps, task, results)
                outcomes.append((n, None))
            except JobGone:
                outcomes.extend(_gone_rows(deps, [(n, task, results)]))
            except Exception as exc:
                log_retry(task)
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


def finalize_if_done(deps: Dependencies, request_id: str, counted: Sequence[Progress]) -> None:
    """Ask for finalization when the rows just counted finished the job; when nothing was
    counted (all redelivered) ask whenever the job is complete, as `record_results` does."""
    if counted:
        progress = max(counted, key=lambda p: p.processed_products)
    else:
        job = deps.store.get_job(request_id)
        if job is None or job.status.terminal:
            return
        progress = job.progress
    if progress.every_row_recorded:
        request_finalization(deps, request_id)


def log_retry(task: RowTask) -> None:
    log.exception("row %s of job %s failed; it will be retried", task.serial, task.request_id)


def record_results(deps: Dependencies, task: RowTask, results: list[ImageResult]) -> None:
    progress = deps.store.record_row(task.request_id, task.position, results, deps.clock.now())
    if progress is not None:  # counted once: a redelivered row records nothing
        observability.record_images(results)
    else:
        # A redelivery: the first delivery may have died between recording the last row
        # and asking for finalization, so ask again (the claim keeps it to one).
        log.info("row %s of job %s was already recorded", task.serial, task.request_id)
    finalize_if_done(deps, task.request_id, [progress] if progress is not None else [])


def request_finalization(deps: Dependencies, request_id: str) -> bool:
    """Send the finalize message once, whoever calls, however many race (again only when
    the claimant died: its claim outlived the lease).

    Every worker that records a job's last rows, and the sweeper, call this; the store's
    `claim_finalization` is one compare-and-set on the job (status `processing`, every row
    recorded, no claim or one older than the lease: `Job.ready_to_finalize` in the domain),
    so exactly one caller wins and sends. The finalizer then ends the job by a second
    compare-and-set on its terminal status (`finalize.end_job` → `store.finish_job`), so a
    duplicate finalize message, or a cancel racing it, ends the job once: only the winner
    publishes the event and queues the webhook."""
    lease = timedelta(seconds=deps.settings.finalize_lease)
    if not deps.store.claim_finalization(request_id, deps.clock.now(), lease):
        return False
    queue_finalization(deps, request_id)
    return True
