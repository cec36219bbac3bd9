"""Queue-shaped use cases: a batch of records in, Lambda's partial batch response out.

Chalice has no partial batch response for SQS; these return `batchItemFailures` themselves
and template.yaml turns on `ReportBatchItemFailures` (as Powertools' BatchProcessor does)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from chalicelib import observability
from chalicelib.domain.models import ImageErrorCode, ImageResult
from chalicelib.services import finalize as finalize_service
from chalicelib.services import ingest as ingest_service
from chalicelib.services import process_row, recovery
from chalicelib.services import webhooks as webhook_service
from chalicelib.services.deps import Dependencies

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueRecord:
    message_id: str
    body: str
    receive_count: int = 1

    def json(self) -> Any:
        return json.loads(self.body)

    def job_id(self) -> str | None:
        """The job a message is about, when its body names one (for the log context)."""
        try:
            body = json.loads(self.body)
        except ValueError:
            return None
        value = body.get("requestId") if isinstance(body, dict) else None
        return value if isinstance(value, str) else None


class ItemFailure(TypedDict):
    itemIdentifier: str


class BatchResponse(TypedDict):
    batchItemFailures: list[ItemFailure]


def _each(
    records: Sequence[QueueRecord], handle: Callable[[QueueRecord], None], what: str
) -> BatchResponse:
    failures: list[ItemFailure] = []
    for record in records:
        with observability.log_context(messageId=record.message_id, requestId=record.job_id()):
            try:
                handle(record)
            except Exception:
                log.exception("%s: message %s failed", what, record.message_id)
                failures.append({"itemIdentifier": record.message_id})
    return {"batchItemFailures": failures}


def ingest(deps: Dependencies, records: Sequence[QueueRecord]) -> BatchResponse:
    def handle(record: QueueRecord) -> None:
        body = record.json()
        if isinstance(body, dict) and "retryJob" in body:
            recovery.run_retry(deps, str(body["retryJob"]))
            return
        for created in ingest_service.parse_storage_message(record.body):
            ingest_service.handle_object_created(deps, created)

    return _each(records, handle, "ingest")


def rows(deps: Dependencies, records: Sequence[QueueRecord]) -> BatchResponse:
    failures: list[ItemFailure] = []
    tasks: list[process_row.RowTask] = []
    ids: list[str] = []
    for record in records:
        with observability.log_context(messageId=record.message_id, requestId=record.job_id()):
            try:
                tasks.append(process_row.RowTask.from_message(record.json()))
                ids.append(record.message_id)
            except Exception:
                log.exception("rows: malformed message %s", record.message_id)
                failures.append({"itemIdentifier": record.message_id})
    jobs = sorted({task.request_id for task in tasks})
    with observability.log_context(requestId=",".join(jobs), messageIds=",".join(ids)):
        outcomes = process_row.process_rows(deps, tasks)
    failures.extend(
        {"itemIdentifier": message_id}
        for message_id, outcome in zip(ids, outcomes, strict=True)
        if outcome is not None
    )
    return {"batchItemFailures": failures}


def rows_dead_letter(deps: Dependencies, records: Sequence[QueueRecord]) -> BatchResponse:
    """A row that kept failing: record its images as failed, so the job still ends."""

    def handle(record: QueueRecord) -> None:
        task = process_row.RowTask.from_message(record.json())
        message = "processing failed repeatedly; the row was moved to the dead-letter queue"
        results = [
            ImageResult(url, error_code=ImageErrorCode.FETCH_FAILED, error_message=message)
            for url in task.urls
        ]
        process_row.record_results(deps, task, results)

    return _each(records, handle, "rows dead letter")


def finalize(deps: Dependencies, records: Sequence[QueueRecord]) -> BatchResponse:
    def handle(record: QueueRecord) -> None:
        finalize_service.finalize_job(deps, str(record.json()["requestId"]))

    return _each(records, handle, "finalize")


def webhooks(deps: Dependencies, records: Sequence[QueueRecord]) -> BatchResponse:
    def handle(record: QueueRecord) -> None:
        webhook_service.deliver_webhook(deps, record.json())

    return _each(records, handle, "webhook")
