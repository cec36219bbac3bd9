"""Work about a job that is gone (deleted, or expired by retention) is let go, on in-memory
fakes: a message of any queue about it is acknowledged, counted (`MessagesForGoneJobs`) and
logged once per job, never a failure; a rows batch finds it gone in the one read that finds
cancelled jobs and starts none of its images; an image in flight when its job is deleted
leaves no output behind (the race forced: the worker stores and records between the
deletion's listing of outputs and the end of the deletion)."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pytest
from chalicelib import observability
from chalicelib.adapters.fair_pool import FairThreadPool
from chalicelib.entrypoints import queue_handlers
from chalicelib.entrypoints.queue_handlers import QueueRecord
from chalicelib.errors import NotFound
from chalicelib.observability import MetricsBuffer
from chalicelib.services import cancel, cancel_watch, deletion, ingest, job_access, job_actions

from tests.fakes import FakeWorld, make_world
from tests.support.waiting import wait_until
from tests.unit.test_job_steering import HeldFetcher, deliver, job_of, running_job, url
from tests.unit.test_pipeline_services import HEADER, drain, jpeg, submit


@pytest.fixture(autouse=True)
def metrics(monkeypatch: pytest.MonkeyPatch) -> MetricsBuffer:
    buffer = MetricsBuffer(sink=lambda line: None)
    monkeypatch.setattr(observability, "_buffer", buffer)
    monkeypatch.setattr(observability, "_gone_logged", {})
    return buffer


def gone_count(buffer: MetricsBuffer) -> int:
    total = 0
    for document in buffer.documents():
        total += int(document.get(observability.GONE_METRIC, 0))
    return total


def deleted_job(world: FakeWorld[Any]) -> tuple[str, list[Any]]:
    """A job of four rows cancelled and deleted with its row messages still queued."""
    request_id, messages = running_job(world)
    cancel.request_cancel(world.deps, job_of(world, request_id))
    cancel.complete_cancel(world.deps, request_id)
    assert deletion.delete_job(world.deps, job_of(world, request_id)).done
    world.finalize_queue.drain()
    world.webhook_queue.drain()
    return request_id, messages


def test_a_job_deleted_after_its_tenant_check_answers_as_an_unknown_id() -> None:
    """Cancel, retry and redeliver find the job again after the route's tenant check: one
    deleted in between is the same 404, in the same words, as an id that never existed."""
    world = make_world()
    request_id, _ = running_job(world)
    job = job_access.load_job(world.deps, request_id, job_of(world, request_id).tenant)
    unknown = "00000000-0000-4000-8000-0000000000ff"
    with pytest.raises(NotFound) as never:
        job_access.load_job(world.deps, unknown, job.tenant)
    expected = str(never.value).replace(unknown, request_id)
    assert request_id in expected
    world.store.delete_rows(request_id)
    assert world.store.delete_job(request_id)  # deleted between the check and the action
    actions = {
        "cancel": lambda: cancel.request_cancel(world.deps, job),
        "retry": lambda: job_actions.retry_failed(world.deps, request_id),
        "redeliver": lambda: job_actions.redeliver_webhook(world.deps, request_id),
    }
    for name, action in actions.items():
        with pytest.raises(NotFound) as gone:
            action()
        assert str(gone.value) == expected, name


def test_rows_of_a_deleted_job_cost_one_read_start_no_image_and_are_let_go(
    metrics: MetricsBuffer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = make_world()
    gone, messages = deleted_job(world)
    world.fetcher.responses[url(99)] = jpeg(8, 8)
    going = submit(world, HEADER + f"1,Other,{url(99)}\n")
    (going_row,) = world.rows_queue.drain()
    world.fetcher.calls.clear()
    reads: list[list[str]] = []
    look = world.store.jobs_stopped_or_gone

    def counted(request_ids: Any) -> tuple[set[str], set[str]]:
        reads.append(sorted(request_ids))
        return look(request_ids)

    monkeypatch.setattr(world.store, "jobs_stopped_or_gone", counted)
    caplog.set_level(logging.INFO, logger="chalicelib.observability")
    logger = logging.getLogger("chalicelib.observability")
    monkeypatch.setattr(logger, "propagate", True)

    deliver(world, [*messages, going_row])  # no failure: every message acknowledged

    assert reads == [sorted([gone, going])]  # one read for the batch, both jobs in it
    assert world.fetcher.calls == [url(99)]  # no image of the gone job started
    assert job_of(world, going).progress.processed_images == 1
    assert gone_count(metrics) == len(messages) == 4

    def told() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "chalicelib.observability" and gone in r.getMessage()
        ]

    assert len(told()) == 1 and "no longer exists" in told()[0]
    deliver(world, messages[:1])  # the same job again: counted, not logged again
    assert gone_count(metrics) == 1
    assert len(told()) == 1


def test_a_message_of_every_queue_about_a_gone_job_is_acknowledged_and_counted(
    metrics: MetricsBuffer,
) -> None:
    world = make_world()
    gone, messages = deleted_job(world)

    def one(body: dict[str, Any]) -> list[QueueRecord]:
        return [QueueRecord("m", json.dumps(body))]

    ok = {"batchItemFailures": []}
    assert queue_handlers.finalize(world.deps, one({"requestId": gone})) == ok
    assert queue_handlers.finalize(world.deps, one({"requestId": gone, "cancel": True})) == ok
    assert queue_handlers.webhooks(world.deps, one({"requestId": gone, "attempt": 2})) == ok
    assert queue_handlers.rows_dead_letter(world.deps, one(messages[0].body)) == ok
    assert queue_handlers.ingest(world.deps, one({"retryJob": gone, "generation": 1})) == ok
    assert queue_handlers.ingest(world.deps, one({ingest.HANDOVER: gone})) == ok
    assert gone_count(metrics) == 6


def test_an_ingest_whose_job_is_deleted_while_it_runs_stops_and_leaves_no_rows(
    metrics: MetricsBuffer, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = make_world()
    text = HEADER + "".join(f"{n},P{n},{url(n)}\n" for n in range(1, 40))
    original = world.store.insert_rows
    request_ids: list[str] = []

    def delete_after_the_first_chunk(request_id: str, chunk: int, rows: Any) -> None:
        original(request_id, chunk, rows)
        if chunk == 0:  # as a cancel then a delete would, between two chunks
            request_ids.append(request_id)
            world.store.delete_job(request_id)

    monkeypatch.setattr(world.store, "insert_rows", delete_after_the_first_chunk)
    submit(world, text)  # its ingest answers no failure (BatchFailed would raise)
    (request_id,) = request_ids
    assert world.store.get_job(request_id) is None
    assert request_id not in world.store.rows  # the chunk it stored is removed too
    assert gone_count(metrics) == 1


def test_an_image_in_flight_when_its_job_is_deleted_leaves_no_output(
    metrics: MetricsBuffer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker is mid-image when the job is cancelled and deleted; it stores the output
    and records the row just after the deletion has listed the job's outputs: the output is
    removed all the same, and the message is let go."""
    fetcher = HeldFetcher()
    world = make_world(fetcher=fetcher)
    request_id = submit(world, HEADER + "1,Slow,https://a.test/slow.jpg\n")
    records = [QueueRecord("m0", json.dumps(m.body)) for m in world.rows_queue.drain()]
    answers: list[Any] = []
    worker = threading.Thread(
        target=lambda: answers.append(queue_handlers.rows(world.deps, records))
    )
    worker.start()
    assert wait_until(lambda: fetcher.calls == ["https://a.test/slow.jpg"], timeout=5)

    cancel.request_cancel(world.deps, job_of(world, request_id))
    cancel.complete_cancel(world.deps, request_id)  # the image already running goes on
    listing = world.outputs.delete_prefix

    def list_then_let_the_worker_finish(prefix: str, limit: int | None = None) -> int:
        removed = listing(prefix, limit)  # the listing finds no image output yet
        fetcher.released.set()  # now the worker stores its output and records the row
        worker.join(10)
        return removed

    monkeypatch.setattr(world.outputs, "delete_prefix", list_then_let_the_worker_finish)
    assert deletion.delete_job(world.deps, job_of(world, request_id)).done

    assert not worker.is_alive()
    assert answers == [{"batchItemFailures": []}]
    assert [k for k in world.outputs.objects if k.startswith(f"outputs/{request_id}/")] == []
    assert gone_count(metrics) == 1
    drain(world)


