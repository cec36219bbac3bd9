"""MongoDB behind the JobStore port: one document per job, one per chunk of rows.

`jobs`: `_id` = requestId; status, timestamps, progress counters, errors, webhook state and
the ingest/finalize claims. `rows`: `_id` = `"{requestId}:{chunk:06d}"`, the chunk's rows in
position order as compact sub-documents `{p, s, n, u, st, o, e}`. A job of N rows writes
1 + ceil(N / chunkSize) documents; recording a row is one positional update of its chunk and
one `$inc` of the job's counters.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, MongoClient, ReturnDocument
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
    WebhookInfo,
    WebhookState,
)
from chalicelib.domain.timefmt import iso

Document = dict[str, Any]

JOBS = "jobs"
ROWS = "rows"
MAX_STORED_ERRORS = 1000
APP_NAME = "image-pipeline"
_CHUNK_SIZE_CACHE_LIMIT = 4096
_ROWS_BATCH = 8  # chunk documents per cursor batch when streaming rows


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
    }


def _progress_from(doc: Mapping[str, Any] | None) -> Progress:
    d = doc or {}
    return Progress(
        total_products=int(d.get("totalProducts", 0)),
        processed_products=int(d.get("processedProducts", 0)),
        total_images=int(d.get("totalImages", 0)),
        processed_images=int(d.get("processedImages", 0)),
        failed_images=int(d.get("failedImages", 0)),
    )


def _webhook_doc(hook: WebhookInfo) -> Document:
    return {
        "state": str(hook.state),
        "attempts": hook.attempts,
        "lastStatusCode": hook.last_status_code,
        "id": hook.webhook_id,
        "url": hook.url,
    }


def _webhook_from(doc: Mapping[str, Any] | None) -> WebhookInfo:
    d = doc or {}
    code = d.get("lastStatusCode")
    return WebhookInfo(
        state=WebhookState(d.get("state", WebhookState.NONE)),
        attempts=int(d.get("attempts", 0)),
        last_status_code=None if code is None else int(code),
        webhook_id=str(d.get("id", "")),
        url=str(d.get("url", "")),
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
    }
    if job.idempotency_key:  # absent, not "", so the sparse unique index skips it
        doc["idempotencyKey"] = job.idempotency_key
    return doc


def _job_from(doc: Mapping[str, Any]) -> Job:
    return Job(
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
    )


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


# --- the store ------------------------------------------------------------------------


class MongoJobStore:
    """JobStore over pymongo. Thread-safe: share one per process (the client pools)."""

    def __init__(self, db: Database[Document], *, owns_client: bool = False) -> None:
        self._db = db
        self._jobs: Collection[Document] = db[JOBS]
        self._rows: Collection[Document] = db[ROWS]
        self._owns_client = owns_client
        self._indexes_ready = False
        self._lock = threading.Lock()
        self._chunk_sizes: dict[str, int] = {}

    @classmethod
    def from_uri(cls, uri: str, db_name: str) -> MongoJobStore:
        """A store with its own client. Nothing connects until the first operation."""
        client: MongoClient[Document] = MongoClient(
            uri,
            appname=APP_NAME,
            serverSelectionTimeoutMS=5000,
            connectTimeoutMS=5000,
            socketTimeoutMS=30000,
            maxIdleTimeMS=60000,
            retryWrites=True,
            retryReads=True,
        )
        return cls(client[db_name], owns_client=True)

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
                [("idempotencyKey", ASCENDING)],
                name="idempotencyKey_unique",
                unique=True,
                sparse=True,
            )
            self._indexes_ready = True

    # jobs

    def create_job(self, job: Job) -> bool:
        self.ensure_indexes()
        try:
            self._jobs.insert_one(_job_doc(job))
        except DuplicateKeyError:
            return False
        self._remember_chunk_size(job.request_id, job.chunk_size)
        return True

    def get_job(self, request_id: str) -> Job | None:
        doc = self._jobs.find_one({"_id": request_id})
        return None if doc is None else _job_from(doc)

    def find_by_idempotency_key(self, key: str) -> Job | None:
        if not key:
            return None
        self.ensure_indexes()
        doc = self._jobs.find_one({"idempotencyKey": key})
        return None if doc is None else _job_from(doc)

    def claim_ingest(self, request_id: str, now: datetime) -> bool:
        result = self._jobs.update_one(
            {"_id": request_id, "ingestClaimedAt": {"$exists": False}},
            {"$set": {"ingestClaimedAt": iso(now)}},
        )
        return result.modified_count == 1

    def start_processing(self, request_id: str, progress: Progress, now: datetime) -> None:
        """Sets the totals only: counters of rows already recorded are never reset."""
        self._jobs.update_one(
            {"_id": request_id, "status": {"$nin": [str(s) for s in TERMINAL_STATUSES]}},
            {
                "$set": {
                    "status": str(JobStatus.PROCESSING),
                    "progress.totalProducts": progress.total_products,
                    "progress.totalImages": progress.total_images,
                    "updatedAt": iso(now),
                }
            },
        )

    def claim_finalization(self, request_id: str, now: datetime) -> bool:
        doc = self._jobs.find_one(
            {"_id": request_id},
            projection={"status": 1, "progress": 1, "finalizeClaimedAt": 1},
        )
        if doc is None or "finalizeClaimedAt" in doc:
            return False
        if doc.get("status") != JobStatus.PROCESSING:
            return False
        progress = _progress_from(doc.get("progress"))
        if progress.processed_products < progress.total_products:
            return False
        # Counters only grow and the totals are fixed, so the guard below is the only race.
        result = self._jobs.update_one(
            {
                "_id": request_id,
                "finalizeClaimedAt": {"$exists": False},
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
        )
        result = self._jobs.update_one(
            {"_id": request_id, "status": {"$nin": [str(s) for s in TERMINAL_STATUSES]}},
            {
                "$set": {
                    "status": str(status),
                    "updatedAt": iso(now),
                    "outputCsvKey": output_csv_key,
                    "errors": [dict(e) for e in errors[:MAX_STORED_ERRORS]],
                    "webhook": _webhook_doc(hook),
                }
            },
        )
        return result.modified_count == 1

    def record_webhook_attempt(
        self, request_id: str, status_code: int | None, state: str, now: datetime
    ) -> None:
        self._jobs.update_one(
            {"_id": request_id},
            {
                "$inc": {"webhook.attempts": 1},
                "$set": {
                    "webhook.lastStatusCode": status_code,
                    "webhook.state": str(WebhookState(state)),
                },
            },
        )

    def ping(self) -> None:
        self._db.command("ping")

    # rows

    def insert_rows(self, request_id: str, chunk: int, rows: Sequence[StoredRow]) -> None:
        """Writes the chunk if it is absent: a re-run never resets rows already recorded."""
        self.ensure_indexes()
        ordered = sorted(rows, key=lambda r: r.position)
        try:
            self._rows.update_one(
                {"_id": chunk_id(request_id, chunk)},
                {
                    "$setOnInsert": {
                        "jobId": request_id,
                        "chunk": chunk,
                        "rows": [_row_doc(r) for r in ordered],
                    }
                },
                upsert=True,
            )
        except DuplicateKeyError:  # a concurrent upsert of the same chunk won
            return

    def record_row(
        self, request_id: str, position: int, results: Sequence[ImageResult], now: datetime
    ) -> Progress | None:
        size = self._chunk_size(request_id)
        if size is None:
            raise KeyError(f"job {request_id} does not exist")
        chunk, index = divmod(position, size)
        status, outputs, errors = _result_fields(results)
        cid = chunk_id(request_id, chunk)
        slot = f"rows.{index}"
        result = self._rows.update_one(
            {"_id": cid, f"{slot}.p": position, f"{slot}.st": str(RowStatus.PENDING)},
            {"$set": {f"{slot}.st": status, f"{slot}.o": outputs, f"{slot}.e": errors}},
        )
        if result.modified_count != 1:
            if self._rows.find_one({"_id": cid, f"{slot}.p": position}, {"_id": 1}) is None:
                raise KeyError(f"job {request_id} has no row at position {position}")
            return None  # recorded before: a redelivery counts nothing
        doc = self._jobs.find_one_and_update(
            {"_id": request_id},
            {
                "$inc": {
                    "progress.processedProducts": 1,
                    "progress.processedImages": len(results),
                    "progress.failedImages": len(errors),
                },
                "$set": {"updatedAt": iso(now)},
            },
            projection={"progress": 1},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            raise KeyError(f"job {request_id} does not exist")
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
