"""What cancel and delete need of every JobStore (tests/support/stores.py): a cancel asked
for, rows cancelled without moving a counter, one read telling which jobs are cancelled, a
job and its rows removed; and, through the services, the race of a cancel and a finalization
that both read the job before either writes: exactly one claims the end, one webhook goes."""

from __future__ import annotations

import json
import uuid
from typing import Any

from chalicelib.domain.models import ImageErrorCode, ImageResult, JobStatus, Progress, RowStatus
from chalicelib.entrypoints import queue_handlers
from chalicelib.entrypoints.queue_handlers import QueueRecord
from chalicelib.services import cancel, finalize

from tests.fakes import make_world
from tests.support.jobs import NOW, load, make_rows, new_job, ok_results
from tests.support.stores import StoreUnderTest
from tests.unit.test_pipeline_services import HEADER, drain, jpeg, submit


def test_a_cancel_is_asked_for_a_job_that_has_not_ended_only(job_store: StoreUnderTest) -> None:
    store = job_store.store
    job = new_job()
    load(store, job, make_rows(3))
    assert store.request_cancel(job.request_id, NOW) is True
    asked = store.get_job(job.request_id)
    assert asked is not None and asked.cancel_requested_at and asked.status == JobStatus.PROCESSING
    assert store.request_cancel(job.request_id, NOW) is True  # again: harmless
    assert store.finish_job(job.request_id, JobStatus.CANCELLED, NOW)
    assert store.request_cancel(job.request_id, NOW) is False
    assert store.request_cancel(str(uuid.uuid4()), NOW) is False


def test_cancelled_rows_move_no_counter_and_a_row_recorded_first_stays(
    job_store: StoreUnderTest,
) -> None:
    store = job_store.store
    job = new_job(chunk_size=4)
    rows = make_rows(10)  # chunks of 4, 4, 2
    load(store, job, rows)
    assert store.record_row(job.request_id, 1, ok_results(rows[1]), NOW) is not None
    failed = [ImageResult(u, error_code=ImageErrorCode.TIMEOUT) for u in rows[6].urls]
    assert store.record_row(job.request_id, 6, failed, NOW) is not None
    before = store.get_job(job.request_id)
    assert before is not None

    store.cancel_rows(job.request_id, NOW, [0, 1, 5])  # of these positions only
    assert [r.status for r in store.iter_rows(job.request_id)][:7] == [
        RowStatus.CANCELLED,
        RowStatus.COMPLETED,  # recorded before: kept
        RowStatus.PENDING,
        RowStatus.PENDING,
        RowStatus.PENDING,
        RowStatus.CANCELLED,
        RowStatus.FAILED,
    ]
    store.cancel_rows(job.request_id, NOW)  # every row still pending
    statuses = [r.status for r in store.iter_rows(job.request_id)]
    assert statuses.count(RowStatus.CANCELLED) == 8
    assert store.record_row(job.request_id, 3, ok_results(rows[3]), NOW) is None  # too late
    after = store.get_job(job.request_id)
    assert after is not None and after.progress == before.progress == Progress(10, 2, 20, 4, 2)
    assert store.recount(job.request_id, NOW) == before.progress  # cancelled: never processed
    store.cancel_rows(str(uuid.uuid4()), NOW)  # an unknown job: nothing happens
    store.cancel_rows(job.request_id, NOW, [])


def test_one_read_tells_which_jobs_are_cancelled_or_asked_to_be(
    job_store: StoreUnderTest,
) -> None:
    store = job_store.store
    asked, cancelled, running, ended_first = (new_job() for _ in range(4))
    for job in (asked, cancelled, running, ended_first):
        load(store, job, make_rows(2))
    store.request_cancel(asked.request_id, NOW)
    store.request_cancel(cancelled.request_id, NOW)
    store.finish_job(cancelled.request_id, JobStatus.CANCELLED, NOW)
    store.request_cancel(ended_first.request_id, NOW)  # then finalization claimed the end
    store.finish_job(ended_first.request_id, JobStatus.COMPLETED, NOW)
    every = [j.request_id for j in (asked, cancelled, running, ended_first)]
    assert store.cancelled_jobs([*every, str(uuid.uuid4())]) == {
        asked.request_id,
        cancelled.request_id,
    }
    assert store.cancelled_jobs([]) == set()


