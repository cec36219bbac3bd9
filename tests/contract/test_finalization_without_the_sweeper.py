"""Steps that must not wait for the sweeper, on every store (tests/support/stores.py).

The sweeper repairs a job that stopped moving, but only after STALL_AFTER (minutes on AWS):
a missing step it absorbs makes a job late, not wrong, and no end-to-end count notices. So
here the finalize message must be sent by the very call that records a job's last row, on the
path that records a batch of one job's rows, on the one that records a single row, and when
the last row comes again (its first delivery died before asking for finalization). And a
finalize message for a job already finished must change nothing.

Everything goes through the handlers' public behaviour: `queue_handlers.rows` with the queue
records Lambda would pass, the store's state and the fake queues' sent messages."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import partial
from typing import Any

import pytest
from chalicelib.domain.models import ImageResult, JobStatus
from chalicelib.entrypoints import queue_handlers
from chalicelib.entrypoints.queue_handlers import QueueRecord

from tests.fakes import FakeWorld, SentMessage, make_world
from tests.support.stores import StoreUnderTest
from tests.unit.test_pipeline_services import HEADER, drain, jpeg, submit

ROWS = 4


def start_job(job_store: StoreUnderTest) -> tuple[FakeWorld[Any], str, list[SentMessage]]:
    """A job of ROWS rows on `job_store`, ingested; its row messages taken off the queue, in
    position order."""
    world = make_world(store=job_store.store)
    world.fetcher.responses = {f"https://a.test/{n}.jpg": jpeg(8, 8) for n in range(1, ROWS + 1)}
    text = HEADER + "".join(f"{n},P{n},https://a.test/{n}.jpg\n" for n in range(1, ROWS + 1))
    request_id = submit(world, text)
    messages = sorted(world.rows_queue.drain(), key=lambda m: int(m.body["position"]))
    assert len(messages) == ROWS
    return world, request_id, messages


def deliver(world: FakeWorld[Any], messages: list[SentMessage]) -> None:
    """One invocation of the worker with these messages, all of which must succeed."""
    records = [QueueRecord(f"m{n}", json.dumps(m.body)) for n, m in enumerate(messages)]
    assert queue_handlers.rows(world.deps, records) == {"batchItemFailures": []}


def finalize_requests(world: FakeWorld[Any]) -> list[dict[str, Any]]:
    return [m.body for m in world.finalize_queue.history]


def finalization(request_id: str) -> dict[str, Any]:
    """The finalize message of the job: in its tenant's message group."""
    return {"requestId": request_id, "tenant": "default"}


# Invocations of the worker, by row positions: every shape in which the last row can arrive.
SHAPES = {
    "one batch of every row": [[0, 1, 2, 3]],
    "a batch records the last rows": [[0], [1, 2, 3]],
    "batches out of order": [[3, 1], [0, 2]],
    "a single row is the last": [[0, 1, 2], [3]],
    "one row at a time": [[0], [1], [2], [3]],
}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_the_call_that_records_the_last_row_sends_the_finalize_message(
    job_store: StoreUnderTest, shape: list[list[int]]
) -> None:
    world, request_id, messages = start_job(job_store)
    for n, positions in enumerate(shape):
        deliver(world, [messages[p] for p in positions])
        last = n == len(shape) - 1
        assert finalize_requests(world) == ([finalization(request_id)] if last else [])
    job = world.store.get_job(request_id)
    assert job is not None and job.progress.processed_products == ROWS


@pytest.mark.parametrize(
    "redelivered", [[3], [1, 2, 3], [0, 1, 2, 3]], ids=["last row", "last rows", "every row"]
)
def test_a_redelivered_last_row_asks_again_for_finalization(
    job_store: StoreUnderTest, redelivered: list[int]
) -> None:
    """The first delivery recorded the rows and died before asking for finalization (here:
    its rows are recorded straight into the store). The redelivery counts nothing, and its
    own call sends the finalize message: nothing else would before the sweeper."""
    world, request_id, messages = start_job(job_store)
    earlier = [p for p in range(ROWS) if p not in redelivered]
    if earlier:
        deliver(world, [messages[p] for p in earlier])
    now = world.clock.now()
    for p in redelivered:
        url = messages[p].body["inputImageUrls"][0]
        done = [ImageResult(url, output_key=f"outputs/{request_id}/{p}/0.jpg")]
        assert world.store.record_row(request_id, p, done, now) is not None
    assert finalize_requests(world) == []

    deliver(world, [messages[p] for p in redelivered])

    assert finalize_requests(world) == [finalization(request_id)]
    job = world.store.get_job(request_id)
    assert job is not None and job.progress.processed_products == ROWS
    deliver(world, [messages[p] for p in redelivered])  # again: the claim keeps it to one
    assert len(finalize_requests(world)) == 1


def test_a_finalize_message_for_a_finished_job_changes_nothing(job_store: StoreUnderTest) -> None:
    """A duplicate or late finalize message: no output CSV rewritten (its URLs were already
    handed out), no second webhook, no second event."""
    world, request_id, messages = start_job(job_store)
    world.rows_queue.sent.extend(messages)
    drain(world)
    job = world.store.get_job(request_id)
    assert job is not None and job.status == JobStatus.COMPLETED
    written, events = list(world.outputs.written), list(world.events.published)
    webhooks = len(world.webhook_queue.history)

    record = QueueRecord("again", json.dumps({"requestId": request_id}))
    assert queue_handlers.finalize(world.deps, [record]) == {"batchItemFailures": []}

    assert world.outputs.written == written
    assert world.events.published == events
    assert len(world.webhook_queue.history) == webhooks
    assert world.store.get_job(request_id) == job


def test_finalizers_that_all_read_before_either_finishes_end_the_job_once(
    job_store: StoreUnderTest,
) -> None:
    """Two finalize messages at once (a duplicate delivery): both read the job unfinished;
    one terminal status, one event, one webhook message."""
    world, request_id, messages = start_job(job_store)
    deliver(world, messages)
    world.deps.settings = replace(world.deps.settings, webhook_url="https://hook.test/all")
    record = QueueRecord("f", json.dumps({"requestId": request_id}))
    answers = job_store.gate.race([partial(queue_handlers.finalize, world.deps, [record])] * 2)
    assert answers == [{"batchItemFailures": []}] * 2
    job = world.store.get_job(request_id)
    assert job is not None and job.status == JobStatus.COMPLETED
    assert [t for t, _ in world.events.published].count("job.completed") == 1
    assert len(world.webhook_queue.history) == 1
