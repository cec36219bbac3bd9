"""The HTTP glue: each handler takes parsed request parts, calls a service, returns an HttpReply.
app.py turns replies into Chalice responses; nothing here knows about Chalice."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chalicelib import openapi
from chalicelib.domain.output_options import FIELDS as OPTION_FIELDS
from chalicelib.errors import Conflict, InvalidRequest, NotFound, UnsupportedMediaType
from chalicelib.multipart_form import Form, FormPart, parse_form
from chalicelib.pages import docs_page, watch_page
from chalicelib.services import cancel, deletion, job_access, job_actions, status, upload
from chalicelib.services.deps import Dependencies

log = logging.getLogger(__name__)

JSON = {"Content-Type": "application/json"}
MAX_CSV_LINK_SECONDS = 900  # the output CSV's presigned link lives at most 15 minutes
# On every answer (app.py's middleware adds them; the emulator's own answers carry them too).
# A JSON answer loads nothing, so its policy is `default-src 'none'`; the two HTML pages
# carry their own (page_csp).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# On every answer of the API too: with the template's CORS preflight (Api Cors), a page of
# another origin may call the API (the key is a header, never a cookie, hence "*") and read
# the status's ETag to send it back as If-None-Match.
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "ETag",
}
STATUS_CACHE_CONTROL = "private, no-cache"
_INLINE = {tag: re.compile(rf"<{tag}>(.*?)</{tag}>", re.DOTALL) for tag in ("script", "style")}
NOT_CSV_TYPES = (
    "image/",
    "audio/",
    "video/",
    "font/",
    "application/pdf",
    "application/zip",
    "application/gzip",
    "application/x-gzip",
    "application/json",
    "application/vnd.openxmlformats",
    "application/msword",
)
NOT_CSV_SUFFIXES = (
    ".xlsx",
    ".xls",
    ".json",
    ".zip",
    ".gz",
    ".pdf",
    ".png",
    ".jpg",
    ".jpeg",
    ".gif",
    ".webp",
    ".parquet",
    ".numbers",
    ".ods",
)


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=lambda: dict(JSON))


def _status_url(deps: Dependencies, request_id: str) -> str:
    return f"{deps.api_base_url()}/api/getProcessingStatus/{request_id}"


def _csv_part(form: Form) -> FormPart:
    part = form.file("file")
    if part is None:
        raise InvalidRequest(
            "the form has no 'file' part", [{"field": "file", "message": "required"}]
        )
    name = (part.filename or "").lower()
    ctype = part.content_type.lower()
    head = bytes(part.data[:8192])
    if ctype.startswith(NOT_CSV_TYPES) or name.endswith(NOT_CSV_SUFFIXES) or b"\x00" in head:
        raise UnsupportedMediaType(
            "the 'file' part is not a CSV",
            [{"field": "file", "fileName": part.filename, "contentType": part.content_type}],
        )
    return part


def upload_document(
    deps: Dependencies,
    *,
    tenant: str,
    content_type: str,
    body: bytes,
    idempotency_key: str | None,
) -> HttpReply:
    form = parse_form(content_type, body, max_file_bytes=deps.settings.max_csv_bytes)
    part = _csv_part(form)
    options = upload.output_options({name: form.text(name) for name in OPTION_FIELDS})
    accepted = upload.submit_csv(
        deps, bytes(part.data), form.text("webhookUrl"), idempotency_key, tenant, options=options
    )
    job = accepted.job
    message = (
        "CSV accepted; processing started"
        if accepted.created
        else ("CSV already accepted under this Idempotency-Key")
    )
    return HttpReply(
        202,
        {
            "requestId": job.request_id,
            "message": message,
            "statusUrl": _status_url(deps, job.request_id),
        },
    )


def validate_document(deps: Dependencies, *, content_type: str, body: bytes) -> HttpReply:
    """The dry run: the same report as the upload, and no job."""
    form = parse_form(content_type, body, max_file_bytes=deps.settings.max_csv_bytes)
    part = _csv_part(form)
    upload.check_webhook_url(deps, form.text("webhookUrl"))
    rows, images = upload.validate_upload(deps, bytes(part.data))
    return HttpReply(200, {"valid": True, "totalProducts": rows, "totalImages": images})


def create_upload(deps: Dependencies, body: bytes, *, tenant: str) -> HttpReply:
    options: Any = {}
    if body.strip():
        try:
            options = json.loads(body)
        except RecursionError as exc:  # e.g. 100,000 '[': the parser's stack, not a 500
            raise InvalidRequest("the body must be a JSON object; it is nested too deeply") from exc
        except ValueError as exc:
            raise InvalidRequest("the body must be a JSON object") from exc
    if not isinstance(options, dict):
        raise InvalidRequest("the body must be a JSON object")
    hook = options.get("webhookUrl")
    if hook is not None and not isinstance(hook, str):
        raise InvalidRequest("webhookUrl must be a string", [{"field": "webhookUrl"}])
    presigned = upload.create_presigned_upload(deps, hook, tenant, upload.output_options(options))
    job = presigned.job
    return HttpReply(
        201,
        {
            "requestId": job.request_id,
            "upload": {"url": presigned.post.url, "fields": presigned.post.fields},
            "expiresIn": presigned.expires_in,
            "statusUrl": _status_url(deps, job.request_id),
        },
    )


def _tagged(answer: status.Tagged) -> HttpReply:
    """200 with the document, or 304 with no body when the client's copy is current; both
    with the tag, and kept by no shared cache (they are one tenant's) and by no private one
    without asking first."""
    headers = {
        "ETag": answer.tag,
        "Cache-Control": STATUS_CACHE_CONTROL,
        "Vary": "Authorization",
    }
    if answer.document is None:
        return HttpReply(304, "", headers)
    return HttpReply(200, answer.document, {**JSON, **headers})


def processing_status(
    deps: Dependencies,
    request_id: str,
    limit: str | None,
    cursor: str | None,
    *,
    tenant: str,
    if_none_match: str | None = None,
) -> HttpReply:
    return _tagged(
        status.tagged_status(deps, request_id, tenant, limit, cursor, if_none_match=if_none_match)
    )


def list_jobs(
    deps: Dependencies,
    params: Mapping[str, str],
    *,
    tenant: str,
    if_none_match: str | None = None,
) -> HttpReply:
    return _tagged(
        status.tagged_jobs(
            deps,
            tenant,
            params.get("status"),
            params.get("limit"),
            params.get("cursor"),
            if_none_match=if_none_match,
        )
    )


def output_csv(deps: Dependencies, request_id: str, *, tenant: str) -> HttpReply:
    job = job_access.load_job(deps, request_id, tenant)
    if not job.status.terminal or not job.output_csv_key:
        raise Conflict(f"job {request_id} is {job.status}; the output CSV exists once it ends")
    # A link of its own for each request, short-lived (the CSV is the tenant's, not public),
    # and not to be kept by any cache.
    ttl = max(1, min(deps.settings.output_csv_link_ttl, MAX_CSV_LINK_SECONDS))
    location = deps.outputs.presigned_get(job.output_csv_key, ttl)
    headers = {**JSON, "Location": location, "Cache-Control": "no-store"}
    return HttpReply(302, {"location": location, "expiresIn": ttl}, headers)


def api_base_of(context: Mapping[str, Any], path: str) -> str:
    """The API's base URL as this request reached it, from API Gateway's request context:
    `https://<domainName><what precedes the route in the path>` (the stage on the
    execute-api domain, the base path on a custom domain). "" when the context does not say
    (a local server: API_BASE_URL says it there)."""
    domain = str(context.get("domainName") or "")
    full = str(context.get("path") or "")
    if not domain or not path or not full.endswith(path):
        return ""
    return f"https://{domain}{full[: len(full) - len(path)]}".rstrip("/")


def retry_job(deps: Dependencies, request_id: str, *, tenant: str) -> HttpReply:
    job_access.load_job(deps, request_id, tenant)  # 400 malformed, 404 unknown or not theirs
    job = job_actions.retry_failed(deps, request_id)
    return HttpReply(
        202,
        {
            "requestId": job.request_id,
            "status": str(job.status),
            "generation": job.generation,
            "message": "the failed images are queued again",
            "statusUrl": _status_url(deps, job.request_id),
        },
    )


def cancel_job(deps: Dependencies, request_id: str, *, tenant: str) -> HttpReply:
    job = cancel.request_cancel(deps, job_access.load_job(deps, request_id, tenant))
    return HttpReply(
        202,
        {
            "requestId": job.request_id,
            "status": str(job.status),
            "message": "the job is being cancelled: no new image starts; it ends `cancelled`",
            "statusUrl": _status_url(deps, job.request_id),
        },
    )


def delete_job(deps: Dependencies, request_id: str, *, tenant: str) -> HttpReply:
    """204 once the job is gone; 202 when it has more outputs than one call removes (ask
    again)."""
    removed = deletion.delete_job(deps, job_access.load_job(deps, request_id, tenant))
    if removed.done:
        return HttpReply(204, "", {})
    return HttpReply(
        202,
        {
            "requestId": request_id,
            "message": "part of the outputs are deleted; send DELETE again to go on",
            "deletedObjects": removed.objects,
        },
    )


def redeliver_webhook(deps: Dependencies, request_id: str, *, tenant: str) -> HttpReply:
    job_access.load_job(deps, request_id, tenant)
    job = job_actions.redeliver_webhook(deps, request_id)
    return HttpReply(
        202,
        {
            "requestId": job.request_id,
            "message": "the webhook is queued for delivery",
            "webhook": status.webhook_view(job),
        },
    )


def health(deps: Dependencies) -> HttpReply:
    """Up or down, nothing more: the route is public, so which dependency failed, and how
    (a driver's error names hosts and ports), goes to the log, not to the caller."""
    checks = {
        "database": deps.store.ping,
        "storage": deps.uploads.ping,
        "queue": deps.rows_queue.ping,
    }
    down = []
    for name, check in checks.items():
        try:
            check()
        except Exception:
            log.exception("health: the %s is not answering", name, extra={"component": name})
            down.append(name)
    if down:
        return HttpReply(503, {"error": "a dependency is not answering", "details": []})
    return HttpReply(200, {"status": "ok"})


def openapi_document() -> HttpReply:
    return HttpReply(200, openapi.document())


def _hashes(page: str, tag: str) -> str:
    """The CSP source list allowing exactly the page's inline <tag> blocks, by their hash."""
    digests = (
        hashlib.sha256(block.encode("utf-8")).digest() for block in _INLINE[tag].findall(page)
    )
    return " ".join(f"'sha256-{base64.b64encode(d).decode()}'" for d in digests)


def page_csp(page: str, *, swagger_ui: bool = False) -> str:
    """A Content-Security-Policy for one of our HTML pages, without 'unsafe-inline': the
    page's own inline <script> and <style> blocks are allowed by their hash, nothing else.

    The watch page (`/`) shows and measures images from anywhere (inputs are arbitrary http(s)
    URLs) and posts the CSV straight to storage, hence img-src and connect-src http: https:.
    Swagger UI (`/api-docs`) loads its bundle and stylesheet from this API ('self'); the
    styles it sets while rendering go through the CSSOM, which CSP does not govern, so it
    needs no 'unsafe-inline' either (tests/e2e/test_browser_page.py counts the violations)."""
    scripts = _hashes(page, "script")
    styles = _hashes(page, "style")
    if swagger_ui:
        script_src = f"'self' {scripts}".strip()
        style_src = f"'self' {styles}".strip()
        media = "img-src 'self' data:; font-src 'self' data:; connect-src 'self'"
    else:
        script_src = scripts or "'none'"
        style_src = styles or "'none'"
        media = "img-src http: https: data: blob:; connect-src 'self' http: https:"
    return (
        f"default-src 'none'; script-src {script_src}; style-src {style_src}; {media}; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )


def _page(body: str, *, swagger_ui: bool = False) -> HttpReply:
    return HttpReply(
        200,
        body,
        {
            "Content-Type": "text/html; charset=utf-8",
            "Content-Security-Policy": page_csp(body, swagger_ui=swagger_ui),
        },
    )


def api_docs_page() -> HttpReply:
    page = docs_page.docs_page(openapi.document)
    return _page(page, swagger_ui=page == docs_page.DOCS_PAGE)


def api_docs_asset(name: str) -> HttpReply:
    asset = docs_page.docs_asset(name)
    if asset is None:
        raise NotFound(f"no docs file named {name[:100]}")
    body, media_type = asset
    return HttpReply(200, body, {"Content-Type": media_type, "Cache-Control": "max-age=86400"})


def watch_page_reply() -> HttpReply:
    return _page(watch_page.watch_page())
