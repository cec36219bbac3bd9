"""Webhook delivery per Standard Webhooks: signed, retried on a schedule, every attempt recorded."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from standardwebhooks.webhooks import Webhook

from chalicelib import observability
from chalicelib.domain.models import Job, WebhookAttempt, WebhookState
from chalicelib.domain.timefmt import iso
from chalicelib.services.deps import Dependencies
from chalicelib.services.job_events import job_summary
from chalicelib.services.tenants import signing_secrets

log = logging.getLogger(__name__)


def event_payload(deps: Dependencies, job: Job) -> dict[str, object]:
    return {
        "type": f"job.{job.status}",
        "timestamp": job.updated_at,
        "data": job_summary(deps, job),
    }


def signed_headers(
    secrets: Sequence[str], msg_id: str, moment: datetime, body: str
) -> dict[str, str]:
    """Standard Webhooks headers; one `v1,<signature>` per secret, space-separated, so that a
    receiver verifies with whichever of a rotating pair it has."""
    return {
        "content-type": "application/json",
        "user-agent": "image-pipeline-webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": " ".join(Webhook(s).sign(msg_id, moment, body) for s in secrets),
    }


def deliver_webhook(deps: Dependencies, message: Mapping[str, object]) -> None:
    """One attempt. On failure the next attempt is queued with the schedule's delay; every
    attempt is recorded. A message for another event of the job (stale) is dropped."""
    request_id = str(message.get("requestId", ""))
    step = int(str(message.get("attempt", 1)))
    job = deps.store.get_job(request_id)
    if job is None or job.webhook.state != WebhookState.PENDING:
        return
    wanted = message.get("webhookId")
    if wanted and wanted != job.webhook.webhook_id:
        log.info("webhook message for %s of job %s is stale", wanted, request_id)
        return
    now = deps.clock.now()
    number = job.webhook.attempts + 1
    secrets = signing_secrets(deps, job.tenant)
    if not secrets:
        log.error(
            "tenant %s has no signing secret: the webhook of job %s cannot be signed",
            job.tenant,
            request_id,
        )
        attempt = WebhookAttempt(number, iso(now), None, "the tenant has no signing secret")
        deps.store.record_webhook_attempt(request_id, attempt, WebhookState.FAILED, None)
        return
    attempt, refused = _attempt(deps, job, number, now, secrets)
    schedule = deps.settings.webhook_retry_schedule
    ok = attempt.status_code is not None and 200 <= attempt.status_code < 300
    if ok:
        state, due = WebhookState.DELIVERED, None
    elif step <= len(schedule) and not refused:
        state = WebhookState.PENDING
        due = now + timedelta(seconds=schedule[step - 1])
    else:
        state, due = WebhookState.FAILED, None
    deps.store.record_webhook_attempt(request_id, attempt, state, due)
    observability.record_webhook_attempt(str(state))
    if due is not None:
        deps.webhook_queue.send_batch(
            [{"requestId": request_id, "webhookId": job.webhook.webhook_id, "attempt": step + 1}],
            delay_seconds=schedule[step - 1],
        )


def _attempt(
    deps: Dependencies, job: Job, number: int, now: datetime, secrets: Sequence[str]
) -> tuple[WebhookAttempt, bool]:
    """POST once (the URL checked again first). Returns the attempt and whether it was refused."""
    problem = deps.check_webhook_url(job.webhook.url)
    if problem:
        log.warning("webhook of job %s refused: %s", job.request_id, problem)
        return WebhookAttempt(number, iso(now), None, f"refused: {problem}"), True
    body = json.dumps(event_payload(deps, job), separators=(",", ":"))
    headers = signed_headers(secrets, job.webhook.webhook_id, now, body)
    started = time.monotonic()
    result = deps.webhook_sender.post(job.webhook.url, body.encode(), headers)
    elapsed = int((time.monotonic() - started) * 1000)
    code = result.status_code
    error = result.error
    if code is not None and not 200 <= code < 300:
        error = error or f"HTTP {code}"
        log.warning("webhook of job %s, attempt %d: %s", job.request_id, number, error)
    elif code is None:
        log.warning("webhook of job %s, attempt %d: %s", job.request_id, number, error)
    return WebhookAttempt(number, iso(now), code, error[:300], elapsed), False
