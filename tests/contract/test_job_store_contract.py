"""The JobStore contract, run against every store: the in-memory fake the unit tier uses,
MongoJobStore on the embedded server, and MongoJobStore on `MONGO_URI` when it is set
(tests/support/stores.py). Races are forced, not hoped for: `job_store.gate.race` holds every
caller between its reads and its first write until all have read.

What only MongoJobStore has (its documents, `record_rows`) is tested in
tests/integration/test_mongo_store.py."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from datetime import timedelta
from functools import partial

import pytest
from chalicelib.domain.chunking import chunks
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
from chalicelib.errors import JobGone
from chalicelib.ports import JobStore

from tests.support.jobs import LEASE, NOW, load, make_rows, new_job, ok_results
from tests.support.stores import StoreUnderTest

RACERS = 4


def ms(n: int) -> timedelta:
    """Each racer's own clock, a few milliseconds apart (a write of the same value would not
    count as a change on MongoDB, hiding a claim taken twice)."""
    return timedelta(milliseconds=n)


def test_satisfies_the_port(job_store: StoreUnderTest) -> None:
    port: JobStore = job_store.store
    port.ping()


def test_create_job_twice_is_refused(job_store: StoreUnderTest) -> None:
    store = job_store.store
    job = new_job()
    assert store.create_job(job) is True
    assert store.create_job(replace(job, input_key="incoming/other.csv")) is False
    stored = store.get_job(job.request_id)
    assert stored is not None
    assert stored.input_key == "incoming/x.csv"
    assert job_store.job_count() == 1


def test_get_job_round_trips_every_field(job_store: StoreUnderTest) -> None:
    store = job_store.store
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
        tenant="acme",
        cancel_requested_at="2026-11-28T12:04:00.000Z",
    )
    assert store.create_job(job)
    assert store.get_job(job.request_id) == job
    assert store.get_job(str(uuid.uuid4())) is None


def test_rows_page_across_chunk_boundaries(job_store: StoreUnderTest) -> None:
    store = job_store.store
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


def test_insert_rows_again_changes_nothing(job_store: StoreUnderTest) -> None:
    store = job_store.store
    job = new_job(chunk_size=4)
    rows = make_rows(6)
    load(store, job, rows)
    assert store.record_row(job.request_id, 1, ok_results(rows[1]), NOW) is not None
    for number, chunk in enumerate(chunks(rows, 4)):  # ingest runs again
        store.insert_rows(job.request_id, number, chunk)
    assert [r.status for r in store.iter_rows(job.request_id)] == [
        RowStatus.PENDING,
        RowStatus.COMPLETED,
        *[RowStatus.PENDING] * 4,
    ]


def test_record_row_counts_once(job_store: StoreUnderTest) -> None:
    store = job_store.store
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
    with pytest.raises(JobGone):  # no such row
        store.record_row(job.request_id, 6, [], NOW)


def test_a_job_gone_is_told_apart_and_recording_its_rows_raises_job_gone(
    job_store: StoreUnderTest,
) -> None:
    store = job_store.store
    kept, deleted, cancelled = new_job(chunk_size=2), new_job(chunk_size=2), new_job(chunk_size=2)
    rows = make_rows(3)
    for job in (kept, deleted, cancelled):
        load(store, job, rows)
    assert store.request_cancel(cancelled.request_id, NOW)
    store.record_row(deleted.request_id, 0, ok_results(rows[0]), NOW)  # chunk size now cached
    ids = [kept.request_id, deleted.request_id, cancelled.request_id, "never-was"]
    assert store.jobs_stopped_or_gone(ids) == ({cancelled.request_id}, {"never-was"})

    store.delete_rows(deleted.request_id)  # a deletion's first step: the record is still there
    with pytest.raises(JobGone):
        store.record_row(deleted.request_id, 1, ok_results(rows[1]), NOW)
    store.delete_job(deleted.request_id)
    assert store.jobs_stopped_or_gone(ids) == (
        {cancelled.request_id},
        {deleted.request_id, "never-was"},
    )
    with pytest.raises(JobGone):
        store.record_row(deleted.request_id, 2, ok_results(rows[2]), NOW)
    with pytest.raises(JobGone):
        store.record_fanout(deleted.request_id, 3, True, NOW)
    assert store.cancelled_jobs(ids) == {cancelled.request_id}


def test_get_job_with_a_tenant_finds_only_that_tenants_job(job_store: StoreUnderTest) -> None:
    store = job_store.store
    alpha = new_job(tenant="alpha")
    load(store, alpha, make_rows(1))
    assert store.get_job(alpha.request_id, "alpha") is not None
    assert store.get_job(alpha.request_id, "beta") is None
    found = store.get_job(alpha.request_id)
    assert found is not None and found.tenant == "alpha"


def test_claim_finalization_waits_for_every_row(job_store: StoreUnderTest) -> None:
    store = job_store.store
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
    # a finished job is never claimed again, however old its claim
    assert store.finish_job(job.request_id, JobStatus.COMPLETED, after)
    assert store.claim_finalization(job.request_id, after + 2 * LEASE, LEASE) is False


def test_concurrent_rows_give_exactly_one_finalization(job_store: StoreUnderTest) -> None:
    store = job_store.store
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


def test_finalization_claimants_that_all_read_before_any_writes_get_one_claim(
    job_store: StoreUnderTest,
) -> None:
    """The worker that recorded the last row, its redelivery and the sweeper may claim at
    once; each reads the job unclaimed. Only a compare-and-set keeps the claim to one."""
    store = job_store.store
    job = new_job(chunk_size=50)
    rows = make_rows(1)
    load(store, job, rows)
    store.record_row(job.request_id, 0, ok_results(rows[0]), NOW)

    def claim_at(moment: timedelta) -> bool:
        return store.claim_finalization(job.request_id, NOW + moment, LEASE)

    first = job_store.gate.race([partial(claim_at, ms(n)) for n in range(RACERS)])
    assert first.count(True) == 1
    # the claimant died: once its lease has passed, the takers race again, and one wins
    late = LEASE + timedelta(seconds=2)
    taken = job_store.gate.race([partial(claim_at, late + ms(n)) for n in range(RACERS)])
    assert taken.count(True) == 1


def test_ingest_claimants_that_all_read_before_any_writes_get_one_claim(
    job_store: StoreUnderTest,
) -> None:
    store = job_store.store
    job = new_job()
    assert store.create_job(job)
    claims = job_store.gate.race(
        [partial(store.claim_ingest, job.request_id, NOW + ms(n), LEASE) for n in range(RACERS)]
    )
    assert claims.count(True) == 1


def test_finishers_that_all_read_before_any_writes_set_one_terminal_status(
    job_store: StoreUnderTest,
) -> None:
    store = job_store.store
    job = new_job()
    assert store.create_job(job)
    statuses = [JobStatus.COMPLETED, JobStatus.FAILED] * (RACERS // 2)
    finished = job_store.gate.race(
        [
            partial(
                store.finish_job,
                job.request_id,
                status,
                NOW + ms(n),
                webhook_url="https://h.test/x",
                webhook_id=f"msg_{n}",
            )
            for n, status in enumerate(statuses)
        ]
    )
    assert finished.count(True) == 1
    winner = finished.index(True)
    stored = store.get_job(job.request_id)
    assert stored is not None
    assert (stored.status, stored.webhook.webhook_id) == (statuses[winner], f"msg_{winner}")


def test_claim_ingest_once(job_store: StoreUnderTest) -> None:
    store = job_store.store
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


def test_start_processing_keeps_counters(job_store: StoreUnderTest) -> None:
    store = job_store.store
    job = new_job(chunk_size=2)
    rows = make_rows(2)
    load(store, job, rows)
    store.record_row(job.request_id, 0, ok_results(rows[0]), NOW)
    assert not store.start_processing(job.request_id, Progress(2, 0, 4), NOW + timedelta(seconds=1))
    stored = store.get_job(job.request_id)
    assert stored is not None
    assert stored.status == JobStatus.PROCESSING
    assert stored.progress == Progress(2, 1, 4, 2, 0)


def test_rows_count_as_written_from_the_end_of_the_first_fan_out(
    job_store: StoreUnderTest,
) -> None:
    store = job_store.store
    job = new_job()
    assert store.create_job(job)
    assert store.start_processing(job.request_id, Progress(8, 0, 8), NOW)
    accepted = store.get_job(job.request_id)
    assert accepted is not None and not accepted.rows_written
    store.record_fanout(job.request_id, 4, False, NOW)
    marked = store.get_job(job.request_id)
    assert marked is not None and not marked.rows_written and marked.fanout_sent == 4
    store.record_fanout(job.request_id, 8, True, NOW)
    done = store.get_job(job.request_id)
    assert done is not None and done.rows_written and done.fanout_done


def test_finish_job_once(job_store: StoreUnderTest) -> None:
    store = job_store.store
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
    assert not store.finish_job(str(uuid.uuid4()), JobStatus.COMPLETED, NOW)
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


def test_idempotency_keys_are_scoped_to_their_tenant(job_store: StoreUnderTest) -> None:
    store = job_store.store
    first = new_job(idempotency_key="client-key-1")
    assert store.create_job(first)
    assert store.create_job(new_job()) and store.create_job(new_job())  # no key: no clash
    assert store.create_job(new_job(idempotency_key="client-key-1")) is False
    found = store.find_by_idempotency_key("default", "client-key-1")
    assert found is not None and found.request_id == first.request_id
    assert store.find_by_idempotency_key("default", "other") is None
    assert store.find_by_idempotency_key("default", "") is None
    # the same key is another tenant's own
    assert store.find_by_idempotency_key("beta", "client-key-1") is None
    theirs = new_job(idempotency_key="client-key-1", tenant="beta")
    assert store.create_job(theirs)
    found = store.find_by_idempotency_key("beta", "client-key-1")
    assert found is not None and found.request_id == theirs.request_id


def test_a_job_stored_before_tenants_is_the_default_tenants(job_store: StoreUnderTest) -> None:
    """Stored without a tenant (as every job was before tenants existed): read, listed and
    found by its Idempotency-Key as the default tenant's, and nobody else's."""
    store = job_store.store
    legacy = new_job(idempotency_key="old-key", tenant="")
    assert store.create_job(legacy)
    stored = store.get_job(legacy.request_id)
    assert stored is not None and stored.tenant == "default"
    assert [j.request_id for j in store.list_jobs("default")] == [legacy.request_id]
    assert store.list_jobs("beta") == []
    found = store.find_by_idempotency_key("default", "old-key")
    assert found is not None and found.request_id == legacy.request_id
    assert store.find_by_idempotency_key("beta", "old-key") is None
    owned = store.get_job(legacy.request_id, "default")
    assert owned is not None and owned.request_id == legacy.request_id
    assert store.get_job(legacy.request_id, "beta") is None


def test_list_jobs_newest_first_paged_and_filtered(job_store: StoreUnderTest) -> None:
    store = job_store.store
    mine = []
    for n in range(5):
        job = new_job(created_at=iso(NOW + timedelta(seconds=n)), tenant="acme")
        assert store.create_job(job)
        mine.append(job.request_id)
    twins = [new_job(created_at=iso(NOW), tenant="acme") for _ in range(2)]  # same moment
    for job in twins:
        assert store.create_job(job)
    assert store.create_job(new_job(tenant="beta"))
    assert store.finish_job(mine[1], JobStatus.COMPLETED, NOW)
    everything = store.list_jobs("acme", limit=100)
    expected = mine[:0:-1] + sorted([mine[0], *(t.request_id for t in twins)], reverse=True)
    assert [j.request_id for j in everything] == expected
    assert all(j.tenant == "acme" for j in everything)
    pages, after = [], None
    while True:
        page = store.list_jobs("acme", limit=3, after=after)
        if not page:
            break
        pages.append([j.request_id for j in page])
        after = (page[-1].created_at, page[-1].request_id)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [request_id for page in pages for request_id in page] == expected
    done = store.list_jobs("acme", status=JobStatus.COMPLETED)
    assert [j.request_id for j in done] == [mine[1]]
    assert store.list_jobs("nobody") == []


def test_job_actions_are_rate_limited(job_store: StoreUnderTest) -> None:
    store = job_store.store
    job = new_job()
    assert store.create_job(job)
    every = timedelta(seconds=60)
    assert store.claim_action(job.request_id, "retry", NOW, every) is None
    assert store.claim_action(job.request_id, "retry", NOW + ms(10), every) == NOW + every
    assert store.claim_action(job.request_id, "redeliver", NOW, every) is None  # its own
    later = NOW + every
    assert store.claim_action(job.request_id, "retry", later, every) is None
    assert store.claim_action(job.request_id, "retry", later + ms(1), every) == later + every
    unknown = str(uuid.uuid4())
    assert store.claim_action(unknown, "retry", NOW, every) is not None


def test_racing_job_actions_let_one_through(job_store: StoreUnderTest) -> None:
    store = job_store.store
    job = new_job()
    assert store.create_job(job)
    every = timedelta(seconds=60)
    results = job_store.gate.race(
        [
            partial(store.claim_action, job.request_id, "redeliver", NOW + ms(n), every)
            for n in range(RACERS)
        ]
    )
    assert results.count(None) == 1


def test_webhook_attempts_are_recorded(job_store: StoreUnderTest) -> None:
    store = job_store.store
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


# --- recovery: what the sweeper, the retry and the redelivery rely on ---------------------


def test_recount_repairs_a_lost_counter(job_store: StoreUnderTest) -> None:
    store = job_store.store
    job = new_job(chunk_size=3)
    rows = make_rows(5, images=2)
    load(store, job, rows)
    for row in rows[:4]:
        store.record_row(job.request_id, row.position, ok_results(row), NOW)
    # a crash between a row's update and its counter: take one row's counts back off
    job_store.lose_counts(job.request_id, products=1, images=2)
    later = NOW + timedelta(minutes=20)
    assert store.recount(job.request_id, later) == Progress(5, 4, 10, 8, 0)
    stored = store.get_job(job.request_id)
    assert stored is not None and stored.updated_at == iso(later)
    assert store.recount(str(uuid.uuid4()), later) is None


def test_find_stalled_and_webhooks_due(job_store: StoreUnderTest) -> None:
    store = job_store.store
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


def test_redeliver_only_a_settled_webhook_of_a_finished_job(job_store: StoreUnderTest) -> None:
    store = job_store.store
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


def test_reopen_and_reset_only_the_failed_rows(job_store: StoreUnderTest) -> None:
    store = job_store.store
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


def test_a_reopened_job_finishes_again_with_a_fresh_webhook_record(
    job_store: StoreUnderTest,
) -> None:
    """The retry's final event is a new one: its attempts count from one again."""
    store = job_store.store
    job = new_job(chunk_size=2)
    rows = make_rows(1, images=1)
    load(store, job, rows)
    failed = [ImageResult(rows[0].urls[0], error_code=ImageErrorCode.HTTP_ERROR)]
    store.record_row(job.request_id, 0, failed, NOW)
    store.finish_job(job.request_id, JobStatus.FAILED, NOW, webhook_url="https://h.test/x")
    attempt = WebhookAttempt(1, iso(NOW), 204, "", 5)
    store.record_webhook_attempt(job.request_id, attempt, WebhookState.DELIVERED, None)
    assert store.reopen_failed(job.request_id, 1, NOW)
    list(store.reset_failed_rows(job.request_id, NOW))
    store.record_row(job.request_id, 0, ok_results(rows[0]), NOW)
    assert store.claim_finalization(job.request_id, NOW, LEASE)
    assert store.finish_job(
        job.request_id, JobStatus.COMPLETED, NOW, webhook_url="https://h.test/x", webhook_id="m2"
    )
    stored = store.get_job(job.request_id)
    assert stored is not None
    assert stored.webhook == WebhookInfo(
        WebhookState.PENDING, 0, None, "m2", "https://h.test/x", iso(NOW)
    )


