"""The OpenAPI 3 document of every route, the docs page (Swagger UI, its files kept in
web/swagger-ui and served by the API itself, never from a CDN) and the watch page.
"""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path
from typing import Any

from chalicelib.domain.models import JobStatus, RowStatus
from chalicelib.domain.output_options import DEFAULT_QUALITY, MAX_DIMENSION, OutputFormat

WEB = Path(__file__).resolve().parent / "web"
# Swagger UI's dist files, as the swagger-ui-dist npm package of this version has them
# (web/swagger-ui/README.md: where they come from, how to update them).
SWAGGER_UI = WEB / "swagger-ui"
SWAGGER_UI_VERSION = "5.35.0"
# The files the docs page loads, with their media types: Swagger UI's, and our stylesheet
# on top of its own (contrast, web/api-docs.css).
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "application/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "api-docs.css": "text/css; charset=utf-8",
}
_OUR_ASSETS = {"api-docs.css"}

ERROR = {"$ref": "#/components/schemas/Error"}
# An operation anyone may call: it overrides the document's global `security`. Every other
# operation needs `Authorization: Bearer <api key>` (app.py: the routes with an authorizer;
# tests/unit/test_openapi_document.py checks that the two agree).
PUBLIC: list[dict[str, list[str]]] = []
NOT_YOURS = "Unknown job, or another tenant's (the same answer, so an id reveals nothing)"


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json(ERROR, description)


# The output options of both upload routes (multipart fields, or the JSON keys of /api/uploads)
OPTIONS_FIELDS: dict[str, Any] = {
    "format": {
        "type": "string",
        "enum": [f.value for f in OutputFormat],
        "default": "jpeg",
        "description": "Output format (`jpg` is read as `jpeg`)",
    },
    "quality": {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "description": "Encoder quality; default "
        + ", ".join(
            [f"{OutputFormat.JPEG.value} 50 (OUTPUT_QUALITY)"]
            + [f"{fmt.value} {quality}" for fmt, quality in DEFAULT_QUALITY.items()]
        ),
    },
    "maxWidth": {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_DIMENSION,
        "description": "The output fits this width, its aspect kept; never enlarged",
    },
    "maxHeight": {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_DIMENSION,
        "description": "The output fits this height, its aspect kept; never enlarged",
    },
}
OPTIONS = {
    "type": "object",
    "description": "The job's output options (null: the format's default, or no bound)",
    "properties": {
        name: {**schema, "nullable": True} if name != "format" else schema
        for name, schema in OPTIONS_FIELDS.items()
    },
}
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
PROGRESS = {
    "type": "object",
    "properties": {
        name: {"type": "integer", "minimum": 0}
        for name in (
            "totalProducts",
            "processedProducts",
            "totalImages",
            "processedImages",
            "failedImages",
            "bytesIn",
            "bytesOut",
        )
    }
    | {"percent": {"type": "number", "minimum": 0, "maximum": 100}},
}
STATUSES = [str(s) for s in JobStatus]
PRODUCT_STATUSES = [str(s) for s in RowStatus]
# What a listing shows of a job (GET /api/jobs), and how its status begins.
JOB_SUMMARY = {
    "requestId": {"type": "string", "format": "uuid"},
    "status": {"type": "string", "enum": STATUSES},
    "createdAt": {"type": "string", "format": "date-time"},
    "updatedAt": {"type": "string", "format": "date-time"},
    "progress": PROGRESS,
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
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "details"],
                    "properties": {
                        "error": {"type": "string"},
                        "details": {"type": "array", "items": {}},
                    },
                },
                "Accepted": {
                    "type": "object",
                    "properties": {
                        "requestId": {"type": "string", "format": "uuid"},
                        "message": {"type": "string"},
                        "statusUrl": {"type": "string"},
                    },
                },
                "PresignedUpload": {
                    "type": "object",
                    "properties": {
                        "requestId": {"type": "string", "format": "uuid"},
                        "upload": {
                            "type": "object",
                            "properties": {
                                "url": {"type": "string"},
                                "fields": {
                                    "type": "object",
                                    "additionalProperties": {"type": "string"},
                                },
                            },
                        },
                        "expiresIn": {"type": "integer"},
                        "statusUrl": {"type": "string"},
                    },
                },
                "Status": {
                    "type": "object",
                    "properties": {
                        **JOB_SUMMARY,
                        "products": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Product"},
                        },
                        "nextCursor": {"type": "string", "nullable": True},
                        "outputCsvUrl": {"type": "string", "nullable": True},
                        "errors": {"type": "array", "items": {}},
                        "webhook": {
                            "type": "object",
                            "properties": {
                                "state": {"type": "string"},
                                "attempts": {"type": "integer"},
                                "lastStatusCode": {"type": "integer", "nullable": True},
                                "id": {"type": "string", "nullable": True},
                                "nextAttemptAt": {"type": "string", "nullable": True},
                                "history": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "attempt": {"type": "integer"},
                                            "at": {"type": "string"},
                                            "statusCode": {"type": "integer", "nullable": True},
                                            "error": {"type": "string"},
                                            "durationMs": {"type": "integer"},
                                        },
                                    },
                                },
                            },
                        },
                        "generation": {
                            "type": "integer",
                            "description": "How many times the failed images were retried",
                        },
                        "options": OPTIONS,
                    },
                },
                "JobSummary": {
                    "type": "object",
                    "required": ["requestId", "status", "createdAt", "updatedAt", "progress"],
                    "properties": JOB_SUMMARY,
                },
                "JobList": {
                    "type": "object",
                    "required": ["jobs", "nextCursor"],
                    "properties": {
                        "jobs": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/JobSummary"},
                        },
                        "nextCursor": {
                            "type": "string",
                            "nullable": True,
                            "description": "Pass as `cursor` for the next page; null at the end",
                        },
                    },
                },
                "Product": {
                    "type": "object",
                    "properties": {
                        "serialNumber": {"type": "integer"},
                        "productName": {"type": "string"},
                        "inputImageUrls": {"type": "array", "items": {"type": "string"}},
                        "outputImageUrls": {"type": "array", "items": {"type": "string"}},
                        "status": {"type": "string", "enum": PRODUCT_STATUSES},
                        "inputBytes": {"type": "array", "items": {"type": "integer"}},
                        "outputBytes": {"type": "array", "items": {"type": "integer"}},
                        "errors": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "url": {"type": "string"},
                                    "code": {"type": "string"},
                                    "message": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        },
    }


