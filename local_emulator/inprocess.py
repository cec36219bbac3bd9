"""The functions' S3 and SQS calls served by moto's in-process backends.

The moto server and the functions share one process, so the functions need not speak
HTTP to reach it: an object written here is in the very state the server serves (clients
outside still see it over HTTP, presigned URLs included), and a message sent here is
received by the dispatcher like any other. On the pipeline benchmark boto3-over-HTTP to
the local server cost more CPU than the images themselves (docs/performance.md): every
request is signed, serialised, routed by moto's dispatcher (which scans its list of
services per request) and parsed again.

Only the calls on the hot path are served in-process: storing, heading and reading objects
(files of up to 8 MiB: an uploaded or output CSV), and sending messages. Streams of larger
objects, copies, deletions, presigned URLs and pings still go through boto3 (the `fallback`
adapters), so what a deployed function does is still exercised. The dispatcher's pollers
receive and delete messages here too (`InProcessQueues`): its idle long polls cost a
condition wait instead of a request a second each.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

from local_emulator.dispatch import SQS_MAX_BATCH
from local_emulator.kept_objects import one_write
from local_emulator.provision import ACCOUNT_ID, REGION

if TYPE_CHECKING:
    from chalicelib.adapters.sqs import SqsTaskQueue
    from chalicelib.bootstrap import LocalAws
    from chalicelib.ports import ObjectInfo, ObjectStore, PresignedPost
    from mypy_boto3_sqs.type_defs import MessageAttributeValueOutputTypeDef, MessageTypeDef

    from local_emulator.provision import QueueInfo

IN_MEMORY_BYTES = 8 * 1024 * 1024


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

    def put_bytes(self, key: str, data: bytes, content_type: str, cache_control: str = "") -> None:
        headers = {"Content-Type": content_type}
        if cache_control:
            headers["Cache-Control"] = cache_control
        with one_write():  # --data-dir: the object's file written once, with its headers
            stored = self._backend.put_object(self.bucket, key, data)
            stored.set_metadata(headers)

    def put_file(self, key: str, fileobj: IO[bytes], content_type: str) -> None:
        """A file up to IN_MEMORY_BYTES bytes (an output CSV of a few thousand rows) is stored
        here; a larger one streams through boto3's multipart upload."""
        if not fileobj.seekable():
            self._fallback.put_file(key, fileobj, content_type)
            return
        start = fileobj.tell()
        size = fileobj.seek(0, 2) - start
        fileobj.seek(start)
        if size > IN_MEMORY_BYTES:
            self._fallback.put_file(key, fileobj, content_type)
            return
        self.put_bytes(key, fileobj.read(), content_type)

    def open(self, key: str) -> IO[bytes]:
        """An object of up to IN_MEMORY_BYTES bytes (an uploaded CSV, read twice by the ingest)
        is read here; a larger one streams through boto3."""
        stored = self._backend.get_object(self.bucket, key)
        if stored is None or stored.size > IN_MEMORY_BYTES:
            return self._fallback.open(key)  # NotFound, or a stream
        return io.BytesIO(stored.value)

    def head(self, key: str) -> ObjectInfo | None:
        from chalicelib.ports import ObjectInfo

        stored = self._backend.get_object(self.bucket, key)
        if stored is None:
            return None
        return ObjectInfo(key=key, size=int(stored.size), etag=str(stored.etag).strip('"'))

    def copy(self, source_key: str, key: str) -> bool:
        return self._fallback.copy(source_key, key)

    def delete(self, key: str) -> None:
        self._fallback.delete(key)

    def delete_prefix(self, prefix: str, limit: int | None = None) -> int:
        return self._fallback.delete_prefix(prefix, limit)

    def presigned_get(self, key: str, expires_in: int) -> str:
        return self._fallback.presigned_get(key, expires_in)

    def presigned_post(self, key: str, max_bytes: int, expires_in: int) -> PresignedPost:
        return self._fallback.presigned_post(key, max_bytes, expires_in)

    def ping(self) -> None:
        self._fallback.ping()


