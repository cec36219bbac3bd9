"""No message dropped: a message that a function cannot handle is never deleted. It comes back
after each visibility timeout and, after the queue's maxReceiveCount, waits in the queue's
dead-letter queue; what the rows dead-letter handler cannot record stays in its queue."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from local_emulator import moto_patches
from local_emulator.dispatch import FunctionStats
from local_emulator.stack import Emulator
from tests.support.emulator import running_emulator
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

# Every duration at a five-hundredth: the ingest queue's 5400 s visibility is 11 s, so five
# receives take under a minute. The functions' code is imported before (see below), so the
# webhook function's 60 ms Timeout is not spent on a cold start.
SCALE = 0.002
MALFORMED = "{this is not json"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with running_emulator(
        verbose_dispatch=False,
        log=lambda line: None,
        time_scale=SCALE,
        schedule_scale=1.0,
    ) as emu:
        from chalicelib import bootstrap

        bootstrap.dependencies()  # warm, as a container that served a request before
        yield emu


def _messages(emu: Emulator, logical_id: str) -> list[dict[str, Any]]:
    """What the queue holds now, seen without changing it (visibility 0 after a peek)."""
    sqs = emu.sqs_client()
    url = emu.stack.queues[logical_id].url
    seen = sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=0,
        MessageSystemAttributeNames=["All"],
    ).get("Messages", [])
    return list(seen)


def _wait_for(emu: Emulator, logical_id: str, body: str, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for message in _messages(emu, logical_id):
            if message["Body"] == body:
                return message
        time.sleep(0.5)
    raise AssertionError(f"{body!r} did not reach {logical_id} within {seconds:g}s")


QUEUES = {
    "IngestQueue": "IngestDeadLetterQueue",
    "RowsQueue": "RowsDeadLetterQueue",
    "FinalizeQueue": "FinalizeDeadLetterQueue",
    "WebhookQueue": "WebhookDeadLetterQueue",
}


def test_a_malformed_message_on_each_queue_ends_in_its_dead_letter_queue(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All four at once (they wait out their visibility timeouts side by side)."""
    monkeypatch.setattr(moto_patches, "COUNT_TTL", 0.0)
    assert emulator.dispatcher is not None
    stats = emulator.dispatcher.stats
    bodies = {}
    for queue in QUEUES:
        info = emulator.stack.queues[queue]
        bodies[queue] = json.dumps({"malformed": queue}) if queue == "RowsQueue" else MALFORMED
        emulator.sqs_client().send_message(QueueUrl=info.url, MessageBody=bodies[queue])
    longest = max(
        ((q.max_receive_count or 0) + 2) * q.visibility_timeout
        for q in (emulator.stack.queues[name] for name in QUEUES)
    )
    for queue, dead_letters in QUEUES.items():
        body = bodies[queue]
        if queue == "RowsQueue":
            # the rows dead-letter handler cannot record it either: it gets it after each of
            # that queue's visibility timeouts, failing, and never deletes it
            handler = _consumer(emulator, dead_letters)
            dead = emulator.stack.queues[dead_letters]
            assert wait_until(
                lambda h=handler: stats.get(h, FunctionStats()).failed_records >= 3,
                timeout=longest + 15,
            )
            emulator.dispatcher.disable(dead.name)  # stop it to look: the message is there
            try:
                message = _wait_for(emulator, dead_letters, body, 10 * dead.visibility_timeout)
            finally:
                emulator.dispatcher.enable(dead.name)
        else:
            message = _wait_for(emulator, dead_letters, body, longest + 15)
        assert int(message["Attributes"]["ApproximateReceiveCount"]) >= 1
        source = emulator.stack.queues[queue]
        assert stats[_consumer(emulator, queue)].failed_records >= (source.max_receive_count or 0)


def _consumer(emu: Emulator, logical_id: str) -> str:
    info = emu.stack.queues[logical_id]
    return next(
        f.name
        for f in emu.stack.functions.values()
        if any(s.queue.logical_id == info.logical_id for s in f.sqs_sources)
    )
