"""Lambda's Timeout, honoured by the code: the budget, the worker's continuations, rows
recorded as their own images finish, the ingest's handover, and the fair image pool."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from chalicelib.adapters.fair_pool import FairThreadPool
from chalicelib.config import Settings
from chalicelib.domain.budget import Budget, OutOfTime, margin_for
from chalicelib.domain.models import ImageErrorCode, JobStatus, RowStatus
from chalicelib.entrypoints import queue_handlers
from chalicelib.entrypoints.queue_handlers import QueueRecord
from chalicelib.errors import ImageFailure
from chalicelib.services import ingest, rows_batch
from chalicelib.services.job_url_cache import job_url_cache
from chalicelib.services.row_messages import RowTask

from tests.fakes import FakeWorld, make_world
from tests.support.waiting import wait_until
from tests.unit.test_pipeline_services import HEADER, jpeg, storage_record, submit

DEADLINE = 10.0
# download deadline 10 s, and (at 1 MP) 0.08 s kept back for the decode and encode
SETTINGS = Settings(
    webhook_secret="whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    download_deadline=DEADLINE,
    max_image_pixels=1_000_000,
    rows_per_chunk=10,
)
NEEDED = DEADLINE + 0.08


class ManualClock:
    """The budget's clock; each fetch moves it on by `per_fetch` seconds."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TimedFetcher:
    """The world's fetcher, each call taking `seconds` of the manual clock."""

    def __init__(self, world: FakeWorld, clock: ManualClock, seconds: float) -> None:
        self.inner = world.fetcher
        self.clock = clock
        self.seconds = seconds

    def fetch(self, url: str) -> bytes:
        self.clock.now += self.seconds
        return self.inner.fetch(url)


def world_with(urls: dict[str, bytes | ImageFailure]) -> FakeWorld:
    world = make_world(SETTINGS)
    world.fetcher.responses = dict(urls)
    return world


def task_of(world: FakeWorld, csv_rows: str) -> tuple[str, list[dict[str, Any]]]:
    request_id = submit(world, HEADER + csv_rows)
    return request_id, [m.body for m in world.rows_queue.drain()]


# -- the budget ------------------------------------------------------------------------------


class Context:
    def __init__(self, millis: int) -> None:
        self.millis = millis

    def get_remaining_time_in_millis(self) -> int:
        return self.millis


def test_the_budget_keeps_a_margin_of_the_invocations_time() -> None:
    clock = ManualClock()
    assert Budget.from_context(Context(120_000), clock).remaining() == pytest.approx(115.0)
    assert Budget.from_context(Context(3_000), clock).remaining() == pytest.approx(2.7)
    assert Budget.from_context(Context(1_000), clock).remaining() == pytest.approx(0.8)
    assert margin_for(1.0) == 0.2 and margin_for(900) == 5.0
    unlimited = Budget.from_context(None, clock)
    assert unlimited.fits(10**9) and not unlimited.expired
    budget = Budget.from_context(Context(2_000), clock)
    budget.check()
    clock.now += 1.9
    assert budget.expired
    with pytest.raises(OutOfTime):
        budget.check()


# -- the worker --------------------------------------------------------------------------------


def test_no_attempt_starts_unless_its_deadline_and_the_encode_fit() -> None:
    world = world_with({"https://a.test/1.jpg": jpeg()})
    _, (message,) = task_of(world, "1,A,https://a.test/1.jpg\n")
    clock = ManualClock()
    short = Budget(NEEDED - 0.01, clock)
    (outcome,) = rows_batch.process_rows(world.deps, [RowTask.from_message(message)], short)
    assert isinstance(outcome, OutOfTime)  # nothing done: the message is handed back
    assert world.fetcher.calls == []
    assert world.rows_queue.drain() == []  # no continuation: the row made no progress
    (outcome,) = rows_batch.process_rows(
        world.deps, [RowTask.from_message(message)], Budget(NEEDED, clock)
    )
    assert outcome is None
    assert world.fetcher.calls == ["https://a.test/1.jpg"]


