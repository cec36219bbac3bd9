"""The pipeline's vocabulary: statuses, rows, image results, and the rules of a job's state
(when it is being cancelled, ready to finalize, stalled, ...). Plain data, no I/O.

Each rule is written here once: both JobStores (the MongoDB one builds its atomic filters
from these constants) and the services ask these methods, and tests/contract holds both stores
to them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from chalicelib.domain.output_options import OutputOptions
from chalicelib.domain.timefmt import iso


class JobStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS, JobStatus.FAILED, JobStatus.CANCELLED}
)
# Not ended: what the sweeper looks at when it stops moving (pending, processing).
ACTIVE_STATUSES = frozenset(JobStatus) - TERMINAL_STATUSES
# The one status a job finalizes from (its rows are all stored and being processed).
FINALIZES_FROM = JobStatus.PROCESSING
# Ended otherwise than cancelled: such a job, with failed images, may be retried.
RETRIABLE_STATUSES = TERMINAL_STATUSES - {JobStatus.CANCELLED}

# A job keeps at most this many errors (a refused CSV's problems): its status and its webhook
# list the first ones.
MAX_JOB_ERRORS = 1000
# A job's status shows its webhook's latest attempts, this many at most.
MAX_WEBHOOK_HISTORY = 20
# The rows per chunk of a job that states none (the earliest versions stored none).
UNSTATED_CHUNK_SIZE = 50


class RowStatus(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def recorded(self) -> bool:
        """Processed, either way: its results are stored and counted in the job's progress
        (a pending row is not yet, a cancelled one never was)."""
        return self in RECORDED_ROW_STATUSES


RECORDED_ROW_STATUSES = frozenset({RowStatus.COMPLETED, RowStatus.FAILED})


class ImageErrorCode(StrEnum):
    """Why one image failed; the contract's closed list."""

    BLOCKED_ADDRESS = "blocked_address"
    INVALID_URL = "invalid_url"
    HTTP_ERROR = "http_error"
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"
    NOT_AN_IMAGE = "not_an_image"
    TOO_MANY_PIXELS = "too_many_pixels"
    DECODE_FAILED = "decode_failed"
    FETCH_FAILED = "fetch_failed"
    # it cannot fit in the worker's memory (MemorySize), even alone
    TOO_LARGE_TO_ENCODE = "too_large_to_encode"


class WebhookState(StrEnum):
    NONE = "none"
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True)
class CsvProblem:
    """One problem found in an input CSV. `row` is the 1-based line (header = 1)."""

    row: int
    column: str | None
    message: str

    def to_dict(self) -> dict[str, object]:
        return {"row": self.row, "column": self.column, "message": self.message}


@dataclass(frozen=True)
class ProductRow:
    """One valid input row. `urls` are trimmed and in the order given (duplicates kept)."""

    line: int
    serial: int
    name: str
    urls: tuple[str, ...]


@dataclass(frozen=True)
class ImageResult:
    """What became of one input image: an output key, or an error code and message. An
    image made by `quality: "auto"` has the quality chosen and the SSIMULACRA2 score it
    reached (None otherwise)."""

    url: str
    output_key: str = ""
    error_code: ImageErrorCode | None = None
    error_message: str = ""
    bytes_in: int = 0
    bytes_out: int = 0
    quality: int | None = None
    score: float | None = None

    @property
    def ok(self) -> bool:
        return self.error_code is None


