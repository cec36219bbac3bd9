"""The emulator's queues deliver as SQS fair queues do (moto alone is first in, first out):
the tenants (message groups) with the fewest messages in flight first, each tenant's own in
the order they came; visibility, deletes and the dead-letter queue as before. Through both of
the dispatcher's transports (moto's backend in process, and its API)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from local_emulator import moto_patches
from local_emulator.dispatch import Queues, SqsApiQueues
from local_emulator.inprocess import InProcessQueues
from local_emulator.provision import ACCOUNT_ID, REGION, QueueInfo

TRANSPORTS = ["in-process", "api"]


@pytest.fixture
def aws() -> Iterator[None]:
    moto_patches.apply()
    with mock_aws():
        yield


def _queue(name: str, **attributes: str) -> QueueInfo:
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30", **attributes})[
        "QueueUrl"
    ]
    return QueueInfo(name, name, url, f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}", 30, 30)


def _transport(kind: str) -> Queues:
    return (
        InProcessQueues()
        if kind == "in-process"
        else SqsApiQueues(boto3.client("sqs", region_name=REGION))
    )


def _send(queue: QueueInfo, group: str | None, count: int) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    for n in range(count):
        extra = {"MessageGroupId": group} if group else {}
        sqs.send_message(QueueUrl=queue.url, MessageBody=json.dumps({"g": group, "n": n}), **extra)  # type: ignore[arg-type]


def _who(messages: list[object]) -> list[tuple[str | None, int]]:
    bodies = [json.loads(m["Body"]) for m in messages]  # type: ignore[index]
    return [(b["g"], b["n"]) for b in bodies]


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_a_small_tenant_queued_behind_a_backlog_is_in_the_next_batch(aws: None, kind: str) -> None:
    queue, queues = _queue(f"rows-{kind}"), _transport(kind)
    _send(queue, "alpha", 40)
    first = queues.receive(queue, 10, 0, 30)  # alpha's, ten in flight
    assert {g for g, _ in _who(first)} == {"alpha"}
    _send(queue, "beta", 5)
    second = _who(queues.receive(queue, 10, 0, 30))
    # beta has none in flight, alpha ten: beta's five first, in their order, then alpha's
    assert second == [("beta", n) for n in range(5)] + [("alpha", n) for n in range(10, 15)]


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_tenants_with_backlogs_share_the_deliveries_equally(aws: None, kind: str) -> None:
    queue, queues = _queue(f"shared-{kind}"), _transport(kind)
    for tenant in ("alpha", "beta", "gamma"):
        _send(queue, tenant, 30)
    for _ in range(4):  # nothing deleted: the counts in flight grow together
        batch = _who(queues.receive(queue, 9, 0, 30))
        assert Counter(g for g, _ in batch) == {"alpha": 3, "beta": 3, "gamma": 3}
    seen = [n for g, n in _who(queues.receive(queue, 9, 0, 30)) if g == "beta"]
    assert seen == [12, 13, 14]  # each tenant's own in the order they came


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_a_message_without_a_group_is_a_tenant_of_its_own(aws: None, kind: str) -> None:
    queue, queues = _queue(f"mixed-{kind}"), _transport(kind)
    _send(queue, "alpha", 20)
    queues.receive(queue, 10, 0, 30)
    _send(queue, None, 2)
    assert _who(queues.receive(queue, 3, 0, 30)) == [(None, 0), (None, 1), ("alpha", 10)]


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_deleted_and_dead_lettered_messages_do_not_come_back(aws: None, kind: str) -> None:
    dlq = _queue(f"dlq-{kind}")
    policy = json.dumps({"deadLetterTargetArn": dlq.arn, "maxReceiveCount": 1})
    queue, queues = _queue(f"src-{kind}", RedrivePolicy=policy), _transport(kind)
    _send(queue, "alpha", 3)
    _send(queue, "beta", 1)
    taken = queues.receive(queue, 10, 0, 30)
    assert sorted(_who(taken)) == [("alpha", 0), ("alpha", 1), ("alpha", 2), ("beta", 0)]
    beta = next(m for m in taken if json.loads(m["Body"])["g"] == "beta")
    assert queues.delete(queue, [m["ReceiptHandle"] for m in taken if m is not beta]) == []
    boto3.client("sqs", region_name=REGION).change_message_visibility(
        QueueUrl=queue.url, ReceiptHandle=beta["ReceiptHandle"], VisibilityTimeout=0
    )
    # beta's message is visible again; received once already, it goes to the dead-letter
    # queue on this receive instead of being delivered, and alpha's deleted ones stay gone
    assert queues.receive(queue, 10, 0, 30) == []
    dead = queues.receive(dlq, 10, 0, 30)
    assert _who(dead) == [("beta", 0)]
    assert dead[0]["Attributes"]["MessageGroupId"] == "beta"
    assert queues.receive(queue, 10, 0, 30) == []
