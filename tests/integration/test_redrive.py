"""infra.redrive against moto's SQS (in-process): real queues, a real redrive policy.

moto has no StartMessageMoveTask, so `auto` falls back to copying here, which is what these
tests exercise; the move task's own path runs against botocore's Stubber."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from infra import redrive
from local_emulator import moto_patches

REGION = "us-east-1"
STACK = "image-pipeline"


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield boto3.client("sqs", region_name=REGION)


def _queues(sqs: Any) -> tuple[str, str]:
    """A source queue redriving to its DLQ after 2 receives, named as the emulator names
    them (`<stack>-<logical id>`)."""
    dlq = sqs.create_queue(QueueName=f"{STACK}-RowsDeadLetterQueue")["QueueUrl"]
    dlq_arn = redrive.queue_arn(sqs, dlq)
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})
    source = sqs.create_queue(
        QueueName=f"{STACK}-RowsQueue",
        Attributes={"RedrivePolicy": policy, "VisibilityTimeout": "0"},
    )["QueueUrl"]
    return dlq, source


def _fill(sqs: Any, dlq: str, count: int) -> list[str]:
    bodies = [json.dumps({"requestId": "job", "serial": n}) for n in range(count)]
    for start in range(0, count, 10):
        sqs.send_message_batch(
            QueueUrl=dlq,
            Entries=[
                {
                    "Id": str(i),
                    "MessageBody": body,
                    "MessageAttributes": {
                        "attempt": {"DataType": "Number", "StringValue": str(i)},
                        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
                    },
                }
                for i, body in enumerate(bodies[start : start + 10])
            ],
        )
    return bodies


def _drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every message now visible in a queue, taken out of it."""
    out: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not batch:
            return out
        out += batch
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
            ],
        )


@pytest.fixture(autouse=True)
def exact_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The emulator's moto patches (applied once per process by any emulator test before
    this one) recount a queue at most once a second; these tests count after every step."""
    monkeypatch.setattr(moto_patches, "COUNT_TTL", 0.0)


def _count(sqs: Any, url: str) -> int:
    """Visible plus in flight: a held message is still in the queue."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attributes[name]) for name in names)


def test_dead_lettered_messages_go_back_with_their_bodies(sqs: Any) -> None:
    dlq, source = _queues(sqs)
    # The way messages really get there: received maxReceiveCount times, never deleted.
    sqs.send_message(QueueUrl=source, MessageBody='{"requestId": "failed-twice"}')
    for _ in range(3):
        sqs.receive_message(QueueUrl=source, MaxNumberOfMessages=10)
    assert _count(sqs, source) == 0
    bodies = [*_fill(sqs, dlq, 24), '{"requestId": "failed-twice"}']
    assert _count(sqs, dlq) == 25

    lines: list[str] = []
    result = redrive.redrive(sqs, dlq, wait_seconds=0, report=lines.append)

    assert result == redrive.RedriveResult("copy", moved=25)
    assert lines[0].startswith("StartMessageMoveTask unavailable (The start_message_move_task")
    assert _count(sqs, dlq) == 0
    back = _drain(sqs, source)
    assert sorted(m["Body"] for m in back) == sorted(bodies)
    attributes = [m["MessageAttributes"] for m in back if m["Body"] != bodies[-1]]
    assert all(a["blob"] == {"DataType": "Binary", "BinaryValue": b"\x00\xff"} for a in attributes)
    assert sorted(int(a["attempt"]["StringValue"]) for a in attributes) == sorted(
        [*range(10), *range(10), *range(4)]
    )


def test_max_stops_after_n(sqs: Any) -> None:
    dlq, source = _queues(sqs)
    _fill(sqs, dlq, 25)
    result = redrive.redrive(sqs, dlq, source, max_messages=12, wait_seconds=0)
    assert (result.method, result.moved, result.ok) == ("copy", 12, True)
    assert _count(sqs, source) == 12
    assert _count(sqs, dlq) == 13


class _RefusingSends:
    """The SQS client, except that the source refuses one body (as SendMessageBatch reports a
    failed entry)."""

    def __init__(self, client: Any, refused_body: str) -> None:
        self._client = client
        self._refused = refused_body

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def send_message_batch(self, QueueUrl: str, Entries: list[Any]) -> Any:
        keep = [e for e in Entries if e["MessageBody"] != self._refused]
        response = self._client.send_message_batch(QueueUrl=QueueUrl, Entries=keep)
        response["Failed"] = [
            {"Id": e["Id"], "SenderFault": False, "Code": "InternalError", "Message": "refused"}
            for e in Entries
            if e["MessageBody"] == self._refused
        ]
        return response


def test_a_message_whose_send_fails_stays_in_the_dlq(sqs: Any) -> None:
    dlq, source = _queues(sqs)
    bodies = _fill(sqs, dlq, 15)
    result = redrive.move_by_copy(_RefusingSends(sqs, bodies[3]), dlq, source, wait_seconds=0)
    assert (result.moved, result.failed, result.ok) == (14, 1, False)
    assert "refused" in result.error
    # Visible again at once, not after the hold: the next run can take it.
    assert [m["Body"] for m in _drain(sqs, dlq)] == [bodies[3]]
    assert sorted(m["Body"] for m in _drain(sqs, source)) == sorted(bodies[:3] + bodies[4:])