def test_an_output_csv_written_again_as_its_job_is_deleted_is_removed(
    metrics: MetricsBuffer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel message delivered twice: the second writes the output CSV again while the
    job is being deleted (the deletion runs between the CSV's rows being read and its put)."""
    world = make_world()
    request_id, _ = running_job(world)
    cancel.request_cancel(world.deps, job_of(world, request_id))
    cancel.complete_cancel(world.deps, request_id)
    put = world.outputs.put_file
    ended = job_of(world, request_id)

    def delete_then_put(key: str, body: Any, content_type: str) -> None:
        assert deletion.delete_job(world.deps, ended).done
        put(key, body, content_type)

    monkeypatch.setattr(world.outputs, "put_file", delete_then_put)
    again = [QueueRecord("again", json.dumps({"requestId": request_id, "cancel": True}))]
    assert queue_handlers.finalize(world.deps, again) == {"batchItemFailures": []}
    assert [k for k in world.outputs.objects if k.startswith(f"outputs/{request_id}/")] == []
    assert gone_count(metrics) == 1


def test_a_row_halted_by_the_cancel_leaves_no_output_once_its_job_is_deleted(
    metrics: MetricsBuffer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row of two images, one thread: the first image is in flight at the cancel, the
    second, still waiting for the thread, never starts (the row is halted). The job is
    deleted between the deletion's listing of outputs and the first image's store: its
    output is removed all the same."""
    monkeypatch.setattr(cancel_watch, "CANCEL_CHECK_SECONDS", 0.05)
    fetcher = HeldFetcher()
    world = make_world(fetcher=fetcher, image_pool=FairThreadPool(1, thread_name_prefix="g"))
    request_id = submit(world, HEADER + '1,Two,"https://a.test/slow.jpg,https://a.test/b.jpg"\n')
    records = [QueueRecord("m0", json.dumps(m.body)) for m in world.rows_queue.drain()]
    reads: list[Any] = []
    look = world.store.jobs_stopped_or_gone

    def counted(request_ids: Any) -> tuple[set[str], set[str]]:
        found = look(request_ids)
        reads.append(found)
        return found

    monkeypatch.setattr(world.store, "jobs_stopped_or_gone", counted)
    answers: list[Any] = []
    worker = threading.Thread(
        target=lambda: answers.append(queue_handlers.rows(world.deps, records))
    )
    worker.start()
    assert wait_until(lambda: fetcher.calls == ["https://a.test/slow.jpg"], timeout=5)
    cancel.request_cancel(world.deps, job_of(world, request_id))
    cancel.complete_cancel(world.deps, request_id)
    assert wait_until(lambda: any(request_id in cancelled for cancelled, _ in reads), timeout=5)
    listing = world.outputs.delete_prefix

    def list_then_let_the_worker_finish(prefix: str, limit: int | None = None) -> int:
        removed = listing(prefix, limit)
        fetcher.released.set()
        worker.join(10)
        return removed

    monkeypatch.setattr(world.outputs, "delete_prefix", list_then_let_the_worker_finish)
    assert deletion.delete_job(world.deps, job_of(world, request_id)).done

    assert not worker.is_alive()
    assert answers == [{"batchItemFailures": []}]
    assert fetcher.calls == ["https://a.test/slow.jpg"]  # the second image never started
    assert [k for k in world.outputs.objects if k.startswith(f"outputs/{request_id}/")] == []
    assert gone_count(metrics) == 1
