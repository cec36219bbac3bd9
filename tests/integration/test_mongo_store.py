"""MongoJobStore against a MongoDB wire server (the embedded one unless MONGO_URI is set)."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from chalicelib.adapters.mongo_store import MongoJobStore, chunk_id
from chalicelib.domain.models import (
    ImageErrorCode,
    ImageResult,
    Job,
    JobStatus,
    Progress,
    RowStatus,
    StoredRow,
    WebhookAttempt,
    WebhookInfo,
    WebhookState,
)
from chalicelib.domain.timefmt import iso
from chalicelib.ports import JobStore, chunks
from pymongo.database import Database

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)


@pytest.fixture
def store(mongo_db: Database[Any]) -> MongoJobStore:
    return MongoJobStore(mongo_db)


def new_job(chunk_size: int = 4, **fields: Any) -> Job:
    return Job(
        request_id=str(uuid.uuid4()),
        status=JobStatus.PENDING,
        created_at=iso(NOW),
        updated_at=iso(NOW),
        input_key="incoming/x.csv",
        chunk_size=chunk_size,
        **fields,
    )


def make_rows(count: int, images: int = 2) -> list[StoredRow]:
    """Positions 0..count-1; serials sparse (10, 20, ...) as after ranking."""
    return [
        StoredRow(
            position=p,
            serial=(p + 1) * 10,
            name=f"Product {p}",
            urls=tuple(f"https://img.test/{p}/{i}.jpg" for i in range(images)),
        )
        for p in range(count)
    ]


def load(store: MongoJobStore, job: Job, rows: list[StoredRow]) -> None:
    """What ingest does: create, write chunks, record totals."""
    assert store.create_job(job)
    for number, chunk in enumerate(chunks(rows, job.chunk_size)):
        store.insert_rows(job.request_id, number, chunk)
    total_images = sum(len(r.urls) for r in rows)
    store.start_processing(job.request_id, Progress(len(rows), 0, total_images), NOW)


def ok_results(row: StoredRow) -> list[ImageResult]:
    return [
        ImageResult(url, output_key=f"outputs/{row.serial}/{i}.jpg")
        for i, url in enumerate(row.urls)
    ]


def test_satisfies_the_port(store: MongoJobStore) -> None:
    port: JobStore = store
    port.ping()


def test_create_job_twice_is_refused(store: MongoJobStore) -> None:
    job = new_job()
    assert store.create_job(job) is True
    assert store.create_job(replace(job, input_key="incoming/other.csv")) is False
    stored = store.get_job(job.request_id)
    assert stored is not None
    assert stored.input_key == "incoming/x.csv"


def test_get_job_round_trips_every_field(store: MongoJobStore) -> None:
    job = Job(
        request_id=str(uuid.uuid4()),
        status=JobStatus.COMPLETED_WITH_ERRORS,
        created_at="2026-11-28T12:00:00.000Z",
        updated_at="2026-11-28T12:05:00.123Z",
        input_key="incoming/abc.csv",
        webhook_url="https://hooks.test/in",
        source="bucket",
        progress=Progress(3, 2, 7, 5, 1),
        errors=[{"row": 2, "column": "S. No.", "message": "bad"}, {"row": 3, "column": None}],
        output_csv_key="outputs/abc/output.csv",
        webhook=WebhookInfo(WebhookState.FAILED, 4, 503, "msg_1", "https://hooks.test/in"),
        chunk_size=7,
        idempotency_key="key-1",
        body_digest="sha256:abc",
    )
    assert store.create_job(job)
    assert store.get_job(job.request_id) == job
    assert store.get_job(str(uuid.uuid4())) is None


def test_rows_page_across_chunk_boundaries(store: MongoJobStore) -> None:
    job = new_job(chunk_size=4)
    rows = make_rows(10)  # chunks of 4, 4, 2
    assert store.create_job(job)
    for number in (2, 0, 1):  # chunks may arrive in any order
        store.insert_rows(job.request_id, number, rows[number * 4 : number * 4 + 4])

    assert list(store.iter_rows(job.request_id)) == rows
    for start in range(12):
        for limit in (1, 3, 4, 5, 9, 100):
            assert store.list_rows(job.request_id, start, limit) == rows[start : start + limit]
    assert store.list_rows(job.request_id, 0, 0) == []
    assert store.list_rows(str(uuid.uuid4()), 0, 10) == []
    assert list(store.iter_rows(str(uuid.uuid4()))) == []


def test_insert_rows_again_changes_nothing(store: MongoJobStore, mongo_db: Database[Any]) -> None:
    job = new_job(chunk_size=4)
    rows = make_rows(6)
    load(store, job, rows)
    assert store.record_row(job.request_id, 1, ok_results(rows[1]), NOW) is not None
    for number, chunk in enumerate(chunks(rows, 4)):  # ingest runs again
        store.insert_rows(job.request_id, number, chunk)
    assert mongo_db["rows"].count_documents({"jobId": job.request_id}) == 2
    assert store.list_rows(job.request_id, 1, 1)[0].status == RowStatus.COMPLETED


def test_record_row_counts_once(store: MongoJobStore) -> None:
    job = new_job(chunk_size=4)
    rows = make_rows(6, images=2)
    load(store, job, rows)
    row = rows[5]
    results = [
        ImageResult(row.urls[0], output_key="outputs/60/0.jpg"),
        ImageResult(row.urls[1], error_code=ImageErrorCode.TIMEOUT, error_message="too slow"),
    ]
    later = NOW + timedelta(seconds=3)

    progress = store.record_row(job.request_id, 5, results, later)
    assert progress == Progress(6, 1, 12, 2, 1)
    assert store.record_row(job.request_id, 5, results, later) is None
    stored = store.get_job(job.request_id)
    assert stored is not None
    assert stored.progress == Progress(6, 1, 12, 2, 1)
    assert stored.updated_at == iso(later)
    assert store.list_rows(job.request_id, 5, 1) == [
        replace(
            row,
            status=RowStatus.FAILED,
            output_keys=("outputs/60/0.jpg", ""),
            errors=({"url": row.urls[1], "code": "timeout", "message": "too slow"},),
            bytes_in=(0, 0),
            bytes_out=(0, 0),
        )
    ]
    assert store.record_row(job.request_id, 0, ok_results(rows[0]), NOW) == Progress(6, 2, 12, 4, 1)
    assert store.list_rows(job.request_id, 0, 1)[0].status == RowStatus.COMPLETED
    with pytest.raises(KeyError):
        store.record_row(job.request_id, 6, [], NOW)


def test_record_rows_counts_a_batch_once_across_chunks(
    store: MongoJobStore, mongo_db: Database[Any]
) -> None:
    job = new_job(chunk_size=4)
    rows = make_rows(10, images=2)
    load(store, job, rows)
    bad = [
        ImageResult(rows[3].urls[0], output_key="o/40/0.jpg", bytes_in=100, bytes_out=40),
        ImageResult(rows[3].urls[1], error_code=ImageErrorCode.HTTP_ERROR, bytes_in=7),
    ]
    # an earlier delivery already recorded row 5: its chunk falls back to row by row
    assert store.record_row(job.request_id, 5, ok_results(rows[5]), NOW) is not None
    batch = [(2, ok_results(rows[2])), (3, bad), (4, ok_results(rows[4])), (5, ok_results(rows[5]))]
    batch.append((6, ok_results(rows[6])))
    batch.append((4, ok_results(rows[4])))  # the same message twice in one batch

    progress = store.record_rows(job.request_id, batch, NOW)

    after = Progress(10, 5, 20, 10, 1, bytes_in=107, bytes_out=40)
    assert progress == [after, after, after, None, after, None]
    stored = store.get_job(job.request_id)
    assert stored is not None and stored.progress == after
    statuses = [r.status for r in store.list_rows(job.request_id, 0, 10)]
    assert (
        statuses
        == [RowStatus.PENDING] * 2
        + [
            RowStatus.COMPLETED,
            RowStatus.FAILED,
            RowStatus.COMPLETED,
            RowStatus.COMPLETED,
            RowStatus.COMPLETED,
        ]
        + [RowStatus.PENDING] * 3
    )
    # a redelivery of the whole batch counts nothing
    assert store.record_rows(job.request_id, batch, NOW) == [None] * len(batch)
    again = store.get_job(job.request_id)
    assert again is not None and again.progress == after
    assert store.recount(job.request_id, NOW) == after
    with pytest.raises(KeyError):
        store.record_rows(job.request_id, [(8, ok_results(rows[8])), (11, [])], NOW)


def test_record_rows_in_one_chunk_is_two_writes(
    store: MongoJobStore, mongo_db: Database[Any]
) -> None:
    from pymongo import monitoring

    job = new_job(chunk_size=50)
    rows = make_rows(20, images=1)
    load(store, job, rows)
    seen: list[str] = []

    class Listener(monitoring.CommandListener):
        def started(self, event: monitoring.CommandStartedEvent) -> None:
            seen.append(event.command_name)

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            return None

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            return None

    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient(
        mongo_db.client.address
        and f"mongodb://{mongo_db.client.address[0]}:{mongo_db.client.address[1]}",
        event_listeners=[Listener()],
    )
    try:
        listened = MongoJobStore(client[mongo_db.name])
        # the first call reads the job's chunk size (once per process)
        listened.record_rows(job.request_id, [(0, ok_results(rows[0]))], NOW)
        seen.clear()
        batch = [(r.position, ok_results(r)) for r in rows[1:11]]
        assert all(p is not None for p in listened.record_rows(job.request_id, batch, NOW))
    finally:
        client.close()
    assert [name for name in seen if name != "endSessions"] == ["update", "findAndModify"]


def test_claim_finalization_waits_for_every_row(store: MongoJobStore) -> None:
    job = new_job(chunk_size=2)
    rows = make_rows(3)
    load(store, job, rows)
    for row in rows[:2]:
        store.record_row(job.request_id, row.position, ok_results(row), NOW)
        assert store.claim_finalization(job.request_id, NOW, LEASE) is False
    store.record_row(job.request_id, 2, ok_results(rows[2]), NOW)
    assert store.claim_finalization(job.request_id, NOW, LEASE) is True
    assert store.claim_finalization(job.request_id, NOW, LEASE) is False
    assert store.claim_finalization(str(uuid.uuid4()), NOW, LEASE) is False
    after = NOW + LEASE + timedelta(seconds=1)
    assert store.claim_finalization(job.request_id, after, LEASE) is True
    assert store.claim_finalization(job.request_id, after, LEASE) is False


def test_concurrent_rows_give_exactly_one_finalization(store: MongoJobStore) -> None:
    job = new_job(chunk_size=3)
    rows = make_rows(8)
    load(store, job, rows)
    barrier = threading.Barrier(8)
    progresses: list[Progress | None] = []
    claims: list[bool] = []
    lock = threading.Lock()

    def worker(row: StoredRow) -> None:
        barrier.wait()
        progress = store.record_row(job.request_id, row.position, ok_results(row), NOW)
        claimed = store.claim_finalization(job.request_id, NOW, LEASE)
        with lock:
            progresses.append(progress)
            claims.append(claimed)

    threads = [threading.Thread(target=worker, args=(row,)) for row in rows]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert claims.count(True) == 1
    assert sorted(p.processed_products for p in progresses if p) == list(range(1, 9))
    stored = store.get_job(job.request_id)
    assert stored is not None
    assert stored.progress == Progress(8, 8, 16, 16, 0)
    assert all(r.status == RowStatus.COMPLETED for r in store.iter_rows(job.request_id))


def test_claims_race_with_eight_threads(store: MongoJobStore) -> None:
    job = new_job(chunk_size=50)
    rows = make_rows(1)
    load(store, job, rows)
    store.record_row(job.request_id, 0, ok_results(rows[0]), NOW)
    barrier = threading.Barrier(8)
    claims: list[bool] = []

    def claim() -> None:
        barrier.wait()
        claims.append(store.claim_finalization(job.request_id, NOW, LEASE))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert claims.count(True) == 1 and len(claims) == 8


def test_claim_ingest_once(store: MongoJobStore) -> None:
    job = new_job()
    assert store.create_job(job)
    assert store.claim_ingest(job.request_id, NOW, LEASE) is True
    assert store.claim_ingest(job.request_id, NOW, LEASE) is False
    assert store.claim_ingest(str(uuid.uuid4()), NOW, LEASE) is False
    # the claimant died: once the lease has passed, another run takes over
    after = NOW + LEASE + timedelta(seconds=1)
    assert store.claim_ingest(job.request_id, after, LEASE) is True
    assert store.claim_ingest(job.request_id, after, LEASE) is False
    # a finished fan-out is never ingested again
    store.record_fanout(job.request_id, 0, True, after)
    assert store.claim_ingest(job.request_id, after + 2 * LEASE, LEASE) is False


def test_start_processing_keeps_counters(store: MongoJobStore) -> None:
    job = new_job(chunk_size=2)
    rows = make_rows(2)
    load(store, job, rows)
    store.record_row(job.request_id, 0, ok_results(rows[0]), NOW)
    store.start_processing(job.request_id, Progress(2, 0, 4), NOW + timedelta(seconds=1))
    stored = store.get_job(job.request_id)
    assert stored is not None
    assert stored.status == JobStatus.PROCESSING
    assert stored.progress == Progress(2, 1, 4, 2, 0)


def test_rows_count_as_written_from_the_end_of_the_first_fan_out(
    store: MongoJobStore, mongo_db: Database[Any]
) -> None:
    job = new_job()
    assert store.create_job(job)
    store.start_processing(job.request_id, Progress(8, 0, 8), NOW)
    accepted = store.get_job(job.request_id)
    assert accepted is not None and not accepted.rows_written
    store.record_fanout(job.request_id, 4, False, NOW)
    marked = store.get_job(job.request_id)
    assert marked is not None and not marked.rows_written and marked.fanout_sent == 4
    store.record_fanout(job.request_id, 8, True, NOW)
    done = store.get_job(job.request_id)
    assert done is not None and done.rows_written and done.fanout_done
    # a job written before the field existed stored every row before it was processing
    mongo_db["jobs"].update_one({"_id": job.request_id}, {"$unset": {"rowsWritten": ""}})
    older = store.get_job(job.request_id)
    assert older is not None and older.rows_written


def test_finish_job_once(store: MongoJobStore) -> None:
    job = new_job()
    assert store.create_job(job)
    errors = [{"row": n, "column": None, "message": "x"} for n in range(1500)]
    finished_at = NOW + timedelta(minutes=1)
    assert store.finish_job(
        job.request_id,
        JobStatus.FAILED,
        finished_at,
        output_csv_key="outputs/x/output.csv",
        errors=errors,
        webhook_url="https://hooks.test/a",
        webhook_id="msg_abc",
    )
    assert not store.finish_job(job.request_id, JobStatus.COMPLETED, NOW)
    stored = store.get_job(job.request_id)
    assert stored is not None
    assert stored.status == JobStatus.FAILED
    assert stored.updated_at == iso(finished_at)
    assert stored.output_csv_key == "outputs/x/output.csv"
    assert stored.errors == errors[:1000]
    assert stored.webhook == WebhookInfo(
        WebhookState.PENDING, 0, None, "msg_abc", "https://hooks.test/a", iso(finished_at)
    )

    quiet = new_job()
    assert store.create_job(quiet)
    assert store.finish_job(quiet.request_id, JobStatus.COMPLETED, NOW)
    stored = store.get_job(quiet.request_id)
    assert stored is not None
    assert stored.webhook.state == WebhookState.NONE


def test_idempotency_key_lookup(store: MongoJobStore) -> None:
    first = new_job(idempotency_key="client-key-1")
    assert store.create_job(first)
    assert store.create_job(new_job()) and store.create_job(new_job())  # no key: no clash
    assert store.create_job(new_job(idempotency_key="client-key-1")) is False
    found = store.find_by_idempotency_key("client-key-1")
    assert found is not None and found.request_id == first.request_id
    assert store.find_by_idempotency_key("other") is None
    assert store.find_by_idempotency_key("") is None


def test_webhook_attempts_are_recorded(store: MongoJobStore) -> None:
    job = new_job()
    assert store.create_job(job)
    store.finish_job(job.request_id, JobStatus.COMPLETED, NOW, webhook_url="https://h.test/x")
    later = NOW + timedelta(seconds=5)
    attempts = [
        (WebhookAttempt(1, iso(NOW), 500, "HTTP 500", 12), WebhookState.PENDING, later),
        (WebhookAttempt(2, iso(later), None, "timed out", 10000), WebhookState.PENDING, later),
        (WebhookAttempt(3, iso(later), 204, "", 8), WebhookState.DELIVERED, None),
    ]
    for attempt, state, due in attempts:
        store.record_webhook_attempt(job.request_id, attempt, state, due)
    stored = store.get_job(job.request_id)
    assert stored is not None
    assert stored.webhook.state == WebhookState.DELIVERED
    assert stored.webhook.attempts == 3
    assert stored.webhook.last_status_code == 204
    assert stored.webhook.history == [a for a, _, _ in attempts]
    assert stored.webhook.next_attempt_at == ""


def test_a_thousand_row_job_writes_few_documents(
    store: MongoJobStore, mongo_db: Database[Any]
) -> None:
    job = new_job(chunk_size=50)
    rows = make_rows(1000, images=3)

    started = time.perf_counter()
    load(store, job, rows)
    ingest_s = time.perf_counter() - started
    documents = mongo_db["jobs"].count_documents({}) + mongo_db["rows"].count_documents({})
    print(f"\n1,000 rows at 50 per chunk: {documents} documents, written in {ingest_s:.2f} s")
    assert documents == 21
    assert mongo_db["rows"].find_one({"_id": chunk_id(job.request_id, 19)}) is not None

    timed = rows[:100] + rows[-100:]
    started = time.perf_counter()
    for row in timed:
        assert store.record_row(job.request_id, row.position, ok_results(row), NOW)
    per_row_ms = 1000 * (time.perf_counter() - started) / len(timed)
    started = time.perf_counter()
    page = store.list_rows(job.request_id, 990, 100)
    page_ms = 1000 * (time.perf_counter() - started)
    started = time.perf_counter()
    streamed = sum(1 for _ in store.iter_rows(job.request_id))
    stream_ms = 1000 * (time.perf_counter() - started)
    print(
        f"record_row {per_row_ms:.1f} ms/row; list_rows(990, 100) {page_ms:.1f} ms; "
        f"iter_rows of 1,000 rows {stream_ms:.0f} ms"
    )
    assert [r.position for r in page] == list(range(990, 1000))
    assert streamed == 1000
    assert mongo_db["jobs"].count_documents({}) + mongo_db["rows"].count_documents({}) == 21


# --- recovery: what the sweeper, the retry and the redelivery rely on ---------------------


def test_recount_repairs_a_lost_counter(store: MongoJobStore, mongo_db: Database[Any]) -> None:
    job = new_job(chunk_size=3)
    rows = make_rows(5, images=2)
    load(store, job, rows)
    for row in rows[:4]:
        store.record_row(job.request_id, row.position, ok_results(row), NOW)
    # a crash between a row's update and its counter: take one row's counts back off
    mongo_db["jobs"].update_one(
        {"_id": job.request_id},
        {"$inc": {"progress.processedProducts": -1, "progress.processedImages": -2}},
    )
    later = NOW + timedelta(minutes=20)
    assert store.recount(job.request_id, later) == Progress(5, 4, 10, 8, 0)
    stored = store.get_job(job.request_id)
    assert stored is not None and stored.updated_at == iso(later)
    assert store.recount(str(uuid.uuid4()), later) is None


def test_find_stalled_and_webhooks_due(store: MongoJobStore) -> None:
    old, fresh, done = new_job(), new_job(), new_job()
    for job in (old, fresh, done):
        assert store.create_job(job)
    store.claim_ingest(fresh.request_id, NOW + timedelta(minutes=30), LEASE)
    store.finish_job(done.request_id, JobStatus.COMPLETED, NOW, webhook_url="https://h.test/x")
    cutoff = NOW + timedelta(minutes=10)
    stalled = {j.request_id for j in store.find_stalled(cutoff, 100)}
    assert old.request_id in stalled and fresh.request_id not in stalled
    assert done.request_id not in stalled
    assert [j.request_id for j in store.find_webhooks_due(cutoff, 100)] == [done.request_id]
    store.schedule_webhook(done.request_id, cutoff + timedelta(minutes=1))
    assert store.find_webhooks_due(cutoff, 100) == []


def test_redeliver_only_a_settled_webhook_of_a_finished_job(store: MongoJobStore) -> None:
    job = new_job()
    assert store.create_job(job)
    assert store.redeliver_webhook(job.request_id, "msg_1", NOW) is False  # not terminal
    store.finish_job(
        job.request_id, JobStatus.COMPLETED, NOW, webhook_url="https://h.test/x", webhook_id="msg_1"
    )
    assert store.redeliver_webhook(job.request_id, "msg_1", NOW) is False  # still pending
    attempt = WebhookAttempt(1, iso(NOW), 204, "", 5)
    store.record_webhook_attempt(job.request_id, attempt, WebhookState.DELIVERED, None)
    assert store.redeliver_webhook(job.request_id, "msg_1", NOW) is True
    stored = store.get_job(job.request_id)
    assert stored is not None
    assert (stored.webhook.state, stored.webhook.webhook_id) == (WebhookState.PENDING, "msg_1")
    assert stored.webhook.history == [attempt]


def test_reopen_and_reset_only_the_failed_rows(store: MongoJobStore) -> None:
    job = new_job(chunk_size=2)
    rows = make_rows(4, images=2)
    load(store, job, rows)
    for row in rows:
        results = ok_results(row)
        if row.position in (1, 3):
            results[1] = ImageResult(row.urls[1], error_code=ImageErrorCode.HTTP_ERROR)
        store.record_row(job.request_id, row.position, results, NOW)
    store.finish_job(job.request_id, JobStatus.COMPLETED_WITH_ERRORS, NOW)
    assert store.reopen_failed(job.request_id, 1, NOW) is True
    assert store.reopen_failed(job.request_id, 1, NOW) is False
    reset = list(store.reset_failed_rows(job.request_id, NOW))
    assert [r.position for r in reset] == [1, 3]
    assert [r.output_keys[0] for r in reset] == ["outputs/20/0.jpg", "outputs/40/0.jpg"]
    stored = store.get_job(job.request_id)
    assert stored is not None
    assert stored.status == JobStatus.PROCESSING and stored.generation == 1
    assert stored.progress == Progress(4, 2, 8, 4, 0)
    assert list(store.reset_failed_rows(job.request_id, NOW)) == []  # nothing failed is left
    assert store.claim_ingest(job.request_id, NOW, LEASE) is True  # the retry's fan-out
