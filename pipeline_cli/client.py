"""The HTTP API, as the CLI uses it. Errors keep the API's own words and details.

The API key goes, as `Authorization: Bearer <key>`, to the API's own routes only: never to
storage (a presigned POST carries its own policy), never into a message."""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import requests

TIMEOUT = (5.0, 60.0)
STATUS_PAGE = 1000
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)  # delta-seconds, or a fraction
KEPT_ANSWERS = 16  # the status and list answers kept for If-None-Match, one per URL
# API Gateway's own 429 (the tenant's burst spent; the request never reached the function):
# asked again after its Retry-After, this many times at most, as AWS's SDKs retry throttling
THROTTLE_RETRIES = 5
THROTTLE_WAIT_CAP = 10.0  # seconds, whatever Retry-After says


@dataclass
class ApiError(Exception):
    """An answer that is not a success: the API's `error` and `details`, or the transport's.
    `retry_after`: the seconds a 429's `Retry-After` asks to wait, when it says."""

    message: str
    status: int | None = None
    details: list[Any] = field(default_factory=list)
    retry_after: float | None = None

    def __str__(self) -> str:
        return self.message


@dataclass
class KeyRefused(ApiError):
    """The API answered 401: no API key was sent (`key_sent` False), or it was not valid."""

    key_sent: bool = False


def retry_after_seconds(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds (a fraction kept as sent, never
    rounded down) or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now())


@dataclass(frozen=True)
class OutputOptions:
    """A job's output options, as the CLI's flags give them (None: the API's default)."""

    format: str | None = None
    quality: int | str | None = None  # a number, or "auto"
    max_width: int | None = None
    max_height: int | None = None
    target_score: float | None = None  # what "auto" aims at

    def fields(self) -> dict[str, str]:
        """The upload's fields (`format`, `quality`, `targetScore`, `maxWidth`, `maxHeight`),
        those given."""
        return {name: str(value) for name, value in self.json().items()}

    def json(self) -> dict[str, object]:
        """The same as JSON keys of `POST /api/uploads` (numbers as numbers)."""
        given: dict[str, object | None] = {
            "format": self.format,
            "quality": self.quality,
            "targetScore": self.target_score,
            "maxWidth": self.max_width,
            "maxHeight": self.max_height,
        }
        return {
            name: _whole(value) if isinstance(value, float) else value
            for name, value in given.items()
            if value is not None
        }


def _whole(value: float) -> int | float:
    """70.0 as 70 (a target given as a whole number goes as one)."""
    return int(value) if value.is_integer() else value


@dataclass(frozen=True)
class Submitted:
    request_id: str
    status_url: str
    message: str


def _error_from(response: requests.Response, what: str) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    retry_after = (
        retry_after_seconds(response.headers.get("Retry-After"))
        if response.status_code == 429
        else None
    )
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        details = body.get("details")
        return ApiError(body["error"], response.status_code, list(details or []), retry_after)
    text = response.text.strip()
    s3_message = re.search(r"<Message>(.*?)</Message>", text, re.S)
    if s3_message:
        text = s3_message.group(1)
    return ApiError(
        f"{what}: HTTP {response.status_code} {text[:300]}".rstrip(),
        response.status_code,
        retry_after=retry_after,
    )


def _throttled(response: requests.Response) -> bool:
    """API Gateway's throttle (its `x-amzn-ErrorType`), not the API's own 429 (a job's retry
    or redelivery asked again too soon), which is the caller's to see."""
    error_type = response.headers.get("x-amzn-ErrorType", "")
    return response.status_code == 429 and error_type.startswith("TooManyRequestsException")


