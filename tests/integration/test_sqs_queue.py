"""The SQS adapter against moto: message groups for fair queues, and partial batch failures."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from chalicelib.adapters.sqs import SqsTaskQueue
from chalicelib.errors import TransientError
from moto import mock_aws


@pytest.fixture
def sqs() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


def _receive_all(sqs: Any, url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while batch := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
    ).get("Messages", []):
        out += batch
    return out


def test_rows_carry_their_job_as_message_group(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="rows")["QueueUrl"]
    queue = SqsTaskQueue(sqs, url, group_by="requestId")
    queue.send_batch([{"requestId": f"job-{n % 2}", "position": n} for n in range(12)])
    messages = _receive_all(sqs, url)
    assert len(messages) == 12
    for message in messages:
        body = json.loads(message["Body"])
        assert message["Attributes"]["MessageGroupId"] == body["requestId"]


def test_without_a_group_field_no_group_is_sent(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="hooks")["QueueUrl"]
    SqsTaskQueue(sqs, url).send_batch([{"requestId": "job-1"}])
    (message,) = _receive_all(sqs, url)
    assert "MessageGroupId" not in message["Attributes"]


class PartlyFailing:
    """SendMessageBatch that fails the entries named in `fail` for `times` calls."""

    def __init__(self, inner: Any, fail: set[str], times: int) -> None:
        self.inner, self.fail, self.times = inner, fail, times
        self.calls: list[list[str]] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[Any]) -> dict[str, Any]:
        self.calls.append([e["Id"] for e in Entries])
        failing = [e for e in Entries if e["Id"] in self.fail] if self.times > 0 else []
        self.times -= 1
        passing = [e for e in Entries if e not in failing]
        answer: dict[str, Any] = (
            dict(self.inner.send_message_batch(QueueUrl=QueueUrl, Entries=passing))
            if passing
            else {"Successful": []}
        )
        answer["Failed"] = [
            {"Id": e["Id"], "SenderFault": False, "Code": "InternalError"} for e in failing
        ]
        return answer


def test_entries_failed_in_a_batch_are_sent_again_alone(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="rows")["QueueUrl"]
    client = PartlyFailing(sqs, {"1", "3"}, times=1)
    SqsTaskQueue(client, url).send_batch([{"n": n} for n in range(5)])  # type: ignore[arg-type]
    assert client.calls == [["0", "1", "2", "3", "4"], ["1", "3"]]
    assert sorted(json.loads(m["Body"])["n"] for m in _receive_all(sqs, url)) == [0, 1, 2, 3, 4]


def test_entries_that_keep_failing_raise_so_the_caller_retries(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="rows")["QueueUrl"]
    client = PartlyFailing(sqs, {"2"}, times=10)
    with pytest.raises(TransientError, match="refused 1 message"):
        SqsTaskQueue(client, url).send_batch([{"n": n} for n in range(3)])  # type: ignore[arg-type]
    assert len(client.calls) == 3
