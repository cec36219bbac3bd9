"""The dispatcher's pollers on a stand-in transport: what they do when SQS misbehaves."""

from __future__ import annotations

import threading
import time
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


class OneMessage:
    """Serves one message, then nothing; records deletes."""

    def __init__(self) -> None:
        self.served = False
        self.deleted: list[str] = []
        self.visibility: list[int] = []

    def receive(self, queue: QueueInfo, count: int, wait: int, visibility: int) -> list[Any]:
        if self.served:
            time.sleep(0.05)
            return []
        self.served = True
        self.visibility.append(visibility)
        return [{"MessageId": "m1", "ReceiptHandle": "r1", "Body": "{}"}]

    def delete(self, queue: QueueInfo, receipts: Sequence[str]) -> list[str]:
        self.deleted += receipts
        return []


class SlowHandler:
    """Runs past its Timeout; can be stopped, as a ContainerPool's process can be killed."""

    def __init__(self) -> None:
        self.aborted: list[str] = []
        self.stopped = threading.Event()
        self.returned = threading.Event()

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.stopped.wait(5)
        self.returned.set()
        return {"batchItemFailures": []}  # too late: ignored

    def abort(self, aws_request_id: str) -> None:
        self.aborted.append(aws_request_id)
        self.stopped.set()


def test_an_invocation_past_its_timeout_is_over_and_deletes_nothing() -> None:
    lines: list[str] = []
    queues, handler = OneMessage(), SlowHandler()
    function = FunctionInfo("Rows", "rows-fn", "app.rows", Path("."), 0.2, 128, "arn:fn")
    source = SqsEventSource("Rows", QUEUE, 10, True)
    dispatcher = Dispatcher(queues, "us-east-1", log=lines.append, handler_loader=lambda f: handler)
    dispatcher.add_sqs(function, source, 1)
    started = time.monotonic()
    dispatcher.start()
    try:
        assert handler.returned.wait(5)
        assert time.monotonic() - started < 2  # stopped at its Timeout, not after 5 s
        time.sleep(0.2)  # a late result, were it used, would delete by now
    finally:
        dispatcher.stop()
    assert len(handler.aborted) == 1
    assert queues.deleted == []  # the batch comes back after the visibility timeout
    assert queues.visibility == [QUEUE.visibility_timeout]  # received as Lambda receives
    assert any(line.endswith("Task timed out after 0.20 seconds") for line in lines)
    stats = dispatcher.stats["rows-fn"]
    assert (stats.timeouts, stats.errors, stats.worst_seconds) == (1, 1, 0.2)


class EndlessMessages:
    """A message on every receive; deletes are recorded."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.served = 0

    def receive(self, queue: QueueInfo, count: int, wait: int, visibility: int) -> list[Any]:
        with self.lock:
            self.served += 1
            n = self.served
        return [{"MessageId": f"m{n}", "ReceiptHandle": f"r{n}", "Body": "{}"}]

    def delete(self, queue: QueueInfo, receipts: Sequence[str]) -> list[str]:
        return []


def test_a_functions_reserved_concurrency_caps_its_invocations_across_its_mappings() -> None:
    """Reserved concurrency 3, two mappings that would each run 4 (MaximumConcurrency 10):
    never more than 3 invocations at once, as Lambda throttles the rest."""
    lock = threading.Lock()
    in_flight = [0]
    peak = [0]
    three = threading.Event()
    fourth = threading.Event()
    release = threading.Event()

    def handler(event: dict[str, Any], context: Any) -> None:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
            if in_flight[0] == 3:
                three.set()
            if in_flight[0] > 3:
                fourth.set()
        release.wait(10)
        with lock:
            in_flight[0] -= 1

    function = FunctionInfo(
        "Rows", "rows-fn", "app.rows", Path("."), 30, 128, "arn:fn", reserved_concurrency=3
    )
    other = QueueInfo("More", "more", "http://sqs.local/more", "arn:aws:sqs:us-east-1:1:more", 5, 5)
    dispatcher = Dispatcher(
        EndlessMessages(), "us-east-1", verbose=False, handler_loader=lambda f: handler
    )
    dispatcher.add_sqs(function, SqsEventSource("Rows", QUEUE, 1, True, 10), 4)
    dispatcher.add_sqs(function, SqsEventSource("More", other, 1, True, 10), 4)
    dispatcher.start()
    try:
        assert three.wait(10)
        # with a poller more than the cap, the fourth invocation starts within milliseconds
        assert not fourth.wait(1.0)
    finally:
        release.set()
        dispatcher.stop()
    assert peak[0] == 3
    assert any("not polled" in line for line in dispatcher.descriptions)
