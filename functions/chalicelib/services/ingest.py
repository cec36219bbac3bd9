"""Storage-triggered: a CSV under incoming/ becomes a job, validated and fanned out by row."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from chalicelib.domain.csv_input import ValidationReport, iter_rows, validate_csv
from chalicelib.domain.models import (
    CsvProblem,
    Job,
    JobStatus,
    Progress,
    StoredRow,
)
from chalicelib.domain.timefmt import iso
from chalicelib.ports import chunks
from chalicelib.services.deps import Dependencies
from chalicelib.services.finalize import fail_job
from chalicelib.services.upload import csv_limits

log = logging.getLogger(__name__)

INCOMING_PREFIX = "incoming/"
_JOB_KEY = re.compile(
    r"^incoming/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.csv$"
)
_KEY_NAMESPACE = uuid.UUID("6f1c3c8e-2f0b-4d7e-9a51-3c0f4b6f7a10")


@dataclass(frozen=True)
class ObjectCreated:
    bucket: str
    key: str
    size: int
    etag: str


def parse_storage_message(body: str) -> list[ObjectCreated]:
    """The S3 notification carried by one SQS message. Test events yield nothing."""
    payload: Any = json.loads(body)
    if not isinstance(payload, dict) or payload.get("Event") == "s3:TestEvent":
        return []
    created = []
    for record in payload.get("Records", []):
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        s3 = record.get("s3", {})
        obj = s3.get("object", {})
        created.append(
            ObjectCreated(
                bucket=str(s3.get("bucket", {}).get("name", "")),
                key=unquote_plus(str(obj.get("key", ""))),
                size=int(obj.get("size", 0) or 0),
                etag=str(obj.get("eTag", obj.get("etag", ""))).strip('"'),
            )
        )
    return created


def job_id_for_key(key: str, etag: str) -> str:
    """`incoming/<uuid>.csv` is job <uuid>; any other key gets an id fixed by key and content."""
    match = _JOB_KEY.match(key)
    if match:
        return match.group(1)
    return str(uuid.uuid5(_KEY_NAMESPACE, f"{key}\x00{etag}"))


def handle_object_created(deps: Dependencies, event: ObjectCreated) -> str | None:
    """Ingest one stored CSV. Returns the job id, or None when the object is not a job."""
    if not event.key.startswith(INCOMING_PREFIX) or event.key.endswith("/"):
        return None
    request_id = job_id_for_key(event.key, event.etag)
    job = deps.store.get_job(request_id)
    if job is None:
        now = iso(deps.clock.now())
        job = Job(
            request_id=request_id,
            status=JobStatus.PENDING,
            created_at=now,
            updated_at=now,
            input_key=event.key,
            source="bucket",
            chunk_size=deps.settings.rows_per_chunk,
        )
        if not deps.store.create_job(job):
            job = deps.store.get_job(request_id)
            if job is None:
                return request_id
    if job.status != JobStatus.PENDING:
        log.info("job %s is already %s; storage event ignored", request_id, job.status)
        return request_id
    if not deps.store.claim_ingest(request_id, deps.clock.now()):
        log.info("job %s is already being ingested; storage event ignored", request_id)
        return request_id
    ingest_job(deps, job, event.key)
    return request_id


def ingest_job(deps: Dependencies, job: Job, key: str) -> None:
    """Validate the CSV (streamed), write the rows in serial order, then fan out one message
    per row. Totals are recorded before the first message so no worker can finish early."""
    info = deps.uploads.head(key)
    if info is None:
        fail_job(deps, job, [CsvProblem(1, None, f"the uploaded object {key} is gone")])
        return
    if info.size > deps.settings.max_csv_bytes:
        problem = CsvProblem(
            1, None, f"the CSV is {info.size} bytes; the limit is {deps.settings.max_csv_bytes}"
        )
        fail_job(deps, job, [problem])
        return
    limits = csv_limits(deps)
    with deps.uploads.open(key) as stream:
        report = validate_csv(stream, limits)
    if not report.ok:
        fail_job(deps, job, report.problems)
        return

    _write_rows(deps, job, key, report)
    progress = Progress(total_products=report.total_rows, total_images=report.total_images)
    deps.store.start_processing(job.request_id, progress, deps.clock.now())
    for batch in chunks(_row_messages(deps, job, key, report), 10):
        deps.rows_queue.send_batch(batch)


def _write_rows(deps: Dependencies, job: Job, key: str, report: ValidationReport) -> None:
    """Chunks are flushed as soon as they are full: a sorted file keeps one chunk in memory."""
    size = job.chunk_size
    total = report.total_rows
    pending: dict[int, list[StoredRow | None]] = {}
    filled: dict[int, int] = {}
    with deps.uploads.open(key) as stream:
        for row in iter_rows(stream, csv_limits(deps)):
            position = report.position_of(row.serial)
            chunk, index = divmod(position, size)
            expected = min(size, total - chunk * size)
            slots = pending.setdefault(chunk, [None] * expected)
            slots[index] = StoredRow(position, row.serial, row.name, row.urls)
            filled[chunk] = filled.get(chunk, 0) + 1
            if filled[chunk] == expected:
                deps.store.insert_rows(job.request_id, chunk, [r for r in slots if r])
                del pending[chunk], filled[chunk]
    if pending:  # only reachable if the file changed between the passes
        raise RuntimeError(f"{key} changed while it was being ingested")


def _row_messages(
    deps: Dependencies, job: Job, key: str, report: ValidationReport
) -> Iterator[dict[str, object]]:
    with deps.uploads.open(key) as stream:
        for row in iter_rows(stream, csv_limits(deps)):
            yield {
                "requestId": job.request_id,
                "position": report.position_of(row.serial),
                "serialNumber": row.serial,
                "inputImageUrls": list(row.urls),
            }