def _swagger_dir() -> Path | None:
    return SWAGGER_UI if (SWAGGER_UI / "swagger-ui-bundle.js").is_file() else None


# Swagger UI as it comes fails axe-core (tests/e2e/test_page_accessibility.py). A plugin of
# ours changes its markup where it is wrong: its title block is outside any landmark (made a
# banner), its tags' <h3> follow its <h1> (an <h2> between), and with deep linking each
# operation's path is a link inside the operation's button (nested controls: the path is
# text; the address still deep-links, as `deepLinking` does). A small script names what it
# leaves nameless once rendered (fields, response tables, the Authorize dialog, its close
# button and its headings' levels, schema toggles), starts a button's name with the words it
# shows (the dialog's "Authorize" is named "Apply credentials": axe-core 4.14's
# label-content-name-mismatch) and lets scrolling code blocks take the keyboard's focus. Our
# stylesheet, web/api-docs.css, darkens its colours that fall below WCAG AA contrast.
DOCS_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Image pipeline API</title><link rel="stylesheet" href="api-docs?asset=swagger-ui.css">
<link rel="stylesheet" href="api-docs?asset=api-docs.css">
</head><body><div id="swagger-ui"></div>
<script src="api-docs?asset=swagger-ui-bundle.js"></script>
<script>
function accessibleMarkup() {
  const wrap = (render) => (Original, system) => (props) =>
    render(system.React.createElement, Original, props);
  return {wrapComponents: {
    InfoContainer: wrap((h, Original, props) => h("div", {role: "banner"}, h(Original, props))),
    operations: wrap((h, Original, props) => h("div", null,
      h("h2", {className: "operations-heading"}, "Operations"), h(Original, props))),
    DeepLink: wrap((h, Original, props) => h(Original, {...props, enabled: false})),
  }};
}
function nameWhatIsNameless(root) {
  for (const field of root.querySelectorAll("input, select, textarea")) {
    if (field.labels.length || field.getAttribute("aria-label")) continue;
    const row = field.closest("tr[data-param-name], tr[data-property-name]");
    const name = row ? row.dataset.paramName || row.dataset.propertyName
      : field.matches(".body-param__text") ? "Request body" : field.placeholder;
    if (name) field.setAttribute("aria-label", name);
  }
  for (const table of root.querySelectorAll("table[role=region]:not([aria-label])")) {
    const path = table.closest(".opblock")?.querySelector(".opblock-summary-path");
    table.setAttribute("aria-label", `Responses of ${path?.dataset.path || "the operation"}`);
  }
  for (const block of root.querySelectorAll("pre.microlight:not([tabindex])")) {
    block.tabIndex = 0;
  }
  for (const dialog of root.querySelectorAll(".modal-ux:not([role])")) {
    const title = dialog.querySelector(".modal-ux-header h3");
    Object.assign(dialog, {role: "dialog", ariaModal: "true"});
    if (title) {
      Object.assign(title, {id: title.id || "dialog-title", ariaLevel: "2"});
      dialog.setAttribute("aria-labelledby", title.id);
    }
  }
  for (const heading of root.querySelectorAll(".modal-ux h4:not([aria-level])")) {
    heading.ariaLevel = "3";
  }
  for (const heading of root.querySelectorAll(".modal-ux h6:not([aria-level])")) {
    heading.ariaLevel = "4";  // "Authorized", under its scheme's h4
  }
  for (const close of root.querySelectorAll("button.close-modal:not([aria-label])")) {
    close.setAttribute("aria-label", "Close");
  }
  for (const button of root.querySelectorAll("button[aria-label]")) {
    const text = button.textContent.trim(), label = button.getAttribute("aria-label");
    if (text && !label.toLowerCase().startsWith(text.toLowerCase())) {
      button.setAttribute("aria-label", `${text}: ${label.toLowerCase()}`);
    }
  }
  for (const toggle of root.querySelectorAll("button.model-box-control:not([aria-label])")) {
    if (toggle.textContent.trim()) continue;
    const property = toggle.closest("tr.property-row")?.querySelector("td")?.textContent;
    toggle.setAttribute("aria-label", `${(property || "").trim() || "schema"}: details`);
  }
}
let naming = false;
new MutationObserver(() => {
  if (naming) return;
  naming = true;
  requestAnimationFrame(() => { naming = false; nameWhatIsNameless(document); });
}).observe(document.getElementById("swagger-ui"),
  {childList: true, subtree: true, characterData: true, attributeFilter: ["aria-label"]});
