"""SQS queues behind the TaskQueue port."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from chalicelib.domain.chunking import chunks
from chalicelib.errors import TransientError

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

SQS_BATCH = 10


class SqsTaskQueue:
    """One queue; JSON bodies, sent ten to a request.

    With `group_by`, each message's MessageGroupId is that field of its body: on a standard
    queue that turns on SQS fair queues, which deliver first the messages of groups that do
    not already have many in flight (or much of the consumers' time), so one group's backlog
    or slow messages do not hold up another's. The wiring groups the rows and the webhooks
    by tenant (bootstrap.py)."""

    def __init__(self, client: SQSClient, queue_url: str, group_by: str | None = None) -> None:
        self._client = client
        self._url = queue_url
        self._group_by = group_by

    @property
    def url(self) -> str:
        return self._url

    def group_of(self, body: Mapping[str, Any]) -> str | None:
        """The message's MessageGroupId: its `group_by` field, when it has one (a message
        without is, to a fair queue, a group of its own)."""
        group = body.get(self._group_by) if self._group_by else None
        return group if isinstance(group, str) and group else None

    def send_batch(self, bodies: Sequence[Mapping[str, Any]], delay_seconds: int = 0) -> None:
        for batch in chunks(bodies, SQS_BATCH):
            entries: list[SendMessageBatchRequestEntryTypeDef] = []
            for i, body in enumerate(batch):
                entry: SendMessageBatchRequestEntryTypeDef = {
                    "Id": str(i),
                    "MessageBody": json.dumps(body, separators=(",", ":")),
                    "DelaySeconds": delay_seconds,
                }
                group = self.group_of(body)
                if group is not None:
                    entry["MessageGroupId"] = group
                entries.append(entry)
            pending = entries
            for _attempt in range(3):
                response = self._client.send_message_batch(QueueUrl=self._url, Entries=pending)
                failed_ids = {f["Id"] for f in response.get("Failed", [])}
                if not failed_ids:
                    break
                pending = [e for e in pending if e["Id"] in failed_ids]
            else:
                raise TransientError(f"SQS refused {len(pending)} message(s) on {self._url}")

    def ping(self) -> None:
        self._client.get_queue_attributes(QueueUrl=self._url, AttributeNames=["QueueArn"])