def test_a_row_out_of_time_continues_in_a_new_message_keeping_what_is_done() -> None:
    urls = [f"https://a.test/{n}.jpg" for n in range(3)]
    world = world_with({urls[0]: jpeg(), urls[1]: ImageFailure(ImageErrorCode.HTTP_ERROR, "404")})
    world.fetcher.responses[urls[2]] = jpeg(32, 32)
    request_id, (message,) = task_of(world, f'1,A,"{",".join(urls)}"\n')
    clock = ManualClock()
    world.deps.fetcher = TimedFetcher(world, clock, 6.0)
    budget = Budget(NEEDED + 6.0 + 0.5, clock)  # room for two attempts of 6 s, not a third
    (outcome,) = rows_batch.process_rows(world.deps, [RowTask.from_message(message)], budget)
    assert outcome is None  # the original is deleted: its continuation carries the row
    assert world.fetcher.calls == urls[:2]
    (continuation,) = [m.body for m in world.rows_queue.drain()]
    keep = continuation["keep"]
    assert keep[0]["key"] and "errorCode" not in keep[0]
    assert keep[1] == {
        "key": "",
        "bytesIn": 0,
        "bytesOut": 0,
        "errorCode": "http_error",
        "errorMessage": "404",
    }
    assert keep[2]["key"] == "" and "errorCode" not in keep[2]
    assert continuation["attempts"] == [0, 0, 0]
    (row,) = world.store.list_rows(request_id, 0, 1)
    assert row.status == RowStatus.PENDING  # not recorded until every image is done

    world.deps.fetcher = world.fetcher
    (outcome,) = rows_batch.process_rows(world.deps, [RowTask.from_message(continuation)])
    assert outcome is None
    assert world.fetcher.calls == urls  # the third only: nothing fetched twice
    (row,) = world.store.list_rows(request_id, 0, 1)
    assert row.output_keys[0] and not row.output_keys[1] and row.output_keys[2]
    assert [e["code"] for e in row.errors] == ["http_error"]
    job = world.store.get_job(request_id)
    assert job is not None and job.progress.processed_images == 3
    assert world.finalize_queue.drain()  # the last row asked for finalization at once


def test_fetch_attempts_spent_before_a_continuation_count_against_the_retry_policy() -> None:
    url = "https://slow.test/1.jpg"
    failing = ImageFailure(ImageErrorCode.HTTP_ERROR, "HTTP 503", retryable=True)
    world = world_with({url: failing})
    _, (message,) = task_of(world, f"1,A,{url}\n")
    clock = ManualClock()
    world.deps.fetcher = TimedFetcher(world, clock, 6.0)
    # one attempt fits, its retry (after the backoff) does not
    (outcome,) = rows_batch.process_rows(
        world.deps, [RowTask.from_message(message)], Budget(NEEDED + 1.0, clock)
    )
    assert outcome is None
    (continuation,) = [m.body for m in world.rows_queue.drain()]
    assert continuation["attempts"] == [1]
    world.deps.fetcher = world.fetcher
    rows_batch.process_rows(world.deps, [RowTask.from_message(continuation)])
    assert world.fetcher.calls == [url] * SETTINGS.fetch_attempts  # 3 in all, not 1 + 3


def test_a_recorded_row_costs_a_read_not_a_download() -> None:
    world = world_with({"https://a.test/1.jpg": jpeg()})
    request_id, (message,) = task_of(world, "1,A,https://a.test/1.jpg\n")
    queue_handlers.rows(world.deps, [QueueRecord("m-1", json.dumps(message))])
    assert world.fetcher.calls == ["https://a.test/1.jpg"]
    assert len(world.finalize_queue.drain()) == 1
    job_url_cache(world.deps).clear()  # redelivered to another container
    again = QueueRecord("m-1", json.dumps(message), receive_count=2)
    assert queue_handlers.rows(world.deps, [again]) == {"batchItemFailures": []}
    assert world.fetcher.calls == ["https://a.test/1.jpg"]  # not downloaded again
    job = world.store.get_job(request_id)
    assert job is not None and job.progress.processed_images == 1