class ApiClient:
    """`api_key`, when given, authenticates every call to the API (`base_url`'s routes)."""

    def __init__(
        self,
        base_url: str,
        session: requests.Session | None = None,
        *,
        api_key: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()
        self._auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._kept: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[str, dict[str, Any]]] = {}

    def __repr__(self) -> str:  # never the key
        return f"ApiClient({self.base_url!r}, key={'set' if self._auth else 'none'})"

    def _call(self, method: str, path: str, what: str, **kwargs: Any) -> requests.Response:
        """A call to the API (`path` under the base URL, with the key) or, for an absolute
        URL, to storage (without it). requests drops the header itself if an answer
        redirects to another host, port or scheme (a presigned link)."""
        to_api = not path.startswith(("http://", "https://"))
        url = self.base_url + path if to_api else path
        if to_api and self._auth:
            kwargs["headers"] = {**kwargs.get("headers", {}), **self._auth}
        for attempt in range(THROTTLE_RETRIES + 1):
            try:
                response = self.session.request(method, url, timeout=TIMEOUT, **kwargs)
            except requests.RequestException as exc:
                raise ApiError(f"{what}: cannot reach {url}: {exc}") from exc
            if not (to_api and _throttled(response)) or attempt == THROTTLE_RETRIES:
                break
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            time.sleep(min(THROTTLE_WAIT_CAP, 1.0 if wait is None else wait))
        if to_api and response.status_code == 401:
            error = _error_from(response, what)
            raise KeyRefused(error.message, 401, error.details, key_sent=bool(self._auth))
        if response.status_code >= 400:
            raise _error_from(response, what)
        return response

    def _get_json(self, path: str, what: str, params: Mapping[str, str]) -> dict[str, Any]:
        """A GET of the status or the job list, conditional: with the ETag of the last answer
        to the same URL as `If-None-Match`, a `304` means that answer still holds."""
        key = (path, tuple(sorted(params.items())))
        kept = self._kept.get(key)
        headers = {"If-None-Match": kept[0]} if kept else {}
        response = self._call("GET", path, what, params=params, headers=headers)
        if response.status_code == 304 and kept is not None:
            return copy.deepcopy(kept[1])
        body = self._json(response, what)
        tag = response.headers.get("ETag")
        self._kept.pop(key, None)
        if tag:
            if len(self._kept) >= KEPT_ANSWERS:
                self._kept.pop(next(iter(self._kept)))  # the oldest
            self._kept[key] = (tag, copy.deepcopy(body))
        return body

    def _json(self, response: requests.Response, what: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError as exc:
            raise ApiError(f"{what}: the answer is not JSON", response.status_code) from exc
        if not isinstance(body, dict):
            raise ApiError(f"{what}: the answer is not a JSON object", response.status_code)
        return body

    @staticmethod
    def _form(
        csv_path: Path, webhook_url: str | None, options: OutputOptions | None = None
    ) -> dict[str, Any]:
        data = {"webhookUrl": webhook_url} if webhook_url else {}
        data |= (options or OutputOptions()).fields()
        files = {"file": (csv_path.name, csv_path.read_bytes(), "text/csv")}
        return {"files": files, "data": data}

    def submit_multipart(
        self,
        csv_path: Path,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
        options: OutputOptions | None = None,
    ) -> Submitted:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        what = "upload"
        response = self._call(
            "POST",
            "/api/uploadAndProcessDocument",
            what,
            headers=headers,
            **self._form(csv_path, webhook_url, options),
        )
        body = self._json(response, what)
        return Submitted(
            str(body["requestId"]), str(body.get("statusUrl", "")), str(body.get("message", ""))
        )

    def submit_presigned(
        self,
        csv_path: Path,
        webhook_url: str | None = None,
        options: OutputOptions | None = None,
    ) -> Submitted:
        request: dict[str, object] = {"fileName": csv_path.name}
        if webhook_url:
            request["webhookUrl"] = webhook_url
        request |= (options or OutputOptions()).json()
        body = self._json(
            self._call("POST", "/api/uploads", "presigned upload", json=request), "presigned upload"
        )
        upload: Mapping[str, Any] = body["upload"]
        fields = {str(k): str(v) for k, v in dict(upload["fields"]).items()}
        files = {"file": (csv_path.name, csv_path.read_bytes(), "text/csv")}
        self._call("POST", str(upload["url"]), "upload to storage", data=fields, files=files)
        return Submitted(
            str(body["requestId"]), str(body.get("statusUrl", "")), "uploaded to storage"
        )

    def validate(self, csv_path: Path, webhook_url: str | None = None) -> dict[str, Any]:
        response = self._call(
            "POST", "/api/validate", "validate", **self._form(csv_path, webhook_url)
        )
        return self._json(response, "validate")

    def status(
        self, request_id: str, limit: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, str] = {}
        if limit is not None:
            params["limit"] = str(limit)
        if cursor:
            params["cursor"] = cursor
        return self._get_json(f"/api/getProcessingStatus/{request_id}", "status", params)

    def full_status(self, request_id: str) -> dict[str, Any]:
        """The status with every product (all pages)."""
        document = self.status(request_id, STATUS_PAGE)
        products = list(document.get("products") or [])
        cursor = document.get("nextCursor")
        while cursor:
            page = self.status(request_id, STATUS_PAGE, str(cursor))
            products.extend(page.get("products") or [])
            cursor = page.get("nextCursor")
        return {**document, "products": products, "nextCursor": None}

    def jobs(
        self, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        """One page of the caller's jobs, newest first: `{"jobs": [...], "nextCursor"}`."""
        params: dict[str, str] = {}
        if status:
            params["status"] = status
        if limit is not None:
            params["limit"] = str(limit)
        if cursor:
            params["cursor"] = cursor
        return self._get_json("/api/jobs", "jobs", params)

    def cancel(self, request_id: str) -> dict[str, Any]:
        """Ask the API to cancel the job (202); an ended job is a 409 ApiError."""
        return self._json(self._call("POST", f"/api/jobs/{request_id}/cancel", "cancel"), "cancel")

    def retry(self, request_id: str) -> dict[str, Any]:
        """Run a finished job's failed images again (202); a running or cancelled job is a
        409, a retry too soon after the last a 429."""
        return self._json(self._call("POST", f"/api/jobs/{request_id}/retry", "retry"), "retry")

    def redeliver(self, request_id: str) -> dict[str, Any]:
        """Send a finished job's last webhook again, under its id (202; 409 before the job
        has one, 429 too soon after the last)."""
        what = "redeliver"
        path = f"/api/jobs/{request_id}/webhook/redeliver"
        return self._json(self._call("POST", path, what), what)

    def delete(self, request_id: str, on_progress: Callable[[str], None] | None = None) -> None:
        """Delete an ended job, asking again while the API answers 202 (a job with more
        outputs than one call removes: each such answer says how many it removed)."""
        removed = 0
        while True:
            response = self._call("DELETE", f"/api/jobs/{request_id}", "delete")
            if response.status_code != 202:
                return
            step = int(self._json(response, "delete").get("deletedObjects") or 0)
            if step <= 0:
                raise ApiError("delete: the API answered 202 without deleting anything", 202)
            removed += step
            if on_progress is not None:
                on_progress(f"deleting {request_id}: {removed:,} output objects so far")

    def output_csv(self, request_id: str) -> bytes:
        return self._call("GET", f"/api/jobs/{request_id}/output.csv", "download").content
