"""Jobs people steer, on in-memory fakes: a cancel stops new work and ends the job
`cancelled` once (one event, one webhook) whatever comes after it (rows delivered late, the
sweeper, the dead-letter handler, a retry); a deletion removes an ended job's outputs, CSV,
rows and record and asks the CDN to forget them."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from typing import Any

import pytest
from chalicelib.adapters.fair_pool import FairThreadPool
from chalicelib.domain.models import ImageErrorCode, JobStatus, RowStatus
from chalicelib.entrypoints import queue_handlers
from chalicelib.entrypoints.queue_handlers import QueueRecord
from chalicelib.errors import Conflict, ImageFailure, Unavailable
from chalicelib.services import (
    cancel,
    cancel_watch,
    deletion,
    job_actions,
    status,
    sweeper,
    upload,
)
from chalicelib.services.ingest import job_id_for_key

from tests.fakes import FakeWorld, SentMessage, make_world
from tests.support.waiting import wait_until
from tests.unit.test_pipeline_services import HEADER, drain, jpeg, storage_record, submit

HOOK = "https://hook.test/h"
ROWS = 4


def url(n: int) -> str:
    return f"https://a.test/{n}.jpg"


def running_job(world: FakeWorld[Any], rows: int = ROWS) -> tuple[str, list[SentMessage]]:
    """A job of `rows` rows (two images each), ingested; its row messages taken off the
    queue in position order, none delivered yet."""
    world.fetcher.responses = {url(n): jpeg(16, 12) for n in range(1, 2 * rows + 1)}
    text = HEADER + "".join(
        f'{n},P{n},"{url(2 * n - 1)},{url(2 * n)}"\n' for n in range(1, rows + 1)
    )
    request_id = submit(world, text, webhook=HOOK)
    messages = sorted(world.rows_queue.drain(), key=lambda m: int(m.body["position"]))
    assert len(messages) == rows
    return request_id, messages


def deliver(world: FakeWorld[Any], messages: list[SentMessage]) -> None:
    records = [QueueRecord(f"m{n}", json.dumps(m.body)) for n, m in enumerate(messages)]
    assert queue_handlers.rows(world.deps, records) == {"batchItemFailures": []}


def job_of(world: FakeWorld[Any], request_id: str) -> Any:
    job = world.store.get_job(request_id)
    assert job is not None
    return job


def webhook_types(world: FakeWorld[Any]) -> list[str]:
    return [json.loads(body)["type"] for _, body, _ in world.sender.posts]


def output_table(world: FakeWorld[Any], request_id: str) -> list[list[str]]:
    job = job_of(world, request_id)
    data = world.outputs.objects[job.output_csv_key][0].decode()
    return list(csv.reader(io.StringIO(data)))


def cancel_job(world: FakeWorld[Any], request_id: str) -> None:
    cancel.request_cancel(world.deps, job_of(world, request_id))


# -- cancel ---------------------------------------------------------------------------------


def test_a_cancel_mid_job_starts_no_new_image_and_ends_the_job_cancelled_once() -> None:
    world = make_world()
    request_id, messages = running_job(world)
    deliver(world, messages[:1])  # row 0 is done before the cancel
    fetched = len(world.fetcher.calls)
    before = job_of(world, request_id).progress

    cancel_job(world, request_id)
    deliver(world, messages[1:3])  # a batch delivered after the cancel: no fetch
    assert len(world.fetcher.calls) == fetched
    drain(world)  # the cancel carried out, the webhook sent
    deliver(world, messages[3:])  # a row delivered after the job ended: no fetch either
    drain(world)

    job = job_of(world, request_id)
    assert job.status == JobStatus.CANCELLED
    assert len(world.fetcher.calls) == fetched == 2
    assert job.progress == before  # the counters stay as they were
    rows = world.store.list_rows(request_id, 0, ROWS)
    assert [row.status for row in rows] == [RowStatus.COMPLETED] + [RowStatus.CANCELLED] * 3
    table = output_table(world, request_id)  # what was done
    assert [r[0] for r in table[1:]] == ["1", "2", "3", "4"]
    assert all(table[1][3].split(","))
    assert [r[3] for r in table[2:]] == [","] * 3  # two empty outputs each
    assert webhook_types(world) == ["job.cancelled"]
    assert [t for t in world.events.types() if t.startswith("job.") and t != "job.accepted"] == [
        "job.cancelled"
    ]
    document = status.job_status(world.deps, request_id, "default")
    assert document["status"] == "cancelled"
    assert [p["status"] for p in document["products"]] == ["completed"] + ["cancelled"] * 3


def test_a_batch_mixing_jobs_starts_the_images_of_the_job_not_cancelled_only() -> None:
    world = make_world()
    stopped, stopped_rows = running_job(world, rows=2)
    world.fetcher.responses[url(9)] = jpeg(8, 8)
    going = submit(world, HEADER + f"1,Other,{url(9)}\n")
    (going_row,) = world.rows_queue.drain()
    cancel_job(world, stopped)
    world.fetcher.calls.clear()
    deliver(world, [*stopped_rows, going_row])
    assert world.fetcher.calls == [url(9)]
    assert job_of(world, going).progress.processed_images == 1


class HeldFetcher:
    """Serves a small JPEG; `slow` URLs only once released."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.released = threading.Event()

    def fetch(self, address: str) -> bytes:
        self.calls.append(address)
        if "slow" in address:
            self.released.wait(10)
        return jpeg(8, 8)


