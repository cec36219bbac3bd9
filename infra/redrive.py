"""Move the messages of a dead-letter queue back to the queue they came from.

    python -m infra.redrive --queue RowsDeadLetterQueue [--stack image-pipeline]
    python -m infra.redrive --queue https://sqs.eu-west-1.amazonaws.com/1234/x-DLQ --max 100
    python -m infra.redrive --queue IngestDeadLetterQueue --endpoint-url http://127.0.0.1:PORT

`--queue` is the DLQ's URL or its logical id in template.yaml (looked up in the CloudFormation
stack, else as the local emulator names queues: `<stack>-<logical id>`). The source queue is
`--source`, else the one queue whose RedrivePolicy names this DLQ.

Two ways to move, `--method auto` choosing: SQS's own StartMessageMoveTask (server-side,
bodies and attributes kept) when no `--max` is given and the endpoint has it; otherwise
(moto has no StartMessageMoveTask, and a move task cannot stop after N messages) a copy:
receive 10, send them to the source with their body and message attributes, delete from the
DLQ only those the source accepted. A message whose send fails stays in the DLQ (visible again
when the run ends); a batch in which every send fails ends the run, since the next would fail
alike. Exit status: 0 when everything asked for moved, 1 when some stayed, 2 when it could
not start (which queues, which way).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import boto3
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import (
        MessageAttributeValueTypeDef,
        MessageTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )

DEFAULT_STACK = "image-pipeline"  # the local emulator's stack name
BATCH = 10  # SQS's limit per ReceiveMessage / SendMessageBatch / DeleteMessageBatch
HOLD_SECONDS = 300  # how long a received message stays hidden while it is being moved
TASK_POLL_SECONDS = 5.0
TASK_DONE = {"COMPLETED", "FAILED", "CANCELLED"}

Method = Literal["auto", "task", "copy"]
Report = Callable[[str], None]


class RedriveError(Exception):
    """The redrive cannot start: which queue, or which way, is unclear."""


@dataclass(frozen=True)
class RedriveResult:
    method: Literal["task", "copy"]
    moved: int
    failed: int = 0  # left in the DLQ: the source refused them, or the task failed
    not_deleted: int = 0  # sent to the source but still in the DLQ (would be sent twice)
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.not_deleted == 0 and not self.error


# ---------------------------------------------------------------- which queues


def queue_url(sqs: SQSClient, cloudformation: Any, queue: str, stack: str) -> str:
    """A URL as given; a logical id through the stack's resources, else by the emulator's
    naming (it has no CloudFormation stack)."""
    if queue.startswith(("https://", "http://")):
        return queue
    try:
        detail = cloudformation.describe_stack_resource(StackName=stack, LogicalResourceId=queue)
        physical = str(detail["StackResourceDetail"]["PhysicalResourceId"])
    except (ClientError, BotoCoreError, NotImplementedError):
        physical = f"{stack}-{queue}"
    if physical.startswith(("https://", "http://")):
        return physical
    try:
        return sqs.get_queue_url(QueueName=physical)["QueueUrl"]
    except ClientError as exc:
        raise RedriveError(f"no queue {queue!r} in stack {stack!r}; pass its URL") from exc


def queue_arn(sqs: SQSClient, url: str) -> str:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return attributes["Attributes"]["QueueArn"]


def source_of(sqs: SQSClient, dlq_url: str) -> str:
    """The one queue that redrives to this DLQ (with several, the caller must choose)."""
    sources = sqs.list_dead_letter_source_queues(QueueUrl=dlq_url).get("queueUrls", [])
    if len(sources) != 1:
        found = ", ".join(sources) or "none"
        raise RedriveError(f"{dlq_url} is the DLQ of {found}; pass --source")
    return sources[0]


# ---------------------------------------------------------------- SQS's move task


def move_with_task(
    sqs: SQSClient,
    dlq_arn: str,
    destination_arn: str | None = None,
    *,
    poll_seconds: float = TASK_POLL_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    report: Report = lambda _: None,
) -> RedriveResult:
    """StartMessageMoveTask, then wait for it to end. Without a destination SQS sends each
    message back to the queue it came from."""
    if destination_arn is None:
        started = sqs.start_message_move_task(SourceArn=dlq_arn)
    else:
        started = sqs.start_message_move_task(SourceArn=dlq_arn, DestinationArn=destination_arn)
    report(f"move task {started['TaskHandle']} started")
    while True:
        (task,) = sqs.list_message_move_tasks(SourceArn=dlq_arn, MaxResults=1)["Results"]
        status = task.get("Status", "")
        moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
        if status in TASK_DONE:
            break
        report(f"move task {status.lower()}: {moved} moved")
        sleep(poll_seconds)
    if status == "COMPLETED":
        return RedriveResult("task", moved)
    to_move = int(task.get("ApproximateNumberOfMessagesToMove", moved))
    reason = task.get("FailureReason", "")
    return RedriveResult("task", moved, failed=max(to_move - moved, 0), error=f"{status} {reason}")


# ---------------------------------------------------------------- message by message


def _attributes(message: MessageTypeDef) -> dict[str, MessageAttributeValueTypeDef]:
    """The message attributes as SendMessage takes them (the list fields are unused)."""
    out: dict[str, MessageAttributeValueTypeDef] = {}
    for name, value in message.get("MessageAttributes", {}).items():
        attribute: MessageAttributeValueTypeDef = {"DataType": value["DataType"]}
        if "StringValue" in value:
            attribute["StringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            attribute["BinaryValue"] = value["BinaryValue"]
        out[name] = attribute
    return out


def _entry(index: int, message: MessageTypeDef, fifo: bool) -> SendMessageBatchRequestEntryTypeDef:
    entry: SendMessageBatchRequestEntryTypeDef = {"Id": str(index), "MessageBody": message["Body"]}
    attributes = _attributes(message)
    if attributes:
        entry["MessageAttributes"] = attributes
    system = message.get("Attributes", {})
    if fifo:
        entry["MessageGroupId"] = system.get("MessageGroupId", "redrive")
        entry["MessageDeduplicationId"] = system.get("MessageDeduplicationId", message["MessageId"])
    elif system.get("MessageGroupId"):  # a fair queue's tenant: the message keeps its place
        entry["MessageGroupId"] = system["MessageGroupId"]
    return entry


def _send(
    sqs: SQSClient, source_url: str, entries: list[SendMessageBatchRequestEntryTypeDef]
) -> tuple[set[str], str]:
    """Ids of the entries the source accepted, and the error of those it did not."""
    try:
        response = sqs.send_message_batch(QueueUrl=source_url, Entries=entries)
    except ClientError as exc:
        return set(), str(exc)
    failed = response.get("Failed", [])
    error = "; ".join(f"{f.get('Code', '')}: {f.get('Message', '')}" for f in failed)
    return {s["Id"] for s in response.get("Successful", [])}, error


def _release(sqs: SQSClient, dlq_url: str, receipts: Sequence[str]) -> None:
    """Make held messages visible in the DLQ again now, not when their hold runs out."""
    for start in range(0, len(receipts), BATCH):
        chunk = receipts[start : start + BATCH]
        sqs.change_message_visibility_batch(
            QueueUrl=dlq_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": receipt, "VisibilityTimeout": 0}
                for i, receipt in enumerate(chunk)
            ],
        )


def move_by_copy(
    sqs: SQSClient,
    dlq_url: str,
    source_url: str,
    max_messages: int | None = None,
    *,
    wait_seconds: int = 1,
    report: Report = lambda _: None,
) -> RedriveResult:
    """Receive -> send to the source (body and message attributes) -> delete, 10 at a time,
    until the DLQ is empty or `max_messages` have moved."""
    fifo = source_url.endswith(".fifo")
    moved = not_deleted = 0
    refused: set[str] = set()  # ids, not receipts: a refused message may come round again
    errors: list[str] = []
    held: list[str] = []  # receipts of messages the source refused, hidden until the end
    try:
        while max_messages is None or moved < max_messages:
            want = BATCH if max_messages is None else min(BATCH, max_messages - moved)
            messages = sqs.receive_message(
                QueueUrl=dlq_url,
                MaxNumberOfMessages=want,
                WaitTimeSeconds=wait_seconds,
                VisibilityTimeout=HOLD_SECONDS,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["MessageGroupId", "MessageDeduplicationId"],
            ).get("Messages", [])
            if not messages:
                break
            sent, error = _send(
                sqs, source_url, [_entry(i, m, fifo) for i, m in enumerate(messages)]
            )
            if error:
                errors.append(error)
            accepted = [m for i, m in enumerate(messages) if str(i) in sent]
            rejected = [m for i, m in enumerate(messages) if str(i) not in sent]
            if accepted:
                deleted = sqs.delete_message_batch(
                    QueueUrl=dlq_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(accepted)
                    ],
                )
                not_deleted += len(deleted.get("Failed", []))
            moved += len(accepted)
            held += [m["ReceiptHandle"] for m in rejected]
            refused.update(m["MessageId"] for m in rejected)
            report(f"moved {moved}" + (f", {len(refused)} refused: {error}" if error else ""))
            if not accepted:
                break  # every send failed: the next batch would fail alike
    finally:
        _release(sqs, dlq_url, held)
    summary = "; ".join(dict.fromkeys(errors))  # each distinct error once
    return RedriveResult("copy", moved, len(refused), not_deleted, summary)


# ---------------------------------------------------------------- both


def _short(exc: Exception) -> str:
    """An error in one line: moto's server answers an unknown action with an HTML page."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        message = str(error.get("Message", "")).strip()
        if message.startswith("<"):
            message = ""
        return " ".join(part for part in (str(error.get("Code", "")), message) if part)
    return str(exc)


