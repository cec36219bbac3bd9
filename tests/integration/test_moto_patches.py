"""The emulator's patches to moto's SQS: the same answers as SQS, at a cost that does not grow
with the length of the queue (a 100,000-row job queues 100,000 messages)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.sqs.models import Message, sqs_backends

from local_emulator import moto_patches

REGION = "us-east-1"


@pytest.fixture
def sqs() -> Iterator[Any]:
    moto_patches.apply()
    with mock_aws():
        yield boto3.client("sqs", region_name=REGION)


def _queue(sqs: Any, name: str = "rows") -> str:
    url: str = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    return url


def _fill(name: str, count: int) -> None:
    backend = sqs_backends["123456789012"][REGION]
    for n in range(count):
        backend.send_message(name, f"row {n}", [], 0)


def _receive(sqs: Any, url: str, count: int = 10) -> list[dict[str, Any]]:
    answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=count, WaitTimeSeconds=0)
    return list(answer.get("Messages", []))


def _delete(sqs: Any, url: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
    answer: dict[str, Any] = sqs.delete_message_batch(QueueUrl=url, Entries=entries)
    return answer


def test_receive_and_delete_go_through_the_queue_once_each(sqs: Any) -> None:
    url = _queue(sqs)
    _fill("rows", 35)
    seen: list[str] = []
    while batch := _receive(sqs, url):
        assert len(batch) <= 10
        assert not _delete(sqs, url, batch).get("Failed")
        seen += [m["Body"] for m in batch]
    assert sorted(seen) == sorted(f"row {n}" for n in range(35))
    backend = sqs_backends["123456789012"][REGION]
    assert backend.get_queue("rows")._messages == []


def test_in_flight_messages_are_not_received_again_and_come_back_when_handed_back(
    sqs: Any,
) -> None:
    url = _queue(sqs)
    _fill("rows", 12)
    first = _receive(sqs, url)
    second = _receive(sqs, url)
    assert len(first) == 10 and len(second) == 2
    assert not {m["MessageId"] for m in first} & {m["MessageId"] for m in second}
    assert _receive(sqs, url) == []
    sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=first[0]["ReceiptHandle"], VisibilityTimeout=0
    )
    [again] = _receive(sqs, url)
    assert again["MessageId"] == first[0]["MessageId"]
    # the old receipt handle of a message received again still deletes it, once
    assert not _delete(sqs, url, [first[0]]).get("Failed")
    assert not _delete(sqs, url, [again]).get("Failed")
    remaining = sqs_backends["123456789012"][REGION].get_queue("rows")._messages
    assert again["MessageId"] not in {m.id for m in remaining}
    assert len(remaining) == 11


def test_a_receipt_handle_nobody_issued_is_refused(sqs: Any) -> None:
    url = _queue(sqs)
    _fill("rows", 3)
    answer = sqs.delete_message_batch(
        QueueUrl=url, Entries=[{"Id": "0", "ReceiptHandle": "not-a-handle"}]
    )
    assert answer["Failed"][0]["Id"] == "0"


def test_receive_and_delete_do_not_scan_a_long_queue(
    sqs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _queue(sqs)
    _fill("rows", 20_000)
    # The approximate counts are counted by scanning, once per COUNT_TTL (by design, see
    # moto_patches): count them now and keep them for the test, which is about receive/delete.
    monkeypatch.setattr(moto_patches, "COUNT_TTL", 3600.0)
    queue = sqs_backends["123456789012"][REGION].get_queue("rows")
    for name in moto_patches._COUNTS:
        vars(queue).pop(f"_emulator_cache_{name}", None)
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "20000"
    looked_at: list[int] = []
    visible = Message.visible.fget
    had = Message.had_receipt_handle
    assert visible is not None

    def counted_visible(message: Message) -> bool:
        looked_at.append(1)
        return bool(visible(message))

    def counted_had(message: Message, handle: str) -> bool:
        looked_at.append(1)
        return had(message, handle)

    monkeypatch.setattr(Message, "visible", property(counted_visible))
    monkeypatch.setattr(Message, "had_receipt_handle", counted_had)
    for _ in range(5):
        batch = _receive(sqs, url)
        assert len(batch) == 10
        assert not _delete(sqs, url, batch).get("Failed")
    # moto alone looked at every message on every receive and delete: millions here
    assert len(looked_at) < 2_000
    assert len(sqs_backends["123456789012"][REGION].get_queue("rows")._messages) == 19_950
