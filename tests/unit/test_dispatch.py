"""The dispatcher's pollers on a stand-in transport: what they do when SQS misbehaves."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from local_emulator.dispatch import Dispatcher
from local_emulator.provision import FunctionInfo, QueueInfo, SqsEventSource

QUEUE = QueueInfo("Rows", "rows", "http://sqs.local/rows", "arn:aws:sqs:us-east-1:1:rows", 5, 5)


class RaisingQueues:
    """Hands out one message per receive; every delete raises (a queue deleted under it)."""

    def __init__(self) -> None:
        self.served = 0
        self.lock = threading.Lock()

    def receive(self, queue: QueueInfo, count: int, wait: int, visibility: int) -> list[Any]:
        with self.lock:
            self.served += 1
            n = self.served
        return [{"MessageId": f"m{n}", "ReceiptHandle": f"r{n}", "Body": "{}"}]

    def delete(self, queue: QueueInfo, receipts: Sequence[str]) -> list[str]:
        raise RuntimeError("The specified queue does not exist")


def test_a_transport_that_raises_is_logged_and_the_poller_goes_on() -> None:
    handled = threading.Event()
    calls: list[int] = []
    lines: list[str] = []

    def handler(event: dict[str, Any], context: Any) -> None:
        calls.append(len(event["Records"]))
        if len(calls) >= 3:
            handled.set()

    function = FunctionInfo("Rows", "rows-fn", "app.rows", Path("."), 30, 128, "arn:fn")
    source = SqsEventSource("Rows", QUEUE, 1, False)
    dispatcher = Dispatcher(
        RaisingQueues(), "us-east-1", log=lines.append, handler_loader=lambda fn: handler
    )
    dispatcher.add_sqs(function, source, 1)
    dispatcher.start()
    try:
        assert handled.wait(10), "the poller stopped after the first failed delete"
    finally:
        dispatcher.stop()
    assert any("delete failed: The specified queue does not exist" in line for line in lines)
