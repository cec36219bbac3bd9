"""The pipeline's vocabulary: statuses, rows, image results. Plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
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


class RowStatus(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


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
    """What became of one input image: an output key, or an error code and message."""

    url: str
    output_key: str = ""
    error_code: ImageErrorCode | None = None
    error_message: str = ""
    bytes_in: int = 0
    bytes_out: int = 0

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
    chunk_size: int = 50
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
class StoredRow:
    """A product row as recorded: inputs, per-image outputs and errors."""

    position: int
    serial: int
    name: str
    urls: tuple[str, ...]
    status: RowStatus = RowStatus.PENDING
    output_keys: tuple[str, ...] = ()
    errors: tuple[dict[str, str], ...] = ()
    bytes_in: tuple[int, ...] = ()
    bytes_out: tuple[int, ...] = ()


def output_key(request_id: str, serial: int, index: int, extension: str = "jpg") -> str:
    """Deterministic key of one output image: a redelivery rewrites, never duplicates."""
    return f"outputs/{request_id}/{serial}/{index}.{extension}"


def input_key(request_id: str) -> str:
    return f"incoming/{request_id}.csv"


def output_csv_key(request_id: str) -> str:
    return f"outputs/{request_id}/output.csv"
