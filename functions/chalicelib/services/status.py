"""The status document of the contract: progress, products in serial order, paged; and the
job list. Each answer has its entity tag (domain/etag.py), made from the job records'
`version`s and the query without reading a row, so that `If-None-Match` with the current tag
costs one read of the job record (of the page's records, for the list)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from chalicelib.domain.etag import none_match, weak_tag
from chalicelib.domain.models import Job, JobStatus, StoredRow
from chalicelib.errors import InvalidRequest
from chalicelib.services.deps import Dependencies
from chalicelib.services.job_access import load_job

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


JOBS_DEFAULT_LIMIT = 50
JOBS_MAX_LIMIT = 200


def parse_paging(limit: str | None, cursor: str | None) -> tuple[int, int]:
    try:
        size = DEFAULT_LIMIT if limit in (None, "") else int(limit)
    except ValueError as exc:
        raise InvalidRequest("limit must be an integer between 1 and 1000") from exc
    if not 1 <= size <= MAX_LIMIT:
        raise InvalidRequest("limit must be an integer between 1 and 1000")
    try:
        start = 0 if cursor in (None, "") else int(cursor)
    except ValueError as exc:
        raise InvalidRequest("cursor is not valid; use nextCursor from a previous page") from exc
    if start < 0:
        raise InvalidRequest("cursor is not valid; use nextCursor from a previous page")
    return start, size


def product_view(deps: Dependencies, row: StoredRow, auto: bool = False) -> dict[str, object]:
    """One product as the status shows it; a product of an `auto` job (or one whose images
    were made by it) also shows each image's quality and score, aligned with its output
    links (null for an image that failed)."""
    view: dict[str, object] = {
        "serialNumber": row.serial,
        "productName": row.name,
        "inputImageUrls": list(row.urls),
        "outputImageUrls": [deps.output_url(key) for key in row.output_keys],
        "status": str(row.status),
        "errors": [dict(e) for e in row.errors],
        "inputBytes": list(row.bytes_in),
        "outputBytes": list(row.bytes_out),
    }
    if auto or row.qualities:
        n = range(len(row.output_keys))
        view["outputQualities"] = [_at(row.qualities, i) for i in n]
        view["outputScores"] = [_score(_at(row.scores, i)) for i in n]
    return view


def _at[T](values: tuple[T | None, ...], index: int) -> T | None:
    return values[index] if index < len(values) else None


def _score(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# Part of every tag: a change to what the status or the list shows of a given version (a
# field added, a link's form) must change the tags too. Bump it with such a change.
TAG_FORMAT = 2  # 2: `outputQualities` and `outputScores` of `auto` jobs


@dataclass(frozen=True)
class Tagged:
    """An answer and its entity tag; `document` None: the client's copy is current (304)."""

    tag: str
    document: dict[str, object] | None


def status_tag(deps: Dependencies, job: Job, start: int, size: int, stored: int | None) -> str:
    """The tag of a status page: the job (its id, creation, owner and version), the page
    asked for (`cursor` and `limit`), and what the request changes in the answer: the API's
    base URL (`outputCsvUrl`) and the outputs' (every image link). `stored`: the rows of the
    page read while the job's rows are still being stored (storing them moves no version)."""
    return weak_tag(
        "status",
        TAG_FORMAT,
        job.tenant,
        job.request_id,
        job.created_at,
        job.version,
        start,
        size,
        deps.api_base_url(),
        deps.settings.public_base_url,
        stored,
    )


def _page_rows(deps: Dependencies, job: Job, start: int, size: int) -> list[StoredRow]:
    if start >= job.progress.total_products:
        return []
    return deps.store.list_rows(job.request_id, start, size)


def tagged_status(
    deps: Dependencies,
    request_id: str,
    tenant: str,
    limit: str | None = None,
    cursor: str | None = None,
    *,
    if_none_match: str | None = None,
) -> Tagged:
    """The status page and its tag; no document when `if_none_match` names the tag. The job
    is the tenant's before anything is compared: another tenant's id is a 404 whatever the
    tag it sends. The tag is of the job record read for the document: a write after the
    read moves the version, so the next request gets the new document."""
    job = load_job(deps, request_id, tenant)
    start, size = parse_paging(limit, cursor)
    rows = None if job.rows_written else _page_rows(deps, job, start, size)
    tag = status_tag(deps, job, start, size, None if rows is None else len(rows))
    if none_match(if_none_match, tag):
        return Tagged(tag, None)
    if rows is None:
        rows = _page_rows(deps, job, start, size)
    return Tagged(tag, status_document(deps, job, rows, start, size))


