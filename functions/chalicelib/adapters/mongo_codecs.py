"""The MongoDB documents of jobs and rows, to and from the domain's values. No queries.

`jobs`: `_id` = requestId; status, timestamps, progress counters, errors, webhook state, the
ingest/finalize claims and the Idempotency-Key. `rows`: `_id` = `"{requestId}:{chunk:06d}"`
(`chunk_id`), the chunk's rows in position order as compact sub-documents
`{p, s, n, u, st, o, e, bi, bo}`, and `q`, `sc` (each image's quality and score) for a row whose
images were made by `quality: "auto"`. The queries are in mongo_job_queries.py,
mongo_row_queries.py and mongo_webhook_queries.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib.domain.models import (
    UNSTATED_CHUNK_SIZE,
    Job,
    JobStatus,
    Progress,
    RowOutcome,
    RowStatus,
    StoredRow,
    WebhookAttempt,
    WebhookInfo,
    WebhookState,
    capped_errors,
)
from chalicelib.domain.output_options import OutputOptions

Document = dict[str, Any]

JOBS = "jobs"
ROWS = "rows"
# When a document expires (JOB_RETENTION_DAYS): a BSON date, which a TTL index needs.
EXPIRE_AT = "expireAt"


def chunk_id(request_id: str, chunk: int) -> str:
    return f"{request_id}:{chunk:06d}"


def progress_doc(progress: Progress) -> Document:
    return {
        "totalProducts": progress.total_products,
        "processedProducts": progress.processed_products,
        "totalImages": progress.total_images,
        "processedImages": progress.processed_images,
        "failedImages": progress.failed_images,
        "bytesIn": progress.bytes_in,
        "bytesOut": progress.bytes_out,
    }


def progress_from(doc: Mapping[str, Any] | None) -> Progress:
    d = doc or {}
    return Progress(
        total_products=int(d.get("totalProducts", 0)),
        processed_products=int(d.get("processedProducts", 0)),
        total_images=int(d.get("totalImages", 0)),
        processed_images=int(d.get("processedImages", 0)),
        failed_images=int(d.get("failedImages", 0)),
        bytes_in=int(d.get("bytesIn", 0)),
        bytes_out=int(d.get("bytesOut", 0)),
    )


def processed_counters(counted: Progress, sign: int = 1) -> Document:
    """The job's processed counters as dotted fields, for an `$inc` (sign -1 takes them off)
    or a `$set`: the counts of rows recorded (`Progress.plus`'s fields)."""
    return {
        "progress.processedProducts": sign * counted.processed_products,
        "progress.processedImages": sign * counted.processed_images,
        "progress.failedImages": sign * counted.failed_images,
        "progress.bytesIn": sign * counted.bytes_in,
        "progress.bytesOut": sign * counted.bytes_out,
    }


def attempt_doc(attempt: WebhookAttempt) -> Document:
    return {
        "attempt": attempt.attempt,
        "at": attempt.at,
        "statusCode": attempt.status_code,
        "error": attempt.error,
        "durationMs": attempt.duration_ms,
    }


def attempt_from(doc: Mapping[str, Any]) -> WebhookAttempt:
    code = doc.get("statusCode")
    return WebhookAttempt(
        attempt=int(doc.get("attempt", 0)),
        at=str(doc.get("at", "")),
        status_code=None if code is None else int(code),
        error=str(doc.get("error", "")),
        duration_ms=int(doc.get("durationMs", 0)),
    )


def webhook_doc(hook: WebhookInfo) -> Document:
    return {
        "state": str(hook.state),
        "attempts": hook.attempts,
        "lastStatusCode": hook.last_status_code,
        "id": hook.webhook_id,
        "url": hook.url,
        "nextAttemptAt": hook.next_attempt_at,
        "history": [attempt_doc(a) for a in hook.history],
    }


def webhook_from(doc: Mapping[str, Any] | None) -> WebhookInfo:
    d = doc or {}
    code = d.get("lastStatusCode")
    return WebhookInfo(
        state=WebhookState(d.get("state", WebhookState.NONE)),
        attempts=int(d.get("attempts", 0)),
        last_status_code=None if code is None else int(code),
        webhook_id=str(d.get("id", "")),
        url=str(d.get("url", "")),
        next_attempt_at=str(d.get("nextAttemptAt", "")),
        history=[attempt_from(a) for a in d.get("history", [])],
    )


def job_doc(job: Job) -> Document:
    doc: Document = {
        "_id": job.request_id,
        "status": str(job.status),
        "createdAt": job.created_at,
        "updatedAt": job.updated_at,
        "inputKey": job.input_key,
        "source": job.source,
        "webhookUrl": job.webhook_url,
        "chunkSize": job.chunk_size,
        "progress": progress_doc(job.progress),
        "errors": capped_errors(job.errors),
        "outputCsvKey": job.output_csv_key,
        "webhook": webhook_doc(job.webhook),
        "bodyDigest": job.body_digest,
        "generation": job.generation,
        "fanout": {"sent": job.fanout_sent, "done": job.fanout_done},
        "rowsWritten": job.rows_written,
        "version": job.version,
    }
    if job.idempotency_key:  # absent, not "", so the partial unique index skips it
        doc["idempotencyKey"] = job.idempotency_key
    if job.tenant:
        doc["tenant"] = job.tenant
    if not job.options.is_default:
        doc["options"] = job.options.to_dict()
    if job.cancel_requested_at:
        doc["cancelRequestedAt"] = job.cancel_requested_at
    return doc


def job_from(doc: Mapping[str, Any], default_tenant: str) -> Job:
    """The job of a document (or of a projection of one: absent fields take defaults)."""
    return Job(
        # a job stored before tenants existed has none: it is the default tenant's
        tenant=str(doc.get("tenant") or default_tenant),
        options=OutputOptions.from_dict(doc.get("options")),
        request_id=str(doc["_id"]),
        status=JobStatus(doc["status"]),
        created_at=str(doc.get("createdAt", "")),
        updated_at=str(doc.get("updatedAt", "")),
        input_key=str(doc.get("inputKey", "")),
        webhook_url=str(doc.get("webhookUrl", "")),
        source=str(doc.get("source", "api")),
        progress=progress_from(doc.get("progress")),
        errors=[dict(e) for e in doc.get("errors", [])],
        output_csv_key=str(doc.get("outputCsvKey", "")),
        webhook=webhook_from(doc.get("webhook")),
        chunk_size=int(doc.get("chunkSize", UNSTATED_CHUNK_SIZE)),
        idempotency_key=str(doc.get("idempotencyKey", "")),
        body_digest=str(doc.get("bodyDigest", "")),
        generation=int(doc.get("generation", 0)),
        fanout_sent=int(doc.get("fanout", {}).get("sent", 0)),
        fanout_done=bool(doc.get("fanout", {}).get("done", False)),
        # absent from jobs of earlier versions, which stored every row before `processing`
        rows_written=bool(doc.get("rowsWritten", True)),
        ingest_claimed_at=str(doc.get("ingestClaimedAt", "")),
        finalize_claimed_at=str(doc.get("finalizeClaimedAt", "")),
        cancel_requested_at=str(doc.get("cancelRequestedAt", "")),
        version=int(doc.get("version", 0)),
    )


def row_doc(row: StoredRow) -> Document:
    doc: Document = {
        "p": row.position,
        "s": row.serial,
        "n": row.name,
        "u": list(row.urls),
        "st": str(row.status),
        "o": list(row.output_keys),
        "e": [dict(e) for e in row.errors],
        "bi": list(row.bytes_in),
        "bo": list(row.bytes_out),
    }
    if row.qualities:  # only `auto`'s rows carry them: the others' documents stay as small
        doc["q"] = list(row.qualities)
        doc["sc"] = list(row.scores)
    return doc


def row_from(doc: Mapping[str, Any]) -> StoredRow:
    return StoredRow(
        position=int(doc["p"]),
        serial=int(doc["s"]),
        name=str(doc["n"]),
        urls=tuple(str(u) for u in doc.get("u", [])),
        status=RowStatus(doc.get("st", RowStatus.PENDING)),
        output_keys=tuple(str(k) for k in doc.get("o", [])),
        errors=tuple({str(k): str(v) for k, v in e.items()} for e in doc.get("e", [])),
        bytes_in=tuple(int(b) for b in doc.get("bi", [])),
        bytes_out=tuple(int(b) for b in doc.get("bo", [])),
        qualities=tuple(None if q is None else int(q) for q in doc.get("q", [])),
        scores=tuple(None if v is None else float(v) for v in doc.get("sc", [])),
    )


def slot_changes(slot: str, outcome: RowOutcome) -> Document:
    """The `$set` of one row slot (`rows.<index>`) recorded with this outcome (its qualities
    and scores only when it has them, as `row_doc`)."""
    changes: Document = {
        f"{slot}.st": str(outcome.status),
        f"{slot}.o": list(outcome.output_keys),
        f"{slot}.e": [dict(e) for e in outcome.errors],
        f"{slot}.bi": list(outcome.bytes_in),
        f"{slot}.bo": list(outcome.bytes_out),
    }
    if outcome.qualities:
        changes[f"{slot}.q"] = list(outcome.qualities)
        changes[f"{slot}.sc"] = list(outcome.scores)
    return changes
