"""A receiver's origin that times out gets one attempt at a time: an attempt for it while its
one slot is held is put back for about a timeout (not attempted, not counted, not holding a
poller), and other origins' webhooks go at once. On the fakes, with the fake clock."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from chalicelib.config import Settings
from chalicelib.domain.models import JobStatus, WebhookState
from chalicelib.domain.timefmt import iso, parse_iso
from chalicelib.entrypoints import queue_handlers
from chalicelib.entrypoints.queue_handlers import QueueRecord
from chalicelib.services.webhooks import origin_of

from tests.fakes import FakeWorld, make_world
from tests.support.jobs import new_job

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HANGS = "https://hangs.test/hook"
ANSWERS = "https://answers.test/hook"
TIMEOUT = 10.0


def finished_job(world: FakeWorld[Any], url: str) -> tuple[str, dict[str, Any]]:
    """A job that just ended with its webhook pending; its first message, as finalize sent it."""
    job = new_job(created_at=iso(world.clock.now()))
    assert world.store.create_job(job)
    assert world.store.finish_job(
        job.request_id,
        JobStatus.COMPLETED,
        world.clock.now(),
        webhook_url=url,
        webhook_id=f"msg_{job.request_id.replace('-', '')}",
    )
    finished = world.store.get_job(job.request_id)
    assert finished is not None
    message = {"requestId": job.request_id, "tenant": job.tenant, "attempt": 1}
    message["webhookId"] = finished.webhook.webhook_id
    return job.request_id, message


def deliver(world: FakeWorld[Any], message: dict[str, Any]) -> None:
    queue_handlers.webhooks(world.deps, [QueueRecord("m", json.dumps(message))])


def test_an_origin_that_timed_out_gets_one_attempt_at_a_time_and_others_go_at_once() -> None:
    world = make_world(Settings(webhook_secret=SECRET, webhook_timeout=TIMEOUT))
    first, first_message = finished_job(world, HANGS)
    waiting, waiting_message = finished_job(world, HANGS)
    other, other_message = finished_job(world, ANSWERS)
    world.sender.answers = [None]  # the first attempt times out: the origin is slow
    deliver(world, first_message)
    world.webhook_queue.drain()  # its retry, later
    # another attempt to it is under way (a poller holds its one slot)
    held = world.deps.webhook_origins.admit(
        origin_of(HANGS), world.clock.now(), timedelta(seconds=2 * TIMEOUT)
    )
    assert held is not None and held.slot
    posts = len(world.sender.posts)
    deliver(world, waiting_message)
    assert len(world.sender.posts) == posts  # not attempted
    (put_back,) = world.webhook_queue.drain()
    assert put_back.delay_seconds == TIMEOUT
    assert put_back.body == {**waiting_message, "recorded": 0, "waited": 1}
    job = world.store.get_job(waiting)
    assert job is not None and job.webhook.attempts == 0
    due = job.webhook.next_attempt_at
    assert parse_iso(due) == world.clock.now() + timedelta(seconds=TIMEOUT)
    deliver(world, put_back.body)  # still busy: put back for twice as long
    (again,) = world.webhook_queue.drain()
    assert again.delay_seconds == 2 * TIMEOUT and again.body["waited"] == 2
    deliver(world, other_message)  # another origin: at once
    assert [url for url, _, _ in world.sender.posts[posts:]] == [ANSWERS]
    assert world.store.get_job(other).webhook.state == WebhookState.DELIVERED  # type: ignore[union-attr]
    # the slot's attempt is answered in time: the origin is fast again, the one put back goes
    world.deps.webhook_origins.settle(
        held, world.clock.now(), answered=True, timed_out=False, cooldown=timedelta(hours=1)
    )
    world.clock.advance(put_back.delay_seconds)
    deliver(world, put_back.body)
    assert world.store.get_job(waiting).webhook.state == WebhookState.DELIVERED  # type: ignore[union-attr]
    deliver(world, put_back.body)  # a copy of it: dropped, as a duplicate
    assert [url for url, _, _ in world.sender.posts[posts:]] == [ANSWERS, HANGS]
    assert first != waiting


def test_origins_are_scheme_host_and_port() -> None:
    assert origin_of("https://Hooks.Test/a?b=1") == "https://hooks.test:443"
    assert origin_of("http://hooks.test:8080/x") == "http://hooks.test:8080"
    assert origin_of("http://127.0.0.1/x") != origin_of("http://127.0.0.1:81/x")
