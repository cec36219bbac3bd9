"""Finalization: the output CSV, the terminal status, and the webhook's first attempt."""

from __future__ import annotations

import logging
import tempfile
import uuid
from collections.abc import Iterator, Sequence

from chalicelib.domain.csv_output import write_output_csv
from chalicelib.domain.models import (
    MAX_JOB_ERRORS,
    CsvProblem,
    Job,
    JobStatus,
    output_csv_key,
)
from chalicelib.errors import JobGone
from chalicelib.services.deps import Dependencies
from chalicelib.services.job_events import publish_job_event
from chalicelib.services.tenants import default_webhook_url

log = logging.getLogger(__name__)

SPOOL_BYTES = 8 * 1024 * 1024


def terminal_status(job: Job) -> JobStatus:
    p = job.progress
    if p.failed_images == 0:
        return JobStatus.COMPLETED
    if p.failed_images >= p.total_images:
        return JobStatus.FAILED
    return JobStatus.COMPLETED_WITH_ERRORS


def webhook_id(request_id: str, status: JobStatus, generation: int = 0) -> str:
    """Stable across retries of one final event (Standard Webhooks `webhook-id`)."""
    return "msg_" + uuid.uuid5(uuid.NAMESPACE_URL, f"{request_id}/{status}/{generation}").hex


def finalize_job(deps: Dependencies, request_id: str) -> None:
    job = deps.store.get_job(request_id)
    if job is None:
        raise JobGone(request_id)
    if job.status.terminal:
        log.info("finalize: job %s is already %s", request_id, job.status)
        return
    key = store_output_csv(deps, job)
    end_job(deps, job, terminal_status(job), key, [])


def fail_job(deps: Dependencies, job: Job, problems: Sequence[CsvProblem]) -> None:
    """End a job whose CSV was refused: the problems go to the status and the webhook."""
    key = store_output_csv(deps, job, rows=False)
    errors = [p.to_dict() for p in problems[:MAX_JOB_ERRORS]]
    end_job(deps, job, JobStatus.FAILED, key, errors)


def end_job(
    deps: Dependencies,
    job: Job,
    status: JobStatus,
    csv_key: str,
    errors: Sequence[dict[str, object]],
) -> bool:
    """Claim the terminal `status` (a compare-and-set: whoever claims first wins); the winner
    alone publishes the event and queues the webhook. True for the winner."""
    hook = job.webhook_url or default_webhook_url(deps, job.tenant)
    hook_id = webhook_id(job.request_id, status, job.generation) if hook else ""
    done = deps.store.finish_job(
        job.request_id,
        status,
        deps.clock.now(),
        output_csv_key=csv_key,
        errors=errors,
        webhook_url=hook,
        webhook_id=hook_id,
    )
    if not done:
        return False
    finished = deps.store.get_job(job.request_id)
    if finished is not None:
        publish_job_event(deps, finished, f"job.{finished.status}")
    if hook:  # should this die, the sweeper finds the webhook overdue and queues it
        queue_webhook(deps, job, hook_id, 1)
    return True


def queue_finalization(deps: Dependencies, request_id: str) -> None:
    """The finalize message, carrying the job's tenant (its message group: bootstrap.py), so
    that one tenant's finalizations queued together do not hold up another's."""
    job = deps.store.get_job(request_id)
    message: dict[str, object] = {"requestId": request_id}
    if job is not None:  # gone: the finalizer lets its message go
        message["tenant"] = job.tenant
    deps.finalize_queue.send_batch([message])


def queue_webhook(deps: Dependencies, job: Job, hook_id: str, attempt: int) -> None:
    """The webhook's message, carrying its tenant (its message group: bootstrap.py)."""
    deps.webhook_queue.send_batch(
        [
            {
                "requestId": job.request_id,
                "tenant": job.tenant,
                "webhookId": hook_id,
                "attempt": attempt,
            }
        ]
    )


def store_output_csv(deps: Dependencies, job: Job, *, rows: bool = True) -> str:
    """Write the job's output CSV (its rows as recorded; a row not done has no outputs)."""
    key = output_csv_key(job.request_id)
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
        write_output_csv(_output_rows(deps, job) if rows else iter(()), spool)
        spool.seek(0)
        deps.outputs.put_file(key, spool, "text/csv; charset=utf-8")
    if rows and _deleted_meanwhile(deps, job):
        deps.outputs.delete(key)
        raise JobGone(job.request_id)
    return key


def _deleted_meanwhile(deps: Dependencies, job: Job) -> bool:
    """Whether a deletion of the job began before the CSV was stored (a repeated cancel or
    finalize message can write it again after the job ended): a deletion removes the rows
    before it lists the outputs, so rows still there mean its listing is still to come and
    will find the CSV. One read; a second only when no row is found."""
    if not job.progress.total_products or deps.store.list_rows(job.request_id, 0, 1):
        return False
    current = deps.store.get_job(job.request_id)
    return current is None or current.rows_written


def _output_rows(deps: Dependencies, job: Job) -> Iterator[tuple[int, str, list[str], list[str]]]:
    for row in deps.store.iter_rows(job.request_id):
        if not row.recorded or len(row.output_keys) != len(row.urls):
            outputs = [""] * len(row.urls)
        else:
            outputs = [deps.output_url(key) for key in row.output_keys]
        yield row.serial, row.name, list(row.urls), outputs
