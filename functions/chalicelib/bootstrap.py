"""The one place that wires adapters to services. Built lazily, once per container.

Imported at init, with every library the wiring uses (boto3, botocore, pymongo, requests):
a function's first invocation then imports nothing, and a SnapStart snapshot holds them all.
Nothing is built here at import: no client, no secret read, no connection (those come with
`dependencies()`, on first use, after a restore; chalicelib/snapshot_hooks.py). What can be read
at init without credentials is: `prime_aws_models()` reads the AWS services' models (pure
data) into the loader every session of ours shares."""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import boto3
import botocore.session
from botocore.config import Config
from botocore.loaders import Loader, create_loader

from chalicelib.adapters.cloudfront import CloudFrontInvalidator
from chalicelib.adapters.eventbridge import EventBridgePublisher
from chalicelib.adapters.fair_pool import FairThreadPool
from chalicelib.adapters.guarded_http import url_refusal
from chalicelib.adapters.image_download import HttpImageFetcher
from chalicelib.adapters.memory_budget import MemoryBudget, resident_bytes
from chalicelib.adapters.mongo_reuse import MongoReuseIndex
from chalicelib.adapters.mongo_store import MongoJobStore
from chalicelib.adapters.mongo_tenants import MongoTenantStore
from chalicelib.adapters.mongo_webhook_origins import MongoWebhookOrigins
from chalicelib.adapters.s3 import S3ObjectStore
from chalicelib.adapters.secrets_manager import SecretsManagerSource
from chalicelib.adapters.sqs import SqsTaskQueue
from chalicelib.adapters.webhook_delivery import HttpWebhookSender
from chalicelib.config import Settings
from chalicelib.domain.retention import job_retention
from chalicelib.image_memory import budget_for_images
from chalicelib.ports import ObjectStore, SecretSource, TaskQueue
from chalicelib.services.deps import Dependencies, NoCdn, NoEvents

# botocore's models and endpoint rules, read from their JSON files once per container (before
# the snapshot, with SnapStart) and shared by every session `build` makes: pure data, no
# credential, no region, no connection.
AWS_MODELS: Loader = create_loader()
AWS_SERVICES = ("s3", "sqs", "secretsmanager", "events", "cloudfront")  # build's clients
# The body field whose value is a message's MessageGroupId (rows, ingest handovers and
# retries, finalizations, cancels, webhooks): its tenant.
TENANT_GROUP = "tenant"


def aws_session() -> boto3.session.Session:
    """A boto3 session of its own (its own credentials, resolved on its first client) reading
    the models from the shared loader."""
    core = botocore.session.get_session()
    core.register_component("data_loader", AWS_MODELS)
    session = boto3.session.Session(botocore_session=core)
    # boto3 adds its resource models' folder to the loader's search path on every session
    AWS_MODELS.search_paths[:] = list(dict.fromkeys(AWS_MODELS.search_paths))
    return session


def prime_aws_models() -> None:
    """Read every model the wiring's clients need into the shared loader, at init: a client
    of each service is made and dropped in a session of its own, with placeholder credentials
    and region, so nothing is resolved, signed or connected. The first invocation's clients
    are then made in about a fifth of the time (docs/performance.md, *Cold starts*)."""
    session = aws_session()
    for name in AWS_SERVICES:
        session.client(  # type: ignore[call-overload]
            name,
            region_name="us-east-1",
            aws_access_key_id="priming",
            aws_secret_access_key="priming",  # noqa: S106 - a placeholder, never sent
        )


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def new_request_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class LocalAws:
    """S3 and SQS adapters of a host that serves them in its own process (the local
    emulator, from moto's backends): each wraps the boto3 adapter it stands in front of, and
    may hand it the calls it does not serve itself."""

    object_store: Callable[[ObjectStore], ObjectStore]
    task_queue: Callable[[SqsTaskQueue, str], TaskQueue]  # (the boto3 queue, its URL)

    @classmethod
    def none(cls) -> LocalAws:
        """boto3's adapters as they are."""
        return cls(object_store=lambda store: store, task_queue=lambda queue, url: queue)


def tune_pillow(env: Mapping[str, str]) -> None:
    """Keep Pillow's freed image blocks for reuse (PILLOW_BLOCKS_MAX). Pillow reads the
    variable at import; applying it here also covers a process that imported Pillow first
    (the emulator). Identical output (measured: docs/performance.md). A process without
    Pillow loaded (the API, the light functions) is left without it."""
    raw = env.get("PILLOW_BLOCKS_MAX", "").strip()
    if raw.isdigit() and "PIL" in sys.modules:
        from PIL import _imaging

        _imaging.set_blocks_max(int(raw))


