"""Webhooks that respect the receiver: `410 Gone` ends the retries, `Retry-After` is honoured
within the schedule's bounds, delays longer than SQS's 15 minutes are waited out in hops, and
the sweeper never re-sends an attempt before it is due. On the fakes, with the fake clock."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

from chalicelib.config import Settings
from chalicelib.domain.models import JobStatus, WebhookState
from chalicelib.domain.timefmt import iso, parse_iso
from chalicelib.entrypoints import queue_handlers
from chalicelib.entrypoints.queue_handlers import QueueRecord
from chalicelib.ports import DeliveryResult
from chalicelib.services import sweeper

from tests.fakes import FakeWorld, SentMessage, make_world
from tests.support.jobs import new_job

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HOOK = "https://hook.test/h"
HOURS = 3600


def world_with(schedule: tuple[int, ...] | None = None) -> FakeWorld[Any]:
    settings = Settings(webhook_secret=SECRET)
    if schedule is not None:
        settings = Settings(webhook_secret=SECRET, webhook_retry_schedule=schedule)
    return make_world(settings)


def finished_job(world: FakeWorld[Any]) -> str:
    """A job that just ended, its webhook pending, and its first message queued."""
    job = new_job(created_at=iso(world.clock.now()))
    assert world.store.create_job(job)
    hook_id = "msg_" + "1" * 32
    now = world.clock.now()
    assert world.store.finish_job(
        job.request_id, JobStatus.COMPLETED, now, webhook_url=HOOK, webhook_id=hook_id
    )
    world.webhook_queue.send_batch(
        [{"requestId": job.request_id, "webhookId": hook_id, "attempt": 1}]
    )
    return job.request_id


@dataclass
class Run:
    """What the webhook queue carried: each message handled, with when (fake clock)."""

    handled: list[tuple[float, SentMessage]]
    posts_at: list[float]


def run_webhook_queue(world: FakeWorld[Any], until: float | None = None) -> Run:
    """Hand each queued message to the webhook function once its DelaySeconds are over
    (the fake clock moves to that moment), until the queue is empty or the next message is
    due after `until` seconds from the start (it is left queued)."""
    start = world.clock.now()
    handled: list[tuple[float, SentMessage]] = []
    posts_at: list[float] = []
    for _ in range(10_000):
        pending = world.webhook_queue.drain()
        if not pending:
            break
        (message,) = pending  # one delivery in flight at a time
        at = (world.clock.now() - start).total_seconds() + message.delay_seconds
        if until is not None and at > until:
            world.webhook_queue.sent.insert(0, message)
            break
        world.clock.advance(message.delay_seconds)
        before = len(world.sender.posts)
        queue_handlers.webhooks(world.deps, [QueueRecord("m", json.dumps(message.body))])
        handled.append((at, message))
        if len(world.sender.posts) > before:
            posts_at.append(at)
    else:
        raise AssertionError("the webhook queue never emptied")
    return Run(handled, posts_at)


def webhook_of(world: FakeWorld[Any], request_id: str) -> Any:
    job = world.store.get_job(request_id)
    assert job is not None
    return job.webhook


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 3) for a, b in itertools.pairwise(times)]


# -- 410 Gone --------------------------------------------------------------------------------
def test_410_gone_stops_the_retries_at_once_and_the_attempt_is_recorded() -> None:
    world = world_with()
    world.sender.answers = [503, 410, 200]
    request_id = finished_job(world)
    run = run_webhook_queue(world)
    hook = webhook_of(world, request_id)
    assert len(world.sender.posts) == 2 and len(run.posts_at) == 2
    assert hook.state == WebhookState.FAILED and hook.next_attempt_at == ""
    assert [(a.attempt, a.status_code) for a in hook.history] == [(1, 503), (2, 410)]
    assert "410" in hook.history[-1].error and "no more attempts" in hook.history[-1].error
    assert hook.last_status_code == 410
    assert world.webhook_queue.sent == []  # nothing left queued


def test_410_on_the_first_attempt_is_the_only_attempt() -> None:
    world = world_with()
    world.sender.answers = [DeliveryResult(410, retry_after="5")]
    request_id = finished_job(world)
    run_webhook_queue(world)
    hook = webhook_of(world, request_id)
    assert (hook.state, hook.attempts, len(world.sender.posts)) == (WebhookState.FAILED, 1, 1)


# -- Retry-After -------------------------------------------------------------------------------
def test_a_retry_after_longer_than_the_schedules_delay_is_honoured() -> None:
    world = world_with((5, 300, 1800))
    world.sender.answers = [DeliveryResult(503, retry_after="120"), 204]
    request_id = finished_job(world)
    first = world.clock.now()
    run = run_webhook_queue(world)
    assert gaps(run.posts_at) == [120]  # not the schedule's 5 s
    hook = webhook_of(world, request_id)
    assert hook.state == WebhookState.DELIVERED
    assert hook.history[0].error == "HTTP 503 (Retry-After: 120)"
    assert [m.delay_seconds for _, m in run.handled] == [0, 120]
    assert world.clock.now() - first == timedelta(seconds=120)


def test_a_retry_after_shorter_than_the_schedules_delay_is_not() -> None:
    world = world_with((5, 300, 1800))
    world.sender.answers = [500, DeliveryResult(429, retry_after="10"), 204]
    finished_job(world)
    run = run_webhook_queue(world)
    assert gaps(run.posts_at) == [5, 300]


def test_a_retry_after_past_the_schedules_longest_delay_is_capped_there() -> None:
    world = world_with((5, 300, 1800))
    world.sender.answers = [DeliveryResult(503, retry_after=str(7 * 24 * HOURS)), 204]
    request_id = finished_job(world)
    run = run_webhook_queue(world)
    assert gaps(run.posts_at) == [1800]
    # 1800 s is longer than SQS waits: two hops of 900 s, one attempt when due
    assert [m.delay_seconds for _, m in run.handled] == [0, 900, 900]
    assert webhook_of(world, request_id).state == WebhookState.DELIVERED


def test_a_retry_after_http_date_is_honoured() -> None:
    world = world_with((5, 300, 1800))
    date = format_datetime(world.clock.now() + timedelta(seconds=600), usegmt=True)
    world.sender.answers = [DeliveryResult(503, retry_after=date), 204]
    request_id = finished_job(world)
    run = run_webhook_queue(world)
    assert gaps(run.posts_at) == [600]
    hook = webhook_of(world, request_id)
    assert parse_iso(hook.history[1].at) - parse_iso(hook.history[0].at) == timedelta(minutes=10)


def test_retry_after_does_not_add_attempts_past_the_schedule() -> None:
    world = world_with((5, 30))
    world.sender.answers = [DeliveryResult(503, retry_after="20")] * 5
    request_id = finished_job(world)
    run = run_webhook_queue(world)
    assert gaps(run.posts_at) == [20, 30]
    hook = webhook_of(world, request_id)
    assert (hook.state, hook.attempts) == (WebhookState.FAILED, 3)


# -- hops ------------------------------------------------------------------------------------
def test_a_five_hour_delay_goes_in_hops_of_at_most_900_s_and_one_attempt_when_due() -> None:
    world = world_with((18000,))
    world.sender.answers = [500, 204]
    request_id = finished_job(world)
    run_webhook_queue(world, until=0)  # the first attempt only
    hook = webhook_of(world, request_id)
    assert hook.attempts == 1 and hook.state == WebhookState.PENDING
    due = parse_iso(hook.next_attempt_at)
    assert due == world.clock.now() + timedelta(hours=5)
    (queued,) = world.webhook_queue.sent
    assert queued.delay_seconds == 900 and parse_iso(str(queued.body["notBefore"])) == due

    run = run_webhook_queue(world)
    delays = [m.delay_seconds for _, m in run.handled]
    assert delays == [900] * 20 and sum(delays) == 18000
    assert run.posts_at == [18000]  # hops attempt nothing; the last one is the attempt
    hook = webhook_of(world, request_id)
    assert (hook.state, hook.attempts) == (WebhookState.DELIVERED, 2)
    assert parse_iso(hook.history[1].at) == due


def test_an_early_hop_waits_only_what_is_left_and_records_nothing() -> None:
    world = world_with((18000,))
    world.sender.answers = [500, 204]
    request_id = finished_job(world)
    run_webhook_queue(world, until=0)
    (queued,) = world.webhook_queue.drain()
    world.clock.advance(5 * HOURS - 100)  # e.g. a hop that arrived late, the next one soon
    queue_handlers.webhooks(world.deps, [QueueRecord("m", json.dumps(queued.body))])
    (hop,) = world.webhook_queue.sent
    assert hop.delay_seconds == 100 and hop.body == queued.body
    assert len(world.sender.posts) == 1 and webhook_of(world, request_id).attempts == 1


def test_the_default_schedule_hops_through_three_days_with_one_attempt_per_step() -> None:
    world = world_with()
    schedule = world.deps.settings.webhook_retry_schedule
    world.sender.answers = [503] * 20
    request_id = finished_job(world)
    run = run_webhook_queue(world)
    assert gaps(run.posts_at) == list(schedule)
    assert all(m.delay_seconds <= 900 for _, m in run.handled)
    hook = webhook_of(world, request_id)
    assert (hook.state, hook.attempts) == (WebhookState.FAILED, len(schedule) + 1)
    assert timedelta(days=2, hours=12) < timedelta(seconds=run.posts_at[-1]) < timedelta(days=3)


def test_a_duplicated_message_makes_no_second_attempt() -> None:
    """SQS may deliver a message twice; with hops a delay is many messages. The copy that
    comes after the attempt was made is dropped, so the chain does not fork."""
    world = world_with((18000, 18000))
    world.sender.answers = [500, 500, 204]
    request_id = finished_job(world)
    run_webhook_queue(world, until=0)
    (queued,) = world.webhook_queue.sent
    world.webhook_queue.send_batch([queued.body], delay_seconds=queued.delay_seconds)  # a copy
    world.clock.advance(5 * HOURS)
    for message in world.webhook_queue.drain():
        queue_handlers.webhooks(world.deps, [QueueRecord("m", json.dumps(message.body))])
    assert len(world.sender.posts) == 2
    assert webhook_of(world, request_id).attempts == 2
    assert len(world.webhook_queue.sent) == 1  # one next attempt queued, not two


# -- the sweeper -----------------------------------------------------------------------------
def test_the_sweeper_does_not_resend_a_long_delay_before_it_is_due() -> None:
    world = world_with((18000,))
    stall = world.deps.settings.stall_after
    world.sender.answers = [500, 204]
    request_id = finished_job(world)
    run_webhook_queue(world, until=0)
    world.webhook_queue.drain()  # its hops are lost: only the sweeper can deliver it now
    first = world.clock.now()
    for elapsed in (1 * HOURS, 5 * HOURS - 1, 5 * HOURS + stall - 1):
        world.clock.moment = first + timedelta(seconds=elapsed)
        report = sweeper.sweep(world.deps)
        assert report.webhooks == [], elapsed
        assert world.webhook_queue.sent == []
    world.clock.advance(2)  # due STALL_AFTER ago: its message was lost
    assert sweeper.sweep(world.deps).webhooks == [request_id]
    run_webhook_queue(world)
    hook = webhook_of(world, request_id)
    assert (hook.state, hook.attempts) == (WebhookState.DELIVERED, 2)


def test_the_sweeper_honours_a_retry_after_too() -> None:
    world = world_with((5, 300, 7200))
    stall = world.deps.settings.stall_after
    world.sender.answers = [DeliveryResult(503, retry_after="3600"), 204]
    request_id = finished_job(world)
    run_webhook_queue(world, until=0)
    world.webhook_queue.drain()  # lost
    world.clock.advance(3600 + stall - 1)
    assert sweeper.sweep(world.deps).webhooks == []
    world.clock.advance(2)
    assert sweeper.sweep(world.deps).webhooks == [request_id]


def test_the_sweepers_resend_and_a_late_original_make_one_attempt() -> None:
    world = world_with((60,))
    stall = world.deps.settings.stall_after
    world.sender.answers = [500, 204, 204]
    request_id = finished_job(world)
    run_webhook_queue(world, until=0)
    (late,) = world.webhook_queue.drain()  # held up, not lost
    world.clock.advance(60 + stall + 1)
    assert sweeper.sweep(world.deps).webhooks == [request_id]
    run_webhook_queue(world)
    queue_handlers.webhooks(world.deps, [QueueRecord("late", json.dumps(late.body))])
    hook = webhook_of(world, request_id)
    assert (hook.state, hook.attempts, len(world.sender.posts)) == (
        WebhookState.DELIVERED,
        2,
        2,
    )