def job_status(
    deps: Dependencies,
    request_id: str,
    tenant: str,
    limit: str | None = None,
    cursor: str | None = None,
) -> dict[str, object]:
    document = tagged_status(deps, request_id, tenant, limit, cursor).document
    assert document is not None  # no If-None-Match: always the document
    return document


def status_document(
    deps: Dependencies, job: Job, rows: list[StoredRow], start: int, size: int
) -> dict[str, object]:
    total = job.progress.total_products
    auto = job.options.target_or(deps.settings.output_target_score) is not None
    next_cursor = str(start + size) if start + size < total else None
    document: dict[str, object] = {
        **job_summary_view(job),  # what a listing shows of it, first
        "products": [product_view(deps, row, auto) for row in rows],
        "nextCursor": next_cursor,
        "outputCsvUrl": (
            deps.output_csv_url(job.request_id)
            if job.status.terminal and job.output_csv_key
            else None
        ),
        "errors": job.errors,
        "webhook": webhook_view(job),
        "generation": job.generation,
        "options": job.options.to_dict(),
    }
    return document


def webhook_view(job: Job) -> dict[str, object]:
    hook = job.webhook
    return {
        "state": str(hook.state),
        "attempts": hook.attempts,
        "lastStatusCode": hook.last_status_code,
        "id": hook.webhook_id or None,
        "nextAttemptAt": hook.next_attempt_at or None,
        "history": [a.to_dict() for a in hook.history],
    }


def job_summary_view(job: Job) -> dict[str, object]:
    return {
        "requestId": job.request_id,
        "status": str(job.status),
        "createdAt": job.created_at,
        "updatedAt": job.updated_at,
        "progress": job.progress.to_dict(),
    }


def _jobs_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at, job.request_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(cursor: str | None) -> tuple[str, str] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, request_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidRequest("cursor is not valid; use nextCursor from a previous page") from exc
    if not isinstance(created, str) or not isinstance(request_id, str):
        raise InvalidRequest("cursor is not valid; use nextCursor from a previous page")
    return created, request_id


def list_jobs(
    deps: Dependencies,
    tenant: str,
    status: str | None = None,
    limit: str | None = None,
    cursor: str | None = None,
) -> dict[str, object]:
    """The tenant's jobs, newest first, a page at a time."""
    document = tagged_jobs(deps, tenant, status, limit, cursor).document
    assert document is not None  # no If-None-Match: always the document
    return document


def tagged_jobs(
    deps: Dependencies,
    tenant: str,
    status: str | None = None,
    limit: str | None = None,
    cursor: str | None = None,
    *,
    if_none_match: str | None = None,
) -> Tagged:
    """A page of the tenant's jobs and its tag: the tenant, the query and, of each job the
    page holds (one more, which says whether there is a next page), its id, creation and
    version, read by the listing's index without the records. A job created, deleted, moved
    into or out of the status asked for, or changed changes the tag. The page itself is read
    after the tag, so it is never older than its tag."""
    try:
        size = JOBS_DEFAULT_LIMIT if limit in (None, "") else int(limit)
    except ValueError:
        size = 0
    if not 1 <= size <= JOBS_MAX_LIMIT:
        raise InvalidRequest(
            f"limit must be an integer between 1 and {JOBS_MAX_LIMIT}", [{"field": "limit"}]
        )
    wanted: JobStatus | None = None
    if status:
        try:
            wanted = JobStatus(status)
        except ValueError as exc:
            names = ", ".join(s.value for s in JobStatus)
            raise InvalidRequest(
                f"status must be one of {names}", [{"field": "status", "value": status[:40]}]
            ) from exc
    after = _after(cursor)
    versions = deps.store.job_versions(tenant, status=wanted, limit=size + 1, after=after)
    tag = weak_tag("jobs", TAG_FORMAT, tenant, status or "", size, after, versions)
    if none_match(if_none_match, tag):
        return Tagged(tag, None)
    page = deps.store.list_jobs(tenant, status=wanted, limit=size + 1, after=after)
    more = len(page) > size
    page = page[:size]
    return Tagged(
        tag,
        {
            "jobs": [job_summary_view(job) for job in page],
            "nextCursor": _jobs_cursor(page[-1]) if more and page else None,
        },
    )
