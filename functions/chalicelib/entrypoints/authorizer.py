"""The API's Lambda authorizer (TOKEN type): an API key in, its tenant out.

API Gateway calls it with the `Authorization` header and caches the answer per header for
the template's ReauthorizeEvery (60 s), so the policy allows every route of the stage: the
same key on another route is served from the cache. A revoked key is refused once that
cache has expired. The tenant reaches the app as `requestContext.authorizer.tenant`."""

from __future__ import annotations

from typing import Any

from chalicelib.errors import Unauthorized
from chalicelib.services import tenants
from chalicelib.services.deps import Dependencies

# API Gateway answers 401 (not 500) when a TOKEN authorizer fails with exactly this message.
UNAUTHORIZED = "Unauthorized"
# API Gateway keeps an answer this long per Authorization header (the template's
# ReauthorizeEvery): the longest a revoked key still works.
CACHE_SECONDS = 60


def stage_resources(method_arn: str) -> str:
    """`arn:…:execute-api:region:account:api/stage/METHOD/path` -> every route of the stage."""
    head, _, path = method_arn.partition("/")
    stage = path.split("/", 1)[0]
    return f"{head}/{stage}/*/*" if stage else method_arn


def authorize(deps: Dependencies, authorization: str, method_arn: str) -> dict[str, Any]:
    caller = tenants.authenticate(deps, authorization)
    if caller is None:
        raise Unauthorized(UNAUTHORIZED)
    response: dict[str, Any] = {
        "principalId": caller.tenant,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Action": "execute-api:Invoke",
                    "Effect": "Allow",
                    "Resource": [stage_resources(method_arn)],
                }
            ],
        },
        "context": {"tenant": caller.tenant, "keyId": caller.key_id},
    }
    if caller.usage_key:  # the usage plan's throttle counts this tenant's requests
        response["usageIdentifierKey"] = caller.usage_key
    return response
