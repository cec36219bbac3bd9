"""The ingest in slices, so that one tenant's large CSVs do not hold the ingest function's few
slots: a CSV too large to ingest where its storage event is taken goes to its tenant's message
group at once; each run sends rows for INGEST_SLICE_SECONDS at most, then hands over in that
group, from its mark, storing and sending nothing twice; a retry does the same."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from typing import Any

from chalicelib.domain.budget import Budget
from chalicelib.domain.models import ImageErrorCode, Job, JobStatus, RowStatus, output_csv_key
from chalicelib.entrypoints import queue_handlers
from chalicelib.entrypoints.queue_handlers import QueueRecord
from chalicelib.errors import ImageFailure
from chalicelib.services import cancel, deletion, ingest, job_actions

from tests.fakes import FakeWorld, make_world
from tests.unit.test_pipeline_services import HEADER, storage_record
from tests.unit.test_time_budget import SETTINGS, ManualClock

KEY = "incoming/partner/feed.csv"
SLICE = 2.5  # seconds of sending per run; each send below takes 1 s of the manual clock


def large_event(key: str = KEY) -> QueueRecord:
    """The storage event of an object larger than the ingest takes where the event is taken."""
    record = storage_record(key)
    body = json.loads(record.body)
    body["Records"][0]["s3"]["object"]["size"] = ingest.INLINE_BYTES + 1
    return QueueRecord(record.message_id, json.dumps(body))


def sliced_world(rows: int, urls: str = "https://a.test/{n}.jpg") -> tuple[FakeWorld, ManualClock]:
    """A CSV of `rows` rows (chunks of ten) dropped in the bucket; sending a batch of row
    messages takes one second of the returned clock, and a run's slice is SLICE seconds."""
    world = make_world(replace(SETTINGS, rows_per_chunk=10, ingest_slice_seconds=SLICE))
    text = HEADER + "".join(f"{n},P{n},{urls.format(n=n)}\n" for n in range(1, rows + 1))
    world.uploads.put_bytes(KEY, text.encode(), "text/csv")
    clock = ManualClock()
    sends = world.rows_queue.send_batch

    def timed_send(bodies: Any, delay_seconds: int = 0) -> None:
        clock.now += 1.0
        sends(bodies, delay_seconds)

    world.rows_queue.send_batch = timed_send  # type: ignore[method-assign]
    return world, clock


def run(world: FakeWorld, clock: ManualClock, body: dict[str, Any]) -> list[int]:
    """One ingest invocation of `body` (an hour of budget); the row positions it sent."""
    record = QueueRecord("h", json.dumps(body))
    queue_handlers.ingest(world.deps, [record], Budget(clock.now + 3600, clock))
    return [m.body["position"] for m in world.rows_queue.drain()]


def test_a_large_csv_goes_to_its_tenants_group_from_its_storage_event() -> None:
    world, clock = sliced_world(30)
    queue_handlers.ingest(world.deps, [large_event()], Budget(3600, clock))
    assert world.rows_queue.sent == []  # nothing read where the ungrouped event was taken
    (handover,) = [m.body for m in world.ingest_queue.drain()]
    request_id = handover[ingest.HANDOVER]
    job = world.store.get_job(request_id)
    assert job is not None and handover == {ingest.HANDOVER: request_id, "tenant": job.tenant}
    assert job.status == JobStatus.PENDING
    # the event again (S3 delivers at least once): the claim is taken, nothing more queued
    queue_handlers.ingest(world.deps, [large_event()], Budget(3600, clock))
    assert world.ingest_queue.drain() == []
    assert run(world, clock, handover) == list(range(30))  # small enough for one slice
    assert world.ingest_queue.drain() == []


