"""Every row, ingest, finalize and webhook message carries its tenant as its SQS message
group: the queues as `bootstrap.build` wires them (boto3's adapter, and the emulator's
in-process one in front of it) sending into moto, every code path that sends driven through
the services: the fan-out, a continuation, a retry's fan-out, the sweeper's re-sent rows, a
redrive from the dead-letter queue; a large CSV's first handover, an ingest slice's handover,
a retry, the sweeper's resumed ingest, a finalization and a cancel; the webhook's first send,
its retry, a hop, a put-back, the sweeper's re-send and a redeliver. (S3's own events carry
no group: the ingest takes them cheaply, services/ingest.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import boto3
import pytest
from chalicelib import bootstrap
from chalicelib.config import Settings
from chalicelib.domain.budget import Budget
from chalicelib.domain.models import ImageErrorCode, JobStatus
from chalicelib.entrypoints import queue_handlers
from chalicelib.entrypoints.queue_handlers import QueueRecord
from chalicelib.errors import ImageFailure
from chalicelib.services import cancel, ingest, job_actions, rows_batch, sweeper, upload
from chalicelib.services.row_messages import RowTask
from chalicelib.services.webhooks import origin_of
from moto import mock_aws

from infra.redrive import move_by_copy
from local_emulator import inprocess, moto_patches
from local_emulator.provision import ACCOUNT_ID, REGION
from tests.fakes import FakeWorld, make_world
from tests.support.tenants import SECRETS_PREFIX, add_tenant
from tests.unit.test_pipeline_services import HEADER, jpeg, storage_record
from tests.unit.test_time_budget import NEEDED, SETTINGS, ManualClock, TimedFetcher

TENANT = "alpha"
HOOK = "https://hook.test/h"
URLS = [f"https://img.test/{n}.jpg" for n in range(3)]
MISSING = "https://img.test/missing.jpg"


class Queues:
    """The rows and webhook queues in moto, as the wiring builds them."""

    def __init__(self, local: bool) -> None:
        sqs = boto3.client("sqs", region_name=REGION)
        self.sqs = sqs
        self.rows_url = sqs.create_queue(QueueName="rows")["QueueUrl"]
        self.hooks_url = sqs.create_queue(QueueName="hooks")["QueueUrl"]
        self.dlq_url = sqs.create_queue(QueueName="rows-dlq")["QueueUrl"]
        self.ingest_url = sqs.create_queue(QueueName="ingest")["QueueUrl"]
        self.finalize_url = sqs.create_queue(QueueName="finalize")["QueueUrl"]
        settings = Settings(
            mongo_uri="mongodb://127.0.0.1:9/never-connected",
            rows_queue_url=self.rows_url,
            webhook_queue_url=self.hooks_url,
            ingest_queue_url=self.ingest_url,
            finalize_queue_url=self.finalize_url,
        )
        built = bootstrap.build(settings, inprocess.local_aws() if local else None)
        self.rows, self.hooks = built.rows_queue, built.webhook_queue
        self.ingest, self.finalize = built.ingest_queue, built.finalize_queue
        built.store.close()

    def take(self, url: str) -> list[tuple[str | None, dict[str, Any]]]:
        """Every message the queue holds, delayed ones too (taken off it): (its group, its
        body), as moto keeps them."""
        from moto.sqs.models import sqs_backends

        backend = sqs_backends[ACCOUNT_ID][REGION]
        name = url.rsplit("/", 1)[-1]
        queue = backend.get_queue(name)
        held, queue._messages = list(queue._messages), []  # as a purge, without its limit
        return [(m.group_id, json.loads(m.body)) for m in held]


@pytest.fixture(params=["boto3", "in-process"])
def queues(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Queues]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    moto_patches.apply()
    with mock_aws():
        yield Queues(request.param == "in-process")


def world_of(queues: Queues, **settings: Any) -> FakeWorld[Any]:
    tenant_secrets = {"tenant_secrets_prefix": SECRETS_PREFIX}
    world = make_world(
        replace(SETTINGS, **tenant_secrets, **settings),
        rows_queue=queues.rows,
        webhook_queue=queues.hooks,
    )
    add_tenant(world, TENANT)
    world.fetcher.responses = {url: jpeg() for url in URLS}
    world.fetcher.responses[MISSING] = ImageFailure(ImageErrorCode.HTTP_ERROR, "404")
    return world


def grouped(messages: list[tuple[str | None, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The bodies, once each message is seen to carry its tenant as its group."""
    assert messages
    for group, body in messages:
        assert (group, body.get("tenant")) == (TENANT, TENANT), body
    return [body for _, body in messages]