def test_images_still_waiting_for_a_thread_do_not_start_once_the_job_is_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch whose first image is slow: the rest wait for the pool's one thread. The job is
    cancelled meanwhile; the batch reads again (once for the batch, not per image) which of
    its jobs are cancelled, and the waiting images never start."""
    monkeypatch.setattr(cancel_watch, "CANCEL_CHECK_SECONDS", 0.05)
    fetcher = HeldFetcher()
    world = make_world(fetcher=fetcher, image_pool=FairThreadPool(1, thread_name_prefix="t"))
    text = (
        HEADER + "1,A,https://a.test/slow.jpg\n2,B,https://a.test/b.jpg\n3,C,https://a.test/c.jpg\n"
    )
    request_id = submit(world, text, webhook=HOOK)
    records = [
        QueueRecord(f"m{n}", json.dumps(m.body)) for n, m in enumerate(world.rows_queue.drain())
    ]
    reads: list[list[str]] = []
    look = world.store.jobs_stopped_or_gone

    def counted(request_ids: Any) -> tuple[set[str], set[str]]:
        reads.append(list(request_ids))
        return look(request_ids)

    monkeypatch.setattr(world.store, "jobs_stopped_or_gone", counted)
    answers: list[Any] = []
    batch = threading.Thread(
        target=lambda: answers.append(queue_handlers.rows(world.deps, records))
    )
    batch.start()
    assert wait_until(lambda: fetcher.calls == ["https://a.test/slow.jpg"], timeout=5)
    cancel_job(world, request_id)
    seen = len(reads)
    assert wait_until(lambda: len(reads) > seen, timeout=5)  # the batch looked again
    fetcher.released.set()
    batch.join(10)

    assert answers == [{"batchItemFailures": []}]
    assert fetcher.calls == ["https://a.test/slow.jpg"]  # b and c never started
    assert all(ids == [request_id] for ids in reads)  # one read for the batch each time
    rows = world.store.list_rows(request_id, 0, 3)
    assert [r.status for r in rows] == [
        RowStatus.COMPLETED,
        RowStatus.CANCELLED,
        RowStatus.CANCELLED,
    ]
    drain(world)
    job = job_of(world, request_id)
    assert job.status == JobStatus.CANCELLED and job.progress.processed_products == 1
    assert webhook_types(world) == ["job.cancelled"]


def test_a_batch_whose_images_have_all_started_does_not_read_cancels_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once every image of the batch has a thread, a cancel could stop none of them: the
    batch reads which jobs are cancelled when it starts, and not again while they run."""
    monkeypatch.setattr(cancel_watch, "CANCEL_CHECK_SECONDS", 0.02)
    fetcher = HeldFetcher()
    world = make_world(fetcher=fetcher, image_pool=FairThreadPool(4, thread_name_prefix="t"))
    request_id = submit(
        world, HEADER + "1,A,https://a.test/slow-a.jpg\n2,B,https://a.test/slow-b.jpg\n"
    )
    records = [
        QueueRecord(f"m{n}", json.dumps(m.body)) for n, m in enumerate(world.rows_queue.drain())
    ]
    reads: list[list[str]] = []
    look = world.store.cancelled_jobs

    def counted(request_ids: Any) -> set[str]:
        reads.append(list(request_ids))
        return look(request_ids)

    monkeypatch.setattr(world.store, "cancelled_jobs", counted)
    answers: list[Any] = []
    batch = threading.Thread(
        target=lambda: answers.append(queue_handlers.rows(world.deps, records))
    )
    batch.start()
    assert wait_until(lambda: len(fetcher.calls) == 2, timeout=5)  # both images running
    seen = len(reads)  # the read before any started, and any while one still waited
    time.sleep(20 * cancel_watch.CANCEL_CHECK_SECONDS)
    fetcher.released.set()
    batch.join(10)
    assert answers == [{"batchItemFailures": []}]
    # at most one more: a look due just as the second image took its thread
    assert seen <= len(reads) <= seen + 1
    assert all(ids == [request_id] for ids in reads)
    assert job_of(world, request_id).progress.processed_products == 2


