"""The benchmarks' one way of starting a job: the CSV through the HTTP API, as a user would."""

from __future__ import annotations

import time

import requests


def submit_csv(api_url: str, body: bytes, filename: str, timeout: float) -> tuple[str, float]:
    """POST the CSV to `/api/uploadAndProcessDocument`; the job's id and the seconds the API
    took to accept it."""
    started = time.perf_counter()
    answer = requests.post(
        f"{api_url}/api/uploadAndProcessDocument",
        files={"file": (filename, body, "text/csv")},
        timeout=timeout,
    )
    answer.raise_for_status()
    return str(answer.json()["requestId"]), time.perf_counter() - started