def submitted(world: FakeWorld[Any], csv: str, webhook: str | None = HOOK) -> str:
    accepted = upload.submit_csv(world.deps, csv.encode(), webhook, None, TENANT)
    queue_handlers.ingest(world.deps, [storage_record(accepted.job.input_key)])
    return accepted.job.request_id


def run_rows(world: FakeWorld[Any], bodies: list[dict[str, Any]]) -> None:
    records = [QueueRecord(f"r{n}", json.dumps(b)) for n, b in enumerate(bodies)]
    queue_handlers.rows(world.deps, records)
    for message in world.finalize_queue.drain():
        queue_handlers.finalize(world.deps, [QueueRecord("f", json.dumps(message.body))])


def deliver(world: FakeWorld[Any], body: dict[str, Any]) -> None:
    queue_handlers.webhooks(world.deps, [QueueRecord("w", json.dumps(body))])


def test_row_messages_fan_out_continue_resend_and_retry_in_their_tenants_group(
    queues: Queues,
) -> None:
    world = world_of(queues)
    csv = HEADER + f'1,A,"{",".join(URLS)}"\n2,B,{MISSING}\n'
    request_id = submitted(world, csv)
    first, second = grouped(queues.take(queues.rows_url))  # the fan-out
    # a continuation: the first row's time runs out after two of its three images
    clock = ManualClock()
    world.deps.fetcher = TimedFetcher(world, clock, 6.0)
    budget = Budget(NEEDED + 6.0 + 0.5, clock)
    assert rows_batch.process_rows(world.deps, [RowTask.from_message(first)], budget) == [None]
    (continuation,) = grouped(queues.take(queues.rows_url))
    assert continuation["keep"]
    world.deps.fetcher = world.fetcher
    # the sweeper re-sends the rows of a job that stopped moving
    world.clock.advance(world.deps.settings.stall_after + 1)
    assert request_id in sweeper.sweep(world.deps).resent_rows
    assert len(grouped(queues.take(queues.rows_url))) == 2
    run_rows(world, [continuation, second])
    job = world.store.get_job(request_id)
    assert job is not None and job.status == JobStatus.COMPLETED_WITH_ERRORS
    deliver(world, grouped(queues.take(queues.hooks_url))[0])  # its webhook, delivered
    # a retry fans its failed row out again
    job_actions.retry_failed(world.deps, request_id)
    for message in world.ingest_queue.drain():
        queue_handlers.ingest(world.deps, [QueueRecord("i", json.dumps(message.body))])
    (again,) = grouped(queues.take(queues.rows_url))
    assert again["inputImageUrls"] == [MISSING]


def test_webhook_messages_first_retry_hop_put_back_resend_and_redeliver_in_their_tenants_group(
    queues: Queues,
) -> None:
    world = world_of(queues, webhook_retry_schedule=(1000, 100, 100, 100))
    request_id = submitted(world, HEADER + f"1,A,{URLS[0]}\n")
    run_rows(world, grouped(queues.take(queues.rows_url)))
    (first,) = grouped(queues.take(queues.hooks_url))  # the first send, by the finalizer
    world.sender.answers = [500, None]
    deliver(world, first)
    (retry,) = grouped(queues.take(queues.hooks_url))  # the retry, in 1,000 s: in hops
    assert retry["notBefore"]
    deliver(world, retry)
    (hop,) = grouped(queues.take(queues.hooks_url))
    world.clock.advance(1000)
    deliver(world, hop)  # times out: its origin is slow
    (after_timeout,) = grouped(queues.take(queues.hooks_url))
    world.clock.advance(100)
    held = world.deps.webhook_origins.admit(origin_of(HOOK), world.clock.now(), timedelta(60))
    assert held is not None and held.slot
    deliver(world, after_timeout)
    (put_back,) = grouped(queues.take(queues.hooks_url))
    assert put_back["recorded"] == after_timeout["recorded"]
    world.clock.advance(world.deps.settings.stall_after + 120)  # lost: the sweeper re-sends
    assert request_id in sweeper.sweep(world.deps).webhooks
    (resent,) = grouped(queues.take(queues.hooks_url))
    deliver(world, resent)  # the slot's hold is over: delivered
    job = world.store.get_job(request_id)
    assert job is not None and job.webhook.state == "delivered"
    job_actions.redeliver_webhook(world.deps, request_id)
    (redelivered,) = grouped(queues.take(queues.hooks_url))
    assert redelivered["webhookId"] == first["webhookId"]


