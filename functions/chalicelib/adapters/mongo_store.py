"""MongoDB behind the JobStore port: one document per job, one per chunk of rows.

A job of N rows writes 1 + ceil(N / chunkSize) documents; recording a row is one positional
update of its chunk and one `$inc` of the job's counters; recording a worker's batch of rows
(`record_rows`) is one update per chunk touched and one `$inc` for the batch.

Retention (JOB_RETENTION_DAYS): with a `retention`, the job and its chunks carry `expireAt`, a
BSON date (a TTL index needs a date, not the ISO strings of the other timestamps): creation
plus the retention, then, when the job ends, its end plus the retention. A TTL index on each
collection deletes them once it passes (MongoDB looks every 60 s). Without one nothing
expires; documents written with one keep their `expireAt`.

Where each part is:
- mongo_codecs.py: the documents, to and from the domain's values;
- mongo_indexes.py: the indexes and what each serves;
- mongo_collections.py: what the queries share (collections, expiry, chunk sizes);
- mongo_job_queries.py: jobs: create, find, list, claims, start, end, cancel, retry, delete,
  the sweeper's stalled jobs;
- mongo_row_queries.py: rows: store, record once, read, cancel, reset, recount;
- mongo_webhook_queries.py: a job's webhook state and the sweeper's overdue webhooks.
The rules these queries apply are the domain's (domain/models.py).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pymongo import MongoClient
from pymongo.database import Database

from chalicelib.adapters.mongo_codecs import Document
from chalicelib.adapters.mongo_job_queries import JobQueries
from chalicelib.adapters.mongo_row_queries import RowQueries
from chalicelib.adapters.mongo_webhook_queries import WebhookQueries

APP_NAME = "image-pipeline"


class MongoJobStore(JobQueries, RowQueries, WebhookQueries):
    """JobStore over pymongo. Thread-safe: share one per process (the client pools)."""

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

    def ping(self) -> None:
        self._db.command("ping")