def test_cancelling_or_retrying_a_cancelled_job_is_409() -> None:
    world = make_world()
    request_id, messages = running_job(world)
    world.fetcher.responses[url(1)] = ImageFailure(ImageErrorCode.HTTP_ERROR, "HTTP 500")
    deliver(world, messages[:1])  # a failed image: a retry would have something to do
    cancel_job(world, request_id)
    drain(world)
    job = job_of(world, request_id)
    assert job.status == JobStatus.CANCELLED and job.progress.failed_images == 1
    with pytest.raises(Conflict, match="cancelled"):
        cancel_job(world, request_id)
    with pytest.raises(Conflict, match="cancelled"):
        job_actions.retry_failed(world.deps, request_id)
    assert not world.store.reopen_failed(request_id, 1, world.clock.now())
    assert job_of(world, request_id).status == JobStatus.CANCELLED


def test_cancelling_a_job_that_ended_is_409_and_changes_nothing() -> None:
    world = make_world()
    request_id, messages = running_job(world)
    deliver(world, messages)
    drain(world)
    assert job_of(world, request_id).status == JobStatus.COMPLETED
    with pytest.raises(Conflict, match="completed"):
        cancel_job(world, request_id)
    assert world.finalize_queue.sent == []
    assert webhook_types(world) == ["job.completed"]


def test_nothing_revives_a_cancelled_job() -> None:
    """Not the sweeper (even with its rows' messages lost), not a redelivered row, not the
    dead-letter handler, not a second cancel message."""
    world = make_world()
    request_id, messages = running_job(world)
    cancel_job(world, request_id)
    cancel_message = world.finalize_queue.sent[0].body
    drain(world)
    ended = job_of(world, request_id)
    assert ended.status == JobStatus.CANCELLED

    world.clock.advance(world.deps.settings.stall_after * 3)
    report = sweeper.sweep(world.deps)
    assert report.resent_rows == [] and report.ingests == [] and report.finalizations == []
    assert world.rows_queue.sent == []
    dead = [QueueRecord(f"d{n}", json.dumps(m.body)) for n, m in enumerate(messages)]
    assert queue_handlers.rows_dead_letter(world.deps, dead) == {"batchItemFailures": []}
    redelivered = [QueueRecord("r", json.dumps(messages[0].body), receive_count=2)]
    assert queue_handlers.rows(world.deps, redelivered) == {"batchItemFailures": []}
    finalize_again = [QueueRecord("f", json.dumps(cancel_message))]
    assert queue_handlers.finalize(world.deps, finalize_again) == {"batchItemFailures": []}
    drain(world)

    job = job_of(world, request_id)
    assert (job.status, job.progress, job.webhook.webhook_id) == (
        JobStatus.CANCELLED,
        ended.progress,
        ended.webhook.webhook_id,
    )
    assert all(r.status == RowStatus.CANCELLED for r in world.store.iter_rows(request_id))
    assert world.fetcher.calls == []
    assert webhook_types(world) == ["job.cancelled"]
    assert world.events.types().count("job.cancelled") == 1


