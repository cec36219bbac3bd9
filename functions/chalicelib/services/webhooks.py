"""Webhook delivery per Standard Webhooks: signed, retried on a schedule, every attempt recorded."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from standardwebhooks.webhooks import Webhook

from chalicelib import observability
from chalicelib.domain.models import Job, WebhookAttempt, WebhookState
from chalicelib.domain.timefmt import iso, parse_iso
from chalicelib.domain.webhook_schedule import (
    GONE,
    SQS_MAX_DELAY,
    hop_delay,
    next_delay,
    parse_retry_after,
)
from chalicelib.errors import JobGone
from chalicelib.ports import Admission
from chalicelib.services.deps import Dependencies
from chalicelib.services.job_events import job_summary
from chalicelib.services.tenants import signing_secrets

log = logging.getLogger(__name__)

# A receiver's origin that timed out is slow (one attempt at a time) for this many of the
# webhook's timeouts after its last timeout, unless an attempt is answered in time sooner.
SLOW_FOR_TIMEOUTS = 30
# A slow origin's slot is held for at most this many timeouts: an attempt ends within one;
# should its invocation die holding the slot, the hold ends it.
HOLD_TIMEOUTS = 2


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
    """One attempt, or one hop towards it. On failure the next attempt is queued after the
    schedule's delay (or the receiver's longer `Retry-After`, within the schedule's longest
    delay); `410 Gone` ends the retries; every attempt is recorded. A message for another
    event of the job (stale), or for an attempt already made (a duplicate), is dropped; one
    that arrives before its `notBefore` is sent on for what is left, nothing attempted."""
    request_id = str(message.get("requestId", ""))
    step = int(str(message.get("attempt", 1)))
    job = deps.store.get_job(request_id)
    if job is None:
        raise JobGone(request_id)
    if job.webhook.state != WebhookState.PENDING:
        return
    wanted = message.get("webhookId")
    if wanted and wanted != job.webhook.webhook_id:
        log.info("webhook message for %s of job %s is stale", wanted, request_id)
        return
    recorded = message.get("recorded")
    if recorded is not None and int(str(recorded)) != job.webhook.attempts:
        log.info(
            "webhook message of job %s follows attempt %s, but %d are recorded: a duplicate",
            request_id,
            recorded,
            job.webhook.attempts,
        )
        return
    now = deps.clock.now()
    not_before = message.get("notBefore")
    if isinstance(not_before, str) and not_before and now < parse_iso(not_before):
        _hop(deps, job, message, parse_iso(not_before) - now)
        return
    admission = deps.webhook_origins.admit(
        origin_of(job.webhook.url), now, timedelta(seconds=HOLD_TIMEOUTS * _timeout(deps))
    )
    if admission is None:
        _wait_for_origin(deps, job, message, now)
        return
    try:
        _attempt_and_record(deps, job, step, now, admission)
    except BaseException:
        _settle(deps, admission, answered=False, timed_out=False)
        raise


def _timeout(deps: Dependencies) -> float:
    return max(0.001, deps.settings.webhook_timeout)


def origin_of(url: str) -> str:
    """A receiver's origin: scheme, host and port (the default port written out)."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower(), 0)
    except ValueError:
        return url
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{port}"


def _settle(deps: Dependencies, admission: Admission, *, answered: bool, timed_out: bool) -> None:
    cooldown = timedelta(seconds=SLOW_FOR_TIMEOUTS * _timeout(deps))
    try:
        deps.webhook_origins.settle(
            admission, deps.clock.now(), answered=answered, timed_out=timed_out, cooldown=cooldown
        )
    except Exception:  # the slot's hold ends it anyway; the attempt is recorded
        log.exception("could not record how %s answered", admission.origin)


def _wait_for_origin(
    deps: Dependencies, job: Job, message: Mapping[str, object], now: datetime
) -> None:
    """The receiver's origin is slow and busy with another attempt: this one is put back
    instead of waiting on a poller, for one timeout, twice that the next time it finds the
    origin busy, and so on up to SQS's 15 minutes (many webhooks waiting on one dead receiver
    come round less and less often). Not an attempt: nothing is posted, the attempt's number
    stays, `nextAttemptAt` says when it is tried again; for after the attempts recorded, so
    that a copy of it (or the sweeper's) is dropped."""
    waited = int(str(message.get("waited", 0)))
    delay = max(1, min(SQS_MAX_DELAY, math.ceil(_timeout(deps) * 2 ** min(waited, 16))))
    log.info(
        "webhook of job %s: %s is slow and busy; tried again in %d s",
        job.request_id,
        origin_of(job.webhook.url),
        delay,
    )
    deps.store.schedule_webhook(job.request_id, now + timedelta(seconds=delay))
    body = {**message, "tenant": job.tenant, "recorded": job.webhook.attempts}
    body["waited"] = waited + 1
    deps.webhook_queue.send_batch([body], delay_seconds=delay)


