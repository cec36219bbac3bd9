"""Webhook deliveries over requests: one POST behind the address guard of `guarded_http`."""

from __future__ import annotations

from collections.abc import Mapping

import requests

from chalicelib.adapters.guarded_http import (
    NETWORK_ERRORS,
    DeadlineWatchdog,
    GuardedResolver,
    RequestFailure,
    RequestProblem,
    Resolve,
    guarded_session,
    request_failure,
)
from chalicelib.domain.netguard import check_url_syntax
from chalicelib.ports import DeliveryResult

RETRY_AFTER_CHARS = 64  # an HTTP-date is 29; anything longer is not one


class HttpWebhookSender:
    """WebhookSender over requests: one guarded POST, no redirects, never raises."""

    def __init__(
        self,
        *,
        allow_private: bool,
        timeout: float = 10.0,
        session: requests.Session | None = None,
        resolve: Resolve | None = None,
        guard: GuardedResolver | None = None,
    ) -> None:
        self.timeout = timeout
        self.guard = guard or GuardedResolver(allow_private=allow_private, resolve=resolve)
        self._session = guarded_session(self.guard, session, pool_size=2)

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> DeliveryResult:
        problem = check_url_syntax(url)
        if problem:
            return DeliveryResult(None, error=f"invalid_url: {problem}")
        with DeadlineWatchdog(self.timeout) as watchdog:
            try:
                response = self._session.post(
                    url,
                    data=body,
                    headers=dict(headers),
                    timeout=(self.timeout, self.timeout),
                    allow_redirects=False,
                    stream=True,
                )
                response.close()  # the body is of no interest; do not let it be large
                retry_after = response.headers.get("Retry-After", "")[:RETRY_AFTER_CHARS]
                return DeliveryResult(response.status_code, retry_after=retry_after)
            except RequestFailure as failure:
                return DeliveryResult(None, error=f"{failure.problem}: {failure.message}")
            except NETWORK_ERRORS as exc:
                mapped = request_failure(exc, watchdog)
                if mapped.problem == RequestProblem.FETCH_FAILED:
                    return DeliveryResult(None, error=mapped.message)
                timed_out = mapped.problem == RequestProblem.TIMEOUT
                error = f"{mapped.problem}: {mapped.message}"
                return DeliveryResult(None, error=error, timed_out=timed_out)
