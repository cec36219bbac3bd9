"""The indexes of the `jobs` and `rows` collections, and the queries each one serves."""

from __future__ import annotations

from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection

from chalicelib.adapters.mongo_codecs import EXPIRE_AT, Document

TTL_INDEX = "expireAt_ttl"
# The Idempotency-Key alone, before keys were scoped to their tenant: dropped when found.
_OLD_IDEMPOTENCY_INDEX = "idempotencyKey_unique"


def create_indexes(jobs: Collection[Document], rows: Collection[Document]) -> None:
    """Create every index (creating one that exists changes nothing)."""
    # a job's chunks, in order (rows pages, streams, cancels)
    rows.create_index([("jobId", ASCENDING), ("chunk", ASCENDING)], name="jobId_chunk")
    # the sweeper's stalled jobs
    jobs.create_index([("status", ASCENDING), ("updatedAt", ASCENDING)], name="status_updatedAt")
    # the sweeper's overdue webhooks
    jobs.create_index(
        [("webhook.state", ASCENDING), ("webhook.nextAttemptAt", ASCENDING)], name="webhook_due"
    )
    # Idempotency-Keys are scoped to their tenant (jobs from before tenants have none stored
    # and count as the default tenant's: find_by_idempotency_key looks there too)
    if _OLD_IDEMPOTENCY_INDEX in jobs.index_information():
        jobs.drop_index(_OLD_IDEMPOTENCY_INDEX)
    jobs.create_index(
        [("tenant", ASCENDING), ("idempotencyKey", ASCENDING)],
        name="tenant_idempotencyKey_unique",
        unique=True,
        partialFilterExpression={"idempotencyKey": {"$exists": True}},
    )
    # a tenant's jobs, newest first (the job list)
    jobs.create_index(
        [("tenant", ASCENDING), ("createdAt", DESCENDING), ("_id", DESCENDING)],
        name="tenant_createdAt",
    )
    # JOB_RETENTION_DAYS: a document goes once its expireAt passes (none: it stays)
    for collection in (jobs, rows):
        collection.create_index(EXPIRE_AT, name=TTL_INDEX, expireAfterSeconds=0)