def test_a_dead_lettered_row_of_a_job_being_cancelled_is_cancelled_not_failed() -> None:
    world = make_world()
    request_id, messages = running_job(world)
    cancel_job(world, request_id)  # asked for; not carried out yet
    dead = [QueueRecord("d", json.dumps(messages[2].body))]
    assert queue_handlers.rows_dead_letter(world.deps, dead) == {"batchItemFailures": []}
    row = world.store.list_rows(request_id, 2, 1)[0]
    assert row.status == RowStatus.CANCELLED and row.errors == ()
    assert job_of(world, request_id).progress.failed_images == 0


def test_a_cancel_whose_message_was_lost_is_carried_out_by_the_sweeper() -> None:
    world = make_world()
    request_id, _ = running_job(world)
    cancel_job(world, request_id)
    world.finalize_queue.drain()  # the cancel message is lost
    world.clock.advance(world.deps.settings.stall_after + 1)
    report = sweeper.sweep(world.deps)
    assert report.cancelled == [request_id] and report.resent_rows == []
    drain(world)
    assert job_of(world, request_id).status == JobStatus.CANCELLED
    assert webhook_types(world) == ["job.cancelled"]


def test_a_job_cancelled_before_its_csv_arrives_never_starts() -> None:
    world = make_world()
    presigned = upload.create_presigned_upload(world.deps, HOOK, "default")
    request_id = presigned.job.request_id
    cancel_job(world, request_id)
    drain(world)
    assert job_of(world, request_id).status == JobStatus.CANCELLED
    world.uploads.put_bytes(presigned.job.input_key, (HEADER + f"1,A,{url(1)}\n").encode(), "")
    queue_handlers.ingest(world.deps, [storage_record(presigned.job.input_key)])
    drain(world)
    assert world.rows_queue.history == [] and world.fetcher.calls == []
    assert job_of(world, request_id).status == JobStatus.CANCELLED
    assert webhook_types(world) == ["job.cancelled"]


def test_a_cancel_asked_while_the_csv_is_ingested_cancels_every_row_it_stores() -> None:
    world = make_world()
    world.fetcher.responses = {url(n): jpeg(8, 8) for n in range(1, 4)}
    accepted = upload.submit_csv(
        world.deps,
        (HEADER + "".join(f"{n},P{n},{url(n)}\n" for n in range(1, 4))).encode(),
        HOOK,
        None,
        "default",
    )
    request_id = accepted.job.request_id
    cancel_job(world, request_id)  # the job is pending: its ingest has not run
    queue_handlers.ingest(world.deps, [storage_record(accepted.job.input_key)])
    drain(world)
    job = job_of(world, request_id)
    assert job.status == JobStatus.CANCELLED and world.fetcher.calls == []
    assert [r.status for r in world.store.iter_rows(request_id)] == [RowStatus.CANCELLED] * 3
    assert [r[0] for r in output_table(world, request_id)[1:]] == ["1", "2", "3"]
    assert webhook_types(world) == ["job.cancelled"]


def test_when_the_last_row_is_done_before_the_cancel_is_carried_out_the_job_completes() -> None:
    """Whichever of cancel and finalization claims the end first wins (the forced race of
    the two is in tests/contract/test_cancel_race.py)."""
    world = make_world()
    request_id, messages = running_job(world)
    deliver(world, messages)  # every row done; the finalize message is queued
    cancel_job(world, request_id)  # asked for in time: the job is still processing
    drain(world)  # finalization comes first in the queue
    assert job_of(world, request_id).status == JobStatus.COMPLETED
    assert webhook_types(world) == ["job.completed"]
    assert all(r.status == RowStatus.COMPLETED for r in world.store.iter_rows(request_id))


# -- delete ---------------------------------------------------------------------------------


def finished_job(world: FakeWorld[Any]) -> str:
    request_id, messages = running_job(world)
    deliver(world, messages)
    drain(world)
    assert job_of(world, request_id).status == JobStatus.COMPLETED
    return request_id


