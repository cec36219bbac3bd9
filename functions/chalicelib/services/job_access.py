"""The tenant check of every job route: a job is found by its id and its owner together, so
another tenant's job answers exactly as an unknown id does (`404`, the same message), and an
id tells nobody that it exists. The one wording of that answer is here too, for the actions
that find a job gone after the check (deleted meanwhile)."""

from __future__ import annotations

from chalicelib.domain.models import Job
from chalicelib.errors import InvalidRequest, NotFound
from chalicelib.services.deps import Dependencies
from chalicelib.services.upload import is_request_id


def job_not_found(request_id: str) -> NotFound:
    """The `404` of an unknown job, or of another tenant's."""
    return NotFound(f"no job with requestId {request_id}")


def load_job(deps: Dependencies, request_id: str, tenant: str) -> Job:
    """The tenant's job: 400 for a malformed id, 404 for an unknown one and for another
    tenant's (the same answer, so an id tells nobody that it exists).

    `tenant` is the caller's, which API Gateway's authorizer
    (`entrypoints/authorizer.py:authorize`) put in the request's context from the API key's
    hash; every route of one job (status, cancel, retry, redeliver, delete) calls this first
    (the job list asks the store for the tenant's jobs alone),
    and the store is asked for the id and the owner in one query."""
    if not is_request_id(request_id):
        raise InvalidRequest(
            "requestId must be a UUID", [{"field": "requestId", "value": request_id[:100]}]
        )
    job = deps.store.get_job(request_id, tenant)  # one query on id and owner
    if job is None:
        raise job_not_found(request_id)
    return job
