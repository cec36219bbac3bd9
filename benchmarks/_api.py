"""The benchmarks' one way of talking to the API, as a user would: the CSV through the HTTP
API, the status read back, both with the emulator's API key."""

from __future__ import annotations

import time

import requests

THROTTLED_ATTEMPTS = 6


def auth(api_key: str) -> dict[str, str]:
    """The header every call to the API carries."""
    return {"Authorization": f"Bearer {api_key}"}


def submit_csv(
    api_url: str, api_key: str, body: bytes, filename: str, timeout: float
) -> tuple[str, float]:
    """POST the CSV to `/api/uploadAndProcessDocument`; the job's id and the seconds the API
    took to accept it. API Gateway's throttle (the tenant's burst spent: a 429 with
    `x-amzn-ErrorType: TooManyRequestsException`) is waited out after its `Retry-After`, as
    the command-line client and AWS's SDKs do, a few times at most; the wait counts."""
    started = time.perf_counter()
    for attempt in range(THROTTLED_ATTEMPTS):
        answer = requests.post(
            f"{api_url}/api/uploadAndProcessDocument",
            files={"file": (filename, body, "text/csv")},
            headers=auth(api_key),
            timeout=timeout,
        )
        throttled = answer.headers.get("x-amzn-ErrorType") == "TooManyRequestsException"
        if answer.status_code != 429 or not throttled or attempt == THROTTLED_ATTEMPTS - 1:
            break
        time.sleep(float(answer.headers.get("Retry-After", "1")))
    answer.raise_for_status()
    return str(answer.json()["requestId"]), time.perf_counter() - started


def get_status(
    api_url: str,
    api_key: str,
    request_id: str,
    timeout: float,
    *,
    etag: str = "",
    session: requests.Session | None = None,
    **params: str | int,
) -> requests.Response:
    """GET `/api/getProcessingStatus/{request_id}` with these query parameters (and
    `If-None-Match: etag`, as the command-line client sends the tag it last got)."""
    headers = auth(api_key)
    if etag:
        headers["If-None-Match"] = etag
    return (session or requests).get(
        f"{api_url}/api/getProcessingStatus/{request_id}",
        params=params,
        headers=headers,
        timeout=timeout,
    )