@dataclass(frozen=True)
class Progress:
    total_products: int = 0
    processed_products: int = 0
    total_images: int = 0
    processed_images: int = 0
    failed_images: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    @property
    def every_row_recorded(self) -> bool:
        """Every row of the job is processed, either way (the job may be finalized)."""
        return self.processed_products >= self.total_products

    def plus(self, counted: Progress, sign: int = 1) -> Progress:
        """These counters moved by the processed counts of `counted` (rows just recorded;
        sign -1 takes them off). The totals stay."""
        return replace(
            self,
            processed_products=self.processed_products + sign * counted.processed_products,
            processed_images=self.processed_images + sign * counted.processed_images,
            failed_images=self.failed_images + sign * counted.failed_images,
            bytes_in=self.bytes_in + sign * counted.bytes_in,
            bytes_out=self.bytes_out + sign * counted.bytes_out,
        )

    @property
    def percent(self) -> float:
        if self.total_images:
            return round(100.0 * self.processed_images / self.total_images, 1)
        if self.total_products:
            return round(100.0 * self.processed_products / self.total_products, 1)
        return 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "totalProducts": self.total_products,
            "processedProducts": self.processed_products,
            "totalImages": self.total_images,
            "processedImages": self.processed_images,
            "failedImages": self.failed_images,
            "percent": self.percent,
            "bytesIn": self.bytes_in,
            "bytesOut": self.bytes_out,
        }


@dataclass(frozen=True)
class WebhookAttempt:
    """One POST of a job's final event, as the status shows it."""

    attempt: int
    at: str
    status_code: int | None
    error: str = ""
    duration_ms: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "attempt": self.attempt,
            "at": self.at,
            "statusCode": self.status_code,
            "error": self.error,
            "durationMs": self.duration_ms,
        }


@dataclass
class WebhookInfo:
    state: WebhookState = WebhookState.NONE
    attempts: int = 0
    last_status_code: int | None = None
    webhook_id: str = ""
    url: str = ""
    next_attempt_at: str = ""
    history: list[WebhookAttempt] = field(default_factory=list)

    @classmethod
    def at_end(cls, url: str, webhook_id: str, now: datetime) -> WebhookInfo:
        """A job's webhook as it ends: with a URL, pending and due at once, no attempt yet
        (a retried job's new final event counts its attempts afresh); without, none."""
        return cls(
            state=WebhookState.PENDING if url else WebhookState.NONE,
            webhook_id=webhook_id,
            url=url,
            next_attempt_at=iso(now) if url else "",
        )


@dataclass
class Job:
    """The job record, as the store returns it (rows live elsewhere, in chunks)."""

    request_id: str
    status: JobStatus
    created_at: str
    updated_at: str
    input_key: str
    webhook_url: str = ""
    source: str = "api"
    tenant: str = ""  # its owner; the store reads a job stored before tenants as the default's
    options: OutputOptions = field(default_factory=OutputOptions)
    progress: Progress = field(default_factory=Progress)
    errors: list[dict[str, object]] = field(default_factory=list)
    output_csv_key: str = ""
    webhook: WebhookInfo = field(default_factory=WebhookInfo)
    chunk_size: int = UNSTATED_CHUNK_SIZE
    idempotency_key: str = ""
    body_digest: str = ""
    generation: int = 0  # bumped by each retry of the failed images
    fanout_sent: int = 0  # rows whose messages are known to be sent, in position order
    fanout_done: bool = False
    # every row of the CSV is stored (False from the totals until the first fan-out is done:
    # the first run stores each chunk and sends its messages before storing the next)
    rows_written: bool = True
    ingest_claimed_at: str = ""
    finalize_claimed_at: str = ""
    # when someone asked to cancel the job ("" never): no new image of it starts from then on
    cancel_requested_at: str = ""
    # moved by every write that changes what the job's status or a listing shows (the record,
    # a row recorded, cancelled or reset), after the row's own write: the status's ETag
    version: int = 0

    # --- the job's state, asked by both stores and the services ---------------------------

    @property
    def cancelling(self) -> bool:
        """A cancel was asked for and the job has not ended yet (nor been revived)."""
        return cancelling(self.status, self.cancel_requested_at)

    @property
    def cancelled_or_cancelling(self) -> bool:
        """Cancelled, or being cancelled: no new image of it starts."""
        return cancelled_or_cancelling(self.status, self.cancel_requested_at)

    @property
    def may_ingest(self) -> bool:
        """Its rows may still be written and sent (the ingest claim's condition)."""
        return not self.status.terminal and not self.fanout_done

    @property
    def ready_to_finalize(self) -> bool:
        """Processing, and every row recorded (the finalization claim's condition, its lease
        aside)."""
        return self.status == FINALIZES_FROM and self.progress.every_row_recorded

    def retriable_as(self, generation: int) -> bool:
        """Its failed images may be run again as `generation`: it ended otherwise than
        cancelled, with failed images, and was not retried as that generation already."""
        return (
            self.status in RETRIABLE_STATUSES
            and self.progress.failed_images > 0
            and self.generation < generation
        )

    def stalled(self, before: datetime) -> bool:
        """Not ended, and unchanged since before `before` (the sweeper repairs it)."""
        return self.status in ACTIVE_STATUSES and self.updated_at < iso(before)

    def webhook_due(self, before: datetime) -> bool:
        """Ended, its webhook still to be delivered, and due before `before`."""
        return (
            self.status.terminal
            and self.webhook.state == WebhookState.PENDING
            and self.webhook.next_attempt_at < iso(before)
        )

    @property
    def webhook_redeliverable(self) -> bool:
        """Its webhook may be sent again by hand: it ended, has a webhook, and its delivery is
        settled (not pending)."""
        return (
            self.status.terminal
            and bool(self.webhook.url)
            and self.webhook.state != WebhookState.PENDING
        )