def test_a_redrive_keeps_the_message_group(queues: Queues) -> None:
    queues.sqs.send_message(
        QueueUrl=queues.dlq_url,
        MessageBody=json.dumps({"requestId": "r", "tenant": TENANT}),
        MessageGroupId=TENANT,
    )
    result = move_by_copy(queues.sqs, queues.dlq_url, queues.rows_url, wait_seconds=0)
    assert result.moved == 1
    grouped(queues.take(queues.rows_url))


def large_storage_event(key: str) -> QueueRecord:
    """The storage event of a CSV too large to be ingested where the event is taken."""
    body = json.loads(storage_record(key).body)
    body["Records"][0]["s3"]["object"]["size"] = ingest.INLINE_BYTES + 1
    return QueueRecord("s3", json.dumps(body))


def test_ingest_finalize_and_cancel_messages_in_their_tenants_group(
    queues: Queues, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slices of no time (each run sends one batch, then hands over): a large CSV's first
    handover, each slice's, a retry's and the sweeper's, the finalization and a cancel."""
    monkeypatch.setattr(ingest.IngestSlice, "READ_RATIO", 0.0)
    world = world_of(queues, ingest_slice_seconds=0.0)
    world.deps.ingest_queue, world.deps.finalize_queue = queues.ingest, queues.finalize
    csv = HEADER + "".join(f"{n},P{n},{MISSING}\n" for n in range(1, 12)) + f"12,L,{URLS[0]}\n"
    accepted = upload.submit_csv(world.deps, csv.encode(), HOOK, None, TENANT)
    request_id = accepted.job.request_id
    queue_handlers.ingest(world.deps, [large_storage_event(accepted.job.input_key)])
    assert queues.take(queues.rows_url) == []  # nothing ingested where the event was taken
    (handover,) = grouped(queues.take(queues.ingest_url))
    assert handover == {ingest.HANDOVER: request_id, "tenant": TENANT}
    # the run dies before handing over: the sweeper takes the ingest over, one slice
    world.clock.advance(max(world.deps.settings.ingest_lease, world.deps.settings.stall_after) + 1)
    assert request_id in sweeper.sweep(world.deps).ingests
    (handover,) = grouped(queues.take(queues.ingest_url))
    rows = grouped(queues.take(queues.rows_url))
    while True:  # the slices, each handing over in the tenant's group
        queue_handlers.ingest(world.deps, [QueueRecord("h", json.dumps(handover))])
        rows += grouped(queues.take(queues.rows_url))
        handed = queues.take(queues.ingest_url)
        if not handed:
            break
        (handover,) = grouped(handed)
    assert sorted(r["position"] for r in rows) == list(range(12))
    run_rows(world, rows[:10])
    run_rows(world, rows[10:])
    (finalization,) = grouped(queues.take(queues.finalize_url))
    queue_handlers.finalize(world.deps, [QueueRecord("f", json.dumps(finalization))])
    job = world.store.get_job(request_id)
    assert job is not None and job.status == JobStatus.COMPLETED_WITH_ERRORS
    deliver(world, grouped(queues.take(queues.hooks_url))[0])
    # a retry of the eleven failed rows: its message, then a slice's handover
    job_actions.retry_failed(world.deps, request_id)
    (retry,) = grouped(queues.take(queues.ingest_url))
    queue_handlers.ingest(world.deps, [QueueRecord("r", json.dumps(retry))])
    assert len(grouped(queues.take(queues.rows_url))) == 10
    (handover,) = grouped(queues.take(queues.ingest_url))
    assert handover[ingest.HANDOVER] == request_id
    # and a cancel, carried out by the finalizer
    job = world.store.get_job(request_id)
    assert job is not None
    cancel.request_cancel(world.deps, job)
    (cancelling,) = grouped(queues.take(queues.finalize_url))
    assert cancelling[cancel.CANCEL] is True
