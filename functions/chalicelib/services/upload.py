"""Accepting jobs: the multipart upload and the presigned POST."""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from chalicelib.domain.csv_input import CsvLimits, validate_csv
from chalicelib.domain.models import Job, new_job
from chalicelib.domain.output_options import InvalidOptions, OutputOptions, parse_options
from chalicelib.errors import Conflict, CsvInvalid, InvalidRequest, PayloadTooLarge
from chalicelib.ports import PresignedPost
from chalicelib.services.deps import Dependencies

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MAX_IDEMPOTENCY_KEY = 255


def is_request_id(value: str) -> bool:
    return bool(_UUID.match(value))


def csv_limits(deps: Dependencies) -> CsvLimits:
    s = deps.settings
    return CsvLimits(
        max_bytes=s.max_csv_bytes, max_rows=s.max_rows, max_images_per_row=s.max_images_per_row
    )


def check_webhook_url(deps: Dependencies, url: str | None) -> str:
    """The webhook URL to store ("" for none); a 400 when it is not usable."""
    if not url:
        return ""
    problem = deps.check_webhook_url(url)
    if problem:
        raise InvalidRequest(
            f"webhookUrl is not usable: {problem}",
            [{"field": "webhookUrl", "message": problem}],
        )
    return url


def validate_upload(deps: Dependencies, data: bytes) -> tuple[int, int]:
    """Validate a CSV held in memory; returns (rows, images) or raises.

    Larger than `max_csv_bytes` (`MAX_CSV_BYTES`): a 413. Otherwise one pass of
    `domain.csv_input.validate_csv` over the bytes; every problem it finds (not UTF-8, a line
    too long, too many rows, a column missing or repeated, a serial number bad or repeated, an
    empty name, no URL or too many, a URL not http(s)) is collected with its line and column
    and raised together as `CsvInvalid`, which the HTTP glue answers as a 400 listing them all.
    A bad option is `InvalidRequest` (`output_options` below), also a 400."""
    if len(data) > deps.settings.max_csv_bytes:
        raise PayloadTooLarge(
            f"the CSV is {len(data)} bytes; the limit is {deps.settings.max_csv_bytes}",
            [{"maxBytes": deps.settings.max_csv_bytes}],
        )
    report = validate_csv(io.BytesIO(data), csv_limits(deps))
    if not report.ok:
        raise CsvInvalid(report.problems)
    return report.total_rows, report.total_images


@dataclass(frozen=True)
class Accepted:
    job: Job
    created: bool


def output_options(raw: Mapping[str, object]) -> OutputOptions:
    """A job's output options from the request's fields; a 400 naming each bad one."""
    try:
        return parse_options(raw)
    except InvalidOptions as exc:
        raise InvalidRequest(str(exc), exc.problems) from exc


def submit_csv(
    deps: Dependencies,
    data: bytes,
    webhook_url: str | None,
    idempotency_key: str | None,
    tenant: str,
    *,
    options: OutputOptions | None = None,
) -> Accepted:
    """Validate, record the tenant's job, store the CSV under incoming/ (its arrival starts
    the work). An Idempotency-Key is the tenant's own: another tenant's same key is another
    job."""
    hook = check_webhook_url(deps, webhook_url)
    validate_upload(deps, data)
    chosen = options or OutputOptions()
    identity = data + b"\x00" + hook.encode()
    if not chosen.is_default:  # same body, other options: another request
        identity += b"\x00" + json.dumps(chosen.to_dict(), sort_keys=True).encode()
    digest = hashlib.sha256(identity).hexdigest()
    key = (idempotency_key or "").strip()
    if len(key) > MAX_IDEMPOTENCY_KEY:
        raise InvalidRequest(f"Idempotency-Key is longer than {MAX_IDEMPOTENCY_KEY} characters")
    if key:
        existing = deps.store.find_by_idempotency_key(tenant, key)
        if existing is not None:
            return _replay(existing, digest)

    request_id = deps.new_id()
    job = new_job(
        request_id,
        deps.clock.now(),
        source="api",
        tenant=tenant,
        options=chosen,
        chunk_size=deps.settings.rows_per_chunk,
        webhook_url=hook,
        idempotency_key=key,
        body_digest=digest,
    )
    if not deps.store.create_job(job):
        raced = deps.store.find_by_idempotency_key(tenant, key) if key else None
        if raced is None:
            raise Conflict(f"job {request_id} already exists")
        return _replay(raced, digest)
    deps.uploads.put_bytes(job.input_key, data, "text/csv")
    return Accepted(job, created=True)


def _replay(existing: Job, digest: str) -> Accepted:
    if existing.body_digest and existing.body_digest != digest:
        raise Conflict("Idempotency-Key was already used with a different request body")
    return Accepted(existing, created=False)


@dataclass(frozen=True)
class PresignedUpload:
    job: Job
    post: PresignedPost
    expires_in: int


def create_presigned_upload(
    deps: Dependencies,
    webhook_url: str | None,
    tenant: str,
    options: OutputOptions | None = None,
) -> PresignedUpload:
    """A pending job of the tenant and a POST policy bound to its key; the object's arrival
    starts it."""
    hook = check_webhook_url(deps, webhook_url)
    request_id = deps.new_id()
    job = new_job(
        request_id,
        deps.clock.now(),
        source="presigned",
        tenant=tenant,
        options=options,
        chunk_size=deps.settings.rows_per_chunk,
        webhook_url=hook,
    )
    if not deps.store.create_job(job):
        raise Conflict(f"job {request_id} already exists")
    expires = deps.settings.upload_url_ttl
    post = deps.uploads.presigned_post(job.input_key, deps.settings.max_csv_bytes, expires)
    return PresignedUpload(job, post, expires)