def cancelling(status: JobStatus, cancel_requested_at: str) -> bool:
    """`Job.cancelling` from the two fields it reads (a store that reads only those)."""
    return bool(cancel_requested_at) and not status.terminal


def cancelled_or_cancelling(status: JobStatus, cancel_requested_at: str) -> bool:
    """`Job.cancelled_or_cancelling` from the two fields it reads."""
    return status == JobStatus.CANCELLED or cancelling(status, cancel_requested_at)


def claim_cutoff(now: datetime, lease: timedelta) -> str:
    """A claim taken before this moment (ISO, as claims are stored) has run out of lease."""
    return iso(now - lease)


def claim_is_free(claimed_at: str, now: datetime, lease: timedelta) -> bool:
    """A claim (ingest, finalization) may be taken: never taken, or its taker's lease ran out
    (the taker died). A claim taken exactly `lease` ago is still held."""
    return not claimed_at or claimed_at < claim_cutoff(now, lease)


def action_allowed(last_at: str, now: datetime, interval: timedelta) -> bool:
    """A user's action on a job (a retry, a redelivery) may be taken: never taken, or last
    taken `interval` ago or longer (exactly `interval` ago is allowed, unlike a claim's
    lease)."""
    return not last_at or last_at <= claim_cutoff(now, interval)