window.ui = SwaggerUIBundle({url: "api/openapi.json", dom_id: "#swagger-ui",
  deepLinking: true, layout: "BaseLayout", validatorUrl: null, plugins: [accessibleMarkup]});
</script></body></html>"""


def docs_page() -> str:
    """Swagger UI when its files are there; else a plain table of the routes."""
    return DOCS_PAGE if _swagger_dir() is not None else routes_table_page()


def docs_asset(name: str) -> tuple[str, str] | None:
    """(body, media type) of one whitelisted file of the docs page, or None. Only the
    whitelisted names reach the cache: a name asked for that is not one costs nothing kept
    (the cache holds at most the few files of DOCS_ASSETS, not every name anyone asks for)."""
    if name not in DOCS_ASSETS:
        return None
    return _read_asset(name)


@cache
def _read_asset(name: str) -> tuple[str, str] | None:
    media = DOCS_ASSETS[name]
    folder = WEB if name in _OUR_ASSETS else _swagger_dir()
    if folder is None:
        return None
    return (folder / name).read_text(encoding="utf-8"), media


def routes_table_page() -> str:
    spec = document()
    items = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            codes = ", ".join(sorted(op.get("responses", {})))
            items.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}"
                f"</code></td><td>{html.escape(op.get('summary', ''))}</td><td>{codes}</td></tr>"
            )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Image pipeline API</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2rem}td{padding:.3rem .8rem;"
        "border-bottom:1px solid #ddd}</style></head><body><h1>Image pipeline API</h1>"
        "<p>Machine-readable: <a href='api/openapi.json'>api/openapi.json</a></p>"
        "<table><tr><th>Method</th><th>Path</th><th>What</th><th>Responses</th></tr>"
        + "".join(items)
        + "</table></body></html>"
    )


@cache
def index_page() -> str:
    """The watch page: upload through the presigned POST, then progress and before/after."""
    return (WEB / "index.html").read_text(encoding="utf-8")