def test_deleting_an_ended_job_removes_its_outputs_csvs_records_and_cached_copies() -> None:
    world = make_world()
    request_id = finished_job(world)
    other = finished_job(world)
    mine = [key for key in world.outputs.objects if key.startswith(f"outputs/{request_id}/")]
    assert len(mine) == 2 * ROWS + 1  # the images and the output CSV
    input_key = job_of(world, request_id).input_key
    assert input_key in world.uploads.objects

    result = deletion.delete_job(world.deps, job_of(world, request_id))

    assert result == deletion.Deletion(done=True, objects=len(mine))
    assert not [key for key in world.outputs.objects if request_id in key]
    assert input_key not in world.uploads.objects
    assert world.store.get_job(request_id) is None
    assert list(world.store.iter_rows(request_id)) == []
    assert world.cdn.invalidated == [[f"/outputs/{request_id}/*"]]
    # the other job is untouched
    assert job_of(world, other).status == JobStatus.COMPLETED
    assert sum(key.startswith(f"outputs/{other}/") for key in world.outputs.objects) == len(mine)


def test_deleting_a_running_job_is_409_and_removes_nothing() -> None:
    world = make_world()
    request_id, _ = running_job(world)
    objects = dict(world.uploads.objects)
    with pytest.raises(Conflict, match="processing"):
        deletion.delete_job(world.deps, job_of(world, request_id))
    assert world.uploads.objects == objects and world.cdn.invalidated == []
    assert world.store.get_job(request_id) is not None


def test_a_job_with_more_outputs_than_one_call_removes_is_deleted_over_several_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = make_world()
    request_id = finished_job(world)  # 9 objects under outputs/<id>/
    monkeypatch.setattr(deletion, "MAX_OBJECTS_PER_CALL", 4)
    calls = []
    while True:
        result = deletion.delete_job(world.deps, job_of(world, request_id))
        calls.append(result)
        if result.done:
            break
        assert world.cdn.invalidated == []  # the CDN is told once, at the end
    assert calls == [
        deletion.Deletion(False, 4),
        deletion.Deletion(False, 4),
        deletion.Deletion(True, 1),
    ]
    assert world.store.get_job(request_id) is None
    assert world.cdn.invalidated == [[f"/outputs/{request_id}/*"]]


def test_a_cdn_refusing_the_invalidation_leaves_the_job_to_delete_again() -> None:
    world = make_world()
    request_id = finished_job(world)
    world.cdn.refuse = 1
    with pytest.raises(Unavailable) as refused:
        deletion.delete_job(world.deps, job_of(world, request_id))
    assert refused.value.retry_after > 0
    assert not [key for key in world.outputs.objects if request_id in key]
    assert world.store.get_job(request_id) is not None  # asked again, it finishes
    assert deletion.delete_job(world.deps, job_of(world, request_id)).done
    assert world.store.get_job(request_id) is None
    assert world.cdn.invalidated == [[f"/outputs/{request_id}/*"]]


def test_the_cdn_path_follows_the_public_base_urls_path() -> None:
    from chalicelib.config import Settings

    world = make_world(Settings(public_base_url="https://cdn.test/assets"))
    assert deletion.cdn_paths(world.deps, "abc") == ["/assets/outputs/abc/*"]


def test_a_csv_key_that_a_later_upload_reused_is_kept() -> None:
    """A feed dropped at the same key every day: deleting Monday's job must not delete
    Tuesday's CSV."""
    world = make_world()
    key = "incoming/feed.csv"
    world.fetcher.responses = {url(1): jpeg(8, 8)}
    world.uploads.put_bytes(key, (HEADER + f"1,A,{url(1)}\n").encode(), "text/csv")
    info = world.uploads.head(key)
    assert info is not None
    queue_handlers.ingest(world.deps, [storage_record(key, etag=info.etag)])
    monday = job_id_for_key(key, info.etag)
    drain(world)
    assert job_of(world, monday).status == JobStatus.COMPLETED
    world.uploads.put_bytes(key, (HEADER + f"1,B,{url(1)}\n").encode(), "text/csv")  # Tuesday
    assert deletion.delete_job(world.deps, job_of(world, monday)).done
    assert key in world.uploads.objects
