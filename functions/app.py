"""Chalice entrypoints only: each handler hands off to a service in chalicelib.

Every function's handler module (the worker's imports this one: handlers/worker.py). Its
imports are the functions' init: the wiring's libraries (boto3, botocore, pymongo, requests)
but not imaging's (Pillow, simplejpeg, numpy: the worker's alone), no client, no secret, no
connection; and SnapStart's runtime hooks registered (chalicelib/snapshot_hooks.py)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from chalice.app import AuthRequest, Chalice, CloudWatchEvent, Rate, Response, SQSEvent
from chalicelib import bootstrap, observability, snapshot_hooks
from chalicelib.domain.budget import Budget
from chalicelib.entrypoints import authorizer, http_api, queue_handlers
from chalicelib.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from chalicelib.services import sweeper
from chalicelib.services.deps import REQUEST_API_BASE

app = Chalice(app_name="image-pipeline")
app.api.binary_types.append("multipart/form-data")
app.log.setLevel(logging.INFO)
observability.configure_logging([app.log])
snapshot_hooks.register()
bootstrap.prime_aws_models()

ANY_CONTENT: list[str] = []  # we answer 415 ourselves, in the contract's error shape


@app.middleware("http")
def front_door(event: Any, get_response: Callable[[Any], Response]) -> Response:
    """Every answer carries the security headers, and Chalice's own errors (a 405 for a
    method a route lacks, a 415 for a content type it does not declare) the contract's shape.
    Links to the API in answers start with the URL this request came in at, unless
    API_BASE_URL says otherwise (deps.REQUEST_API_BASE)."""
    original = event.to_original_event() if hasattr(event, "to_original_event") else {}
    base = http_api.api_base_of(getattr(event, "context", None) or {}, original.get("path", ""))
    token = REQUEST_API_BASE.set(base)
    try:
        response = get_response(event)
    finally:
        REQUEST_API_BASE.reset(token)
    for name, value in {**http_api.SECURITY_HEADERS, **http_api.CORS_HEADERS}.items():
        response.headers.setdefault(name, value)
    body = response.body
    if response.status_code >= 400 and isinstance(body, dict) and "error" not in body:
        response.body = {"error": str(body.get("Message") or "request refused"), "details": []}
        response.headers["Content-Type"] = "application/json"
    return response


def _error(
    status: int,
    message: str,
    details: list[Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(
        body={"error": message, "details": details or []},
        status_code=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


# Every route but these needs `Authorization: Bearer <api key>` (the template declares the
# same: tests/unit/test_api_auth.py checks that they agree).
@app.authorizer(ttl_seconds=authorizer.CACHE_SECONDS)
def api_key_authorizer(auth_request: AuthRequest) -> dict[str, Any]:
    """API Gateway's TOKEN authorizer (AuthorizerFunction in template.yaml)."""
    return authorizer.authorize(
        bootstrap.dependencies(), auth_request.token, auth_request.method_arn
    )


def _tenant() -> str:
    """The caller's tenant, as the authorizer found it; no tenant, no answer (401)."""
    context = getattr(_request(), "context", None) or {}
    tenant = (context.get("authorizer") or {}).get("tenant")
    if not tenant:
        raise Unauthorized("a valid API key is required: Authorization: Bearer <api key>")
    return str(tenant)