def _attempt_and_record(
    deps: Dependencies, job: Job, step: int, now: datetime, admission: Admission
) -> None:
    """The attempt, recorded, and the next one queued when there is one.

    What the receiver's answer does: a 2xx delivers (no more attempts); `410 Gone`, or a URL
    the address guard refuses, stops the retries; anything else (a 5xx, another 4xx, a
    timeout, no answer) waits for the schedule's next step (`WEBHOOK_RETRY_SCHEDULE`,
    `domain/webhook_schedule.py:next_delay`), longer if its `Retry-After` asks
    (`parse_retry_after`: stretched up to the schedule's longest delay, never shortened), and
    after the last step the webhook is `failed`. A receiver's origin that times out gets one
    attempt at a time (`_wait_for_origin`)."""
    request_id = job.request_id
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
        _settle(deps, admission, answered=False, timed_out=False)
        return
    attempt, refused, wait, timed_out = _attempt(deps, job, number, now, secrets)
    code = attempt.status_code
    _settle(deps, admission, answered=code is not None, timed_out=timed_out)
    delay: int | None = None
    if code is not None and 200 <= code < 300:
        state = WebhookState.DELIVERED
    elif refused or code == GONE:
        state = WebhookState.FAILED
    else:
        delay = next_delay(deps.settings.webhook_retry_schedule, step, wait)
        state = WebhookState.FAILED if delay is None else WebhookState.PENDING
    due = None if delay is None else now + timedelta(seconds=delay)
    deps.store.record_webhook_attempt(request_id, attempt, state, due)
    observability.record_webhook_attempt(str(state))
    if due is not None:
        queue_attempt(deps, job, step + 1, due, recorded=number)


def queue_attempt(deps: Dependencies, job: Job, step: int, due: datetime, *, recorded: int) -> None:
    """Queue attempt `step` of the job's current event, due at `due`, for after `recorded`
    attempts. Further off than SQS can delay a message, it goes in hops (`notBefore`)."""
    body: dict[str, object] = {
        "requestId": job.request_id,
        "tenant": job.tenant,  # its message group (bootstrap.py)
        "webhookId": job.webhook.webhook_id,
        "attempt": step,
        "recorded": recorded,
    }
    remaining = (due - deps.clock.now()).total_seconds()
    if remaining > SQS_MAX_DELAY:
        body["notBefore"] = iso(due)
    delay = 0 if remaining <= 0 else hop_delay(remaining)
    deps.webhook_queue.send_batch([body], delay_seconds=delay)


def _hop(deps: Dependencies, job: Job, message: Mapping[str, object], remaining: timedelta) -> None:
    """Not due yet: the same message again (with its tenant, should it be from before they
    were carried), delayed by what is left (or SQS's longest)."""
    delay = hop_delay(remaining.total_seconds())
    log.debug("webhook message of job %s: %d s to wait", job.request_id, delay)
    deps.webhook_queue.send_batch([{**message, "tenant": job.tenant}], delay_seconds=delay)


def _attempt(
    deps: Dependencies, job: Job, number: int, now: datetime, secrets: Sequence[str]
) -> tuple[WebhookAttempt, bool, float | None, bool]:
    """POST once (the URL checked again first). Returns the attempt, whether it was refused,
    when the answer had a readable Retry-After the seconds from `now` it asks to wait
    (counted from the answer, as RFC 9110 says), and whether it timed out."""
    problem = deps.check_webhook_url(job.webhook.url)
    if problem:
        log.warning("webhook of job %s refused: %s", job.request_id, problem)
        return WebhookAttempt(number, iso(now), None, f"refused: {problem}"), True, None, False
    body = json.dumps(event_payload(deps, job), separators=(",", ":"))
    headers = signed_headers(secrets, job.webhook.webhook_id, now, body)
    started = time.monotonic()
    result = deps.webhook_sender.post(job.webhook.url, body.encode(), headers)
    elapsed = int((time.monotonic() - started) * 1000)
    code = result.status_code
    error = result.error
    if code == GONE:
        error = error or f"HTTP {code}: the receiver is gone, no more attempts"
        log.warning("webhook of job %s, attempt %d: %s", job.request_id, number, error)
    elif code is not None and not 200 <= code < 300:
        error = error or f"HTTP {code}"
        if result.retry_after:
            error += f" (Retry-After: {result.retry_after})"
        log.warning("webhook of job %s, attempt %d: %s", job.request_id, number, error)
    elif code is None:
        log.warning("webhook of job %s, attempt %d: %s", job.request_id, number, error)
    answered = deps.clock.now()
    wait = parse_retry_after(result.retry_after, answered)
    if wait is not None:
        wait += max(0.0, (answered - now).total_seconds())
    attempt = WebhookAttempt(number, iso(now), code, error[:300], elapsed)
    return attempt, False, wait, result.timed_out
