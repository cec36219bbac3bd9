"""Settings, read from the environment once per container."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from chalicelib.domain.output_options import (
    AUTO,
    DEFAULT_TARGET_SCORE,
    JPEG_QUALITY,
    MAX_IMAGE_PIXELS,
)
from chalicelib.domain.webhook_schedule import check_schedule

MIB = 1024 * 1024
UNOWNED_DROPS = ("hold", "default")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def _bool(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    return raw in {"1", "true", "yes", "on"}


def _output_quality(env: Mapping[str, str], default: int) -> int:
    """OUTPUT_QUALITY as JPEG's fixed quality, clamped to 1-95 (`auto`: the default, which
    `auto` falls back to)."""
    if env.get("OUTPUT_QUALITY", "").strip().lower() == AUTO:
        return default
    return max(1, min(95, _int(env, "OUTPUT_QUALITY", default)))


def _output_target_score(env: Mapping[str, str]) -> float | None:
    """OUTPUT_QUALITY=auto: jobs that name no quality aim at the default target score."""
    if env.get("OUTPUT_QUALITY", "").strip().lower() == AUTO:
        return float(DEFAULT_TARGET_SCORE)
    return None


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    """One of `allowed`; anything else is `default` (for UNOWNED_DROPS, the safe one)."""
    raw = env.get(name, "").strip().lower()
    return raw if raw in allowed else default


def _schedule(env: Mapping[str, str], name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        delays = tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"{name} must be comma-separated seconds, got {raw!r}") from exc
    problem = check_schedule(delays)
    if problem:
        raise ValueError(f"{name}: {problem}, got {raw!r}")
    return delays


@dataclass(frozen=True)
class Settings:
    """Every setting of the pipeline, with the contract's defaults."""

    uploads_bucket: str = "image-pipeline-uploads"
    outputs_bucket: str = "image-pipeline-outputs"
    ingest_queue_url: str = ""
    rows_queue_url: str = ""
    finalize_queue_url: str = ""
    webhook_queue_url: str = ""
    mongo_uri: str = "mongodb://127.0.0.1:27017"
    # On AWS the URI is not in the configuration: it is read from this Secrets Manager
    # secret on first use (and wins over MONGO_URI when both are set).
    mongo_uri_secret_id: str = ""
    mongo_db: str = "image_pipeline"
    # Connections one process (one Lambda container) opens to each MongoDB server at most
    # (pymongo's maxPoolSize; 0: pymongo's default, 100). The template's concurrency caps
    # assume it (Mappings: ConcurrencyForConnections; docs/performance.md, "Connections").
    mongo_max_pool_size: int = 4
    max_csv_bytes: int = 10 * MIB
    max_rows: int = 100_000
    max_images_per_row: int = 50
    max_image_bytes: int = 25 * MIB
    max_image_pixels: int = MAX_IMAGE_PIXELS
    output_quality: int = JPEG_QUALITY
    # OUTPUT_QUALITY=auto: a job that names no quality is made by `auto` aiming at this score
    # (None: at the fixed quality above, the default).
    output_target_score: float | None = None
    output_optimize: bool = True
    # Output images are <PUBLIC_BASE_URL>/<key> and never expire (on AWS the template's CDN
    # in front of the outputs bucket; locally the emulator's storage endpoint).
    public_base_url: str = ""
    # The output CSV's route answers a 302 to a presigned link that lives this long (<= 900).
    output_csv_link_ttl: int = 300
    # Days an output (image or CSV) is kept before the bucket's lifecycle rule deletes it
    # (0: kept for ever); its Cache-Control never outlives it (domain/retention.py).
    output_retention_days: int = 365
    # Days a job's documents (the job, its rows, its Idempotency-Key) are kept after it
    # last ended, by a TTL index (0: kept for ever).
    job_retention_days: int = 0
    upload_url_ttl: int = 900
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    # One attempt's whole deadline. The worker starts an attempt only when this, and the
    # image's decode and encode, fit in what its invocation has left (Timeout 120 s).
    download_deadline: float = 30.0
    allow_private_hosts: bool = False
    webhook_url: str = ""
    webhook_secret: str = ""
    webhook_timeout: float = 10.0
    # Standard Webhooks' and Svix's: 5 s, 5 min, 30 min, 2 h, 5 h, then 10 h six times; the
    # last of the 12 attempts comes 2 days 19 h 35 min after the first. Delays over SQS's
    # 900 s are waited out in hops (domain/webhook_schedule.py).
    webhook_retry_schedule: tuple[int, ...] = (5, 300, 1800, 7200, 18000, *(36000,) * 6)
    rows_per_chunk: int = 10  # one chunk document per worker batch (docs/performance.md)
    image_workers: int = 4
    # The function's MemorySize in MB, as Lambda tells it (AWS_LAMBDA_FUNCTION_MEMORY_SIZE; the
    # emulator's containers are told too). The worker's images share what it leaves above
    # the process at rest (image_memory.budget_for_images); 0: not known, not budgeted.
    function_memory_mb: int = 0
    fetch_attempts: int = 3  # tries per image for transient failures (timeouts, 5xx, 429)
    fetch_backoff: float = 0.5  # base delay in seconds; doubled per try, full jitter
    ingest_lease: int = 900  # seconds before a dead ingest may be taken over
    # An ingest run sends rows for this long (after its first chunk; longer for a CSV that
    # takes long to read again: IngestSlice), then hands the rest over through the ingest
    # queue in its tenant's message group, so that the fair queue gives the ingest's few
    # slots to other tenants' CSVs in between (services/ingest.py).
    ingest_slice_seconds: float = 3.0
    finalize_lease: int = 300
    # A job unchanged this long is looked at by the sweeper. Longer than a row message can be
    # out of sight (the rows queue's visibility, 750 s, plus the worker's Timeout, 120 s),
    # so the sweeper never re-sends rows whose batch is still in flight.
    stall_after: int = 900
    sweep_limit: int = 200  # jobs repaired per sweep
    event_bus_name: str = ""
    # The CloudFront distribution in front of the outputs: a deleted job's outputs are
    # invalidated there. Empty: no CDN to tell (locally).
    cdn_distribution_id: str = ""
    api_base_url: str = ""
    # The tenant of jobs stored before tenants (and of drops, with UNOWNED_DROPS=default).
    default_tenant: str = "default"
    # With several tenants, a drop whose tenant is not explicit: "hold" (no job) or
    # "default" (the default tenant's job, the routing of earlier versions).
    unowned_drops: str = "hold"
    # Each tenant's signing secrets live in Secrets Manager at <prefix><tenant>/webhook.
    tenant_secrets_prefix: str = ""
    # The default tenant's signing secret when it has none under the prefix (the stack's
    # WebhookSecretName, from before tenants).
    default_webhook_secret_id: str = ""
    secrets_cache_seconds: int = 300  # how long a container keeps a secret it read
    # A job's retry, and its webhook's redelivery, at most once per this many seconds.
    job_action_interval: int = 60
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        return cls(
            uploads_bucket=e.get("UPLOADS_BUCKET", cls.uploads_bucket),
            outputs_bucket=e.get("OUTPUTS_BUCKET", cls.outputs_bucket),
            ingest_queue_url=e.get("INGEST_QUEUE_URL", ""),
            rows_queue_url=e.get("ROWS_QUEUE_URL", ""),
            finalize_queue_url=e.get("FINALIZE_QUEUE_URL", ""),
            webhook_queue_url=e.get("WEBHOOK_QUEUE_URL", ""),
            mongo_uri=e.get("MONGO_URI", cls.mongo_uri),
            mongo_db=e.get("MONGO_DB", cls.mongo_db),
            mongo_max_pool_size=_int(e, "MONGO_MAX_POOL_SIZE", cls.mongo_max_pool_size),
            max_csv_bytes=_int(e, "MAX_CSV_BYTES", cls.max_csv_bytes),
            max_rows=_int(e, "MAX_ROWS", cls.max_rows),
            max_images_per_row=_int(e, "MAX_IMAGES_PER_ROW", cls.max_images_per_row),
            max_image_bytes=_int(e, "MAX_IMAGE_BYTES", cls.max_image_bytes),
            max_image_pixels=_int(e, "MAX_IMAGE_PIXELS", cls.max_image_pixels),
            output_quality=_output_quality(e, cls.output_quality),
            output_target_score=_output_target_score(e),
            output_optimize=_bool(e, "OUTPUT_OPTIMIZE", default=cls.output_optimize),
            public_base_url=e.get("PUBLIC_BASE_URL", "").strip().rstrip("/"),
            output_csv_link_ttl=max(
                1, min(_int(e, "OUTPUT_CSV_LINK_TTL", cls.output_csv_link_ttl), 900)
            ),
            output_retention_days=_int(e, "OUTPUT_RETENTION_DAYS", cls.output_retention_days),
            job_retention_days=_int(e, "JOB_RETENTION_DAYS", cls.job_retention_days),
            upload_url_ttl=max(1, min(_int(e, "UPLOAD_URL_TTL", cls.upload_url_ttl), 900)),
            connect_timeout=_float(e, "CONNECT_TIMEOUT", cls.connect_timeout),
            read_timeout=_float(e, "READ_TIMEOUT", cls.read_timeout),
            download_deadline=_float(e, "DOWNLOAD_DEADLINE", cls.download_deadline),
            allow_private_hosts=_bool(e, "ALLOW_PRIVATE_HOSTS"),
            webhook_url=e.get("WEBHOOK_URL", ""),
            webhook_secret=e.get("WEBHOOK_SECRET", ""),
            webhook_timeout=_float(e, "WEBHOOK_TIMEOUT", cls.webhook_timeout),
            webhook_retry_schedule=_schedule(
                e, "WEBHOOK_RETRY_SCHEDULE", cls.webhook_retry_schedule
            ),
            rows_per_chunk=max(1, _int(e, "ROWS_PER_CHUNK", cls.rows_per_chunk)),
            image_workers=max(1, _int(e, "IMAGE_WORKERS", cls.image_workers)),
            function_memory_mb=_int(e, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", cls.function_memory_mb),
            fetch_attempts=max(1, _int(e, "FETCH_ATTEMPTS", cls.fetch_attempts)),
            fetch_backoff=max(0.0, _float(e, "FETCH_BACKOFF", cls.fetch_backoff)),
            ingest_lease=max(1, _int(e, "INGEST_LEASE", cls.ingest_lease)),
            ingest_slice_seconds=max(
                0.0, _float(e, "INGEST_SLICE_SECONDS", cls.ingest_slice_seconds)
            ),
            finalize_lease=max(1, _int(e, "FINALIZE_LEASE", cls.finalize_lease)),
            stall_after=max(1, _int(e, "STALL_AFTER", cls.stall_after)),
            sweep_limit=max(1, _int(e, "SWEEP_LIMIT", cls.sweep_limit)),
            event_bus_name=e.get("EVENT_BUS_NAME", ""),
            cdn_distribution_id=e.get("CDN_DISTRIBUTION_ID", "").strip(),
            api_base_url=e.get("API_BASE_URL", "").rstrip("/"),
            mongo_uri_secret_id=e.get("MONGO_URI_SECRET_ID", ""),
            default_tenant=e.get("DEFAULT_TENANT", "").strip() or cls.default_tenant,
            unowned_drops=_choice(e, "UNOWNED_DROPS", UNOWNED_DROPS, cls.unowned_drops),
            tenant_secrets_prefix=e.get("TENANT_SECRETS_PREFIX", ""),
            default_webhook_secret_id=e.get("DEFAULT_WEBHOOK_SECRET_ID", ""),
            secrets_cache_seconds=_int(e, "SECRETS_CACHE_SECONDS", cls.secrets_cache_seconds),
            job_action_interval=_int(e, "JOB_ACTION_INTERVAL", cls.job_action_interval),
        )