def test_a_row_made_by_auto_keeps_each_images_quality_and_score(job_store: StoreUnderTest) -> None:
    """`quality: "auto"`: each image's quality and score are recorded with the row, aligned
    with its outputs (None for an image that failed), kept by the retry's reset and read back
    as recorded; a row of a fixed quality records neither (its document stays as small)."""
    store = job_store.store
    job = new_job(chunk_size=2)
    rows = make_rows(3, images=2)
    load(store, job, rows)
    auto = [
        ImageResult(rows[0].urls[0], output_key="outputs/10/0.jpg", quality=62, score=70.4),
        ImageResult(rows[0].urls[1], error_code=ImageErrorCode.HTTP_ERROR, error_message="404"),
    ]
    store.record_row(job.request_id, 0, auto, NOW)
    searched = [
        ImageResult(url, output_key=f"outputs/20/{i}.jpg", quality=80 + i, score=71.25 + i)
        for i, url in enumerate(rows[1].urls)
    ]
    store.record_row(job.request_id, 1, searched, NOW)
    store.record_row(job.request_id, 2, ok_results(rows[2]), NOW)
    first, second, fixed = store.list_rows(job.request_id, 0, 3)
    assert (first.qualities, first.scores) == ((62, None), (70.4, None))
    assert (second.qualities, second.scores) == ((80, 81), (71.25, 72.25))
    assert (fixed.qualities, fixed.scores) == ((), ())
    assert [(r.qualities, r.scores) for r in store.iter_rows(job.request_id)] == [
        (first.qualities, first.scores),
        (second.qualities, second.scores),
        ((), ()),
    ]
    store.finish_job(job.request_id, JobStatus.COMPLETED_WITH_ERRORS, NOW)
    assert store.reopen_failed(job.request_id, 1, NOW)
    (reset,) = store.reset_failed_rows(job.request_id, NOW)
    assert (reset.qualities, reset.scores) == ((62, None), (70.4, None))  # what the retry keeps
