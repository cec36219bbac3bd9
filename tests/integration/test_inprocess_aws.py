"""The emulator's in-process AWS: the dispatcher's queues and the functions' object store
served from moto's backends give what the same calls over the API give."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

import boto3
import pytest
from chalicelib.adapters.s3 import S3ObjectStore
from chalicelib.errors import NotFound
from moto import mock_aws

from local_emulator import inprocess, moto_patches
from local_emulator.dispatch import Queues, SqsApiQueues
from local_emulator.inprocess import InProcessObjectStore, InProcessQueues
from local_emulator.provision import ACCOUNT_ID, REGION, QueueInfo


@pytest.fixture
def aws() -> Iterator[None]:
    moto_patches.apply()
    with mock_aws():
        yield


def _queue(name: str) -> QueueInfo:
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    return QueueInfo(name, name, url, f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}", 30, 30)


def _transport(kind: str) -> Queues:
    if kind == "in-process":
        return InProcessQueues()
    return SqsApiQueues(boto3.client("sqs", region_name=REGION))


@pytest.mark.parametrize("kind", ["in-process", "api"])
def test_receive_redeliver_and_delete(aws: None, kind: str) -> None:
    queue = _queue(f"rows-{kind}")
    boto3.client("sqs", region_name=REGION).send_message(
        QueueUrl=queue.url,
        MessageBody='{"row": 1}',
        MessageAttributes={
            "kind": {"DataType": "String", "StringValue": "row"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
        },
    )
    queues = _transport(kind)

    (first,) = queues.receive(queue, 10, 0, 1)
    assert first["Body"] == '{"row": 1}'
    assert first["Attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= set(
        first["Attributes"]
    )
    assert first["MessageAttributes"]["kind"] == {"DataType": "String", "StringValue": "row"}
    assert first["MessageAttributes"]["blob"] == {"DataType": "Binary", "BinaryValue": b"\x00\xff"}
    assert queues.receive(queue, 10, 0, 60) == []  # invisible while in flight

    time.sleep(1.1)  # a visibility timeout of one second runs out
    (again,) = queues.receive(queue, 10, 0, 60)
    assert again["MessageId"] == first["MessageId"]
    assert again["Attributes"]["ApproximateReceiveCount"] == "2"

    assert queues.delete(queue, [again["ReceiptHandle"]]) == []
    assert queues.receive(queue, 10, 0, 60) == []


@pytest.mark.parametrize("kind", ["in-process", "api"])
def test_at_most_ten_per_receive_and_any_number_per_delete(aws: None, kind: str) -> None:
    queue = _queue(f"many-{kind}")
    sqs = boto3.client("sqs", region_name=REGION)
    for n in range(25):
        sqs.send_message(QueueUrl=queue.url, MessageBody=str(n))
    queues = _transport(kind)
    received: list[Any] = []
    # a long poll of a second each: like SQS's short poll, moto's may answer empty while
    # messages remain (a flake at load 15), so an empty answer is no proof the queue is empty
    for _ in range(10):
        batch = queues.receive(queue, 50, 1, 60)
        assert len(batch) <= 10
        received += batch
        if len(received) >= 25:
            break
    assert sorted(int(m["Body"]) for m in received) == list(range(25))
    assert queues.receive(queue, 50, 0, 60) == []  # all 25 in flight
    assert queues.delete(queue, [m["ReceiptHandle"] for m in received]) == []
    attributes = sqs.get_queue_attributes(QueueUrl=queue.url, AttributeNames=["All"])
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "0"
    assert attributes["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_an_in_process_long_poll_returns_a_message_sent_while_it_waits(aws: None) -> None:
    queue = _queue("waiting")
    queues = InProcessQueues()
    got: list[Any] = []
    poll = threading.Thread(target=lambda: got.extend(queues.receive(queue, 10, 5, 60)))
    poll.start()
    time.sleep(0.3)  # the poll is waiting by now (one that did not wait would return nothing)
    boto3.client("sqs", region_name=REGION).send_message(QueueUrl=queue.url, MessageBody="late")
    poll.join(10)
    assert [m["Body"] for m in got] == ["late"]


class _Fallback:
    """The boto3 store's part the in-process store hands large files to."""

    def __init__(self) -> None:
        self.bucket = "outputs"
        self.files: list[tuple[str, bytes, str]] = []

    def put_file(self, key: str, fileobj: IO[bytes], content_type: str) -> None:
        self.files.append((key, fileobj.read(), content_type))


