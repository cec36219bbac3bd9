"""MongoDB behind the JobStore port: one document per job, one per chunk of rows.

`jobs`: `_id` = requestId; status, timestamps, progress counters, errors, webhook state,
the ingest/finalize claims and the Idempotency-Key. `rows`: `_id` =
`"{requestId}:{chunk:06d}"`, the chunk's rows in position order as compact sub-documents
`{p, s, n, u, st, o, e}`. A job of N rows writes 1 + ceil(N / chunkSize) documents;
recording a row is one positional update of its chunk and one `$inc` of the job's counters;
recording a worker's batch of rows (`record_rows`) is one update per chunk touched and one
`$inc` for the batch.

Retention (JOB_RETENTION_DAYS): with a `retention`, the job and its chunks carry `expireAt`, a
BSON date (a TTL index needs a date, not the ISO strings of the other timestamps): creation
plus the retention, then, when the job ends, its end plus the retention. A TTL index on each
collection deletes them once it passes (MongoDB looks every 60 s). Without one nothing
expires; documents written with one keep their `expireAt`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, MongoClient, ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from chalicelib.domain.models import (
    TERMINAL_STATUSES,
    ImageResult,
    Job,
    JobStatus,
    Progress,
    RowStatus,
    StoredRow,
    WebhookAttempt,
    WebhookInfo,
    WebhookState,
)
from chalicelib.domain.output_options import OutputOptions
from chalicelib.domain.timefmt import iso, parse_iso
from chalicelib.errors import JobGone

Document = dict[str, Any]

JOBS = "jobs"
ROWS = "rows"
MAX_STORED_ERRORS = 1000
MAX_WEBHOOK_HISTORY = 20
APP_NAME = "image-pipeline"
_CHUNK_SIZE_CACHE_LIMIT = 4096
_ROWS_BATCH = 8  # chunk documents per cursor batch when streaming rows
EXPIRE_AT = "expireAt"
TTL_INDEX = "expireAt_ttl"


_RECORDED = frozenset({RowStatus.COMPLETED, RowStatus.FAILED})
# Every write that changes what a status or a listing shows moves the job's `version` (the
# ETag's source) in the same update; a row's write moves it just after (never before: a read
# between would pair the new version with the old row for good).
_BUMP: dict[str, Any] = {"$inc": {"version": 1}}


def _utcnow() -> datetime:
    return datetime.now(UTC)


def chunk_id(request_id: str, chunk: int) -> str:
    return f"{request_id}:{chunk:06d}"


# --- documents <-> models -------------------------------------------------------------


def _progress_doc(progress: Progress) -> Document:
    return {
        "totalProducts": progress.total_products,
        "processedProducts": progress.processed_products,
        "totalImages": progress.total_images,
        "processedImages": progress.processed_images,
        "failedImages": progress.failed_images,
        "bytesIn": progress.bytes_in,
        "bytesOut": progress.bytes_out,
    }


def _progress_from(doc: Mapping[str, Any] | None) -> Progress:
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


def _webhook_doc(hook: WebhookInfo) -> Document:
    return {
        "state": str(hook.state),
        "attempts": hook.attempts,
        "lastStatusCode": hook.last_status_code,
        "id": hook.webhook_id,
        "url": hook.url,
        "nextAttemptAt": hook.next_attempt_at,
        "history": [_attempt_doc(a) for a in hook.history],
    }


def _attempt_doc(attempt: WebhookAttempt) -> Document:
    return {
        "attempt": attempt.attempt,
        "at": attempt.at,
        "statusCode": attempt.status_code,
        "error": attempt.error,
        "durationMs": attempt.duration_ms,
    }


def _attempt_from(doc: Mapping[str, Any]) -> WebhookAttempt:
    code = doc.get("statusCode")
    return WebhookAttempt(
        attempt=int(doc.get("attempt", 0)),
        at=str(doc.get("at", "")),
        status_code=None if code is None else int(code),
        error=str(doc.get("error", "")),
        duration_ms=int(doc.get("durationMs", 0)),
    )


def _webhook_from(doc: Mapping[str, Any] | None) -> WebhookInfo:
    d = doc or {}
    code = d.get("lastStatusCode")
    return WebhookInfo(
        state=WebhookState(d.get("state", WebhookState.NONE)),
        attempts=int(d.get("attempts", 0)),
        last_status_code=None if code is None else int(code),
        webhook_id=str(d.get("id", "")),
        url=str(d.get("url", "")),
        next_attempt_at=str(d.get("nextAttemptAt", "")),
        history=[_attempt_from(a) for a in d.get("history", [])],
    )


def _job_doc(job: Job) -> Document:
    doc: Document = {
        "_id": job.request_id,
        "status": str(job.status),
        "createdAt": job.created_at,
        "updatedAt": job.updated_at,
        "inputKey": job.input_key,
        "source": job.source,
        "webhookUrl": job.webhook_url,
        "chunkSize": job.chunk_size,
        "progress": _progress_doc(job.progress),
        "errors": [dict(e) for e in job.errors[:MAX_STORED_ERRORS]],
        "outputCsvKey": job.output_csv_key,
        "webhook": _webhook_doc(job.webhook),
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


def _job_from(doc: Mapping[str, Any], default_tenant: str) -> Job:
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
        progress=_progress_from(doc.get("progress")),
        errors=[dict(e) for e in doc.get("errors", [])],
        output_csv_key=str(doc.get("outputCsvKey", "")),
        webhook=_webhook_from(doc.get("webhook")),
        chunk_size=int(doc.get("chunkSize", 50)),
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


def _row_doc(row: StoredRow) -> Document:
    return {
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


def _row_from(doc: Mapping[str, Any]) -> StoredRow:
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
    )


def _row_counters(row: StoredRow, sign: int) -> Document:
    """The job counters one recorded row contributes (sign -1 takes them off)."""
    return {
        "progress.processedProducts": sign,
        "progress.processedImages": sign * len(row.urls),
        "progress.failedImages": sign * len(row.errors),
        "progress.bytesIn": sign * sum(row.bytes_in),
        "progress.bytesOut": sign * sum(row.bytes_out),
    }


def _result_fields(results: Sequence[ImageResult]) -> tuple[str, list[str], list[Document]]:
    """A row's status, output keys ("" for a failed image) and errors, from its results."""
    failed = [r for r in results if not r.ok]
    outputs = [r.output_key if r.ok else "" for r in results]
    errors: list[Document] = [
        {
            "url": r.url,
            "code": r.error_code.value if r.error_code is not None else "",
            "message": r.error_message,
        }
        for r in failed
    ]
    status = RowStatus.FAILED if failed else RowStatus.COMPLETED
    return str(status), outputs, errors


