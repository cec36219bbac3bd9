"""The functions' S3 and SQS calls served by moto's in-process backends.

The moto server and the functions share one process, so the functions need not speak
HTTP to reach it: an object written here is in the very state the server serves (clients
outside still see it over HTTP, presigned URLs included), and a message sent here is
received by the dispatcher like any other. Measured on the pipeline benchmark
(`python -m benchmarks.pipeline`), boto3-over-HTTP to the local server costs more CPU than
the images themselves: every request is signed, serialised, routed by moto's dispatcher
(which scans its list of services per request) and parsed again.

Only the calls on the hot path are served in-process: storing and heading objects, and
sending messages. Streams of large objects, presigned URLs and pings still go through boto3
(the `fallback` adapters), so what a deployed function does is still exercised.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import IO, TYPE_CHECKING, Any

from local_emulator.provision import ACCOUNT_ID, REGION

if TYPE_CHECKING:
    from chalicelib.ports import ObjectInfo, ObjectStore, PresignedPost, TaskQueue
    from chalicelib.services.deps import Dependencies

SQS_BATCH = 10


def _s3_backend() -> Any:
    from moto.s3.models import s3_backends

    return s3_backends[ACCOUNT_ID]["aws"]


def _sqs_backend() -> Any:
    from moto.sqs.models import sqs_backends

    return sqs_backends[ACCOUNT_ID][REGION]


class InProcessObjectStore:
    """One bucket: puts and heads straight into moto's S3 backend."""

    def __init__(self, fallback: ObjectStore) -> None:
        self._fallback = fallback
        self._backend = _s3_backend()

    @property
    def bucket(self) -> str:
        return self._fallback.bucket

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        stored = self._backend.put_object(self.bucket, key, data)
        stored.set_metadata({"Content-Type": content_type})

    def put_file(self, key: str, fileobj: IO[bytes], content_type: str) -> None:
        self._fallback.put_file(key, fileobj, content_type)

    def open(self, key: str) -> IO[bytes]:
        return self._fallback.open(key)

    def head(self, key: str) -> ObjectInfo | None:
        from chalicelib.ports import ObjectInfo

        stored = self._backend.get_object(self.bucket, key)
        if stored is None:
            return None
        return ObjectInfo(key=key, size=int(stored.size), etag=str(stored.etag).strip('"'))

    def presigned_get(self, key: str, expires_in: int) -> str:
        return self._fallback.presigned_get(key, expires_in)

    def presigned_post(self, key: str, max_bytes: int, expires_in: int) -> PresignedPost:
        return self._fallback.presigned_post(key, max_bytes, expires_in)

    def ping(self) -> None:
        self._fallback.ping()


class InProcessTaskQueue:
    """One queue: messages go straight into moto's SQS backend."""

    def __init__(self, fallback: TaskQueue, queue_url: str) -> None:
        self._fallback = fallback
        self._name = queue_url.rstrip("/").rsplit("/", 1)[-1]
        self._backend = _sqs_backend()

    def send_batch(self, bodies: Sequence[Mapping[str, Any]], delay_seconds: int = 0) -> None:
        for body in bodies:
            self._backend.send_message(
                self._name, json.dumps(body, separators=(",", ":")), delay_seconds=delay_seconds
            )

    def ping(self) -> None:
        self._fallback.ping()


def adapt(deps: Dependencies) -> Dependencies:
    """The functions' dependencies with S3 and SQS served in-process."""
    settings = deps.settings

    def queue(fallback: TaskQueue, url: str) -> TaskQueue:
        return InProcessTaskQueue(fallback, url) if url else fallback

    return replace(
        deps,
        uploads=InProcessObjectStore(deps.uploads),
        outputs=InProcessObjectStore(deps.outputs),
        rows_queue=queue(deps.rows_queue, settings.rows_queue_url),
        finalize_queue=queue(deps.finalize_queue, settings.finalize_queue_url),
        webhook_queue=queue(deps.webhook_queue, settings.webhook_queue_url),
        ingest_queue=queue(deps.ingest_queue, settings.ingest_queue_url),
    )
