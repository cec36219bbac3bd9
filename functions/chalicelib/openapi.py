"""The OpenAPI 3 document of every route (`GET /api/openapi.json`): the routes and their
answers here, the shapes they answer with in openapi_schemas.py. The pages that show it are
in pages/ (the docs page; the watch page at `/`).
"""

from __future__ import annotations

from typing import Any

from chalicelib.openapi_schemas import ERROR, OPTIONS_FIELDS, SCHEMAS, STATUSES
from chalicelib.pages.docs_page import DOCS_ASSETS

# An operation anyone may call: it overrides the document's global `security`. Every other
# operation needs `Authorization: Bearer <api key>` (app.py: the routes with an authorizer;
# tests/unit/test_openapi_document.py checks that the two agree).
PUBLIC: list[dict[str, list[str]]] = []
NOT_YOURS = "Unknown job, or another tenant's (the same answer, so an id reveals nothing)"


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json(ERROR, description)


REQUEST_ID = {
    "name": "requestId",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}
MULTIPART = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "webhookUrl": {"type": "string", "format": "uri"},
                    **OPTIONS_FIELDS,
                },
            }
        }
    },
}


def _unauthorized() -> dict[str, Any]:
    answer = _err("No API key, or not a valid one (a revoked key stops working within minutes)")
    answer["headers"] = {
        "WWW-Authenticate": {
            "description": "`Bearer`, where the API says it",
            "schema": {"type": "string"},
        }
    }
    return answer


def _too_many_requests() -> dict[str, Any]:
    answer = _err(
        "Throttled: the tenant's request rate, or this job's retries and redeliveries; "
        "try again after `Retry-After`"
    )
    answer["headers"] = {
        "Retry-After": {
            "description": "Seconds to wait before trying again",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        }
    }
    return answer


def _with_retry_after(answer: dict[str, Any]) -> dict[str, Any]:
    answer["headers"] = {
        "Retry-After": {
            "description": "Seconds to wait before trying again",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        }
    }
    return answer


# Conditional requests of the status and the job list (RFC 9110 13.1.2, 15.4.5).
IF_NONE_MATCH: dict[str, Any] = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "description": "The `ETag` of an earlier answer (or a list of them, or `*`): while nothing "
    "in the answer changed, the answer is `304` with no body; compared weakly",
    "schema": {"type": "string"},
}
TAG_HEADERS: dict[str, Any] = {
    "ETag": {
        "description": "A weak entity tag of this answer: it changes whenever anything in it "
        "would (for the status: of this page, `limit` and `cursor` included)",
        "required": True,
        "schema": {"type": "string", "example": 'W/"Zk3fQ0lC2m1p8Vq5nJ0r4w"'},
    },
    "Cache-Control": {
        "description": "`private, no-cache`: one tenant's, and asked again before reuse",
        "required": True,
        "schema": {"type": "string"},
    },
}


def _tagged(answer: dict[str, Any]) -> dict[str, Any]:
    answer["headers"] = dict(TAG_HEADERS)
    return answer


def _not_modified() -> dict[str, Any]:
    return {
        "description": "Not modified: `If-None-Match` names the current `ETag`; no body (use "
        "the one that came with that tag)",
        "headers": dict(TAG_HEADERS),
    }


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def document() -> dict[str, Any]:
    """The document, with the contract's error answer on every operation, and the answers of
    the front door (no valid key, throttled) on every protected one."""
    spec = _document()
    for methods in spec["paths"].values():
        for operation in methods.values():
            responses = operation["responses"]
            if operation.get("security") != PUBLIC:
                responses.setdefault("401", _unauthorized())
                responses.setdefault("429", _too_many_requests())
            responses.setdefault(
                "500", _err("Internal error (a bug; the body never holds a stack trace)")
            )
    return spec