class InProcessTaskQueue:
    """One queue: messages go straight into moto's SQS backend, each with the message group
    the boto3 adapter would give it (`SqsTaskQueue.group_of`)."""

    def __init__(self, fallback: SqsTaskQueue, queue_url: str) -> None:
        self._fallback = fallback
        self._name = queue_url.rstrip("/").rsplit("/", 1)[-1]
        self._backend = _sqs_backend()

    def send_batch(self, bodies: Sequence[Mapping[str, Any]], delay_seconds: int = 0) -> None:
        for body in bodies:
            self._backend.send_message(
                self._name,
                json.dumps(body, separators=(",", ":")),
                delay_seconds=delay_seconds,
                group_id=self._fallback.group_of(body),
            )

    def ping(self) -> None:
        self._fallback.ping()


def _binary(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        return base64.b64decode(str(value), validate=True)
    except binascii.Error:
        return str(value).encode()


def _attribute(value: Mapping[str, Any]) -> MessageAttributeValueOutputTypeDef:
    out: MessageAttributeValueOutputTypeDef = {"DataType": str(value.get("DataType", "String"))}
    if "StringValue" in value:
        out["StringValue"] = str(value["StringValue"])
    if "BinaryValue" in value:
        out["BinaryValue"] = _binary(value["BinaryValue"])
    return out


def received(message: Any) -> MessageTypeDef:
    """A moto message as ReceiveMessage returns it (all system attributes, all message
    attributes; binary values as bytes, as boto3 decodes them)."""
    attributes = {
        "SenderId": str(message.sender_id),
        "SentTimestamp": str(message.sent_timestamp),
        "ApproximateReceiveCount": str(message.approximate_receive_count),
        "ApproximateFirstReceiveTimestamp": str(message.approximate_first_receive_timestamp),
    }
    optional = {
        "MessageDeduplicationId": message.deduplication_id,
        "MessageGroupId": message.group_id,
        "SequenceNumber": message.sequence_number,
    }
    attributes.update({name: str(value) for name, value in optional.items() if value is not None})
    trace = (message.system_attributes or {}).get("AWSTraceHeader")
    if trace and trace.get("StringValue"):
        attributes["AWSTraceHeader"] = str(trace["StringValue"])
    out: MessageTypeDef = {
        "MessageId": str(message.id),
        "ReceiptHandle": str(message.receipt_handle),
        "MD5OfBody": str(message.body_md5),
        "Body": str(message.body),
        "Attributes": attributes,  # type: ignore[typeddict-item]
    }
    if message.message_attributes:
        out["MessageAttributes"] = {
            name: _attribute(value) for name, value in message.message_attributes.items()
        }
        out["MD5OfMessageAttributes"] = str(message.attribute_md5)
    return out


class InProcessQueues:
    """The dispatcher's `Queues`, from moto's SQS backend: the same receive (visibility,
    redrive to the dead-letter queue on maxReceiveCount), delete and visibility change the
    server would run, without the request. A long poll waits on the queue's condition."""

    def __init__(self) -> None:
        self._backend = _sqs_backend()

    def receive(
        self, queue: QueueInfo, count: int, wait: int, visibility: int
    ) -> list[MessageTypeDef]:
        count = max(1, min(SQS_MAX_BATCH, count))
        messages = self._backend.receive_message(queue.name, count, wait, visibility, ["All"])
        return [received(m) for m in messages]

    def delete(self, queue: QueueInfo, receipts: Sequence[str]) -> list[str]:
        entries = [{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(receipts)]
        _, errors = self._backend.delete_message_batch(queue.name, entries)
        return [str(e.get("Message", e)) for e in errors]


def local_aws() -> LocalAws:
    """These adapters, as the functions' wiring takes them (`bootstrap.use_local_aws`): the
    emulator's one way of changing what the functions are built with."""
    from chalicelib.bootstrap import LocalAws

    return LocalAws(object_store=InProcessObjectStore, task_queue=InProcessTaskQueue)
