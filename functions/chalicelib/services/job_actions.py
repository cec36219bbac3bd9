"""The two actions a user can take on a finished job: retry its failed images, send its
webhook again. (Cancelling a running job: services/cancel.py; deleting an ended one:
services/deletion.py.)"""

from __future__ import annotations

import math
from datetime import timedelta

from chalicelib.domain.budget import Budget
from chalicelib.domain.models import Job, JobStatus, WebhookState
from chalicelib.errors import Conflict, TooManyRequests
from chalicelib.services.deps import Dependencies
from chalicelib.services.finalize import queue_webhook
from chalicelib.services.ingest import resume_ingest
from chalicelib.services.job_access import job_not_found


def redeliver_webhook(deps: Dependencies, request_id: str) -> Job:
    """Send a finished job's final event again, under the same `webhook-id` (as Svix's
    resend does): receivers that already have it recognise it."""
    job = _existing(deps, request_id)
    if not job.status.terminal:
        raise Conflict(f"job {request_id} is {job.status}; its webhook is sent when it ends")
    if not job.webhook.url:
        raise Conflict(f"job {request_id} has no webhook URL")
    if job.webhook.state == WebhookState.PENDING:
        raise Conflict(f"the webhook of job {request_id} is already being delivered")
    _rate_limit(deps, request_id, "redeliver")
    if not deps.store.redeliver_webhook(request_id, job.webhook.webhook_id, deps.clock.now()):
        raise Conflict(f"the webhook of job {request_id} is already being delivered")
    queue_webhook(deps, job, job.webhook.webhook_id, 1)
    return _existing(deps, request_id)


def retry_failed(deps: Dependencies, request_id: str) -> Job:
    """Re-queue just the failed images of a finished job; it finalizes again with a new
    output CSV and a new final event (a new `webhook-id`)."""
    job = _existing(deps, request_id)
    if not job.status.terminal:
        raise Conflict(f"job {request_id} is {job.status}; only a finished job can be retried")
    if job.status == JobStatus.CANCELLED:
        raise Conflict(f"job {request_id} was cancelled; a cancelled job cannot be retried")
    if job.progress.failed_images == 0:
        raise Conflict(f"job {request_id} has no failed images to retry")
    if job.webhook.state == WebhookState.PENDING:
        # its final event must reach the receiver before the job can end a second time
        raise Conflict(f"the webhook of job {request_id} is still being delivered; retry later")
    _rate_limit(deps, request_id, "retry")
    generation = job.generation + 1
    if not deps.store.reopen_failed(request_id, generation, deps.clock.now()):
        raise Conflict(f"job {request_id} is already being retried")
    # in the tenant's message group, as the ingest's handovers are (bootstrap.py)
    deps.ingest_queue.send_batch(
        [{"retryJob": request_id, "generation": generation, "tenant": job.tenant}]
    )
    return _existing(deps, request_id)


def _rate_limit(deps: Dependencies, request_id: str, action: str) -> None:
    """At most one `action` per job per JOB_ACTION_INTERVAL (429 with Retry-After)."""
    interval = deps.settings.job_action_interval
    if interval <= 0:
        return
    now = deps.clock.now()
    due = deps.store.claim_action(request_id, action, now, timedelta(seconds=interval))
    if due is not None:
        wait = math.ceil((due - now).total_seconds())  # never less than is left
        raise TooManyRequests(
            f"{action} of job {request_id} was asked for less than {interval} s ago", wait
        )


def run_retry(deps: Dependencies, request_id: str, budget: Budget | None = None) -> None:
    """The queued half of a retry: reset the failed rows and fan them out again."""
    resume_ingest(deps, request_id, budget)


def _existing(deps: Dependencies, request_id: str) -> Job:
    job = deps.store.get_job(request_id)
    if job is None:
        raise job_not_found(request_id)
    return job