def test_each_run_sends_one_slice_then_hands_over_from_its_mark() -> None:
    """Ten chunks; each run starts sending, then starts what the next SLICE seconds allow (a
    send takes one): three chunks a run, four runs, each chunk stored once and each row
    sent once, and every handover in the tenant's group."""
    world, clock = sliced_world(100)
    stored: Counter[int] = Counter()
    insert = world.store.insert_rows

    def counted_insert(request_id: str, chunk: int, rows: Any) -> None:
        stored[chunk] += 1
        insert(request_id, chunk, rows)

    world.store.insert_rows = counted_insert  # type: ignore[method-assign]
    queue_handlers.ingest(world.deps, [large_event()], Budget(3600, clock))
    (body,) = [m.body for m in world.ingest_queue.drain()]
    tenant = body["tenant"]
    slices = []
    while True:
        slices.append(run(world, clock, body))
        handed = [m.body for m in world.ingest_queue.drain()]
        if not handed:
            break
        (body,) = handed
        assert body == {ingest.HANDOVER: body[ingest.HANDOVER], "tenant": tenant}
    assert [len(s) for s in slices] == [30, 30, 30, 10]
    assert [p for s in slices for p in s] == list(range(100))
    assert stored == dict.fromkeys(range(10), 1)
    job = world.store.get_job(body[ingest.HANDOVER])
    assert job is not None and job.fanout_done and job.rows_written


def test_every_run_sends_rows_however_long_reading_the_csv_took() -> None:
    """Reading the CSV again takes longer than a slice: the slice starts at the first rows
    sent, so each run still sends some and the ingest ends."""
    world, clock = sliced_world(40)
    opened = world.uploads.open

    def slow_open(key: str) -> Any:
        clock.now += 10 * SLICE
        return opened(key)

    world.uploads.open = slow_open  # type: ignore[method-assign]
    queue_handlers.ingest(world.deps, [large_event()], Budget(3600, clock))
    (body,) = [m.body for m in world.ingest_queue.drain()]
    sent: list[int] = []
    for _ in range(10):
        sent += run(world, clock, body)
        handed = [m.body for m in world.ingest_queue.drain()]
        if not handed:
            break
        (body,) = handed
    assert sent == list(range(40))


def test_a_retry_fans_out_in_slices_and_rows_failing_again_meanwhile_stay_failed() -> None:
    """A retry of 100 failed rows, three chunks a run: rows of the first slice fail again
    while the second is due. The later runs do not reset them (behind the mark, nothing
    would send them again): the retry's rows are each sent once and the job ends."""
    world, clock = sliced_world(100, urls="https://gone.test/{n}.jpg")
    for n in range(1, 101):
        world.fetcher.responses[f"https://gone.test/{n}.jpg"] = ImageFailure(
            ImageErrorCode.HTTP_ERROR, "404"
        )
    queue_handlers.ingest(world.deps, [storage_record(KEY)], Budget(3600, clock))  # inline
    request_id = next(iter(world.store.jobs))
    while handed := world.ingest_queue.drain():  # its slices
        (message,) = handed
        queue_handlers.ingest(
            world.deps, [QueueRecord("h", json.dumps(message.body))], Budget(3600, clock)
        )
    process_all(world)
    job = world.store.get_job(request_id)
    assert job is not None and job.status == JobStatus.FAILED and job.fanout_done

    job_actions.retry_failed(world.deps, request_id)
    (body,) = [m.body for m in world.ingest_queue.drain()]
    assert body["tenant"] == job.tenant
    sent: list[int] = []
    for _ in range(10):
        positions = run(world, clock, body)
        sent += positions
        deliver_rows(world, request_id, positions)  # they fail again, before the next run
        handed = [m.body for m in world.ingest_queue.drain()]
        if not handed:
            break
        (body,) = handed
        assert body["tenant"] == job.tenant
    assert sent == list(range(100))
    process_all(world)
    job = world.store.get_job(request_id)
    assert job is not None and job.status == JobStatus.FAILED and job.generation == 1


def deliver_rows(world: FakeWorld, request_id: str, positions: list[int]) -> None:
    """The worker, given the rows at `positions` of the job (rebuilt from the store)."""
    job = world.store.get_job(request_id)
    assert job is not None
    rows = {r.position: r for r in world.store.iter_rows(request_id)}
    bodies = [ingest.row_message(job, rows[p]) for p in positions]
    for start in range(0, len(bodies), 10):
        records = [QueueRecord(f"r{n}", json.dumps(b)) for n, b in enumerate(bodies[start:][:10])]
        queue_handlers.rows(world.deps, records)


def process_all(world: FakeWorld) -> None:
    """Every queued row, then every queued finalization."""
    while world.rows_queue.sent:
        bodies = [m.body for m in world.rows_queue.drain()]
        for start in range(0, len(bodies), 10):
            records = [
                QueueRecord(f"r{n}", json.dumps(b)) for n, b in enumerate(bodies[start:][:10])
            ]
            queue_handlers.rows(world.deps, records)
    for message in world.finalize_queue.drain():
        queue_handlers.finalize(world.deps, [QueueRecord("f", json.dumps(message.body))])


