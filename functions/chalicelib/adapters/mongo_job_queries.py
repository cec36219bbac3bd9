"""The MongoJobStore's queries of job documents: create and find, the job list, the claims
(ingest, finalization, a user's action), the start, the end, the cancel, the retry, the
deletion and the sweeper's stalled jobs. Each rule they apply is the domain's
(domain/models.py); where it must hold inside one atomic update (a compare-and-set), the
filter is built from the domain's constants, and tests/contract holds this store and the
in-memory one to the same rule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from pymongo import DESCENDING
from pymongo.errors import DuplicateKeyError

from chalicelib.adapters.mongo_codecs import (
    EXPIRE_AT,
    Document,
    job_doc,
    job_from,
    webhook_doc,
)
from chalicelib.adapters.mongo_collections import BUMP, MongoCollections, utcnow
from chalicelib.domain.models import (
    ACTIVE_STATUSES,
    FINALIZES_FROM,
    RETRIABLE_STATUSES,
    TERMINAL_STATUSES,
    Job,
    JobStatus,
    Progress,
    WebhookInfo,
    WebhookState,
    capped_errors,
    claim_cutoff,
    claim_is_free,
)
from chalicelib.domain.timefmt import iso, parse_iso
from chalicelib.errors import JobGone


def _among(statuses: frozenset[JobStatus]) -> Document:
    return {"$in": sorted(str(s) for s in statuses)}


def _not_ended() -> Document:
    return {"$nin": sorted(str(s) for s in TERMINAL_STATUSES)}


def _claim_free(field: str, now: datetime, lease: timedelta) -> Document:
    """`claim_is_free` of `field` as a filter: never taken, or taken before the cutoff."""
    return {"$or": [{field: {"$exists": False}}, {field: {"$lt": claim_cutoff(now, lease)}}]}


class JobQueries(MongoCollections):
    # finding jobs

    def create_job(self, job: Job) -> bool:
        self.ensure_indexes()
        doc = job_doc(job)
        expire_at = self._expire_at(parse_iso(job.created_at) if job.created_at else utcnow())
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
        return None if doc is None else job_from(doc, self._default_tenant)

    def find_by_idempotency_key(self, tenant: str, key: str) -> Job | None:
        if not key:
            return None
        self.ensure_indexes()
        doc = self._jobs.find_one({"idempotencyKey": key, **self._owner(tenant)})
        return None if doc is None else job_from(doc, self._default_tenant)

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
            return [job_from(doc, self._default_tenant) for doc in cursor]

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

    # claims

    def claim_action(
        self, request_id: str, action: str, now: datetime, interval: timedelta
    ) -> datetime | None:
        """One atomic update: `action_allowed`, as a filter."""
        field = f"actions.{action}"
        cutoff = claim_cutoff(now, interval)
        claimed = self._jobs.find_one_and_update(
            {"_id": request_id, "$or": [{field: {"$exists": False}}, {field: {"$lte": cutoff}}]},
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
        """One atomic update: `Job.may_ingest` and `claim_is_free`, as a filter."""
        result = self._jobs.update_one(
            {
                "_id": request_id,
                "status": _not_ended(),
                "fanout.done": {"$ne": True},
                **_claim_free("ingestClaimedAt", now, lease),
            },
            {"$set": {"ingestClaimedAt": iso(now), "updatedAt": iso(now)}, **BUMP},
        )
        return result.modified_count == 1

    def claim_finalization(self, request_id: str, now: datetime, lease: timedelta) -> bool:
        """`Job.ready_to_finalize` and `claim_is_free` on the job as read; then the claim is
        taken by one compare-and-set on the values read."""
        doc = self._jobs.find_one(
            {"_id": request_id},
            projection={"status": 1, "progress": 1, "finalizeClaimedAt": 1},
        )
        if doc is None:
            return False
        job = job_from(doc, self._default_tenant)
        if not job.ready_to_finalize or not claim_is_free(job.finalize_claimed_at, now, lease):
            return False
        claimed = doc.get("finalizeClaimedAt")
        result = self._jobs.update_one(
            {
                "_id": request_id,
                "finalizeClaimedAt": claimed if claimed else {"$exists": False},
                "status": str(FINALIZES_FROM),
                "progress.processedProducts": {"$gte": job.progress.total_products},
            },
            {"$set": {"finalizeClaimedAt": iso(now)}},
        )
        return result.modified_count == 1

    # a job's life

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
                **BUMP,
            },
        )
        return result.modified_count == 1

    def record_fanout(self, request_id: str, sent: int, done: bool, now: datetime) -> None:
        changes: Document = {"fanout.done": done, "updatedAt": iso(now)}
        if done:
            changes["rowsWritten"] = True
        result = self._jobs.update_one(
            {"_id": request_id}, {"$max": {"fanout.sent": sent}, "$set": changes, **BUMP}
        )
        if result.matched_count == 0:
            raise JobGone(request_id)

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
        changes: Document = {
            "status": str(status),
            "updatedAt": iso(now),
            "outputCsvKey": output_csv_key,
            "errors": capped_errors(errors),
            "webhook": webhook_doc(WebhookInfo.at_end(webhook_url, webhook_id, now)),
        }
        expire_at = self._expire_at(now)
        if expire_at is not None:
            changes[EXPIRE_AT] = expire_at
        result = self._jobs.update_one(
            {"_id": request_id, "status": _not_ended()}, {"$set": changes, **BUMP}
        )
        if result.modified_count != 1:
            return False
        if expire_at is not None:  # the rows go with their job, not before it
            self._rows.update_many({"jobId": request_id}, {"$set": {EXPIRE_AT: expire_at}})
        return True

    def reopen_failed(self, request_id: str, generation: int, now: datetime) -> bool:
        """One atomic update: `Job.retriable_as(generation)`, as a filter."""
        result = self._jobs.update_one(
            {
                "_id": request_id,
                "status": _among(RETRIABLE_STATUSES),
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
                **BUMP,
            },
        )
        return result.modified_count == 1

    # cancel and delete

    def request_cancel(self, request_id: str, now: datetime) -> bool:
        result = self._jobs.update_one(
            {"_id": request_id, "status": _not_ended()},
            {"$set": {"cancelRequestedAt": iso(now), "updatedAt": iso(now)}, **BUMP},
        )
        return result.matched_count == 1

    def cancelled_jobs(self, request_ids: Sequence[str]) -> set[str]:
        return self.jobs_stopped_or_gone(request_ids)[0]

    def jobs_stopped_or_gone(self, request_ids: Sequence[str]) -> tuple[set[str], set[str]]:
        """One find by `_id` (the primary index), two fields each; the rule is
        `Job.cancelled_or_cancelling`. An id the find does not return is gone."""
        wanted = set(request_ids)
        if not wanted:
            return set(), set()
        cursor = self._jobs.find(
            {"_id": {"$in": sorted(wanted)}},
            projection={"status": 1, "cancelRequestedAt": 1},
        )
        with cursor:
            found = [job_from(doc, self._default_tenant) for doc in cursor]
        cancelled = {job.request_id for job in found if job.cancelled_or_cancelling}
        return cancelled, wanted - {job.request_id for job in found}

    def delete_job(self, request_id: str) -> bool:
        """The rows go first: a deletion that dies half way leaves the record, and asking
        again finishes it."""
        self._rows.delete_many({"jobId": request_id})
        deleted = self._jobs.delete_one({"_id": request_id}).deleted_count == 1
        self._forget_chunk_size(request_id)
        return deleted

    # the sweeper

    def find_stalled(self, before: datetime, limit: int) -> list[Job]:
        """`Job.stalled(before)`, as a filter (index status_updatedAt)."""
        self.ensure_indexes()
        cursor = self._jobs.find(
            {"status": _among(ACTIVE_STATUSES), "updatedAt": {"$lt": iso(before)}}
        ).limit(limit)
        with cursor:
            return [job_from(doc, self._default_tenant) for doc in cursor]