def test_a_small_file_is_stored_in_process_from_where_it_stands(aws: None) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="outputs")
    fallback = _Fallback()
    store = InProcessObjectStore(fallback)  # type: ignore[arg-type]
    source = io.BytesIO(b"skipped|S. No.,Product Name\n1,A\n")
    source.seek(len(b"skipped|"))
    store.put_file("out/job.csv", source, "text/csv; charset=utf-8")
    stored = s3.get_object(Bucket="outputs", Key="out/job.csv")
    assert stored["Body"].read() == b"S. No.,Product Name\n1,A\n"
    assert stored["ContentType"] == "text/csv; charset=utf-8"
    assert fallback.files == []


@pytest.mark.parametrize("kind", ["in-process", "api"])
def test_an_output_is_served_with_its_type_and_cache_control(aws: None, kind: str) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="outputs")
    api = S3ObjectStore(s3, "outputs")
    store = InProcessObjectStore(api) if kind == "in-process" else api
    store.put_bytes("outputs/j/1/0.webp", b"RIFF", "image/webp", "public, max-age=60, immutable")
    store.put_bytes("outputs/j/output.csv", b"S. No.\n", "text/csv")
    image = s3.get_object(Bucket="outputs", Key="outputs/j/1/0.webp")
    assert image["ContentType"] == "image/webp"
    assert image["CacheControl"] == "public, max-age=60, immutable"
    assert "CacheControl" not in s3.get_object(Bucket="outputs", Key="outputs/j/output.csv")


def test_a_large_file_streams_through_the_fallback(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inprocess, "IN_MEMORY_BYTES", 8)
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="outputs")
    fallback = _Fallback()
    store = InProcessObjectStore(fallback)  # type: ignore[arg-type]
    store.put_file("out/big.csv", io.BytesIO(b"0123456789"), "text/csv")
    assert fallback.files == [("out/big.csv", b"0123456789", "text/csv")]
    assert store.head("out/big.csv") is None


class _CountingS3(S3ObjectStore):
    opened = 0

    def open(self, key: str) -> IO[bytes]:
        self.opened += 1
        return super().open(key)


def test_objects_are_read_in_process_up_to_the_limit(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="uploads")
    s3.put_object(Bucket="uploads", Key="incoming/a.csv", Body=b"S. No.\n1\n")
    fallback = _CountingS3(s3, "uploads")
    store = InProcessObjectStore(fallback)
    with store.open("incoming/a.csv") as stream:
        assert stream.read() == b"S. No.\n1\n"
    assert fallback.opened == 0
    monkeypatch.setattr(inprocess, "IN_MEMORY_BYTES", 4)
    with store.open("incoming/a.csv") as stream:  # larger: boto3's stream
        assert stream.read() == b"S. No.\n1\n"
    assert fallback.opened == 1
    with pytest.raises(NotFound):
        store.open("incoming/missing.csv")


class _Unseekable(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._data.readinto(buffer)


def test_a_stream_that_cannot_seek_goes_through_the_fallback(aws: None) -> None:
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="outputs")
    fallback = _Fallback()
    store = InProcessObjectStore(fallback)  # type: ignore[arg-type]
    store.put_file("out/piped.csv", _Unseekable(b"a,b\n"), "text/csv")  # type: ignore[arg-type]
    assert fallback.files == [("out/piped.csv", b"a,b\n", "text/csv")]
