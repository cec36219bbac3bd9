"""Deleting an ended job: its rows, its outputs (every object under `outputs/<id>/`, the
output CSV included), its uploaded CSV, then its record; the CDN in front of the outputs is
asked to forget them. Each step is repeatable and the record goes last, so a deletion cut
short (out of time, the CDN refusing) is finished by asking again.

The rows go first because a worker may still be storing an image of the job (one that had
started before the cancel): it records the row after storing the output, so either its
record comes before the rows go, and the listing of outputs that follows finds the output,
or its record finds the rows gone (JobGone) and the worker removes what it stored."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from chalicelib.domain.models import Job
from chalicelib.errors import Conflict, Unavailable
from chalicelib.services.deps import Dependencies
from chalicelib.services.ingest import job_id_for_key

log = logging.getLogger(__name__)

# Objects removed per call: a few seconds of S3 listings and DeleteObjects requests (1,000
# keys each), well inside the API's 29 s. A job with more outputs takes several calls.
MAX_OBJECTS_PER_CALL = 10_000
CDN_RETRY_AFTER = 60  # CloudFront refuses while 15 wildcard invalidations are in progress


@dataclass(frozen=True)
class Deletion:
    done: bool  # the job is gone; else outputs remain and the caller asks again
    objects: int  # outputs removed by this call


def outputs_prefix(request_id: str) -> str:
    return f"outputs/{request_id}/"


def cdn_paths(deps: Dependencies, request_id: str) -> list[str]:
    """The viewer paths of the job's outputs on the CDN (PUBLIC_BASE_URL's path, if it has
    one, then the output keys)."""
    base = urlsplit(deps.settings.public_base_url).path.rstrip("/")
    return [f"{base}/{outputs_prefix(request_id)}*"]


def delete_job(deps: Dependencies, job: Job) -> Deletion:
    """Remove an ended job; 409 while it runs. Not done (`done` False) when it has more
    outputs than one call removes; 503 when the CDN refuses the invalidation (the outputs
    are gone from storage already; asking again invalidates and removes the record)."""
    request_id = job.request_id
    if not job.status.terminal:
        raise Conflict(f"job {request_id} is {job.status}; only an ended job can be deleted")
    deps.store.delete_rows(request_id)
    removed = deps.outputs.delete_prefix(outputs_prefix(request_id), MAX_OBJECTS_PER_CALL)
    if removed >= MAX_OBJECTS_PER_CALL:
        log.info("job %s: %d outputs deleted; more are left for the next call", request_id, removed)
        return Deletion(False, removed)
    _delete_upload(deps, job)
    try:
        deps.cdn.invalidate(cdn_paths(deps, request_id))
    except Exception as exc:
        log.exception("job %s: the CDN refused the invalidation", request_id)
        raise Unavailable(
            f"the outputs of job {request_id} are deleted, but the CDN did not accept the "
            "invalidation of its cached copies; delete the job again to finish",
            CDN_RETRY_AFTER,
        ) from exc
    deps.store.delete_job(request_id)
    log.info("job %s deleted (%d outputs in this call)", request_id, removed)
    return Deletion(True, removed)


def _delete_upload(deps: Dependencies, job: Job) -> None:
    """The uploaded CSV, when the object at its key is still this job's: a key reused by a
    later upload (a feed dropped daily at the same key) is another job's CSV by then."""
    info = deps.uploads.head(job.input_key)
    if info is None:
        return
    if job_id_for_key(job.input_key, info.etag) != job.request_id:
        log.info("job %s: %s now holds another job's CSV; kept", job.request_id, job.input_key)
        return
    deps.uploads.delete(job.input_key)
