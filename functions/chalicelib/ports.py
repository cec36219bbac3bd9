"""The pipeline's dependencies, as Protocols. Adapters implement them; tests fake them."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any, Protocol, runtime_checkable

from chalicelib.domain.models import (
    ImageResult,
    Job,
    JobStatus,
    Progress,
    StoredRow,
    WebhookAttempt,
    WebhookState,
)
from chalicelib.domain.reuse import ReusableOutput
from chalicelib.domain.tenancy import ApiKeyRecord, Tenant


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


@dataclass(frozen=True)
class PresignedPost:
    url: str
    fields: dict[str, str]


class ObjectStore(Protocol):
    """One bucket of object storage."""

    @property
    def bucket(self) -> str: ...

    def put_bytes(self, key: str, data: bytes, content_type: str, cache_control: str = "") -> None:
        """Store `data` at `key`, replacing whatever was there; `cache_control` (when given)
        is the `Cache-Control` header the object is served with."""

    def put_file(self, key: str, fileobj: IO[bytes], content_type: str) -> None:
        """Store a file-like object at `key` (streamed, for large files)."""

    def open(self, key: str) -> IO[bytes]:
        """Open the object for streaming reads. Raises NotFound when absent."""

    def head(self, key: str) -> ObjectInfo | None:
        """Size and ETag of the object, or None when it does not exist."""

    def copy(self, source_key: str, key: str) -> bool:
        """Copy an object of this bucket (its content type and headers with it) to `key`, in
        the store (no download); False when the source does not exist."""

    def delete(self, key: str) -> None:
        """Remove the object at `key`; nothing happens when there is none."""

    def delete_prefix(self, prefix: str, limit: int | None = None) -> int:
        """Remove every object whose key starts with `prefix` (at most `limit` of them when
        given); how many were removed."""

    def presigned_get(self, key: str, expires_in: int) -> str:
        """A URL that answers a plain GET with the object."""

    def presigned_post(self, key: str, max_bytes: int, expires_in: int) -> PresignedPost:
        """A browser-style POST policy bound to `key`, capped at `max_bytes`."""

    def ping(self) -> None:
        """Raise when the bucket cannot be reached."""


class TaskQueue(Protocol):
    """One message queue."""

    def send_batch(self, bodies: Sequence[Mapping[str, Any]], delay_seconds: int = 0) -> None:
        """Send JSON messages, at most ten per underlying request; raises on any failure."""

    def ping(self) -> None:
        """Raise when the queue cannot be reached."""


class JobStore(Protocol):
    """Jobs and their rows. Rows are kept in fixed-size chunks, in serial order.

    Every step is safe to repeat: claims carry a lease so that a step whose Lambda died can be
    taken over, and counters only move when a row's state actually changes.

    A job's `version` (the status's and the job list's ETag) moves with every write that
    changes what its status or a listing shows: the record (status, counters, timestamps,
    errors, webhook state and attempts, cancel, retry) in the same write, and a row recorded,
    cancelled or reset just after that row's write. Rows stored by `insert_rows` move nothing
    (the status reads its page's rows while `rows_written` is False)."""

    def create_job(self, job: Job) -> bool:
        """Insert the job record; False (and no change) when the id already exists."""

    def get_job(self, request_id: str, tenant: str | None = None) -> Job | None:
        """The job (a job stored before tenants existed has `tenant` = the default tenant).
        With `tenant`, only that tenant's: one query on id and owner, so another tenant's
        job is not found exactly as an unknown id is not (no record loaded, then compared)."""

    def find_by_idempotency_key(self, tenant: str, key: str) -> Job | None:
        """The tenant's job submitted under `key` (keys are scoped to their tenant)."""

    def list_jobs(
        self,
        tenant: str,
        *,
        status: JobStatus | None = None,
        limit: int = 50,
        after: tuple[str, str] | None = None,
    ) -> list[Job]:
        """The tenant's jobs, newest first (by createdAt, then id), optionally of one
        status; `after` = the (createdAt, requestId) of the last job of the previous page."""

    def job_versions(
        self,
        tenant: str,
        *,
        status: JobStatus | None = None,
        limit: int = 50,
        after: tuple[str, str] | None = None,
    ) -> list[tuple[str, str, int]]:
        """The page `list_jobs` would answer, as (requestId, createdAt, version) of each job:
        what the job list's ETag is made of, read without the records themselves."""

    def claim_action(
        self, request_id: str, action: str, now: datetime, interval: timedelta
    ) -> datetime | None:
        """Rate-limit a user's action on a job (retry, redeliver): None when it may go now
        (and now is remembered), else when it may next."""

    def claim_ingest(self, request_id: str, now: datetime, lease: timedelta) -> bool:
        """Take the job's ingest (validation, rows, fan-out) unless someone holds a claim
        younger than `lease`, or the fan-out is already done."""

    def insert_rows(self, request_id: str, chunk: int, rows: Sequence[StoredRow]) -> None:
        """Write one chunk of rows (idempotent: rewriting a chunk with the same rows is fine)."""

    def start_processing(self, request_id: str, progress: Progress, now: datetime) -> bool:
        """Record the totals and move a pending job to `processing`, its rows not yet all
        written (`rows_written` False). True when this call made the move (the job is
        accepted), False when it was already past pending."""

    def record_fanout(self, request_id: str, sent: int, done: bool, now: datetime) -> None:
        """Remember that the messages of rows at positions < `sent` went out; `done`: every
        row is stored and its message sent (`fanout_done` and `rows_written`). Raises
        JobGone when the job no longer exists (deleted while its ingest ran)."""

    def record_row(
        self, request_id: str, position: int, results: Sequence[ImageResult], now: datetime
    ) -> Progress | None:
        """Record a row's results once. Returns the job's progress after counting this row,
        or None when the row had already been recorded (a redelivery): nothing is counted.
        Raises JobGone when the job or its row no longer exists."""

    def claim_finalization(self, request_id: str, now: datetime, lease: timedelta) -> bool:
        """True for one caller once all rows are recorded (again after `lease`, should the
        claimer have died before finishing)."""

    def iter_rows(self, request_id: str) -> Iterator[StoredRow]:
        """Every row in serial order, streamed chunk by chunk."""

    def list_rows(self, request_id: str, start: int, limit: int) -> list[StoredRow]:
        """Rows at positions [start, start+limit), in serial order."""

    def recount(self, request_id: str, now: datetime) -> Progress | None:
        """Recompute the processed counters from the rows themselves (the sweeper's repair of
        a crash between a row's update and its counter); None when the job is gone."""

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
        """Set the terminal status once; False when the job was already terminal. A webhook
        URL leaves the webhook `pending`, due at once."""

    def schedule_webhook(self, request_id: str, due: datetime) -> None:
        """When the next attempt is due (the sweeper re-sends overdue ones)."""

    def record_webhook_attempt(
        self,
        request_id: str,
        attempt: WebhookAttempt,
        state: WebhookState,
        next_attempt_at: datetime | None,
    ) -> None: ...

    def redeliver_webhook(self, request_id: str, webhook_id: str, now: datetime) -> bool:
        """Make a terminal job's webhook pending again (by hand); False when not terminal."""

    def reopen_failed(self, request_id: str, generation: int, now: datetime) -> bool:
        """Move a terminal job with failed images back to `processing` as `generation` (its
        cancel request, if any, forgotten); False when it is not terminal, was cancelled, has
        no failed image, or was reopened already."""

    def reset_failed_rows(self, request_id: str, now: datetime) -> Iterator[StoredRow]:
        """Set each failed row back to pending (its counters taken off the job), yielding it."""

    def request_cancel(self, request_id: str, now: datetime) -> bool:
        """Mark the job to be cancelled (`cancel_requested_at`); False, and no change, when it
        is gone or already terminal. Asking again moves nothing but the time."""

    def cancel_rows(
        self, request_id: str, now: datetime, positions: Sequence[int] | None = None
    ) -> None:
        """Every row still pending (of `positions`, when given) becomes `cancelled`; the
        job's counters do not move, and a row recorded meanwhile stays as recorded."""

    def cancelled_jobs(self, request_ids: Sequence[str]) -> set[str]:
        """Those of these jobs that are cancelled, or not terminal with a cancel asked for:
        their rows must not start. One read for them all."""

    def jobs_stopped_or_gone(self, request_ids: Sequence[str]) -> tuple[set[str], set[str]]:
        """(cancelled, gone): `cancelled_jobs`, and those of these jobs that do not exist
        (deleted, or expired), from the same one read."""

    def delete_rows(self, request_id: str) -> None:
        """Remove the job's rows (a deletion's first step: a worker that stores an output
        after it finds the job gone when it records the row, and removes the output)."""

    def delete_job(self, request_id: str) -> bool:
        """Remove the job's rows, then its record; False when there was no record."""

    def find_stalled(self, before: datetime, limit: int) -> list[Job]:
        """Jobs not terminal whose last change is older than `before`."""

    def find_webhooks_due(self, before: datetime, limit: int) -> list[Job]:
        """Terminal jobs whose webhook is pending and was due before `before`."""

    def ping(self) -> None: ...

    def close(self) -> None:
        """Let go of connections (the wiring replaces these dependencies)."""


class TenantStore(Protocol):
    """Tenants and the hashes of their API keys."""

    def put_tenant(self, tenant: Tenant) -> None:
        """Create or replace the tenant's record."""

    def get_tenant(self, name: str) -> Tenant | None: ...

    def list_tenants(self) -> list[Tenant]: ...

    def add_api_key(self, record: ApiKeyRecord) -> None:
        """Store a key's record; raises ValueError when its id is taken."""

    def find_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """The record under this id (the index), revoked or not."""

    def list_api_keys(self, tenant: str | None = None) -> list[ApiKeyRecord]: ...

    def revoke_api_key(self, key_id: str, now: datetime) -> bool:
        """Mark the key revoked; False when there is no such key or it was revoked already."""


class ReuseIndex(Protocol):
    """Where each of a tenant's outputs was last produced, by content address."""

    def find(self, tenant: str, address: str) -> ReusableOutput | None: ...

    def remember(self, tenant: str, address: str, output: ReusableOutput) -> None:
        """Point the address at this (newer) copy."""

    def remember_all(self, entries: Sequence[tuple[str, str, ReusableOutput]]) -> None:
        """`remember` each (tenant, address, output), in one call to the store."""

    def reuse_key(self, tenant: str) -> str | None:
        """The tenant's reuse key, made on first use; None for a tenant with no record."""


class CdnInvalidator(Protocol):
    """The CDN in front of the outputs (CloudFront), told to forget what was deleted."""

    def invalidate(self, paths: Sequence[str]) -> None:
        """Ask the CDN to drop these paths (`/outputs/<id>/*`) from its caches; raises when
        it refuses (the caller reports it, so that the deletion can be asked for again)."""


class SecretSource(Protocol):
    """Secrets read at runtime (Secrets Manager), cached for a while per container."""

    def get(self, secret_id: str) -> str | None:
        """The secret's current value, or None when there is no such secret."""


class SecretWriter(Protocol):
    """Where the operator's commands keep secrets (Secrets Manager)."""

    def put(self, secret_id: str, value: str) -> None:
        """Create the secret, or store `value` as its new current version."""

    def read(self, secret_id: str) -> str | None:
        """The current value, uncached; None when absent."""


class UsageKeys(Protocol):
    """API Gateway's usage plan: a tenant's requests are throttled under its key."""

    def create(self, tenant: str) -> str:
        """A new API key value for the tenant, attached to the stack's usage plan."""


@runtime_checkable
class BatchRecorder(Protocol):
    """A JobStore that can also record several rows of one job in few operations
    (MongoJobStore). The worker asks with `isinstance`; a store without it (the in-memory
    fake) has each row recorded alone, with `record_row`."""

    def record_rows(
        self,
        request_id: str,
        rows: Sequence[tuple[int, Sequence[ImageResult]]],
        now: datetime,
    ) -> list[Progress | None]:
        """`record_row` for each row, in order: per row, the job's progress after counting it,
        or None when it had been recorded already."""


class ImageFetcher(Protocol):
    def fetch(self, url: str) -> bytes:
        """Download one image. Raises ImageFailure with the contract's code."""


@dataclass(frozen=True)
class DeliveryResult:
    """What one webhook POST came to: the receiver's status code, or None and `error` (why
    there was no answer: `<problem>: <detail>`, a connection failure's detail alone)."""

    status_code: int | None
    error: str = ""
    retry_after: str = ""  # the answer's Retry-After header as sent (seconds or an HTTP-date)
    timed_out: bool = False  # no answer before the timeout


@dataclass(frozen=True)
class Admission:
    """Leave to make one webhook attempt to `origin`: `slot` when it holds the one slot of an
    origin that is slow (it timed out lately), `known` when the origin has a record."""

    origin: str
    slot: bool = False
    known: bool = False


class WebhookOrigins(Protocol):
    """How webhook receivers' origins (scheme, host and port) have been answering, shared by
    every webhook invocation. An origin whose attempt timed out is slow: it gets one attempt
    at a time, until an attempt is answered in time or `cooldown` passes without a timeout,
    so that a receiver that hangs takes one of the pollers, not all of them."""

    def admit(self, origin: str, now: datetime, hold: timedelta) -> Admission | None:
        """Leave for an attempt now; for a slow origin its one slot, held until the attempt is
        settled or for `hold` at most (should the attempt's invocation die). None when a slow
        origin's slot is taken: the attempt waits."""
        ...

    def settle(
        self,
        admission: Admission,
        now: datetime,
        *,
        answered: bool,
        timed_out: bool,
        cooldown: timedelta,
    ) -> None:
        """The attempt ended: timed out, the origin is slow until `now + cooldown`; answered
        (any status), it is not slow any more; the slot, if held, is free again."""
        ...


class EventPublisher(Protocol):
    def publish(self, detail_type: str, detail: Mapping[str, object]) -> None:
        """Send one job lifecycle event (EventBridge); never raises for delivery failures."""


class WebhookSender(Protocol):
    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> DeliveryResult:
        """POST once (no redirects followed); never raises for network failures."""


class WorkPool(Protocol):
    """Threads that run the images of every batch in the container, fairly between tenants,
    then between each tenant's keys (jobs): one tenant's many jobs do not take more of the
    threads than another tenant's one, and one job's slow images do not make another job's
    wait behind all of them."""

    def run[T](self, key: str, work: Callable[[], T], *, tenant: str = "") -> Future[T]:
        """Run `work` on a pool thread; the next free thread takes the tenant waiting
        longest, and of its keys the one waiting longest."""
        ...


class MemoryGate(Protocol):
    """The memory the images in flight share (adapters/memory_budget.py): an image takes
    its estimate before its pixels are decoded and gives it back once encoded."""

    def take(self, nbytes: int, timeout: float | None = None) -> None:
        """Wait (at most `timeout` seconds; None: as long as it takes) until `nbytes` fit
        beside what is held, then hold them. Raises ImageFailure(`too_large_to_encode`)
        when they never could, OutOfTime when the wait ends first."""
        ...

    def give_back(self, nbytes: int) -> None: ...

    def could_hold(self, nbytes: int) -> bool:
        """Whether `nbytes` would ever fit (alone, once the others gave theirs back)."""
        ...


class Clock(Protocol):
    def now(self) -> datetime: ...


class IdFactory(Protocol):
    def __call__(self) -> str: ...