def _document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Image pipeline API",
            "version": "1.0.0",
            "description": "Bulk image compression: a CSV of products and image URLs in; "
            "compressed images, an output CSV and a signed webhook out.\n\n"
            "Every operation but the health check, this document, the docs and the watch page "
            "needs an API key: `Authorization: Bearer <api key>`. A key belongs to one tenant "
            "and sees that tenant's jobs only; each tenant's requests are throttled (`429` "
            "with `Retry-After`).",
        },
        "security": [{"bearerAuth": []}],
        "paths": {
            "/api/uploadAndProcessDocument": {
                "post": {
                    "summary": "Upload a CSV and start a job",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "maxLength": 255},
                        }
                    ],
                    "requestBody": MULTIPART,
                    "responses": {
                        "202": _json({"$ref": "#/components/schemas/Accepted"}, "Accepted"),
                        "400": _err(
                            "Invalid CSV, webhook URL or output option; every problem is listed"
                        ),
                        "409": _err("Idempotency-Key reused with another body"),
                        "413": _err("CSV over MAX_CSV_BYTES"),
                        "415": _err("Not multipart, or the file is not a CSV"),
                    },
                }
            },
            "/api/validate": {
                "post": {
                    "summary": "Validate a CSV without starting a job (dry run)",
                    "requestBody": MULTIPART,
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "valid": {"type": "boolean"},
                                    "totalProducts": {"type": "integer"},
                                    "totalImages": {"type": "integer"},
                                },
                            },
                            "The CSV is valid",
                        ),
                        "400": _err("Invalid CSV; every problem is listed"),
                        "413": _err("CSV over MAX_CSV_BYTES"),
                        "415": _err("Not multipart, or the file is not a CSV"),
                    },
                }
            },
            "/api/uploads": {
                "post": {
                    "summary": "Get a presigned POST to upload a CSV straight to storage",
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "fileName": {"type": "string"},
                                        "webhookUrl": {"type": "string", "format": "uri"},
                                        **OPTIONS_FIELDS,
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "201": _json({"$ref": "#/components/schemas/PresignedUpload"}, "Created"),
                        "400": _err(
                            "Invalid body, webhook URL or output option (`details` name each field)"
                        ),
                    },
                }
            },
            "/api/getProcessingStatus/{requestId}": {
                "get": {
                    "summary": "Job status, progress and products (paged, serial order)",
                    "parameters": [
                        REQUEST_ID,
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                        IF_NONE_MATCH,
                    ],
                    "responses": {
                        "200": _tagged(_json({"$ref": "#/components/schemas/Status"}, "The job")),
                        "304": _not_modified(),
                        "400": _err("Malformed id, limit or cursor"),
                        "404": _err(NOT_YOURS),
                    },
                }
            },
            "/api/jobs": {
                "get": {
                    "summary": "Your jobs, newest first (paged)",
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": STATUSES},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": 200,
                                "default": 50,
                            },
                        },
                        {
                            "name": "cursor",
                            "in": "query",
                            "required": False,
                            "description": "`nextCursor` of the previous page",
                            "schema": {"type": "string"},
                        },
                        IF_NONE_MATCH,
                    ],
                    "responses": {
                        "200": _tagged(
                            _json({"$ref": "#/components/schemas/JobList"}, "A page of jobs")
                        ),
                        "304": _not_modified(),
                        "400": _err("Malformed status, limit or cursor"),
                    },
                }
            },
            "/api/jobs/{requestId}/output.csv": {
                "get": {
                    "summary": "The output CSV (a redirect to a presigned URL)",
                    "parameters": [REQUEST_ID],
                    "responses": {
                        "302": {"description": "Redirect to the CSV"},
                        "400": _err("Malformed id"),
                        "404": _err(NOT_YOURS),
                        "409": _err("The job has not ended"),
                    },
                }
            },
            "/api/jobs/{requestId}/retry": {
                "post": {
                    "summary": "Queue the failed images of a finished job again",
                    "description": "Only the failed images are fetched again; the job "
                    "finalizes again with a new output CSV and a new webhook event.",
                    "parameters": [REQUEST_ID],
                    "responses": {
                        "202": _json({"type": "object"}, "Queued; the job is processing"),
                        "400": _err("Malformed id"),
                        "404": _err(NOT_YOURS),
                        "409": _err("Not finished, cancelled, nothing failed, or already retrying"),
                    },
                }
            },
            "/api/jobs/{requestId}": {
                "delete": {
                    "summary": "Delete an ended job: its outputs, CSVs and records",
                    "description": "Removes every output of the job (the output CSV too), its "
                    "uploaded CSV, its rows and its record, and asks the CDN in front of the "
                    "outputs to forget them. Afterwards the job is unknown (`404`). A job with "
                    "more outputs than one call removes (10,000) answers `202`: send `DELETE` "
                    "again to go on.",
                    "parameters": [REQUEST_ID],
                    "responses": {
                        "204": {"description": "Deleted"},
                        "202": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "requestId": {"type": "string", "format": "uuid"},
                                    "message": {"type": "string"},
                                    "deletedObjects": {"type": "integer", "minimum": 0},
                                },
                            },
                            "Part of the outputs deleted; send DELETE again",
                        ),
                        "400": _err("Malformed id"),
                        "404": _err(NOT_YOURS),
                        "409": _err("The job has not ended (cancel it first)"),
                        "503": _with_retry_after(
                            _err(
                                "The CDN did not accept the invalidation; the outputs are "
                                "deleted from storage: delete again after `Retry-After`"
                            )
                        ),
                    },
                }
            },
            "/api/jobs/{requestId}/cancel": {
                "post": {
                    "summary": "Cancel a job that has not ended",
                    "description": "No new image of the job starts; it soon ends `cancelled`: "
                    "the products not done are `cancelled`, the counters stay as they were, an "
                    "output CSV of what was done is written and the webhook `job.cancelled` is "
                    "sent once. Should the job end first (its last image done), it keeps that "
                    "end: whichever claims the end first wins.",
                    "parameters": [REQUEST_ID],
                    "responses": {
                        "202": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "requestId": {"type": "string", "format": "uuid"},
                                    "status": {"type": "string", "enum": STATUSES},
                                    "message": {"type": "string"},
                                    "statusUrl": {"type": "string"},
                                },
                            },
                            "Being cancelled",
                        ),
                        "400": _err("Malformed id"),
                        "404": _err(NOT_YOURS),
                        "409": _err("The job has ended (cancelled, completed or failed)"),
                    },
                }
            },
            "/api/jobs/{requestId}/webhook/redeliver": {
                "post": {
                    "summary": "Send a finished job's webhook again (same webhook-id)",
                    "parameters": [REQUEST_ID],
                    "responses": {
                        "202": _json({"type": "object"}, "Queued for delivery"),
                        "400": _err("Malformed id"),
                        "404": _err(NOT_YOURS),
                        "409": _err("Not finished, no webhook URL, or already delivering"),
                    },
                }
            },
            "/api/health": {
                "get": {
                    "security": PUBLIC,
                    "summary": "Storage, queue and database answer",
                    "responses": {
                        "200": _json(
                            {"type": "object", "properties": {"status": {"type": "string"}}},
                            "Healthy",
                        ),
                        "503": _err("A dependency is down (which one goes to the log, not here)"),
                    },
                }
            },
            "/api/openapi.json": {
                "get": {
                    "security": PUBLIC,
                    "summary": "This document",
                    "responses": {"200": {"description": "OpenAPI 3 document"}},
                }
            },
            "/api-docs": {
                "get": {
                    "security": PUBLIC,
                    "summary": "Human-readable docs (Swagger UI, works offline); with "
                    "?asset=, one file of that page (served by the API, not a CDN)",
                    "parameters": [
                        {
                            "name": "asset",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": sorted(DOCS_ASSETS)},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The docs page, or the file asked for",
                            "content": {"text/html": {"schema": {"type": "string"}}}
                            | {
                                media.split(";", 1)[0]: {"schema": {"type": "string"}}
                                for media in DOCS_ASSETS.values()
                            },
                        },
                        "404": _err("No such file"),
                    },
                }
            },
            "/": {
                "get": {
                    "security": PUBLIC,
                    "summary": "A page to upload a CSV straight to storage and watch the job",
                    "responses": {"200": _html("The watch page")},
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "API key",
                    "description": "An API key of your tenant: `Authorization: Bearer <key>`.",
                }
            },
            "schemas": SCHEMAS,
        },
    }
