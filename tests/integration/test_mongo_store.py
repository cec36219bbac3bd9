"""What only MongoJobStore has: its documents, and `record_rows` (a worker's batch in few
writes). Every JobStore behaviour runs against it, and against the in-memory fake, in
tests/contract/test_job_store_contract.py. The server: the embedded one unless MONGO_URI is set."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from chalicelib.adapters.mongo_codecs import EXPIRE_AT, chunk_id
from chalicelib.adapters.mongo_indexes import TTL_INDEX
from chalicelib.adapters.mongo_store import MongoJobStore
from chalicelib.domain.chunking import chunks
from chalicelib.domain.models import ImageErrorCode, ImageResult, JobStatus, Progress, RowStatus
from chalicelib.domain.timefmt import iso
from chalicelib.errors import JobGone
from pymongo import MongoClient
from pymongo.database import Database

from tests.support.jobs import NOW, load, make_rows, new_job, ok_results


@pytest.fixture
def store(mongo_db: Database[Any]) -> MongoJobStore:
    return MongoJobStore(mongo_db)


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
    with pytest.raises(JobGone):  # no row at position 11
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
    for number, chunk in enumerate(chunks(rows, 50)):  # ingest runs again: no new document
        store.insert_rows(job.request_id, number, chunk)
    assert mongo_db["jobs"].count_documents({}) + mongo_db["rows"].count_documents({}) == 21


def test_a_job_stored_before_rows_written_existed_reads_as_written(
    store: MongoJobStore, mongo_db: Database[Any]
) -> None:
    """Earlier versions stored every row before the job was `processing`."""
    job = new_job()
    assert store.create_job(job)
    store.start_processing(job.request_id, Progress(8, 0, 8), NOW)
    mongo_db["jobs"].update_one({"_id": job.request_id}, {"$unset": {"rowsWritten": ""}})
    older = store.get_job(job.request_id)
    assert older is not None and older.rows_written


# -- retention (JOB_RETENTION_DAYS) ---------------------------------------------------------
def _naive_utc(moment: datetime) -> datetime:
    """As pymongo reads a BSON date back (naive, UTC)."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def test_ttl_indexes_expire_jobs_and_rows_at_their_expire_at(
    store: MongoJobStore, mongo_db: Database[Any]
) -> None:
    store.ensure_indexes()
    for collection in ("jobs", "rows"):
        index = mongo_db[collection].index_information()[TTL_INDEX]
        assert index["key"] == [(EXPIRE_AT, 1)]
        assert index["expireAfterSeconds"] == 0


def test_without_a_retention_nothing_carries_an_expiry(
    store: MongoJobStore, mongo_db: Database[Any]
) -> None:
    job = new_job(chunk_size=2)
    load(store, job, make_rows(3))
    assert store.finish_job(job.request_id, JobStatus.COMPLETED, NOW)
    assert mongo_db["jobs"].count_documents({EXPIRE_AT: {"$exists": True}}) == 0
    assert mongo_db["rows"].count_documents({EXPIRE_AT: {"$exists": True}}) == 0


def test_with_a_retention_a_job_and_its_rows_expire_that_long_after_it_ends(
    mongo_db: Database[Any],
) -> None:
    store = MongoJobStore(mongo_db, retention=timedelta(days=30))
    job = new_job(chunk_size=2, idempotency_key="k-1")
    load(store, job, make_rows(5))
    created = mongo_db["jobs"].find_one({"_id": job.request_id})
    assert created is not None
    assert isinstance(created[EXPIRE_AT], datetime)  # a BSON date: what a TTL index reads
    assert created[EXPIRE_AT] == _naive_utc(NOW + timedelta(days=30))
    chunks_ = list(mongo_db["rows"].find({"jobId": job.request_id}))
    assert len(chunks_) == 3 and all(isinstance(c[EXPIRE_AT], datetime) for c in chunks_)

    ended = NOW + timedelta(hours=2)
    assert store.finish_job(job.request_id, JobStatus.COMPLETED, ended)
    expected = _naive_utc(ended + timedelta(days=30))
    finished = mongo_db["jobs"].find_one({"_id": job.request_id})
    assert finished is not None and finished[EXPIRE_AT] == expected
    assert {c[EXPIRE_AT] for c in mongo_db["rows"].find({"jobId": job.request_id})} == {expected}
    # the Idempotency-Key lives on the job's document: it goes with it
    assert finished["idempotencyKey"] == "k-1"
    # a second end (refused: already terminal) moves nothing
    assert not store.finish_job(job.request_id, JobStatus.FAILED, ended + timedelta(days=1))
    again = mongo_db["jobs"].find_one({"_id": job.request_id})
    assert again is not None and again[EXPIRE_AT] == expected


def test_mongoeco_deletes_what_has_expired(
    embedded_mongo_client: MongoClient[Any],
    new_database: Callable[[MongoClient[Any]], Database[Any]],
) -> None:
    """mongoeco (the emulator's database) applies TTL indexes when a collection is next
    read or written, rather than every 60 s as MongoDB's TTL monitor does."""
    db = new_database(embedded_mongo_client)
    store = MongoJobStore(db, retention=timedelta(seconds=1))
    now = datetime.now(UTC)
    kept = new_job(chunk_size=2, created_at=iso(now))
    load(MongoJobStore(db), kept, make_rows(3))  # written without a retention
    old = new_job(chunk_size=2, created_at=iso(now), idempotency_key="old")
    load(store, old, make_rows(3))
    assert store.finish_job(old.request_id, JobStatus.COMPLETED, now)
    assert store.get_job(old.request_id) is not None
    time.sleep(1.5)
    assert store.get_job(old.request_id) is None
    assert store.list_rows(old.request_id, 0, 10) == []
    assert store.find_by_idempotency_key("default", "old") is None
    assert store.get_job(kept.request_id) is not None
    assert len(store.list_rows(kept.request_id, 0, 10)) == 3


def test_record_rows_stores_auto_qualities_and_scores_only_on_auto_rows(
    store: MongoJobStore, mongo_db: Database[Any]
) -> None:
    """A worker's batch in one update per chunk: an `auto` row's slot gets `q` and `sc`, a
    fixed row's slot neither."""
    job = new_job(chunk_size=4)
    rows = make_rows(2, images=1)
    load(store, job, rows)
    auto = [ImageResult(rows[0].urls[0], output_key="o/10/0.jpg", quality=55, score=69.5)]
    store.record_rows(job.request_id, [(0, auto), (1, ok_results(rows[1]))], NOW)
    (doc,) = mongo_db["rows"].find({"jobId": job.request_id})
    slots = doc["rows"]
    assert (slots[0]["q"], slots[0]["sc"]) == ([55], [69.5])
    assert "q" not in slots[1] and "sc" not in slots[1]
    first, second = store.list_rows(job.request_id, 0, 2)
    assert (first.qualities, first.scores, second.qualities) == ((55,), (69.5,), ())
