"""A job's `version`, the source of the status's and the job list's ETag, on every store:
every write that changes what the status or a listing shows moves it (the record in the same
write, a row just after the row's own write), writes that change nothing shown leave it, and
`job_versions` is `list_jobs`'s page, three fields a job."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import pytest
from chalicelib.domain.models import (
    ImageErrorCode,
    ImageResult,
    JobStatus,
    Progress,
    RowStatus,
    WebhookAttempt,
    WebhookState,
)
from chalicelib.domain.timefmt import iso
from chalicelib.ports import BatchRecorder, JobStore

from tests.support.jobs import LEASE, NOW, load, make_rows, new_job, ok_results
from tests.support.stores import StoreUnderTest


def version(store: JobStore, request_id: str) -> int:
    job = store.get_job(request_id)
    assert job is not None
    return job.version


def moves(store: JobStore, request_id: str, write: Callable[[], object], what: str) -> None:
    before = version(store, request_id)
    write()
    assert version(store, request_id) > before, f"{what} left the version at {before}"


def stays(store: JobStore, request_id: str, write: Callable[[], object], what: str) -> None:
    before = version(store, request_id)
    write()
    assert version(store, request_id) == before, f"{what} moved the version"


def failed(url: str) -> ImageResult:
    return ImageResult(url, error_code=ImageErrorCode.HTTP_ERROR, error_message="404")


def test_every_write_a_status_shows_moves_the_version(job_store: StoreUnderTest) -> None:
    store = job_store.store
    job = new_job(chunk_size=2)
    rows = make_rows(5, images=1)
    assert store.create_job(job)
    rid = job.request_id
    assert version(store, rid) == 0
    later = NOW + timedelta(seconds=1)
    moves(store, rid, lambda: store.claim_ingest(rid, later, LEASE), "claim_ingest")
    for number in range(3):
        store.insert_rows(rid, number, rows[number * 2 : number * 2 + 2])
    moves(store, rid, lambda: store.start_processing(rid, Progress(5, 0, 5), later), "totals")
    moves(store, rid, lambda: store.record_fanout(rid, 2, False, later), "record_fanout")
    moves(store, rid, lambda: store.record_fanout(rid, 5, True, later), "fan-out done")
    moves(store, rid, lambda: store.record_row(rid, 0, ok_results(rows[0]), later), "a row")
    moves(
        store, rid, lambda: store.record_row(rid, 1, [failed(rows[1].urls[0])], later), "a failure"
    )
    if isinstance(store, BatchRecorder):
        moves(
            store,
            rid,
            lambda: store.record_rows(rid, [(2, ok_results(rows[2]))], later),
            "record_rows",
        )
    else:
        moves(store, rid, lambda: store.record_row(rid, 2, ok_results(rows[2]), later), "row 2")
    moves(store, rid, lambda: store.recount(rid, later), "recount")
    moves(store, rid, lambda: store.request_cancel(rid, later), "request_cancel")
    moves(store, rid, lambda: store.cancel_rows(rid, later, [3]), "cancel_rows of a pending row")
    moves(store, rid, lambda: store.record_row(rid, 4, ok_results(rows[4]), later), "row 4")
    moves(
        store,
        rid,
        lambda: store.finish_job(
            rid,
            JobStatus.COMPLETED_WITH_ERRORS,
            later,
            output_csv_key="outputs/x/output.csv",
            webhook_url="https://hooks.test/in",
            webhook_id="msg_1",
        ),
        "finish_job",
    )
    moves(store, rid, lambda: store.schedule_webhook(rid, later), "schedule_webhook")
    attempt = WebhookAttempt(attempt=1, at=iso(later), status_code=500, error="", duration_ms=3)
    moves(
        store,
        rid,
        lambda: store.record_webhook_attempt(rid, attempt, WebhookState.FAILED, None),
        "a webhook attempt",
    )
    moves(store, rid, lambda: store.redeliver_webhook(rid, "msg_2", later), "redeliver")
    done = replace(attempt, attempt=2, status_code=204)
    moves(
        store,
        rid,
        lambda: store.record_webhook_attempt(rid, done, WebhookState.DELIVERED, None),
        "a delivered webhook",
    )
    moves(store, rid, lambda: store.reopen_failed(rid, 1, later), "reopen_failed (retry)")
    moves(store, rid, lambda: list(store.reset_failed_rows(rid, later)), "reset_failed_rows")
    reset = store.list_rows(rid, 1, 1)[0]
    assert reset.status == RowStatus.PENDING


def test_writes_that_show_nothing_leave_the_version(job_store: StoreUnderTest) -> None:
    store = job_store.store
    job = new_job(chunk_size=2)
    rows = make_rows(3, images=1)
    load(store, job, rows)
    rid = job.request_id
    later = NOW + timedelta(seconds=1)
    store.record_row(rid, 0, ok_results(rows[0]), later)
    stays(store, rid, lambda: store.record_row(rid, 0, ok_results(rows[0]), later), "a repeat")
    stays(store, rid, lambda: store.cancel_rows(rid, later, [0]), "cancel_rows of a done row")
    stays(store, rid, lambda: store.claim_action(rid, "retry", later, LEASE), "claim_action")
    stays(store, rid, lambda: store.list_rows(rid, 0, 3), "a read")


def test_a_rows_version_moves_after_the_row_is_written(job_store: StoreUnderTest) -> None:
    """At the job's write that moves the version, the row is already recorded: a status read
    in between pairs the old version with the new row (sent again later), never the new
    version with the old row (which a client would keep for good)."""
    if job_store.kind == "memory":
        pytest.skip("one lock: the row and the version move together")
    store = job_store.store
    job = new_job(chunk_size=2)
    rows = make_rows(4, images=1)
    load(store, job, rows)
    rid = job.request_id
    seen: list[list[RowStatus]] = []
    job_store.gate.before_write = lambda: seen.append(  # type: ignore[method-assign]
        [row.status for row in store.list_rows(rid, 0, 4)]
    )
    later = NOW + timedelta(seconds=1)
    store.record_row(rid, 0, ok_results(rows[0]), later)
    assert seen[-1][0] == RowStatus.COMPLETED
    store.cancel_rows(rid, later, [1])
    assert seen[-1][1] == RowStatus.CANCELLED
    assert isinstance(store, BatchRecorder)
    store.record_rows(rid, [(2, ok_results(rows[2]))], later)
    assert seen[-1][2] == RowStatus.COMPLETED


def test_job_versions_is_the_listing_page(job_store: StoreUnderTest) -> None:
    store = job_store.store
    jobs = [new_job(tenant="acme", created_at=iso(NOW + timedelta(seconds=n))) for n in range(5)]
    for job in jobs:
        assert store.create_job(job)
    store.create_job(new_job(tenant="other"))
    store.request_cancel(jobs[1].request_id, NOW)
    store.finish_job(jobs[2].request_id, JobStatus.FAILED, NOW)

    def same(**query: object) -> None:
        listed = store.list_jobs("acme", **query)  # type: ignore[arg-type]
        expected = [(j.request_id, j.created_at, j.version) for j in listed]
        assert store.job_versions("acme", **query) == expected  # type: ignore[arg-type]

    same()
    same(limit=2)
    same(status=JobStatus.FAILED)
    same(limit=3, after=(jobs[3].created_at, jobs[3].request_id))
    versions = {rid: v for rid, _, v in store.job_versions("acme")}
    assert versions[jobs[1].request_id] == 1 and versions[jobs[2].request_id] == 1
    assert versions[jobs[0].request_id] == 0
    assert jobs[0].request_id in versions and len(versions) == 5