def redrive(
    sqs: SQSClient,
    dlq_url: str,
    source_url: str | None = None,
    max_messages: int | None = None,
    *,
    method: Method = "auto",
    wait_seconds: int = 1,
    report: Report = lambda _: None,
) -> RedriveResult:
    """Move the DLQ's messages back: by a move task when it can, else by copying."""
    if method == "task" and max_messages is not None:
        raise RedriveError("a move task cannot stop after --max messages; use --method copy")
    if method != "copy" and max_messages is None:
        dlq_arn = queue_arn(sqs, dlq_url)
        destination = queue_arn(sqs, source_url) if source_url else None
        try:
            return move_with_task(sqs, dlq_arn, destination, report=report)
        except (ClientError, NotImplementedError) as exc:
            if method == "task":
                raise
            report(f"StartMessageMoveTask unavailable ({_short(exc)}); moving message by message")
    source = source_url or source_of(sqs, dlq_url)
    return move_by_copy(
        sqs, dlq_url, source, max_messages, wait_seconds=wait_seconds, report=report
    )


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.redrive",
        description="Move a dead-letter queue's messages back to their source queue.",
    )
    parser.add_argument("--queue", required=True, help="the DLQ: its URL or logical id")
    parser.add_argument("--source", help="the queue to move to (default: the DLQ's source)")
    parser.add_argument("--max", type=int, dest="max_messages", help="move at most N messages")
    parser.add_argument("--endpoint-url", help="e.g. the local emulator's storage endpoint")
    parser.add_argument("--region", help="AWS region (default: the environment's)")
    parser.add_argument("--stack", default=DEFAULT_STACK, help="stack of a logical id")
    parser.add_argument("--method", choices=["auto", "task", "copy"], default="auto")
    parser.add_argument("--wait", type=int, default=1, help="long-poll seconds per receive")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_messages is not None and args.max_messages < 1:
        print("error: --max must be at least 1", file=sys.stderr)
        return 2
    session = boto3.session.Session(region_name=args.region)
    sqs: SQSClient = session.client("sqs", endpoint_url=args.endpoint_url)
    cloudformation: Any = session.client("cloudformation", endpoint_url=args.endpoint_url)
    try:
        dlq = queue_url(sqs, cloudformation, args.queue, args.stack)
        source = queue_url(sqs, cloudformation, args.source, args.stack) if args.source else None
        result = redrive(
            sqs,
            dlq,
            source,
            args.max_messages,
            method=args.method,
            wait_seconds=args.wait,
            report=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except (RedriveError, ClientError, BotoCoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{result.method}: moved {result.moved} message(s) from {dlq}"
        + (f"; {result.failed} left in the DLQ" if result.failed else "")
        + (f"; {result.not_deleted} sent but not deleted" if result.not_deleted else "")
        + (f" ({result.error})" if result.error else "")
    )
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