def capped_errors(errors: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
    """The errors a job keeps: the first MAX_JOB_ERRORS."""
    return [dict(e) for e in errors[:MAX_JOB_ERRORS]]


def new_job(
    request_id: str,
    now: datetime,
    *,
    source: str,
    chunk_size: int,
    tenant: str,
    key: str | None = None,
    options: OutputOptions | None = None,
    webhook_url: str = "",
    idempotency_key: str = "",
    body_digest: str = "",
) -> Job:
    """A job just accepted: pending, created `now`, its CSV at `key` (by default where an
    upload puts it, `input_key(request_id)`)."""
    created = iso(now)
    return Job(
        request_id=request_id,
        status=JobStatus.PENDING,
        created_at=created,
        updated_at=created,
        input_key=input_key(request_id) if key is None else key,
        webhook_url=webhook_url,
        source=source,
        tenant=tenant,
        options=options or OutputOptions(),
        chunk_size=chunk_size,
        idempotency_key=idempotency_key,
        body_digest=body_digest,
    )


@dataclass(frozen=True)
class RowOutcome:
    """What recording a row writes, from its images' results (one per input URL, in order):
    failed when any image failed; an output key per image ("" for one that failed), an error
    per failed image, and each image's bytes in and out; when any image was made by `auto`,
    each image's quality and score (None for one that failed), else nothing of them."""

    status: RowStatus
    output_keys: tuple[str, ...]
    errors: tuple[dict[str, str], ...]
    bytes_in: tuple[int, ...]
    bytes_out: tuple[int, ...]
    qualities: tuple[int | None, ...] = ()
    scores: tuple[float | None, ...] = ()

    @classmethod
    def of(cls, results: Sequence[ImageResult]) -> RowOutcome:
        failed = [r for r in results if not r.ok]
        searched = any(r.ok and r.quality is not None for r in results)
        return cls(
            status=RowStatus.FAILED if failed else RowStatus.COMPLETED,
            output_keys=tuple(r.output_key if r.ok else "" for r in results),
            errors=tuple(
                {
                    "url": r.url,
                    "code": r.error_code.value if r.error_code is not None else "",
                    "message": r.error_message,
                }
                for r in failed
            ),
            bytes_in=tuple(r.bytes_in for r in results),
            bytes_out=tuple(r.bytes_out for r in results),
            qualities=tuple(r.quality if r.ok else None for r in results) if searched else (),
            scores=tuple(r.score if r.ok else None for r in results) if searched else (),
        )

    def counted(self) -> Progress:
        """What it adds to the job's processed counters."""
        return _row_counts(len(self.output_keys), self.errors, self.bytes_in, self.bytes_out)


@dataclass(frozen=True)
class StoredRow:
    """A product row as recorded: inputs, per-image outputs and errors (and, for images made
    by `auto`, their qualities and scores: RowOutcome)."""

    position: int
    serial: int
    name: str
    urls: tuple[str, ...]
    status: RowStatus = RowStatus.PENDING
    output_keys: tuple[str, ...] = ()
    errors: tuple[dict[str, str], ...] = ()
    bytes_in: tuple[int, ...] = ()
    bytes_out: tuple[int, ...] = ()
    qualities: tuple[int | None, ...] = ()
    scores: tuple[float | None, ...] = ()

    @property
    def recorded(self) -> bool:
        """Processed, either way (RowStatus.recorded)."""
        return self.status.recorded

    def recorded_as(self, outcome: RowOutcome) -> StoredRow:
        """This row with its outcome recorded."""
        return replace(
            self,
            status=outcome.status,
            output_keys=outcome.output_keys,
            errors=outcome.errors,
            bytes_in=outcome.bytes_in,
            bytes_out=outcome.bytes_out,
            qualities=outcome.qualities,
            scores=outcome.scores,
        )

    def counted(self) -> Progress:
        """What it adds to (or, reset, takes off) the job's processed counters once recorded."""
        return _row_counts(len(self.urls), self.errors, self.bytes_in, self.bytes_out)


def _row_counts(
    images: int, errors: Sequence[object], bytes_in: Iterable[int], bytes_out: Iterable[int]
) -> Progress:
    """One recorded row's processed counts: itself, its images, its failed images, its bytes."""
    return Progress(
        processed_products=1,
        processed_images=images,
        failed_images=len(errors),
        bytes_in=sum(bytes_in),
        bytes_out=sum(bytes_out),
    )


def counted_rows(rows: Iterable[StoredRow]) -> Progress:
    """The processed counters of a job's rows as stored: the recorded ones count (the
    sweeper's recount)."""
    total = Progress()
    for row in rows:
        if row.recorded:
            total = total.plus(row.counted())
    return total


def output_key(request_id: str, serial: int, index: int, extension: str = "jpg") -> str:
    """Deterministic key of one output image: a redelivery rewrites, never duplicates."""
    return f"outputs/{request_id}/{serial}/{index}.{extension}"


def input_key(request_id: str) -> str:
    return f"incoming/{request_id}.csv"


def output_csv_key(request_id: str) -> str:
    return f"outputs/{request_id}/output.csv"