def test_each_row_is_recorded_as_soon_as_its_own_images_are_done() -> None:
    """One slow image holds its own row only: the other nine are recorded while it waits."""
    urls = {f"https://a.test/{n}.jpg": jpeg() for n in range(10)}
    world = world_with(dict(urls))
    slow_url = "https://a.test/9.jpg"
    release = threading.Event()
    fast_fetch = world.fetcher.fetch

    def fetch(url: str) -> bytes:
        if url == slow_url:
            assert release.wait(30)
        return fast_fetch(url)

    world.fetcher.fetch = fetch  # type: ignore[method-assign]
    world.deps.image_pool = FairThreadPool(4)
    rows = "".join(f"{n + 1},P{n},https://a.test/{n}.jpg\n" for n in range(10))
    request_id, messages = task_of(world, rows)
    tasks = [RowTask.from_message(m) for m in messages]
    outcomes: list[Any] = []
    worker = threading.Thread(
        target=lambda: outcomes.extend(rows_batch.process_rows(world.deps, tasks))
    )
    worker.start()

    def recorded() -> int:
        return sum(r.status != RowStatus.PENDING for r in world.store.iter_rows(request_id))

    assert wait_until(lambda: recorded() == 9, timeout=10), "the nine waited for the slow one"
    assert worker.is_alive() and not world.finalize_queue.sent
    release.set()
    worker.join(10)
    assert outcomes == [None] * 10 and recorded() == 10
    assert len(world.finalize_queue.drain()) == 1


# -- the ingest ----------------------------------------------------------------------------


def test_an_ingest_out_of_time_hands_over_and_the_next_run_sends_the_rest() -> None:
    # the invocation's budget ends the run here, not its slice (tests/unit/test_ingest_slices.py)
    world = make_world(replace(SETTINGS, rows_per_chunk=10, ingest_slice_seconds=3600))
    accepted = ingest_csv_of(world, 100)
    clock = ManualClock()
    sends = world.rows_queue.send_batch

    def timed_send(bodies: Any, delay_seconds: int = 0) -> None:
        clock.now += 1.0
        sends(bodies, delay_seconds)

    world.rows_queue.send_batch = timed_send  # type: ignore[method-assign]
    record = storage_record(accepted)
    queue_handlers.ingest(world.deps, [record], Budget(4.5, clock))
    first = [m.body["position"] for m in world.rows_queue.drain()]
    assert first == list(range(50))  # five chunks of ten went out before the budget ran out
    (handover,) = [m.body for m in world.ingest_queue.drain()]
    request_id = handover[ingest.HANDOVER]
    job = world.store.get_job(request_id)
    assert job is not None and job.fanout_sent == 50 and not job.fanout_done

    queue_handlers.ingest(world.deps, [QueueRecord("h", json.dumps(handover))])
    rest = [m.body["position"] for m in world.rows_queue.drain()]
    assert rest == list(range(50, 100))  # the rest, each once
    job = world.store.get_job(request_id)
    assert job is not None and job.fanout_done and job.status == JobStatus.PROCESSING
    assert world.ingest_queue.drain() == []


def ingest_csv_of(world: FakeWorld, rows: int) -> str:
    """A CSV dropped in the bucket; returns its key."""
    text = HEADER + "".join(f"{n},P{n},https://a.test/{n}.jpg\n" for n in range(1, rows + 1))
    key = "incoming/partner/feed.csv"
    world.uploads.put_bytes(key, text.encode(), "text/csv")
    return key


# -- the fair pool -------------------------------------------------------------------------


def test_a_free_thread_serves_the_key_waiting_longest_not_the_longest_backlog() -> None:
    pool = FairThreadPool(1)
    order: list[str] = []
    gate, running = threading.Event(), threading.Event()

    def job(name: str, wait: bool = False) -> Callable[[], str]:
        def run() -> str:
            if wait:
                running.set()
                assert gate.wait(10)
            order.append(name)
            return name

        return run

    futures = [pool.run("slow-job", job("a0", wait=True))]
    assert running.wait(10)  # the only thread is busy with a0; slow-job's queue is empty
    futures += [pool.run("slow-job", job(f"a{n}")) for n in range(1, 5)]
    futures.append(pool.run("quick-job", job("b0")))
    gate.set()
    assert [f.result(10) for f in futures] == ["a0", "a1", "a2", "a3", "a4", "b0"]
    assert order[:3] == ["a0", "b0", "a1"]  # b0 did not wait behind a1..a4
    pool.shutdown()


def test_the_fair_pool_carries_exceptions_and_runs_keys_in_parallel() -> None:
    pool = FairThreadPool(2)
    barrier = threading.Barrier(2, timeout=10)

    def meet() -> int:
        return barrier.wait()

    def fail() -> None:
        raise ValueError("broken image")

    both = [pool.run("a", meet), pool.run("b", meet)]
    assert sorted(f.result(10) for f in both) == [0, 1]  # two threads at once
    with pytest.raises(ValueError, match="broken image"):
        pool.run("a", fail).result(10)
    pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.run("a", meet)