def api_errors(view: Callable[..., Response]) -> Callable[..., Response]:
    """Every failure becomes the contract's JSON error; nothing answers with a stack trace."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        with observability.invocation(**_request_fields(kwargs.get("requestId"))):
            return _answer(view, *args, **kwargs)

    return wrapper


def _request_fields(job_id: object) -> dict[str, object]:
    request = app.current_request
    context = getattr(request, "context", None) or {}
    return {
        "requestId": job_id,
        "awsRequestId": getattr(getattr(app, "lambda_context", None), "aws_request_id", None),
        "apiRequestId": context.get("requestId"),
        "method": getattr(request, "method", None),
        "path": getattr(request, "path", None),
    }


def _answer(view: Callable[..., Response], *args: Any, **kwargs: Any) -> Response:
    try:
        return view(*args, **kwargs)
    except PayloadTooLarge as exc:
        return _error(413, exc.message, exc.details)
    except UnsupportedMediaType as exc:
        return _error(415, exc.message, exc.details)
    except InvalidRequest as exc:
        return _error(400, exc.message, exc.details)
    except Unauthorized as exc:
        return _error(401, str(exc), headers={"WWW-Authenticate": "Bearer"})
    except TooManyRequests as exc:
        return _error(429, str(exc), headers={"Retry-After": str(exc.retry_after)})
    except NotFound as exc:
        return _error(404, str(exc))
    except Conflict as exc:
        return _error(409, str(exc))
    except Unavailable as exc:
        return _error(503, str(exc), headers={"Retry-After": str(exc.retry_after)})
    except Exception:
        app.log.exception("unhandled error")
        return _error(500, "internal error; the request was not completed")


def _respond(reply: http_api.HttpReply) -> Response:
    return Response(body=reply.body, status_code=reply.status, headers=dict(reply.headers))


def _request() -> Any:
    request = app.current_request
    assert request is not None
    return request


@app.route(
    "/api/uploadAndProcessDocument",
    methods=["POST"],
    content_types=ANY_CONTENT,
    authorizer=api_key_authorizer,
)
@api_errors
def upload_and_process_document() -> Response:
    request = _request()
    with observability.phase("upload"):
        return _respond(
            http_api.upload_document(
                bootstrap.dependencies(),
                tenant=_tenant(),
                content_type=request.headers.get("content-type", ""),
                body=request.raw_body or b"",
                idempotency_key=request.headers.get("idempotency-key"),
            )
        )


@app.route(
    "/api/validate", methods=["POST"], content_types=ANY_CONTENT, authorizer=api_key_authorizer
)
@api_errors
def validate_document() -> Response:
    request = _request()
    _tenant()
    return _respond(
        http_api.validate_document(
            bootstrap.dependencies(),
            content_type=request.headers.get("content-type", ""),
            body=request.raw_body or b"",
        )
    )


@app.route(
    "/api/uploads", methods=["POST"], content_types=ANY_CONTENT, authorizer=api_key_authorizer
)
@api_errors
def create_upload() -> Response:
    body = _request().raw_body or b""
    return _respond(http_api.create_upload(bootstrap.dependencies(), body, tenant=_tenant()))


@app.route("/api/getProcessingStatus/{requestId}", methods=["GET"], authorizer=api_key_authorizer)
@api_errors
def get_processing_status(requestId: str) -> Response:
    request = _request()
    params = request.query_params or {}
    with observability.phase("status"):
        return _respond(
            http_api.processing_status(
                bootstrap.dependencies(),
                requestId,
                params.get("limit"),
                params.get("cursor"),
                tenant=_tenant(),
                if_none_match=request.headers.get("if-none-match"),
            )
        )


@app.route("/api/jobs", methods=["GET"], authorizer=api_key_authorizer)
@api_errors
def list_jobs() -> Response:
    request = _request()
    return _respond(
        http_api.list_jobs(
            bootstrap.dependencies(),
            request.query_params or {},
            tenant=_tenant(),
            if_none_match=request.headers.get("if-none-match"),
        )
    )


@app.route("/api/jobs/{requestId}/output.csv", methods=["GET"], authorizer=api_key_authorizer)
@api_errors
def get_output_csv(requestId: str) -> Response:
    return _respond(http_api.output_csv(bootstrap.dependencies(), requestId, tenant=_tenant()))


@app.route(
    "/api/jobs/{requestId}/retry",
    methods=["POST"],
    content_types=ANY_CONTENT,
    authorizer=api_key_authorizer,
)
@api_errors
def retry_job(requestId: str) -> Response:
    return _respond(http_api.retry_job(bootstrap.dependencies(), requestId, tenant=_tenant()))


@app.route(
    "/api/jobs/{requestId}/cancel",
    methods=["POST"],
    content_types=ANY_CONTENT,
    authorizer=api_key_authorizer,
)
@api_errors
def cancel_job(requestId: str) -> Response:
    return _respond(http_api.cancel_job(bootstrap.dependencies(), requestId, tenant=_tenant()))


@app.route("/api/jobs/{requestId}", methods=["DELETE"], authorizer=api_key_authorizer)
@api_errors
def delete_job(requestId: str) -> Response:
    return _respond(http_api.delete_job(bootstrap.dependencies(), requestId, tenant=_tenant()))


@app.route(
    "/api/jobs/{requestId}/webhook/redeliver",
    methods=["POST"],
    content_types=ANY_CONTENT,
    authorizer=api_key_authorizer,
)
@api_errors
def redeliver_webhook(requestId: str) -> Response:
    return _respond(
        http_api.redeliver_webhook(bootstrap.dependencies(), requestId, tenant=_tenant())
    )


@app.route("/api/health", methods=["GET"])
@api_errors
def health() -> Response:
    return _respond(http_api.health(bootstrap.dependencies()))


@app.route("/api/openapi.json", methods=["GET"])
@api_errors
def openapi_document() -> Response:
    return _respond(http_api.openapi_document())


@app.route("/api-docs", methods=["GET"])
@api_errors
def api_docs() -> Response:
    asset = (_request().query_params or {}).get("asset")
    if asset is not None:
        return _respond(http_api.api_docs_asset(asset))
    return _respond(http_api.api_docs_page())


@app.route("/", methods=["GET"])
@api_errors
def watch_page() -> Response:
    return _respond(http_api.watch_page_reply())


@app.on_sqs_message(queue="IngestQueue", batch_size=1, name="ingest_csv")
def ingest_csv(event: SQSEvent) -> queue_handlers.BatchResponse:
    with _invocation(event), observability.phase("ingest"):
        return queue_handlers.ingest(bootstrap.dependencies(), _records(event), _budget(event))


@app.on_sqs_message(queue="RowsQueue", batch_size=10, name="process_rows")
def process_rows(event: SQSEvent) -> queue_handlers.BatchResponse:
    # this thread's work is the rows' bookkeeping (messages, cancel checks, records, the
    # finalization claim); the images run on the pool's threads, in phases of their own
    with _invocation(event), observability.phase("records"):
        return queue_handlers.rows(bootstrap.dependencies(), _records(event), _budget(event))


@app.on_sqs_message(queue="RowsDeadLetterQueue", batch_size=10, name="rows_dead_letter")
def rows_dead_letter(event: SQSEvent) -> queue_handlers.BatchResponse:
    with _invocation(event):
        return queue_handlers.rows_dead_letter(bootstrap.dependencies(), _records(event))


@app.on_sqs_message(queue="FinalizeQueue", batch_size=1, name="finalize_jobs")
def finalize_jobs(event: SQSEvent) -> queue_handlers.BatchResponse:
    with _invocation(event), observability.phase("finalize"):
        return queue_handlers.finalize(bootstrap.dependencies(), _records(event))


@app.on_sqs_message(queue="WebhookQueue", batch_size=1, name="deliver_webhooks")
def deliver_webhooks(event: SQSEvent) -> queue_handlers.BatchResponse:
    with _invocation(event):
        return queue_handlers.webhooks(bootstrap.dependencies(), _records(event))


@app.schedule(Rate(5, unit=Rate.MINUTES), name="sweep_jobs")
def sweep_jobs(event: CloudWatchEvent) -> dict[str, list[str]]:
    with observability.invocation(function="sweep_jobs"):
        return sweeper.sweep(bootstrap.dependencies(), _budget(event)).to_dict()


def _invocation(event: SQSEvent) -> AbstractContextManager[dict[str, str]]:
    context = getattr(event, "context", None)
    return observability.invocation(
        awsRequestId=getattr(context, "aws_request_id", None),
        function=getattr(context, "function_name", None),
    )


def _budget(event: SQSEvent | CloudWatchEvent) -> Budget:
    """The invocation's time, from Lambda's context (unlimited when called without one)."""
    return Budget.from_context(getattr(event, "context", None))


def _records(event: SQSEvent) -> list[queue_handlers.QueueRecord]:
    return [
        queue_handlers.QueueRecord(
            message_id=str(record.to_dict().get("messageId", "")),
            body=record.body,
            receive_count=int(
                record.to_dict().get("attributes", {}).get("ApproximateReceiveCount", 1)
            ),
        )
        for record in event
    ]