def test_a_csv_slow_to_read_again_gets_a_longer_slice() -> None:
    """Each run reads the CSV twice (validation, then the rows); here each read takes 5 s,
    so a run that took 10 s to send its first chunk sends for 40 s (READ_RATIO times as
    long) rather than SLICE: re-reading takes at most a fifth of each run."""
    world, clock = sliced_world(100)
    opened = world.uploads.open

    def slow_open(key: str) -> Any:
        clock.now += 5.0
        return opened(key)

    world.uploads.open = slow_open  # type: ignore[method-assign]
    queue_handlers.ingest(world.deps, [large_event()], Budget(3600, clock))
    (body,) = [m.body for m in world.ingest_queue.drain()]
    assert run(world, clock, body) == list(range(100))
    assert world.ingest_queue.drain() == []


def cancelled_after_one_slice() -> tuple[FakeWorld, ManualClock, dict[str, Any], Job]:
    """A 100-row CSV whose first slice sent 30 rows, then cancelled (and the cancel carried
    out) while its handover waits: the world, its clock, the handover's body, the job."""
    world, clock = sliced_world(100)
    queue_handlers.ingest(world.deps, [large_event()], Budget(3600, clock))
    (body,) = [m.body for m in world.ingest_queue.drain()]
    assert run(world, clock, body) == list(range(30))
    (body,) = [m.body for m in world.ingest_queue.drain()]
    request_id = body[ingest.HANDOVER]
    job = world.store.get_job(request_id)
    assert job is not None
    cancel.request_cancel(world.deps, job)
    for message in world.finalize_queue.drain():
        queue_handlers.finalize(world.deps, [QueueRecord("c", json.dumps(message.body))])
    job = world.store.get_job(request_id)
    assert job is not None and job.status == JobStatus.CANCELLED
    return world, clock, body, job


def test_a_job_cancelled_between_two_slices_lists_every_product_cancelled() -> None:
    """The cancel is carried out after the first slice: the next one cannot claim the ended
    job, yet stores the rows left (sending none), and the output CSV lists all of them."""
    world, clock, body, job = cancelled_after_one_slice()
    request_id = job.request_id
    assert run(world, clock, body) == []  # nothing sent for the ended job
    assert world.ingest_queue.drain() == []
    rows = list(world.store.iter_rows(request_id))
    assert [r.position for r in rows] == list(range(100))
    assert {r.status for r in rows} == {RowStatus.CANCELLED}
    output = world.outputs.objects[output_csv_key(request_id)][0].decode()
    assert len(output.strip().splitlines()) == 1 + 100


def test_a_job_cancelled_before_its_first_slice_stores_no_rows() -> None:
    """Cancelled while its handover waited (its CSV not accepted yet): no product, as before."""
    world, clock = sliced_world(100)
    queue_handlers.ingest(world.deps, [large_event()], Budget(3600, clock))
    (body,) = [m.body for m in world.ingest_queue.drain()]
    request_id = body[ingest.HANDOVER]
    job = world.store.get_job(request_id)
    assert job is not None and job.status == JobStatus.PENDING
    cancel.request_cancel(world.deps, job)
    for message in world.finalize_queue.drain():
        queue_handlers.finalize(world.deps, [QueueRecord("c", json.dumps(message.body))])
    assert run(world, clock, body) == []
    job = world.store.get_job(request_id)
    assert job is not None and job.status == JobStatus.CANCELLED
    assert job.progress.total_products == 0 and list(world.store.iter_rows(request_id)) == []


def test_a_job_cancelled_then_deleted_between_two_slices_is_let_go() -> None:
    """Cancel, then delete, while the handover waits: the next slice finds the job gone,
    stores and sends nothing, hands nothing over, and its message is let go (not reported
    for another delivery)."""
    world, clock, body, job = cancelled_after_one_slice()
    request_id = job.request_id
    assert deletion.delete_job(world.deps, job).done
    assert world.store.get_job(request_id) is None

    answer = queue_handlers.ingest(
        world.deps, [QueueRecord("h", json.dumps(body))], Budget(clock.now + 3600, clock)
    )
    assert answer == {"batchItemFailures": []}
    assert world.rows_queue.drain() == [] and world.ingest_queue.drain() == []
    assert list(world.store.iter_rows(request_id)) == []
