"""Both JobStores hold to the domain's rules of a job's state (domain/models.py), case by case:
the in-memory store asks the domain's methods of the job it holds, MongoJobStore builds its
atomic filters from the domain's constants, and each answer here is checked against the
domain's method on the same job. A filter that drifts from its rule (a status left out, `<`
for `<=`) fails on the case that tells them apart."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import replace
from datetime import timedelta

from chalicelib.domain.models import (
    MAX_WEBHOOK_HISTORY,
    Job,
    JobStatus,
    Progress,
    WebhookAttempt,
    WebhookInfo,
    WebhookState,
    claim_is_free,
)
from chalicelib.domain.timefmt import iso

from tests.support.jobs import LEASE, NOW, load, make_rows, new_job, ok_results
from tests.support.stores import StoreUnderTest

MS = timedelta(milliseconds=1)
HOOK = "https://h.test/x"


def job_in(status: JobStatus, **fields: object) -> Job:
    """A job stored as it stands: any status, counters, webhook and flags."""
    return replace(new_job(), request_id=str(uuid.uuid4()), status=status, **fields)


def store_all(job_store: StoreUnderTest, jobs: list[Job]) -> None:
    for job in jobs:
        assert job_store.store.create_job(job)


def test_which_jobs_are_cancelled_or_being_cancelled(job_store: StoreUnderTest) -> None:
    jobs = [
        job_in(status, cancel_requested_at=asked)
        for status, asked in itertools.product(JobStatus, ["", iso(NOW)])
    ]
    store_all(job_store, jobs)
    expected = {job.request_id for job in jobs if job.cancelled_or_cancelling}
    assert (
        len(expected) == 4
    )  # cancelled (asked or not); pending and processing with a cancel asked
    assert job_store.store.cancelled_jobs([j.request_id for j in jobs]) == expected


def test_which_jobs_may_claim_their_finalization(job_store: StoreUnderTest) -> None:
    counters = [Progress(2, 1, 4, 2), Progress(2, 2, 4, 4), Progress(0, 0, 0, 0)]
    jobs = [
        job_in(status, progress=progress)
        for status, progress in itertools.product(JobStatus, counters)
    ]
    store_all(job_store, jobs)
    claimed = {
        j.request_id for j in jobs if job_store.store.claim_finalization(j.request_id, NOW, LEASE)
    }
    expected = {job.request_id for job in jobs if job.ready_to_finalize}
    assert len(expected) == 2  # processing, every row recorded (none to record counts too)
    assert claimed == expected


def test_which_jobs_may_claim_their_ingest(job_store: StoreUnderTest) -> None:
    jobs = [
        job_in(status, fanout_done=done)
        for status, done in itertools.product(JobStatus, [False, True])
    ]
    store_all(job_store, jobs)
    claimed = {j.request_id for j in jobs if job_store.store.claim_ingest(j.request_id, NOW, LEASE)}
    expected = {job.request_id for job in jobs if job.may_ingest}
    assert len(expected) == 2
    assert claimed == expected


def test_a_claim_is_held_for_its_whole_lease_and_free_just_after(
    job_store: StoreUnderTest,
) -> None:
    store = job_store.store
    job = new_job(chunk_size=2)
    rows = make_rows(1)
    load(store, job, rows)
    store.record_row(job.request_id, 0, ok_results(rows[0]), NOW)
    assert store.claim_ingest(job.request_id, NOW, LEASE)
    assert store.claim_finalization(job.request_id, NOW, LEASE)
    # exactly one lease later the claims are still held; a millisecond more, they are free
    assert not claim_is_free(iso(NOW), NOW + LEASE, LEASE)
    assert claim_is_free(iso(NOW), NOW + LEASE + MS, LEASE)
    assert store.claim_ingest(job.request_id, NOW + LEASE, LEASE) is False
    assert store.claim_finalization(job.request_id, NOW + LEASE, LEASE) is False
    assert store.claim_ingest(job.request_id, NOW + LEASE + MS, LEASE) is True
    assert store.claim_finalization(job.request_id, NOW + LEASE + MS, LEASE) is True


def test_which_jobs_the_sweeper_finds_stalled(job_store: StoreUnderTest) -> None:
    moments = [NOW - MS, NOW, NOW + MS]  # changed just before, at, just after the cutoff
    jobs = [
        job_in(status, updated_at=iso(moment))
        for status, moment in itertools.product(JobStatus, moments)
    ]
    store_all(job_store, jobs)
    ours = {job.request_id for job in jobs}
    found = {j.request_id for j in job_store.store.find_stalled(NOW, 1000)} & ours
    expected = {job.request_id for job in jobs if job.stalled(NOW)}
    assert len(expected) == 2  # pending and processing, changed before the cutoff
    assert found == expected


def test_which_webhooks_the_sweeper_finds_due(job_store: StoreUnderTest) -> None:
    jobs = [
        job_in(status, webhook=WebhookInfo(state, url=HOOK, next_attempt_at=iso(moment)))
        for status, state, moment in itertools.product(
            JobStatus, WebhookState, [NOW - MS, NOW, NOW + MS]
        )
    ]
    store_all(job_store, jobs)
    ours = {job.request_id for job in jobs}
    found = {j.request_id for j in job_store.store.find_webhooks_due(NOW, 1000)} & ours
    expected = {job.request_id for job in jobs if job.webhook_due(NOW)}
    assert len(expected) == 4  # each terminal status, pending, due before the cutoff
    assert found == expected


def test_which_webhooks_may_be_sent_again(job_store: StoreUnderTest) -> None:
    jobs = [
        job_in(status, webhook=WebhookInfo(state, url=url, webhook_id="msg_1"))
        for status, state, url in itertools.product(JobStatus, WebhookState, ["", HOOK])
    ]
    store_all(job_store, jobs)
    sent = {
        j.request_id for j in jobs if job_store.store.redeliver_webhook(j.request_id, "msg_1", NOW)
    }
    expected = {job.request_id for job in jobs if job.webhook_redeliverable}
    assert len(expected) == 12  # each terminal status, a URL, delivery settled (3 states)
    assert sent == expected


def test_which_jobs_may_be_retried(job_store: StoreUnderTest) -> None:
    jobs = [
        job_in(status, progress=Progress(2, 2, 4, 4, failed), generation=generation)
        for status, failed, generation in itertools.product(JobStatus, [0, 1], [0, 1])
    ]
    store_all(job_store, jobs)
    reopened = {j.request_id for j in jobs if job_store.store.reopen_failed(j.request_id, 1, NOW)}
    expected = {job.request_id for job in jobs if job.retriable_as(1)}
    assert len(expected) == 3  # ended otherwise than cancelled, a failed image, generation 0
    assert reopened == expected


def test_a_webhook_keeps_its_latest_attempts_only(job_store: StoreUnderTest) -> None:
    store = job_store.store
    job = new_job()
    assert store.create_job(job)
    store.finish_job(job.request_id, JobStatus.COMPLETED, NOW, webhook_url=HOOK)
    attempts = [WebhookAttempt(n, iso(NOW), 500, "HTTP 500", n) for n in range(1, 26)]
    for attempt in attempts:
        store.record_webhook_attempt(job.request_id, attempt, WebhookState.PENDING, NOW)
    stored = store.get_job(job.request_id)
    assert stored is not None
    assert stored.webhook.attempts == 25
    assert stored.webhook.history == attempts[-MAX_WEBHOOK_HISTORY:]
