"""How long outputs and job records are kept, and how long a cache may keep an output.

Outputs (images and output CSVs, under `outputs/`) are deleted by the outputs bucket's
lifecycle rule `OUTPUT_RETENTION_DAYS` days after they were last written (template.yaml,
OutputRetentionDays); 0 keeps them for ever. An output's `Cache-Control` lets a cache (the
CDN, a browser) keep it at most that long, and at most a year (RFC 9111's advice for
"never expires"), so that no cache is told to keep an image for longer than the bucket keeps
it. Job documents, their rows and their Idempotency-Keys expire by a TTL index
`JOB_RETENTION_DAYS` days after the job last ended (0: kept for ever).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

DAY = 86_400
ONE_YEAR = 365 * DAY


class RetentionSettings(Protocol):
    """The two settings these rules read (config.Settings has them: OUTPUT_RETENTION_DAYS,
    JOB_RETENTION_DAYS)."""

    @property
    def output_retention_days(self) -> int: ...

    @property
    def job_retention_days(self) -> int: ...


def output_max_age(settings: RetentionSettings) -> int:
    """Seconds a cache may keep an output: a year, or the outputs' retention if shorter."""
    days = settings.output_retention_days
    return min(ONE_YEAR, days * DAY) if days > 0 else ONE_YEAR


def output_cache_control(settings: RetentionSettings) -> str:
    """The `Cache-Control` of every output image: public (anyone with the link may read it,
    through the CDN), kept no longer than the bucket keeps the object, and immutable (an
    output key always holds the same pixels: a redelivery rewrites the same image)."""
    return f"public, max-age={output_max_age(settings)}, immutable"


def job_retention(settings: RetentionSettings) -> timedelta | None:
    """How long a job's documents outlive its end; None: for ever."""
    days = settings.job_retention_days
    return timedelta(days=days) if days > 0 else None