def test_a_cancelled_job_is_never_reopened_and_a_retried_one_forgets_its_cancel(
    job_store: StoreUnderTest,
) -> None:
    store = job_store.store
    cancelled, ended_first = new_job(chunk_size=2), new_job(chunk_size=2)
    for job in (cancelled, ended_first):
        rows = make_rows(2, images=1)
        load(store, job, rows)
        failed = [ImageResult(rows[0].urls[0], error_code=ImageErrorCode.TIMEOUT)]
        store.record_row(job.request_id, 0, failed, NOW)
        store.record_row(job.request_id, 1, ok_results(rows[1]), NOW)
        store.request_cancel(job.request_id, NOW)
    store.finish_job(cancelled.request_id, JobStatus.CANCELLED, NOW)
    store.finish_job(ended_first.request_id, JobStatus.COMPLETED_WITH_ERRORS, NOW)
    assert store.reopen_failed(cancelled.request_id, 1, NOW) is False
    assert store.reopen_failed(ended_first.request_id, 1, NOW) is True
    retried = store.get_job(ended_first.request_id)
    assert retried is not None and retried.cancel_requested_at == ""
    assert store.cancelled_jobs([ended_first.request_id]) == set()


def test_delete_job_removes_the_job_and_its_rows_only(job_store: StoreUnderTest) -> None:
    store = job_store.store
    doomed, kept = new_job(chunk_size=3), new_job(chunk_size=3)
    load(store, doomed, make_rows(7))
    load(store, kept, make_rows(4))
    assert store.delete_job(doomed.request_id) is True
    assert store.get_job(doomed.request_id) is None
    assert list(store.iter_rows(doomed.request_id)) == []
    assert store.list_rows(doomed.request_id, 0, 10) == []
    assert store.delete_job(doomed.request_id) is False
    assert job_store.job_count() == 1
    assert len(list(store.iter_rows(kept.request_id))) == 4
    # the id can be used again (nothing of the old job lingers, its chunk size included)
    again = new_job(chunk_size=5)
    again.request_id = doomed.request_id
    load(store, again, make_rows(6))
    assert store.record_row(again.request_id, 5, ok_results(make_rows(6)[5]), NOW) is not None
    assert [r.position for r in store.list_rows(again.request_id, 4, 2)] == [4, 5]


def test_cancel_and_finalization_that_both_read_first_end_the_job_once(
    job_store: StoreUnderTest,
) -> None:
    """The last row is recorded (finalization is claimed) just as a cancel is asked for; the
    finalizer and the cancel both read the job unfinished, write their output CSV, then try
    to claim the end, held by the gate until both have read: one wins, with one event and
    one webhook, and the job's status is the winner's."""
    world: Any = make_world(store=job_store.store)
    world.fetcher.responses = {f"https://a.test/{n}.jpg": jpeg(8, 8) for n in (1, 2)}
    text = HEADER + "1,A,https://a.test/1.jpg\n2,B,https://a.test/2.jpg\n"
    request_id = submit(world, text, webhook="https://hook.test/h")
    records = [
        QueueRecord(f"m{n}", json.dumps(m.body)) for n, m in enumerate(world.rows_queue.drain())
    ]
    assert queue_handlers.rows(world.deps, records) == {"batchItemFailures": []}
    assert [m.body for m in world.finalize_queue.drain()] == [
        {"requestId": request_id, "tenant": "default"}
    ]
    job = world.store.get_job(request_id)
    assert job is not None and job.status == JobStatus.PROCESSING
    cancel.request_cancel(world.deps, job)
    world.finalize_queue.drain()

    won = job_store.gate.race(
        [
            lambda: finalize.finalize_job(world.deps, request_id),
            lambda: cancel.complete_cancel(world.deps, request_id),
        ]
    )

    ended = world.store.get_job(request_id)
    assert ended is not None
    cancel_won = won[1] is True
    assert ended.status == (JobStatus.CANCELLED if cancel_won else JobStatus.COMPLETED)
    terminal_events = [t for t in world.events.types() if t not in ("job.accepted",)]
    assert terminal_events == [f"job.{ended.status}"]
    assert len(world.webhook_queue.sent) == 1
    drain(world)
    assert [json.loads(body)["type"] for _, body, _ in world.sender.posts] == [
        f"job.{ended.status}"
    ]
    assert ended.progress.processed_products == 2  # every row was done: none cancelled
    assert all(r.status == RowStatus.COMPLETED for r in world.store.iter_rows(request_id))