def build(settings: Settings, local_aws: LocalAws | None = None) -> Dependencies:
    """Real adapters: boto3 for S3 and SQS, pymongo for the store, requests for HTTP; with
    `local_aws`, its S3 and SQS adapters in front of boto3's."""
    tune_pillow(os.environ)
    session = aws_session()
    aws_config = Config(
        retries={"mode": "standard", "max_attempts": 5},
        max_pool_connections=max(16, settings.image_workers * 2),
        signature_version="s3v4",
    )
    s3 = session.client("s3", config=aws_config)
    sqs = session.client("sqs", config=aws_config)
    allow_private = settings.allow_private_hosts
    local = local_aws or LocalAws.none()

    def bucket(name: str) -> ObjectStore:
        return local.object_store(S3ObjectStore(s3, name))

    def queue(url: str, group_by: str | None = None) -> TaskQueue:
        boto_queue = SqsTaskQueue(sqs, url, group_by=group_by)
        return local.task_queue(boto_queue, url) if url else boto_queue

    secrets = SecretsManagerSource(
        lambda: session.client("secretsmanager", config=aws_config),
        ttl=settings.secrets_cache_seconds,
    )
    store = MongoJobStore.from_uri(
        mongo_uri(settings, secrets),
        settings.mongo_db,
        settings.default_tenant,
        retention=job_retention(settings),
        max_pool_size=settings.mongo_max_pool_size,
    )
    return Dependencies(
        settings=settings,
        store=store,
        tenants=MongoTenantStore(store.db),
        reuse=MongoReuseIndex(store.db),
        secrets=secrets,
        uploads=bucket(settings.uploads_bucket),
        outputs=bucket(settings.outputs_bucket),
        # a message group per tenant: SQS fair queues keep one tenant's rows, ingest slices,
        # finalizations and webhooks from holding up another's (within a tenant, the image
        # pool shares by job)
        rows_queue=queue(settings.rows_queue_url, group_by=TENANT_GROUP),
        finalize_queue=queue(settings.finalize_queue_url, group_by=TENANT_GROUP),
        webhook_queue=queue(settings.webhook_queue_url, group_by=TENANT_GROUP),
        fetcher=HttpImageFetcher(
            max_bytes=settings.max_image_bytes,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            deadline=settings.download_deadline,
            allow_private=allow_private,
        ),
        webhook_sender=HttpWebhookSender(
            allow_private=allow_private, timeout=settings.webhook_timeout
        ),
        check_webhook_url=lambda url: url_refusal(url, allow_private=allow_private),
        clock=SystemClock(),
        new_id=new_request_id,
        image_pool=FairThreadPool(settings.image_workers, thread_name_prefix="image"),
        ingest_queue=queue(settings.ingest_queue_url, group_by=TENANT_GROUP),
        events=(
            EventBridgePublisher(session.client("events", config=aws_config), bus)
            if (bus := settings.event_bus_name)
            else NoEvents()
        ),
        sleep=time.sleep,
        cdn=(
            CloudFrontInvalidator(
                session.client(
                    "cloudfront", config=Config(retries={"mode": "standard", "max_attempts": 5})
                ),
                distribution,
            )
            if (distribution := settings.cdn_distribution_id)
            else NoCdn()
        ),
        webhook_origins=MongoWebhookOrigins(store.db),
        memory=image_memory_budget(settings),
    )


def image_memory_budget(settings: Settings) -> MemoryBudget:
    """What the function's MemorySize leaves above this process as it is now (its imports
    done, its clients made): the images in flight share it."""
    resting = resident_bytes() or 0
    capacity = budget_for_images(
        settings.function_memory_mb, resting, settings.image_workers, settings.max_image_bytes
    )
    ceiling = None if capacity is None else capacity + resting
    return MemoryBudget(capacity, ceiling=ceiling)


def mongo_uri(settings: Settings, secrets: SecretSource) -> str:
    """The database's URI: from Secrets Manager when MONGO_URI_SECRET_ID names a secret
    (deployed: the URI and its password are in no function's configuration), else MONGO_URI."""
    if not settings.mongo_uri_secret_id:
        return settings.mongo_uri
    uri = secrets.get(settings.mongo_uri_secret_id)
    if not uri:
        raise RuntimeError(f"the secret {settings.mongo_uri_secret_id} has no MongoDB URI")
    return uri.strip()


_lock = threading.Lock()
_deps: Dependencies | None = None
_built = False  # whether _deps came from build() (and so its connections are ours to close)
_local_aws: LocalAws | None = None


def dependencies() -> Dependencies:
    """The container's dependencies, built on first use (never at import time)."""
    global _deps, _built
    if _deps is None:
        with _lock:
            if _deps is None:
                _deps, _built = build(Settings.from_env(), _local_aws), True
    return _deps


def use_local_aws(local_aws: LocalAws | None) -> None:
    """The one way a host changes how the functions are wired: the local emulator, which
    serves S3 and SQS from moto's backends in its own process, hands over its adapters
    (None takes them back). Drops (and closes) the dependencies built so far."""
    global _local_aws
    with _lock:
        _local_aws = local_aws
        _replace(None)


def override(deps: Dependencies | None) -> None:
    """Use these dependencies instead (tests), or drop the cached ones (None)."""
    with _lock:
        _replace(deps)


def _replace(deps: Dependencies | None) -> None:
    """Install `deps`; the store of dependencies built here is closed, so that its client's
    monitor threads do not go on knocking at a server that is gone (an emulator stopped)."""
    global _deps, _built
    old, owned = _deps, _built
    _deps, _built = deps, False
    if old is not None and owned and old is not deps:
        old.store.close()


def reset() -> None:
    override(None)
