"""The queue glue: a batch of records in, each handed to a service; Lambda's partial batch
response out.

Chalice has no partial batch response for SQS; these return `batchItemFailures` themselves
and template.yaml turns on `ReportBatchItemFailures` on every queue's mapping (as Powertools'
BatchProcessor does). As Powertools does too, a batch whose every record failed raises
instead: nothing is deleted then, even by a mapping that lacks the response type.

Each gets its invocation's `Budget`: work that cannot finish in time is handed over to a
later invocation instead of being cut off by Lambda's Timeout.

A message about a job that no longer exists (deleted, or expired by retention: JobGone) is
let go: acknowledged, counted (`MessagesForGoneJobs`), logged once per job, never a failure,
so it never reaches a dead-letter queue."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypedDict

from chalicelib import observability
from chalicelib.domain.budget import Budget
from chalicelib.domain.models import ImageErrorCode, ImageResult
from chalicelib.errors import JobGone
from chalicelib.services import cancel as cancel_service
from chalicelib.services import finalize as finalize_service
from chalicelib.services import ingest as ingest_service
from chalicelib.services import job_actions, row_records
from chalicelib.services import webhooks as webhook_service
from chalicelib.services.deps import Dependencies
from chalicelib.services.row_messages import RowTask

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


class BatchFailed(Exception):
    """Every record of the batch failed: raised, so that Lambda deletes none of them."""


def _answer(records: Sequence[QueueRecord], failures: list[ItemFailure]) -> BatchResponse:
    if records and len(failures) == len(records):
        raise BatchFailed(f"all {len(records)} record(s) of the batch failed; none is deleted")
    return {"batchItemFailures": failures}


def _each(
    records: Sequence[QueueRecord],
    handle: Callable[[QueueRecord], None],
    what: str,
    gone: Callable[[str], None] | None = None,
) -> BatchResponse:
    failures: list[ItemFailure] = []
    for record in records:
        with observability.log_context(messageId=record.message_id, requestId=record.job_id()):
            try:
                handle(record)
            except JobGone as missing:
                observability.record_gone_job(missing.request_id, what)
                if gone is not None:
                    gone(missing.request_id)
            except Exception:
                log.exception("%s: message %s failed", what, record.message_id)
                failures.append({"itemIdentifier": record.message_id})
    return _answer(records, failures)


def ingest(
    deps: Dependencies, records: Sequence[QueueRecord], budget: Budget | None = None
) -> BatchResponse:
    budget = budget or Budget.unlimited()

    def handle(record: QueueRecord) -> None:
        body = record.json()
        if isinstance(body, dict) and "retryJob" in body:
            job_actions.run_retry(deps, str(body["retryJob"]), budget)
            return
        if isinstance(body, dict) and ingest_service.HANDOVER in body:
            ingest_service.take_over_ingest(deps, str(body[ingest_service.HANDOVER]), budget)
            return
        for created in ingest_service.parse_storage_message(record.body):
            ingest_service.handle_object_created(deps, created, budget)

    def forget(request_id: str) -> None:
        # deleted while its ingest ran: the chunks it stored since are nobody's
        deps.store.delete_rows(request_id)

    return _each(records, handle, "ingest", forget)


def rows(
    deps: Dependencies, records: Sequence[QueueRecord], budget: Budget | None = None
) -> BatchResponse:
    # the batch run imports imaging: the worker's alone (its handler imports it at init)
    from chalicelib.services import rows_batch  # noqa: PLC0415

    failures: list[ItemFailure] = []
    tasks: list[RowTask] = []
    ids: list[str] = []
    for record in records:
        with observability.log_context(messageId=record.message_id, requestId=record.job_id()):
            try:
                task = RowTask.from_message(record.json())
                tasks.append(replace(task, redelivered=record.receive_count > 1))
                ids.append(record.message_id)
            except Exception:
                log.exception("rows: malformed message %s", record.message_id)
                failures.append({"itemIdentifier": record.message_id})
    jobs = sorted({task.request_id for task in tasks})
    with observability.log_context(requestId=",".join(jobs), messageIds=",".join(ids)):
        outcomes = rows_batch.process_rows(deps, tasks, budget)
    for message_id, task, outcome in zip(ids, tasks, outcomes, strict=True):
        if isinstance(outcome, JobGone):
            observability.record_gone_job(task.request_id, "rows")
        elif outcome is not None:
            failures.append({"itemIdentifier": message_id})
    return _answer(records, failures)


def rows_dead_letter(deps: Dependencies, records: Sequence[QueueRecord]) -> BatchResponse:
    """A row that kept failing: record its images as failed, so the job still ends. A record
    that cannot be recorded (the store down, a malformed message) stays in the dead-letter
    queue, reported failed, and is never deleted unhandled."""

    def handle(record: QueueRecord) -> None:
        task = RowTask.from_message(record.json())
        cancelled, gone = row_records.jobs_halted(deps, [task])
        if gone:
            raise JobGone(task.request_id)
        if cancelled:  # a cancelled job's row: cancelled, not failed
            outcomes: list[BaseException | None] = [None]
            row_records.cancel_tasks(deps, [task], [0], outcomes)
            if outcomes[0] is not None:
                raise outcomes[0]
            return
        message = "processing failed repeatedly; the row was moved to the dead-letter queue"
        results = [
            ImageResult(url, error_code=ImageErrorCode.FETCH_FAILED, error_message=message)
            for url in task.urls
        ]
        row_records.record_results(deps, task, results)

    return _each(records, handle, "rows dead letter")


def finalize(deps: Dependencies, records: Sequence[QueueRecord]) -> BatchResponse:
    def handle(record: QueueRecord) -> None:
        body = record.json()
        if body.get(cancel_service.CANCEL):
            cancel_service.complete_cancel(deps, str(body["requestId"]))
            return
        finalize_service.finalize_job(deps, str(body["requestId"]))

    return _each(records, handle, "finalize")


def webhooks(deps: Dependencies, records: Sequence[QueueRecord]) -> BatchResponse:
    def handle(record: QueueRecord) -> None:
        webhook_service.deliver_webhook(deps, record.json())

    return _each(records, handle, "webhook")
