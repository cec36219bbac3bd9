"""Webhook delivery per Standard Webhooks: signed, retried on a schedule, every attempt recorded."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime

from standardwebhooks.webhooks import Webhook

from chalicelib.domain.models import Job, WebhookState
from chalicelib.services.deps import Dependencies

log = logging.getLogger(__name__)


def event_payload(deps: Dependencies, job: Job) -> dict[str, object]:
    return {
        "type": f"job.{job.status}",
        "timestamp": job.updated_at,
        "data": {
            "requestId": job.request_id,
            "status": str(job.status),
            "progress": job.progress.to_dict(),
            "outputCsvUrl": deps.output_url(job.output_csv_key) or None,
            "errors": job.errors,
        },
    }


def signed_headers(secret: str, msg_id: str, moment: datetime, body: str) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": "image-pipeline-webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, moment, body),
    }


def deliver_webhook(deps: Dependencies, message: Mapping[str, object]) -> None:
    """One attempt. On failure the next attempt is queued with the schedule's delay."""
    request_id = str(message.get("requestId", ""))
    attempt = int(str(message.get("attempt", 1)))
    job = deps.store.get_job(request_id)
    if job is None or job.webhook.state != WebhookState.PENDING:
        return
    now = deps.clock.now()
    secret = deps.settings.webhook_secret
    if not secret:
        log.error("WEBHOOK_SECRET is not set: the webhook of job %s cannot be signed", request_id)
        deps.store.record_webhook_attempt(request_id, None, WebhookState.FAILED, now)
        return
    problem = deps.check_webhook_url(job.webhook.url)
    status_code: int | None = None
    if problem:
        log.warning("webhook of job %s refused: %s", request_id, problem)
        ok = False
    else:
        body = json.dumps(event_payload(deps, job), separators=(",", ":"))
        headers = signed_headers(secret, job.webhook.webhook_id, now, body)
        result = deps.webhook_sender.post(job.webhook.url, body.encode(), headers)
        status_code = result.status_code
        ok = status_code is not None and 200 <= status_code < 300
        if not ok:
            log.warning(
                "webhook of job %s, attempt %d: %s",
                request_id,
                attempt,
                status_code if status_code is not None else result.error,
            )
    schedule = deps.settings.webhook_retry_schedule
    if ok:
        state = WebhookState.DELIVERED
    elif attempt <= len(schedule) and not problem:
        state = WebhookState.PENDING
    else:
        state = WebhookState.FAILED
    deps.store.record_webhook_attempt(request_id, status_code, state, now)
    if state == WebhookState.PENDING:
        deps.webhook_queue.send_batch(
            [{"requestId": request_id, "attempt": attempt + 1}],
            delay_seconds=schedule[attempt - 1],
        )