def _slot_changes(slot: str, results: Sequence[ImageResult]) -> Document:
    """The `$set` of one row slot recorded with these results."""
    status, outputs, errors = _result_fields(results)
    return {
        f"{slot}.st": status,
        f"{slot}.o": outputs,
        f"{slot}.e": errors,
        f"{slot}.bi": [r.bytes_in for r in results],
        f"{slot}.bo": [r.bytes_out for r in results],
    }


# --- the store ------------------------------------------------------------------------


class MongoJobStore:
    """JobStore over pymongo. Thread-safe: share one per process (the client pools)."""

    def __init__(
        self,
        db: Database[Document],
        *,
        owns_client: bool = False,
        default_tenant: str = "default",
        retention: timedelta | None = None,
    ) -> None:
        self._db = db
        self._default_tenant = default_tenant
        self._retention = retention
        self._jobs: Collection[Document] = db[JOBS]
        self._rows: Collection[Document] = db[ROWS]
        self._owns_client = owns_client
        self._indexes_ready = False
        self._lock = threading.Lock()
        self._chunk_sizes: dict[str, int] = {}

    @classmethod
    def from_uri(
        cls,
        uri: str,
        db_name: str,
        default_tenant: str = "default",
        retention: timedelta | None = None,
        max_pool_size: int = 0,
    ) -> MongoJobStore:
        """A store with its own client. Nothing connects until the first operation.
        `max_pool_size`: connections to each server at most (0: pymongo's default); a thread
        needing one more waits for one to be returned."""
        pool: dict[str, Any] = {"maxPoolSize": max_pool_size} if max_pool_size > 0 else {}
        client: MongoClient[Document] = MongoClient(
            uri,
            appname=APP_NAME,
            serverSelectionTimeoutMS=5000,
            connectTimeoutMS=5000,
            socketTimeoutMS=30000,
            maxIdleTimeMS=60000,
            retryWrites=True,
            retryReads=True,
            **pool,
        )
        return cls(
            client[db_name], owns_client=True, default_tenant=default_tenant, retention=retention
        )

    @property
    def db(self) -> Database[Document]:
        return self._db

    def close(self) -> None:
        """Close the client when this store built it (from_uri)."""
        if self._owns_client:
            self._db.client.close()

    def ensure_indexes(self) -> None:
        """Create the indexes once per store (one store per process)."""
        if self._indexes_ready:
            return
        with self._lock:
            if self._indexes_ready:
                return
            self._rows.create_index(
                [("jobId", ASCENDING), ("chunk", ASCENDING)], name="jobId_chunk"
            )
            self._jobs.create_index(
                [("status", ASCENDING), ("updatedAt", ASCENDING)], name="status_updatedAt"
            )
            self._jobs.create_index(
                [("webhook.state", ASCENDING), ("webhook.nextAttemptAt", ASCENDING)],
                name="webhook_due",
            )
            # Idempotency-Keys are scoped to their tenant (jobs from before tenants have none
            # stored and count as the default tenant's: find_by_idempotency_key looks there too)
            self._drop_index_if_present("idempotencyKey_unique")  # the key alone, before
            self._jobs.create_index(
                [("tenant", ASCENDING), ("idempotencyKey", ASCENDING)],
                name="tenant_idempotencyKey_unique",
                unique=True,
                partialFilterExpression={"idempotencyKey": {"$exists": True}},
            )
            self._jobs.create_index(
                [("tenant", ASCENDING), ("createdAt", DESCENDING), ("_id", DESCENDING)],
                name="tenant_createdAt",
            )
            # JOB_RETENTION_DAYS: a document goes once its expireAt passes (none: it stays)
            for collection in (self._jobs, self._rows):
                collection.create_index(EXPIRE_AT, name=TTL_INDEX, expireAfterSeconds=0)
            self._indexes_ready = True

    def _expire_at(self, start: datetime) -> datetime | None:
        """When documents kept from `start` expire (a UTC datetime: stored as a BSON date)."""
        if self._retention is None:
            return None
        return start.astimezone(UTC) + self._retention

    def _drop_index_if_present(self, name: str) -> None:
        if name in self._jobs.index_information():
            self._jobs.drop_index(name)

    def _owner(self, tenant: str) -> Document:
        """The filter for a tenant's jobs: the default tenant's include those stored without
        a tenant (before tenants existed)."""
        if tenant == self._default_tenant:
            return {"$or": [{"tenant": tenant}, {"tenant": {"$exists": False}}]}
        return {"tenant": tenant}

    # jobs

    def create_job(self, job: Job) -> bool:
        self.ensure_indexes()
        doc = _job_doc(job)
        expire_at = self._expire_at(parse_iso(job.created_at) if job.created_at else _utcnow())
        if expire_at is not None:
            doc[EXPIRE_AT] = expire_at
        try:
            self._jobs.insert_one(doc)
        except DuplicateKeyError:
            return False
        self._remember_chunk_size(job.request_id, job.chunk_size)
        return True

    def get_job(self, request_id: str, tenant: str | None = None) -> Job | None:
        query: Document = {"_id": request_id}
        if tenant is not None:
            query.update(self._owner(tenant))
        doc = self._jobs.find_one(query)
        return None if doc is None else _job_from(doc, self._default_tenant)

    def find_by_idempotency_key(self, tenant: str, key: str) -> Job | None:
        if not key:
            return None
        self.ensure_indexes()
        doc = self._jobs.find_one({"idempotencyKey": key, **self._owner(tenant)})
        return None if doc is None else _job_from(doc, self._default_tenant)

    def list_jobs(
        self,
        tenant: str,
        *,
        status: JobStatus | None = None,
        limit: int = 50,
        after: tuple[str, str] | None = None,
    ) -> list[Job]:
        cursor = self._listing(tenant, status, limit, after, {"rows": 0})
        with cursor:
            return [_job_from(doc, self._default_tenant) for doc in cursor]

    def job_versions(
        self,
        tenant: str,
        *,
        status: JobStatus | None = None,
        limit: int = 50,
        after: tuple[str, str] | None = None,
    ) -> list[tuple[str, str, int]]:
        """`list_jobs`'s page as three fields a job, by the same index."""
        cursor = self._listing(tenant, status, limit, after, {"createdAt": 1, "version": 1})
        with cursor:
            return [
                (str(doc["_id"]), str(doc.get("createdAt", "")), int(doc.get("version", 0)))
                for doc in cursor
            ]

    def _listing(
        self,
        tenant: str,
        status: JobStatus | None,
        limit: int,
        after: tuple[str, str] | None,
        projection: Document,
    ) -> Any:
        """The cursor of a page of the tenant's jobs, newest first (index tenant_createdAt)."""
        self.ensure_indexes()
        query: Document = dict(self._owner(tenant))
        if status is not None:
            query["status"] = str(status)
        if after is not None:
            created, request_id = after
            query = {
                "$and": [
                    query,
                    {
                        "$or": [
                            {"createdAt": {"$lt": created}},
                            {"createdAt": created, "_id": {"$lt": request_id}},
                        ]
                    },
                ]
            }
        return (
            self._jobs.find(query, projection=projection)
            .sort([("createdAt", DESCENDING), ("_id", DESCENDING)])
            .limit(limit)
        )

    def claim_action(
        self, request_id: str, action: str, now: datetime, interval: timedelta
    ) -> datetime | None:
        field = f"actions.{action}"
        claimed = self._jobs.find_one_and_update(
            {
                "_id": request_id,
                "$or": [{field: {"$exists": False}}, {field: {"$lte": iso(now - interval)}}],
            },
            {"$set": {field: iso(now)}},
            projection={"_id": 1},
        )
        if claimed is not None:
            return None
        doc = self._jobs.find_one({"_id": request_id}, projection={field: 1})
        last = str(((doc or {}).get("actions") or {}).get(action, ""))
        if not last:
            return now + interval  # the job is gone; nothing to allow
        return parse_iso(last) + interval

    def claim_ingest(self, request_id: str, now: datetime, lease: timedelta) -> bool:
        result = self._jobs.update_one(
            {
                "_id": request_id,
                "status": {"$nin": [str(s) for s in TERMINAL_STATUSES]},
                "fanout.done": {"$ne": True},
                "$or": [
                    {"ingestClaimedAt": {"$exists": False}},
                    {"ingestClaimedAt": {"$lt": iso(now - lease)}},
                ],
            },
            {"$set": {"ingestClaimedAt": iso(now), "updatedAt": iso(now)}, **_BUMP},
        )
        return result.modified_count == 1

    def start_processing(self, request_id: str, progress: Progress, now: datetime) -> bool:
        """Sets the totals only: counters of rows already recorded are never reset."""
        result = self._jobs.update_one(
            {"_id": request_id, "status": str(JobStatus.PENDING)},
            {
                "$set": {
                    "status": str(JobStatus.PROCESSING),
                    "progress.totalProducts": progress.total_products,
                    "progress.totalImages": progress.total_images,
                    "rowsWritten": False,
                    "updatedAt": iso(now),
                },
                **_BUMP,
            },
        )
        return result.modified_count == 1

    def record_fanout(self, request_id: str, sent: int, done: bool, now: datetime) -> None:
        changes: Document = {"fanout.done": done, "updatedAt": iso(now)}
        if done:
            changes["rowsWritten"] = True
        result = self._jobs.update_one(
            {"_id": request_id}, {"$max": {"fanout.sent": sent}, "$set": changes, **_BUMP}
        )
        if result.matched_count == 0:
            raise JobGone(request_id)

    def claim_finalization(self, request_id: str, now: datetime, lease: timedelta) -> bool:
        doc = self._jobs.find_one(
            {"_id": request_id},
            projection={"status": 1, "progress": 1, "finalizeClaimedAt": 1},
        )
        stale = iso(now - lease)
        if doc is None or doc.get("status") != JobStatus.PROCESSING:
            return False
        claimed = doc.get("finalizeClaimedAt")
        if claimed and str(claimed) >= stale:
            return False
        progress = _progress_from(doc.get("progress"))
        if progress.processed_products < progress.total_products:
            return False
        # The claim is taken by one compare-and-set on the value read above.
        result = self._jobs.update_one(
            {
                "_id": request_id,
                "finalizeClaimedAt": claimed if claimed else {"$exists": False},
                "status": str(JobStatus.PROCESSING),
                "progress.processedProducts": {"$gte": progress.total_products},
            },
            {"$set": {"finalizeClaimedAt": iso(now)}},
        )
        return result.modified_count == 1

    def finish_job(
        self,
        request_id: str,
        status: JobStatus,
        now: datetime,
        *,
        output_csv_key: str = "",
        errors: Sequence[Mapping[str, object]] = (),
        webhook_url: str = "",
        webhook_id: str = "",
    ) -> bool:
        hook = WebhookInfo(
            state=WebhookState.PENDING if webhook_url else WebhookState.NONE,
            webhook_id=webhook_id,
            url=webhook_url,
            next_attempt_at=iso(now) if webhook_url else "",
        )
        changes: Document = {
            "status": str(status),
            "updatedAt": iso(now),
            "outputCsvKey": output_csv_key,
            "errors": [dict(e) for e in errors[:MAX_STORED_ERRORS]],
            "webhook": _webhook_doc(hook),
        }
        expire_at = self._expire_at(now)
        if expire_at is not None:
            changes[EXPIRE_AT] = expire_at
        result = self._jobs.update_one(
            {"_id": request_id, "status": {"$nin": [str(s) for s in TERMINAL_STATUSES]}},
            {"$set": changes, **_BUMP},
        )
        if result.modified_count != 1:
            return False
        if expire_at is not None:  # the rows go with their job, not before it
            self._rows.update_many({"jobId": request_id}, {"$set": {EXPIRE_AT: expire_at}})
        return True

    def schedule_webhook(self, request_id: str, due: datetime) -> None:
        self._jobs.update_one(
            {"_id": request_id}, {"$set": {"webhook.nextAttemptAt": iso(due)}, **_BUMP}
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
                        "$each": [_attempt_doc(attempt)],
                        "$slice": -MAX_WEBHOOK_HISTORY,
                    }
                },
            },
        )

    def redeliver_webhook(self, request_id: str, webhook_id: str, now: datetime) -> bool:
        result = self._jobs.update_one(
            {
                "_id": request_id,
                "status": {"$in": [str(s) for s in TERMINAL_STATUSES]},
                "webhook.url": {"$nin": ["", None]},
                "webhook.state": {"$ne": str(WebhookState.PENDING)},
            },
            {
                "$set": {
                    "webhook.state": str(WebhookState.PENDING),
                    "webhook.id": webhook_id,
                    "webhook.nextAttemptAt": iso(now),
                },
                **_BUMP,
            },
        )
        return result.modified_count == 1

    def reopen_failed(self, request_id: str, generation: int, now: datetime) -> bool:
        result = self._jobs.update_one(
            {
                "_id": request_id,
                "status": {"$in": [str(s) for s in TERMINAL_STATUSES - {JobStatus.CANCELLED}]},
                "progress.failedImages": {"$gt": 0},
                "generation": {"$lt": generation},
            },
            {
                "$set": {
                    "status": str(JobStatus.PROCESSING),
                    "generation": generation,
                    "updatedAt": iso(now),
                    "fanout": {"sent": 0, "done": False},
                    "errors": [],
                    "webhook.state": str(WebhookState.NONE),
                    "webhook.nextAttemptAt": "",
                },
                "$unset": {"finalizeClaimedAt": "", "ingestClaimedAt": "", "cancelRequestedAt": ""},
                **_BUMP,
            },
        )
        return result.modified_count == 1

    def reset_failed_rows(self, request_id: str, now: datetime) -> Iterator[StoredRow]:
        cursor = self._rows.find(
            {"jobId": request_id, "rows.st": str(RowStatus.FAILED)}, {"rows": 1}
        ).sort("chunk", ASCENDING)
        with cursor:
            for doc in cursor:
                for index, raw in enumerate(doc.get("rows", [])):
                    if raw.get("st") != RowStatus.FAILED:
                        continue
                    row = _row_from(raw)
                    slot = f"rows.{index}"
                    reset = self._rows.update_one(
                        {"_id": doc["_id"], f"{slot}.p": row.position, f"{slot}.st": "failed"},
                        {"$set": {f"{slot}.st": str(RowStatus.PENDING)}},
                    )
                    if reset.modified_count == 1:
                        self._jobs.update_one(
                            {"_id": request_id},
                            {
                                "$inc": {**_row_counters(row, sign=-1), "version": 1},
                                "$set": {"updatedAt": iso(now)},
                            },
                        )
                    yield replace(row, status=RowStatus.PENDING)

    def recount(self, request_id: str, now: datetime) -> Progress | None:
        products = images = failed = bytes_in = bytes_out = 0
        for row in self.iter_rows(request_id):
            if row.status not in _RECORDED:  # pending, or cancelled: never processed
                continue
            products += 1
            images += len(row.urls)
            failed += len(row.errors)
            bytes_in += sum(row.bytes_in)
            bytes_out += sum(row.bytes_out)
        doc = self._jobs.find_one_and_update(
            {"_id": request_id},
            {
                "$set": {
                    "progress.processedProducts": products,
                    "progress.processedImages": images,
                    "progress.failedImages": failed,
                    "progress.bytesIn": bytes_in,
                    "progress.bytesOut": bytes_out,
                    "updatedAt": iso(now),
                },
                **_BUMP,
            },
            projection={"progress": 1},
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else _progress_from(doc.get("progress"))

    def request_cancel(self, request_id: str, now: datetime) -> bool:
        result = self._jobs.update_one(
            {"_id": request_id, "status": {"$nin": [str(s) for s in TERMINAL_STATUSES]}},
            {"$set": {"cancelRequestedAt": iso(now), "updatedAt": iso(now)}, **_BUMP},
        )
        return result.matched_count == 1

    def cancel_rows(
        self, request_id: str, now: datetime, positions: Sequence[int] | None = None
    ) -> None:
        """One update of every chunk with a pending row (of the chunks of `positions`): each
        slot still pending becomes cancelled, by an array filter, so that a row recorded
        meanwhile is left as it is."""
        pending = str(RowStatus.PENDING)
        query: Document = {"jobId": request_id, "rows.st": pending}
        slot: Document = {"r.st": pending}
        if positions is not None:
            wanted = sorted(set(positions))
            if not wanted:
                return
            slot["r.p"] = {"$in": wanted}
            size = self._chunk_size(request_id)
            if size is not None:
                query["chunk"] = {"$in": sorted({p // size for p in wanted})}
        changed = self._rows.update_many(
            query,
            {"$set": {"rows.$[r].st": str(RowStatus.CANCELLED)}},
            array_filters=[slot],
        )
        if changed.modified_count:  # after the rows: a status read between shows them early
            self._jobs.update_one({"_id": request_id}, _BUMP)

    def cancelled_jobs(self, request_ids: Sequence[str]) -> set[str]:
        return self.jobs_stopped_or_gone(request_ids)[0]

    def jobs_stopped_or_gone(self, request_ids: Sequence[str]) -> tuple[set[str], set[str]]:
        """One find by `_id` (the primary index), two fields each; the rule in Python. An id
        the find does not return is gone."""
        wanted = set(request_ids)
        if not wanted:
            return set(), set()
        cursor = self._jobs.find(
            {"_id": {"$in": sorted(wanted)}},
            projection={"status": 1, "cancelRequestedAt": 1},
        )
        with cursor:
            docs = list(cursor)
        cancelled = {
            str(doc["_id"])
            for doc in docs
            if doc.get("status") == JobStatus.CANCELLED
            or (doc.get("cancelRequestedAt") and doc.get("status") not in TERMINAL_STATUSES)
        }
        return cancelled, wanted - {str(doc["_id"]) for doc in docs}

    def delete_rows(self, request_id: str) -> None:
        self._rows.delete_many({"jobId": request_id})

    def delete_job(self, request_id: str) -> bool:
        """The rows go first: a deletion that dies half way leaves the record, and asking
        again finishes it."""
        self._rows.delete_many({"jobId": request_id})
        deleted = self._jobs.delete_one({"_id": request_id}).deleted_count == 1
        self._chunk_sizes.pop(request_id, None)
        return deleted

    def find_stalled(self, before: datetime, limit: int) -> list[Job]:
        self.ensure_indexes()
        cursor = self._jobs.find(
            {
                "status": {"$in": [str(JobStatus.PENDING), str(JobStatus.PROCESSING)]},
                "updatedAt": {"$lt": iso(before)},
            }
        ).limit(limit)
        with cursor:
            return [_job_from(doc, self._default_tenant) for doc in cursor]

    def find_webhooks_due(self, before: datetime, limit: int) -> list[Job]:
        self.ensure_indexes()
        cursor = self._jobs.find(
            {
                "webhook.state": str(WebhookState.PENDING),
                "webhook.nextAttemptAt": {"$lt": iso(before)},
                "status": {"$in": [str(s) for s in TERMINAL_STATUSES]},
            }
        ).limit(limit)
        with cursor:
            return [_job_from(doc, self._default_tenant) for doc in cursor]

    def ping(self) -> None:
        self._db.command("ping")

    # rows

    def insert_rows(self, request_id: str, chunk: int, rows: Sequence[StoredRow]) -> None:
        """Writes the chunk if it is absent: a re-run never resets rows already recorded."""
        self.ensure_indexes()
        ordered = sorted(rows, key=lambda r: r.position)
        document: Document = {
            "jobId": request_id,
            "chunk": chunk,
            "rows": [_row_doc(r) for r in ordered],
        }
        expire_at = self._expire_at(_utcnow())
        if expire_at is not None:
            document[EXPIRE_AT] = expire_at
        try:
            self._rows.update_one(
                {"_id": chunk_id(request_id, chunk)},
                {"$setOnInsert": document},
                upsert=True,
            )
        except DuplicateKeyError:  # a concurrent upsert of the same chunk won
            return

    def record_row(
        self, request_id: str, position: int, results: Sequence[ImageResult], now: datetime
    ) -> Progress | None:
        size = self._chunk_size(request_id)
        if size is None:
            raise JobGone(request_id)
        chunk, index = divmod(position, size)
        if not self._record_slot(
            request_id, chunk_id(request_id, chunk), f"rows.{index}", position, results
        ):
            return None
        return self._count_rows(request_id, [results], now)

    def record_rows(
        self,
        request_id: str,
        rows: Sequence[tuple[int, Sequence[ImageResult]]],
        now: datetime,
    ) -> list[Progress | None]:
        """`record_row` for several rows of one job in few operations: one guarded update per
        chunk (every slot of the batch must still be pending, so it is all or nothing) and one
        `$inc` of the job for all of them. When a slot was recorded before (a redelivery), that
        chunk's rows fall back to one guarded update each. Per row, as `record_row`: the job's
        progress after counting it, or None when it had been recorded already."""
        size = self._chunk_size(request_id)
        if size is None:
            raise JobGone(request_id)
        by_chunk: dict[int, list[tuple[int, int, Sequence[ImageResult]]]] = {}
        seen: set[int] = set()
        for n, (position, results) in enumerate(rows):
            if position in seen:  # the same row twice in one batch: the second is a repeat
                continue
            seen.add(position)
            chunk, index = divmod(position, size)
            by_chunk.setdefault(chunk, []).append((n, index, results))
        counted: list[int] = []
        for chunk, members in by_chunk.items():
            cid = chunk_id(request_id, chunk)
            guard: Document = {"_id": cid}
            changes: Document = {}
            for n, index, results in members:
                slot = f"rows.{index}"
                guard[f"{slot}.p"] = rows[n][0]
                guard[f"{slot}.st"] = str(RowStatus.PENDING)
                changes.update(_slot_changes(slot, results))
            if self._rows.update_one(guard, {"$set": changes}).modified_count == 1:
                counted += [n for n, _, _ in members]
                continue
            for n, index, results in members:  # some were recorded before: one by one
                if self._record_slot(request_id, cid, f"rows.{index}", rows[n][0], results):
                    counted.append(n)
        if not counted:
            return [None] * len(rows)
        recorded = [rows[n][1] for n in counted]
        progress = self._count_rows(request_id, recorded, now)
        out: list[Progress | None] = [None] * len(rows)
        for n in counted:
            out[n] = progress
        return out

    def _record_slot(
        self,
        request_id: str,
        cid: str,
        slot: str,
        position: int,
        results: Sequence[ImageResult],
    ) -> bool:
        """One row's guarded update: True when it changed the row (first recording)."""
        result = self._rows.update_one(
            {"_id": cid, f"{slot}.p": position, f"{slot}.st": str(RowStatus.PENDING)},
            {"$set": _slot_changes(slot, results)},
        )
        if result.modified_count == 1:
            return True
        if self._rows.find_one({"_id": cid, f"{slot}.p": position}, {"_id": 1}) is None:
            raise JobGone(request_id)  # its rows deleted (a deletion's first step)
        return False  # recorded before: a redelivery counts nothing

    def _count_rows(
        self, request_id: str, recorded: Sequence[Sequence[ImageResult]], now: datetime
    ) -> Progress:
        """Move the job's counters by the rows just recorded, in one `$inc`."""
        images = [r for results in recorded for r in results]
        doc = self._jobs.find_one_and_update(
            {"_id": request_id},
            {
                "$inc": {
                    "progress.processedProducts": len(recorded),
                    "progress.processedImages": len(images),
                    "progress.failedImages": sum(1 for r in images if not r.ok),
                    "progress.bytesIn": sum(r.bytes_in for r in images),
                    "progress.bytesOut": sum(r.bytes_out for r in images),
                    "version": 1,
                },
                "$set": {"updatedAt": iso(now)},
            },
            projection={"progress": 1},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            raise JobGone(request_id)
        return _progress_from(doc.get("progress"))

    def iter_rows(self, request_id: str) -> Iterator[StoredRow]:
        cursor = (
            self._rows.find({"jobId": request_id}, {"rows": 1})
            .sort("chunk", ASCENDING)
            .batch_size(_ROWS_BATCH)
        )
        with cursor:
            for doc in cursor:
                for row in doc.get("rows", []):
                    yield _row_from(row)

    def list_rows(self, request_id: str, start: int, limit: int) -> list[StoredRow]:
        if limit <= 0 or start < 0:
            return []
        size = self._chunk_size(request_id)
        if size is None:
            return []
        end = start + limit  # exclusive
        first, last = start // size, (end - 1) // size
        cursor = self._rows.find(
            {"jobId": request_id, "chunk": {"$gte": first, "$lte": last}}, {"rows": 1}
        ).sort("chunk", ASCENDING)
        rows: list[StoredRow] = []
        with cursor:
            for doc in cursor:
                rows.extend(_row_from(r) for r in doc.get("rows", []) if start <= r["p"] < end)
        return rows

    # the chunk size of a job never changes: read it once per process

    def _remember_chunk_size(self, request_id: str, size: int) -> None:
        if len(self._chunk_sizes) >= _CHUNK_SIZE_CACHE_LIMIT:
            self._chunk_sizes.clear()
        self._chunk_sizes[request_id] = size

    def _chunk_size(self, request_id: str) -> int | None:
        size = self._chunk_sizes.get(request_id)
        if size is None:
            doc = self._jobs.find_one({"_id": request_id}, {"chunkSize": 1})
            if doc is None:
                return None
            size = max(1, int(doc.get("chunkSize", 50)))
            self._remember_chunk_size(request_id, size)
        return size
