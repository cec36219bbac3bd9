"""The MongoJobStore's queries of a job's webhook state: when its next attempt is due, each
attempt recorded (the latest MAX_WEBHOOK_HISTORY kept), a redelivery asked for by hand, and
the sweeper's overdue webhooks. The rules are the domain's (`Job.webhook_redeliverable`,
`Job.webhook_due`), as filters."""

from __future__ import annotations

from datetime import datetime

from chalicelib.adapters.mongo_codecs import attempt_doc, job_from
from chalicelib.adapters.mongo_collections import BUMP, MongoCollections
from chalicelib.domain.models import (
    MAX_WEBHOOK_HISTORY,
    TERMINAL_STATUSES,
    Job,
    WebhookAttempt,
    WebhookState,
)
from chalicelib.domain.timefmt import iso

_ENDED = {"$in": sorted(str(s) for s in TERMINAL_STATUSES)}


class WebhookQueries(MongoCollections):
    def schedule_webhook(self, request_id: str, due: datetime) -> None:
        self._jobs.update_one(
            {"_id": request_id}, {"$set": {"webhook.nextAttemptAt": iso(due)}, **BUMP}
        )

    def record_webhook_attempt(
        self,
        request_id: str,
        attempt: WebhookAttempt,
        state: WebhookState,
        next_attempt_at: datetime | None,
    ) -> None:
        self._jobs.update_one(
            {"_id": request_id},
            {
                "$inc": {"webhook.attempts": 1, "version": 1},
                "$set": {
                    "webhook.lastStatusCode": attempt.status_code,
                    "webhook.state": str(state),
                    "webhook.nextAttemptAt": iso(next_attempt_at) if next_attempt_at else "",
                },
                "$push": {
                    "webhook.history": {
                        "$each": [attempt_doc(attempt)],
                        "$slice": -MAX_WEBHOOK_HISTORY,
                    }
                },
            },
        )

    def redeliver_webhook(self, request_id: str, webhook_id: str, now: datetime) -> bool:
        """One atomic update: `Job.webhook_redeliverable`, as a filter."""
        result = self._jobs.update_one(
            {
                "_id": request_id,
                "status": _ENDED,
                "webhook.url": {"$nin": ["", None]},
                "webhook.state": {"$ne": str(WebhookState.PENDING)},
            },
            {
                "$set": {
                    "webhook.state": str(WebhookState.PENDING),
                    "webhook.id": webhook_id,
                    "webhook.nextAttemptAt": iso(now),
                },
                **BUMP,
            },
        )
        return result.modified_count == 1

    def find_webhooks_due(self, before: datetime, limit: int) -> list[Job]:
        """`Job.webhook_due(before)`, as a filter (index webhook_due)."""
        self.ensure_indexes()
        cursor = self._jobs.find(
            {
                "webhook.state": str(WebhookState.PENDING),
                "webhook.nextAttemptAt": {"$lt": iso(before)},
                "status": _ENDED,
            }
        ).limit(limit)
        with cursor:
            return [job_from(doc, self._default_tenant) for doc in cursor]
