"""What the services need, in one object. bootstrap builds it from adapters; tests from fakes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

from chalicelib.config import Settings
from chalicelib.ports import (
    CdnInvalidator,
    Clock,
    EventPublisher,
    IdFactory,
    ImageFetcher,
    JobStore,
    MemoryGate,
    ObjectStore,
    ReuseIndex,
    SecretSource,
    TaskQueue,
    TenantStore,
    WebhookOrigins,
    WebhookSender,
    WorkPool,
)

UrlChecker = Callable[[str], str | None]
"""Returns why a URL is refused (syntax or address), or None when it may be used."""

REQUEST_API_BASE: ContextVar[str] = ContextVar("request_api_base", default="")
"""The API's base URL as the request being answered reached it (app.py sets it per request):
on AWS the API function cannot be told its own API's URL (the API refers to the function, so
the function cannot refer to the API), so it answers with the one it was called at."""


class MissingPublicBaseUrl(RuntimeError):
    """PUBLIC_BASE_URL is not set: there is no URL under which outputs can be read."""


class UnboundedMemory:
    """The memory gate where the function's memory is not known: every image starts."""

    def take(self, nbytes: int, timeout: float | None = None) -> None:
        return None

    def give_back(self, nbytes: int) -> None:
        return None

    def could_hold(self, nbytes: int) -> bool:
        return True


@dataclass
class Dependencies:
    settings: Settings
    store: JobStore
    uploads: ObjectStore
    outputs: ObjectStore
    rows_queue: TaskQueue
    finalize_queue: TaskQueue
    webhook_queue: TaskQueue
    fetcher: ImageFetcher
    webhook_sender: WebhookSender
    check_webhook_url: UrlChecker
    clock: Clock
    new_id: IdFactory
    image_pool: WorkPool
    ingest_queue: TaskQueue
    events: EventPublisher
    sleep: Callable[[float], None]
    tenants: TenantStore
    secrets: SecretSource
    reuse: ReuseIndex
    cdn: CdnInvalidator
    webhook_origins: WebhookOrigins
    # the images' share of the worker's memory (bootstrap: from its MemorySize); unbounded
    # where the function's memory is not known
    memory: MemoryGate = field(default_factory=UnboundedMemory)

    def output_url(self, key: str) -> str:
        """An output image's link: `<PUBLIC_BASE_URL>/<key>`, which answers a plain GET and
        does not expire (never presigned: a presigned link dies within 7 days, and on AWS
        with the function's session credentials). "" for no output."""
        if not key:
            return ""
        if not self.settings.public_base_url:
            raise MissingPublicBaseUrl(
                "PUBLIC_BASE_URL is not set: output links are <PUBLIC_BASE_URL>/<key> "
                "(the template sets it to its CDN; the emulator to its storage endpoint)"
            )
        return f"{self.settings.public_base_url}/{key}"

    def api_base_url(self) -> str:
        """API_BASE_URL, else the one the current request came in at ("" outside a request:
        links are then relative to the API's root)."""
        return self.settings.api_base_url or REQUEST_API_BASE.get()

    def output_csv_url(self, request_id: str) -> str:
        """Where a job's output CSV is read: the authenticated route (a link that lasts; each
        use answers with a presigned link of at most 15 minutes), never a public link, since
        the CSV lists the tenant's products and sources."""
        return f"{self.api_base_url()}/api/jobs/{request_id}/output.csv"


class NoEvents:
    """The publisher when no EVENT_BUS_NAME is configured."""

    def publish(self, detail_type: str, detail: Mapping[str, object]) -> None:
        return None


class NoCdn:
    """The CDN when no CDN_DISTRIBUTION_ID is configured (locally: outputs are served by the
    storage itself, with nothing cached in front of it)."""

    def invalidate(self, paths: Sequence[str]) -> None:
        return None
