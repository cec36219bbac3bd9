"""What the services need, in one object. bootstrap builds it from adapters; tests from fakes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from chalicelib.config import Settings
from chalicelib.ports import (
    CdnInvalidator,
    Clock,
    EventPublisher,
    IdFactory,
    ImageFetcher,
    JobStore,
    ObjectStore,
    ReuseIndex,
    SecretSource,
    TaskQueue,
    TenantStore,
    WebhookSender,
    WorkPool,
)

UrlChecker = Callable[[str], str | None]
"""Returns why a URL is refused (syntax or address), or None when it may be used."""


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

    def output_url(self, key: str) -> str:
        """A URL that answers a plain GET: PUBLIC_BASE_URL when set, else presigned."""
        if not key:
            return ""
        if self.settings.public_base_url:
            return f"{self.settings.public_base_url}/{key}"
        return self.outputs.presigned_get(key, self.settings.output_url_ttl)


class NoEvents:
    """The publisher when no EVENT_BUS_NAME is configured."""

    def publish(self, detail_type: str, detail: Mapping[str, object]) -> None:
        return None


class NoCdn:
    """The CDN when no CDN_DISTRIBUTION_ID is configured (locally: outputs are served by the
    storage itself, with nothing cached in front of it)."""

    def invalidate(self, paths: Sequence[str]) -> None:
        return None
