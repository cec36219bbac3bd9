"""A client that waits out API Gateway's throttle, as AWS's SDKs and the command-line client
do: a `429` with `x-amzn-ErrorType: TooManyRequestsException` (the tenant's burst spent; the
request never reached the function) is asked again after its `Retry-After`, a few times at
most. The API's own `429` (a retry asked again too soon) is returned as it came."""

from __future__ import annotations

import time
from typing import Any

import requests

THROTTLED = "TooManyRequestsException"
ATTEMPTS = 6


class PatientSession(requests.Session):
    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        for _ in range(ATTEMPTS - 1):
            answer = super().request(method, url, *args, **kwargs)
            if answer.status_code != 429 or answer.headers.get("x-amzn-ErrorType") != THROTTLED:
                return answer
            time.sleep(float(answer.headers.get("Retry-After", "1")))
        return super().request(method, url, *args, **kwargs)