def test_a_redelivered_last_row_asks_again_for_finalization_without_a_download() -> None:
    """The first delivery died between recording the last row and claiming finalization:
    its redelivery finds the row recorded (no download) and still asks, at once."""
    world = world_with({"https://a.test/1.jpg": jpeg()})
    request_id, (message,) = task_of(world, "1,A,https://a.test/1.jpg\n")
    claim = world.store.claim_finalization
    crashes = [RuntimeError("the invocation died here")]

    def dying_claim(*args: Any) -> bool:
        if crashes:
            raise crashes.pop()
        return claim(*args)

    world.store.claim_finalization = dying_claim  # type: ignore[method-assign]
    record = QueueRecord("m-1", json.dumps(message))
    with pytest.raises(queue_handlers.BatchFailed):
        queue_handlers.rows(world.deps, [record])
    assert world.finalize_queue.drain() == []
    job_url_cache(world.deps).clear()  # redelivered to another container
    again = QueueRecord("m-1", json.dumps(message), receive_count=2)
    assert queue_handlers.rows(world.deps, [again]) == {"batchItemFailures": []}
    assert [m.body for m in world.finalize_queue.drain()] == [
        {"requestId": request_id, "tenant": "default"}
    ]
    assert world.fetcher.calls == ["https://a.test/1.jpg"]


# -- the durations, on AWS and locally ----------------------------------------------------------


def test_the_sweeper_never_resends_rows_whose_batch_may_still_be_in_flight() -> None:
    """STALL_AFTER outlasts the longest a row message can be out of sight: received (the
    rows queue's visibility timeout) plus the worker's Timeout. On AWS and at any local scale."""
    from pathlib import Path

    from infra.cfn_yaml import load_template
    from local_emulator.timescale import scaled_app_durations, scaled_timeout, scaled_visibility

    template = load_template(Path(__file__).resolve().parents[2] / "template.yaml")
    resources = template["Resources"]
    visibility = int(resources["RowsQueue"]["Properties"]["VisibilityTimeout"])
    timeout = int(resources["WorkerFunction"]["Properties"]["Timeout"])
    assert Settings().stall_after >= visibility + timeout
    for scale in (0.05, 0.1, 0.25, 1.0):
        stall = int(scaled_app_durations({}, scale)["STALL_AFTER"])
        assert stall >= scaled_visibility(visibility, scale) + scaled_timeout(timeout, scale)


def test_a_fresh_worker_invocation_can_finish_a_whole_attempt() -> None:
    """The worker's Timeout holds a download's whole deadline plus the image's decode and
    encode, margin kept, on AWS and at the emulator's default scale."""
    from pathlib import Path

    from chalicelib.imaging import work_allowance

    from infra.cfn_yaml import load_template
    from local_emulator.timescale import DEFAULT_TIME_SCALE, scaled_app_durations, scaled_timeout

    template = load_template(Path(__file__).resolve().parents[2] / "template.yaml")
    timeout = int(template["Resources"]["WorkerFunction"]["Properties"]["Timeout"])
    defaults = Settings()
    allowance = work_allowance(defaults.max_image_pixels)
    budget = Budget.seconds(timeout, ManualClock())
    assert budget.fits(defaults.fetch_attempts * defaults.download_deadline + allowance)
    local = scaled_timeout(timeout, DEFAULT_TIME_SCALE)
    deadline = float(scaled_app_durations({}, DEFAULT_TIME_SCALE)["DOWNLOAD_DEADLINE"])
    assert Budget.seconds(local, ManualClock()).fits(deadline + allowance)


def test_work_handed_over_in_a_burst_wakes_or_starts_a_thread_for_each_piece() -> None:
    """One thread idle; two pieces handed over before it wakes (the pool's lock held across
    both, as a batch hands over its images): the second must not wait behind the first."""
    pool = FairThreadPool(4)
    pool.run("job", lambda: None).result(10)
    assert wait_until(lambda: pool.idle == 1, timeout=10)
    release = threading.Event()
    with pool._lock:  # the woken thread cannot take the lock back in between
        hung = pool.run("job", lambda: release.wait(10))
        quick = pool.run("job", lambda: "quick")
    try:
        assert quick.result(5) == "quick"  # on a thread of its own, not queued behind `hung`
    finally:
        release.set()
    assert hung.result(10) is True
    pool.shutdown()