def test_a_source_that_refuses_everything_ends_the_run(sqs: Any) -> None:
    dlq, source = _queues(sqs)
    bodies = _fill(sqs, dlq, 15)
    sqs.delete_queue(QueueUrl=source)
    result = redrive.move_by_copy(sqs, dlq, source, wait_seconds=0)
    assert (result.moved, result.failed) == (0, 10)  # one batch, then it stops
    assert "NonExistentQueue" in result.error or "does not exist" in result.error
    assert sorted(m["Body"] for m in _drain(sqs, dlq)) == sorted(bodies)


def test_command_line_by_logical_id(sqs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    dlq, source = _queues(sqs)
    bodies = _fill(sqs, dlq, 3)
    assert redrive.main(["--queue", "RowsDeadLetterQueue", "--wait", "0"]) == 0
    assert capsys.readouterr().out.startswith("copy: moved 3 message(s) from ")
    assert sorted(m["Body"] for m in _drain(sqs, source)) == sorted(bodies)
    assert _count(sqs, dlq) == 0
    assert redrive.main(["--queue", "NoSuchQueue"]) == 2
    assert "pass its URL" in capsys.readouterr().err
    assert redrive.main(["--queue", dlq, "--method", "task", "--max", "1"]) == 2


def test_logical_id_through_the_cloudformation_stack(sqs: Any) -> None:
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    body = {"Resources": {"WebhookDeadLetterQueue": {"Type": "AWS::SQS::Queue"}}}
    cloudformation.create_stack(StackName="deployed", TemplateBody=json.dumps(body))
    url = redrive.queue_url(sqs, cloudformation, "WebhookDeadLetterQueue", "deployed")
    assert "/deployed-WebhookDeadLetterQueue-" in url
    assert redrive.queue_url(sqs, cloudformation, url, "ignored") == url


def test_several_sources_need_a_choice(sqs: Any) -> None:
    dlq, _ = _queues(sqs)
    policy = json.dumps({"deadLetterTargetArn": redrive.queue_arn(sqs, dlq), "maxReceiveCount": 2})
    sqs.create_queue(QueueName="another", Attributes={"RedrivePolicy": policy})
    with pytest.raises(redrive.RedriveError, match="--source"):
        redrive.redrive(sqs, dlq, method="copy")


def test_the_move_task_when_sqs_has_it() -> None:
    client = boto3.client(
        "sqs",
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    dlq_arn = f"arn:aws:sqs:{REGION}:123456789012:dlq"
    source_arn = f"arn:aws:sqs:{REGION}:123456789012:source"
    listing = {"SourceArn": dlq_arn, "MaxResults": 1}
    with Stubber(client) as stub:
        stub.add_response(
            "start_message_move_task",
            {"TaskHandle": "handle"},
            {"SourceArn": dlq_arn, "DestinationArn": source_arn},
        )
        stub.add_response(
            "list_message_move_tasks",
            {"Results": [{"Status": "RUNNING", "ApproximateNumberOfMessagesMoved": 4}]},
            listing,
        )
        stub.add_response(
            "list_message_move_tasks",
            {"Results": [{"Status": "COMPLETED", "ApproximateNumberOfMessagesMoved": 9}]},
            listing,
        )
        lines: list[str] = []
        result = redrive.move_with_task(
            client, dlq_arn, source_arn, sleep=lambda _: None, report=lines.append
        )
        stub.assert_no_pending_responses()
    assert result == redrive.RedriveResult("task", moved=9)
    assert lines == ["move task handle started", "move task running: 4 moved"]


def test_auto_copies_when_the_endpoint_refuses_the_move_task() -> None:
    """moto's HTTP server answers StartMessageMoveTask with a 500 and an HTML page."""
    client = boto3.client(
        "sqs",
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    dlq, source = "https://sqs.example/1/dlq", "https://sqs.example/1/source"
    arn = f"arn:aws:sqs:{REGION}:123456789012:dlq"
    with Stubber(client) as stub:
        stub.add_response(
            "get_queue_attributes",
            {"Attributes": {"QueueArn": arn}},
            {"QueueUrl": dlq, "AttributeNames": ["QueueArn"]},
        )
        stub.add_client_error(
            "start_message_move_task",
            service_error_code="500",
            service_message="<!doctype html><title>500 Internal Server Error</title>",
            http_status_code=500,
        )
        stub.add_response("list_dead_letter_source_queues", {"queueUrls": [source]})
        stub.add_response("receive_message", {"Messages": []})
        lines: list[str] = []
        result = redrive.redrive(client, dlq, wait_seconds=0, report=lines.append)
        stub.assert_no_pending_responses()
    assert result == redrive.RedriveResult("copy", moved=0)
    assert lines == ["StartMessageMoveTask unavailable (500); moving message by message"]
