"""What the MongoJobStore's query modules share: the two collections, the indexes made once,
the retention's expiry, the tenant filter and the per-process cache of chunk sizes."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database

from chalicelib.adapters.mongo_codecs import JOBS, ROWS, Document
from chalicelib.adapters.mongo_indexes import create_indexes
from chalicelib.domain.models import UNSTATED_CHUNK_SIZE

_CHUNK_SIZE_CACHE_LIMIT = 4096

# Every write that changes what a status or a listing shows moves the job's `version` (the
# ETag's source) in the same update; a row's write moves it just after (never before: a read
# between would pair the new version with the old row for good).
BUMP: dict[str, Any] = {"$inc": {"version": 1}}


def utcnow() -> datetime:
    return datetime.now(UTC)


class MongoCollections:
    """The state of a MongoJobStore. Thread-safe: share one per process (the client pools)."""

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

    def ensure_indexes(self) -> None:
        """Create the indexes once per store (one store per process)."""
        if self._indexes_ready:
            return
        with self._lock:
            if self._indexes_ready:
                return
            create_indexes(self._jobs, self._rows)
            self._indexes_ready = True

    def _expire_at(self, start: datetime) -> datetime | None:
        """When documents kept from `start` expire (a UTC datetime: stored as a BSON date)."""
        if self._retention is None:
            return None
        return start.astimezone(UTC) + self._retention

    def _owner(self, tenant: str) -> Document:
        """The filter for a tenant's jobs: the default tenant's include those stored without
        a tenant (before tenants existed)."""
        if tenant == self._default_tenant:
            return {"$or": [{"tenant": tenant}, {"tenant": {"$exists": False}}]}
        return {"tenant": tenant}

    # the chunk size of a job never changes: read it once per process

    def _remember_chunk_size(self, request_id: str, size: int) -> None:
        if len(self._chunk_sizes) >= _CHUNK_SIZE_CACHE_LIMIT:
            self._chunk_sizes.clear()
        self._chunk_sizes[request_id] = size

    def _forget_chunk_size(self, request_id: str) -> None:
        self._chunk_sizes.pop(request_id, None)

    def _chunk_size(self, request_id: str) -> int | None:
        size = self._chunk_sizes.get(request_id)
        if size is None:
            doc = self._jobs.find_one({"_id": request_id}, {"chunkSize": 1})
            if doc is None:
                return None
            size = max(1, int(doc.get("chunkSize", UNSTATED_CHUNK_SIZE)))
            self._remember_chunk_size(request_id, size)
        return size
