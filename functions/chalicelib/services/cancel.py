"""Cancelling a job. The API asks (the job is marked, a message goes to the finalizer); from
then on no image of the job starts (the worker reads which of a batch's jobs are cancelled
before starting its images, and again every second while they run: cancel_watch.CancelWatch).
The finalizer carries the cancel out, or the sweeper should that die: the rows
not done become `cancelled`, an output CSV of what was done is written, and the job claims its
terminal status `cancelled` by the compare-and-set that finalization claims its own with, so
whichever claims first wins and only the winner sends its event and webhook."""

from __future__ import annotations

import logging

from chalicelib.domain.models import Job, JobStatus
from chalicelib.errors import Conflict, JobGone
from chalicelib.services.deps import Dependencies
from chalicelib.services.finalize import end_job, store_output_csv
from chalicelib.services.job_access import job_not_found

log = logging.getLogger(__name__)

CANCEL = "cancel"  # the finalize queue's message that carries a cancel out: {requestId, cancel}


def request_cancel(deps: Dependencies, job: Job) -> Job:
    """Mark the job cancelled-to-be and queue the cancel. Asking again while it is under way
    queues it again (harmless: carrying it out is repeatable). 409 on a job that has ended."""
    request_id = job.request_id
    if job.status.terminal:
        raise Conflict(
            f"job {request_id} is {job.status}; only a job that has not ended can be cancelled"
        )
    if not deps.store.request_cancel(request_id, deps.clock.now()):
        current = deps.store.get_job(request_id)
        if current is None:
            raise job_not_found(request_id)
        raise Conflict(f"job {request_id} is {current.status}; it ended before the cancel")
    # in the tenant's message group, as finalizations are (bootstrap.py)
    deps.finalize_queue.send_batch([{"requestId": request_id, CANCEL: True, "tenant": job.tenant}])
    return deps.store.get_job(request_id) or job


def complete_cancel(deps: Dependencies, request_id: str) -> bool:
    """Carry out an asked-for cancel; True when this call ended the job `cancelled`. Safe to
    repeat: on a job already cancelled it only cancels rows stored since (an ingest that was
    still writing them) and writes the output CSV again with them; on a job that finalization
    ended first it changes nothing."""
    job = deps.store.get_job(request_id)
    if job is None:
        raise JobGone(request_id)
    if not job.cancelled_or_cancelling:
        if job.status.terminal:
            log.info("cancel: job %s ended %s first; it stays so", request_id, job.status)
        else:
            log.warning("cancel: nobody asked to cancel job %s", request_id)
        return False
    deps.store.cancel_rows(request_id, deps.clock.now())
    key = store_output_csv(deps, job)
    if job.status.terminal:
        return False
    won = end_job(deps, job, JobStatus.CANCELLED, key, [])
    if won:
        log.info("job %s cancelled at %s", request_id, job.progress.to_dict())
    else:
        log.info("cancel: job %s was ended by finalization first", request_id)
    return won


def settle_after_ingest(deps: Dependencies, request_id: str) -> None:
    """After an ingest run: when the job was cancelled while its rows were being written, the
    rows stored since are cancelled too and the output CSV lists them."""
    job = deps.store.get_job(request_id)
    if job is not None and job.cancelled_or_cancelling:
        complete_cancel(deps, request_id)
