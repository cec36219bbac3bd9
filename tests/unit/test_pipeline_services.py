"""The services on in-memory fakes: upload, ingest, worker, finalizer, webhook, status."""

from __future__ import annotations

import csv
import io
import itertools
import json
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import pytest
from chalicelib import imaging
from chalicelib.config import Settings
from chalicelib.domain.budget import Budget, OutOfTime
from chalicelib.domain.models import ImageErrorCode, JobStatus, RowStatus, WebhookState
from chalicelib.domain.output_options import OutputFormat, OutputOptions
from chalicelib.domain.timefmt import parse_iso
from chalicelib.entrypoints import queue_handlers
from chalicelib.entrypoints.queue_handlers import QueueRecord
from chalicelib.errors import Conflict, CsvInvalid, ImageFailure, InvalidRequest, NotFound
from chalicelib.services import finalize, ingest, rows_batch, status, upload, webhooks
from chalicelib.services.row_messages import RowTask
from PIL import Image
from standardwebhooks.webhooks import Webhook

from tests.fakes import FakeWorld, make_world

HEADER = "S. No.,Product Name,Input Image Urls\n"


def jpeg(width: int = 64, height: int = 48, quality: int = 95) -> bytes:
    out = io.BytesIO()
    image = Image.new("RGB", (width, height))
    image.putdata(
        [((x * 4) % 256, (y * 5) % 256, (x * y) % 256) for y in range(height) for x in range(width)]
    )
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def storage_record(key: str, etag: str = "abc", n: int = 0) -> QueueRecord:
    body = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": "uploads"},
                    "object": {"key": key, "size": 10, "eTag": etag},
                },
            }
        ]
    }
    return QueueRecord(f"s3-{n}", json.dumps(body))


def drain(world: FakeWorld[Any]) -> None:
    """Deliver every queued message to its handler until all queues are empty (Lambda-like);
    a delayed message once the fake clock has moved past its DelaySeconds."""
    deps = world.deps
    for _ in range(1000):
        moved = False
        for queue, handler in (
            (world.rows_queue, queue_handlers.rows),
            (world.finalize_queue, queue_handlers.finalize),
            (world.webhook_queue, queue_handlers.webhooks),
        ):
            sent = queue.drain()
            for start in range(0, len(sent), 10):
                batch = sent[start : start + 10]
                world.clock.advance(max(m.delay_seconds for m in batch))
                records = [QueueRecord(f"m{i}", json.dumps(m.body)) for i, m in enumerate(batch)]
                handler(deps, records)
                moved = True
        if not moved:
            return
    raise AssertionError("queues never drained")


def submit(world: FakeWorld[Any], text: str, webhook: str | None = None) -> str:
    accepted = upload.submit_csv(world.deps, text.encode(), webhook, None, "default")
    key = accepted.job.input_key
    queue_handlers.ingest(world.deps, [storage_record(key)])
    return accepted.job.request_id


def test_submit_stores_csv_under_incoming_and_records_pending_job() -> None:
    world = make_world()
    accepted = upload.submit_csv(
        world.deps,
        (HEADER + "1,Shirt,https://img.test/a.jpg\n").encode(),
        "https://hook.test/x",
        None,
        "default",
    )
    job = world.store.get_job(accepted.job.request_id)
    assert job is not None and job.status == JobStatus.PENDING
    assert job.webhook_url == "https://hook.test/x"
    assert world.uploads.objects[f"incoming/{job.request_id}.csv"][1] == "text/csv"


def test_submit_reports_every_problem_and_stores_nothing() -> None:
    world = make_world()
    text = HEADER + "1,,https://a.test/x.jpg\nx,Shoe,https://a.test/y.jpg\n3,Hat,ftp://a.test/z\n"
    with pytest.raises(CsvInvalid) as info:
        upload.submit_csv(world.deps, text.encode(), None, None, "default")
    rows = sorted(p.row for p in info.value.problems)
    assert rows == [2, 3, 4]
    assert world.uploads.objects == {} and world.store.jobs == {}


def test_refused_webhook_url_is_a_400() -> None:
    world = make_world()
    with pytest.raises(InvalidRequest, match="webhookUrl"):
        upload.submit_csv(
            world.deps, (HEADER + "1,A,https://a.test/x.jpg\n").encode(), "ftp://x", None, "default"
        )


def test_idempotency_key_same_body_same_job_other_body_conflict() -> None:
    world = make_world()
    body = (HEADER + "1,A,https://a.test/x.jpg\n").encode()
    first = upload.submit_csv(world.deps, body, None, "key-1", "default")
    again = upload.submit_csv(world.deps, body, None, "key-1", "default")
    assert again.job.request_id == first.job.request_id and not again.created
    assert len(world.uploads.objects) == 1
    with pytest.raises(Conflict):
        upload.submit_csv(
            world.deps, body + b"2,B,https://a.test/y.jpg\n", None, "key-1", "default"
        )


def test_ingest_writes_rows_in_serial_order_and_fans_out_one_message_per_row() -> None:
    world = make_world()
    rows = [(7, "G"), (2, "B"), (5, "E"), (1, "A")]
    text = HEADER + "".join(f"{s},{n},https://a.test/{s}.jpg\n" for s, n in rows)
    request_id = submit(world, text)
    job = world.store.get_job(request_id)
    assert job is not None and job.status == JobStatus.PROCESSING
    assert job.progress.total_products == 4 and job.progress.total_images == 4
    stored = list(world.store.iter_rows(request_id))
    assert [r.serial for r in stored] == [1, 2, 5, 7]
    assert [r.position for r in stored] == [0, 1, 2, 3]
    sent = [m.body for m in world.rows_queue.sent]
    assert sorted((m["serialNumber"], m["position"]) for m in sent) == [
        (1, 0),
        (2, 1),
        (5, 2),
        (7, 3),
    ]


def _log_ingest_steps(world: FakeWorld) -> list[tuple[str, object]]:
    """What the ingest does, in order: chunks stored, message batches sent, marks recorded."""
    steps: list[tuple[str, object]] = []
    store, queue = world.store, world.rows_queue
    insert, send, mark = store.insert_rows, queue.send_batch, store.record_fanout

    def insert_rows(request_id: str, chunk: int, rows: Any) -> None:
        steps.append(("stored", chunk))
        insert(request_id, chunk, rows)

    def send_batch(bodies: Any, delay_seconds: int = 0) -> None:
        steps.append(("sent", [b["position"] for b in bodies]))
        send(bodies, delay_seconds)

    def record_fanout(request_id: str, sent: int, done: bool, now: Any) -> None:
        steps.append(("done" if done else "mark", sent))
        mark(request_id, sent, done, now)

    store.insert_rows = insert_rows  # type: ignore[method-assign]
    queue.send_batch = send_batch  # type: ignore[method-assign]
    store.record_fanout = record_fanout  # type: ignore[method-assign]
    return steps


def test_each_chunk_is_sent_as_soon_as_it_is_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers start on the first chunk while the rest is written; the job is `processing`
    with its totals before the first message, and its rows count as all written at the end."""
    monkeypatch.setattr(ingest, "FANOUT_MARK", 3)
    world = make_world()
    world.deps.settings = replace(world.deps.settings, rows_per_chunk=2)
    steps = _log_ingest_steps(world)
    text = HEADER + "".join(f"{s},P{s},https://a.test/{s}.jpg\n" for s in range(1, 6))
    upload_job = upload.submit_csv(world.deps, text.encode(), None, None, "default").job
    accepted: list[tuple[JobStatus, int, bool]] = []
    first_send = world.rows_queue.send_batch

    def send_batch(bodies: Any, delay_seconds: int = 0) -> None:
        job = world.store.get_job(upload_job.request_id)
        assert job is not None
        accepted.append((job.status, job.progress.total_products, job.rows_written))
        first_send(bodies, delay_seconds)

    world.rows_queue.send_batch = send_batch  # type: ignore[method-assign]
    queue_handlers.ingest(world.deps, [storage_record(upload_job.input_key)])
    assert steps == [
        ("stored", 0),
        ("sent", [0, 1]),
        ("stored", 1),
        ("sent", [2, 3]),
        ("mark", 4),
        ("stored", 2),
        ("sent", [4]),
        ("done", 5),
    ]
    assert accepted[0] == (JobStatus.PROCESSING, 5, False)
    job = world.store.get_job(upload_job.request_id)
    assert job is not None and job.rows_written and job.fanout_done


def test_the_fan_out_mark_never_passes_a_chunk_not_yet_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A file in reverse serial order fills its last chunk first: the mark waits until every
    chunk before it went out, so a run that takes over resends nothing it should not skip."""
    monkeypatch.setattr(ingest, "FANOUT_MARK", 1)
    world = make_world()
    world.deps.settings = replace(world.deps.settings, rows_per_chunk=2)
    steps = _log_ingest_steps(world)
    text = HEADER + "".join(f"{s},P{s},https://a.test/{s}.jpg\n" for s in range(6, 0, -1))
    submit(world, text)
    assert steps == [
        ("stored", 2),
        ("sent", [4, 5]),
        ("stored", 1),
        ("sent", [2, 3]),
        ("stored", 0),
        ("sent", [0, 1]),
        ("done", 6),
    ]


def test_duplicate_storage_event_starts_nothing_new() -> None:
    world = make_world()
    request_id = submit(world, HEADER + "1,A,https://a.test/x.jpg\n")
    assert len(world.rows_queue.sent) == 1
    queue_handlers.ingest(world.deps, [storage_record(f"incoming/{request_id}.csv")])
    assert len(world.rows_queue.sent) == 1


def test_any_csv_dropped_in_bucket_becomes_a_job_with_a_stable_id() -> None:
    world = make_world()
    world.uploads.put_bytes(
        "incoming/team a/products.csv", (HEADER + "1,A,https://a.test/x.jpg\n").encode(), "text/csv"
    )
    record = storage_record("incoming/team+a/products.csv", etag="e1")  # S3 encodes the key
    queue_handlers.ingest(world.deps, [record])
    queue_handlers.ingest(world.deps, [record])
    assert len(world.store.jobs) == 1
    job = next(iter(world.store.jobs.values()))
    assert job.source == "bucket" and job.input_key == "incoming/team a/products.csv"
    assert len(world.rows_queue.sent) == 1


def test_s3_test_event_and_keys_outside_incoming_are_ignored() -> None:
    world = make_world()
    test_event = QueueRecord("t", json.dumps({"Event": "s3:TestEvent", "Bucket": "uploads"}))
    result = queue_handlers.ingest(world.deps, [test_event, storage_record("other/x.csv")])
    assert result == {"batchItemFailures": []}
    assert world.store.jobs == {}


def test_invalid_csv_dropped_in_bucket_fails_the_job_with_details_and_webhook() -> None:
    world = make_world()
    world.uploads.put_bytes("incoming/bad.csv", b"Name,Other\nx,y\n", "text/csv")
    queue_handlers.ingest(world.deps, [storage_record("incoming/bad.csv")])
    job = next(iter(world.store.jobs.values()))
    assert job.status == JobStatus.FAILED
    assert job.errors and all("row" in e and "message" in e for e in job.errors)
    assert world.rows_queue.sent == []


def test_full_run_compresses_images_and_finalizes_once() -> None:
    world = make_world()
    big = jpeg(120, 80)
    world.fetcher.responses = {"https://a.test/1.jpg": big, "https://a.test/2.jpg": jpeg(30, 60)}
    text = HEADER + (
        '1,Shirt,"https://a.test/1.jpg, https://a.test/2.jpg"\n2,Socks,https://a.test/1.jpg\n'
    )
    request_id = submit(world, text, webhook="https://hook.test/h")
    drain(world)
    job = world.store.get_job(request_id)
    assert job is not None and job.status == JobStatus.COMPLETED
    assert job.progress.processed_products == 2 and job.progress.processed_images == 3
    key = f"outputs/{request_id}/1/0.jpg"
    data, ctype = world.outputs.objects[key]
    assert ctype == "image/jpeg" and len(data) < len(big)
    assert Image.open(io.BytesIO(data)).size == (120, 80)
    table = list(csv.reader(io.StringIO(world.outputs.objects[job.output_csv_key][0].decode())))
    assert table[0] == ["S. No.", "Product Name", "Input Image Urls", "Output Image Urls"]
    assert table[1][0] == "1" and len(table[1][3].split(",")) == 2
    assert len(world.sender.posts) == 1


def test_same_url_twice_in_a_row_is_fetched_once_and_its_output_repeated() -> None:
    world = make_world()
    world.fetcher.responses = {"https://a.test/1.jpg": jpeg()}
    request_id = submit(world, HEADER + '1,A,"https://a.test/1.jpg,https://a.test/1.jpg"\n')
    drain(world)
    assert world.fetcher.calls == ["https://a.test/1.jpg"]
    row = world.store.list_rows(request_id, 0, 1)[0]
    assert row.output_keys[0] == row.output_keys[1] != ""


def test_redelivered_row_is_counted_once_and_finalization_is_requested_once() -> None:
    world = make_world()
    world.fetcher.responses = {"https://a.test/1.jpg": jpeg()}
    request_id = submit(world, HEADER + "1,A,https://a.test/1.jpg\n")
    message = world.rows_queue.drain()[0].body
    records = [QueueRecord("a", json.dumps(message)), QueueRecord("b", json.dumps(message))]
    assert queue_handlers.rows(world.deps, records) == {"batchItemFailures": []}
    job = world.store.get_job(request_id)
    assert job is not None and job.progress.processed_products == 1
    assert len(world.finalize_queue.sent) == 1


def test_image_failures_are_recorded_with_codes_and_the_rest_goes_on() -> None:
    world = make_world()
    world.fetcher.responses = {
        "https://a.test/ok.jpg": jpeg(),
        "https://a.test/html": b"<html>nope</html>",
        "https://a.test/blocked": ImageFailure(ImageErrorCode.BLOCKED_ADDRESS, "10.0.0.1"),
    }
    text = HEADER + (
        '1,A,"https://a.test/ok.jpg,https://a.test/html"\n'
        "2,B,https://a.test/blocked\n3,C,https://a.test/missing\n"
    )
    request_id = submit(world, text)
    drain(world)
    job = world.store.get_job(request_id)
    assert job is not None and job.status == JobStatus.COMPLETED_WITH_ERRORS
    assert job.progress.failed_images == 3 and job.progress.processed_images == 4
    doc = status.job_status(world.deps, request_id, "default")
    products: list[dict[str, Any]] = doc["products"]  # type: ignore[assignment]
    assert products[0]["outputImageUrls"][1] == "" and products[0]["outputImageUrls"][0]
    assert [e["code"] for e in products[0]["errors"]] == ["not_an_image"]
    assert [e["code"] for e in products[1]["errors"]] == ["blocked_address"]
    assert [e["code"] for e in products[2]["errors"]] == ["http_error"]
    assert products[0]["status"] == RowStatus.FAILED


def test_every_image_failing_ends_the_job_failed() -> None:
    world = make_world()
    request_id = submit(world, HEADER + "1,A,https://a.test/missing\n")
    drain(world)
    job = world.store.get_job(request_id)
    assert job is not None and job.status == JobStatus.FAILED


def test_storage_failure_reports_the_record_for_redelivery_then_succeeds() -> None:
    world = make_world()
    world.fetcher.responses = {"https://a.test/1.jpg": jpeg(), "https://a.test/2.jpg": jpeg()}
    request_id = submit(world, HEADER + "1,A,https://a.test/1.jpg\n2,B,https://a.test/2.jpg\n")
    first, second = (m.body for m in world.rows_queue.drain())
    record = QueueRecord("m-1", json.dumps(first))
    world.outputs.fail_puts = 1  # the first image's output cannot be stored
    assert queue_handlers.rows(world.deps, [record, QueueRecord("m-2", json.dumps(second))]) == {
        "batchItemFailures": [{"itemIdentifier": "m-1"}]
    }
    world.outputs.fail_puts = 1
    # every record of the batch failed: the handler raises, so that nothing is deleted even
    # where the mapping would not honour a partial response (as Powertools does)
    with pytest.raises(queue_handlers.BatchFailed):
        queue_handlers.rows(world.deps, [record])
    assert queue_handlers.rows(world.deps, [record]) == {"batchItemFailures": []}
    job = world.store.get_job(request_id)
    assert job is not None and job.progress.processed_products == 2


def test_malformed_row_message_is_a_batch_item_failure_alone() -> None:
    world = make_world()
    world.fetcher.responses = {"https://a.test/1.jpg": jpeg()}
    submit(world, HEADER + "1,A,https://a.test/1.jpg\n")
    good = QueueRecord("good", json.dumps(world.rows_queue.drain()[0].body))
    bad = QueueRecord("bad", json.dumps({"requestId": "x"}))
    assert queue_handlers.rows(world.deps, [bad, good]) == {
        "batchItemFailures": [{"itemIdentifier": "bad"}]
    }


def test_webhook_is_signed_per_standard_webhooks() -> None:
    world = make_world()
    world.fetcher.responses = {"https://a.test/1.jpg": jpeg()}
    request_id = submit(world, HEADER + "1,A,https://a.test/1.jpg\n", "https://hook.test/h")
    drain(world)
    url, body, headers = world.sender.posts[0]
    assert url == "https://hook.test/h"
    payload = Webhook(world.deps.settings.webhook_secret).verify(body, headers)
    assert payload["type"] == "job.completed"
    assert payload["data"]["requestId"] == request_id
    assert payload["data"]["progress"]["processedImages"] == 1
    assert payload["data"]["outputCsvUrl"]


def test_webhook_retries_on_failure_with_the_same_id_and_records_attempts() -> None:
    world = make_world()
    world.fetcher.responses = {"https://a.test/1.jpg": jpeg()}
    world.sender.answers = [500, None, 302, 204]
    request_id = submit(world, HEADER + "1,A,https://a.test/1.jpg\n", "https://hook.test/h")
    drain(world)
    job = world.store.get_job(request_id)
    assert job is not None
    assert job.webhook.state == WebhookState.DELIVERED and job.webhook.attempts == 4
    assert job.webhook.last_status_code == 204
    assert len({h["webhook-id"] for _, _, h in world.sender.posts}) == 1
    times = [parse_iso(a.at) for a in job.webhook.history]
    waits = [int((later - sooner).total_seconds()) for sooner, later in itertools.pairwise(times)]
    assert waits == list(world.deps.settings.webhook_retry_schedule[:3])


def test_webhook_gives_up_after_the_schedule() -> None:
    world = make_world()
    world.fetcher.responses = {"https://a.test/1.jpg": jpeg()}
    schedule = world.deps.settings.webhook_retry_schedule
    world.sender.answers = [500] * (len(schedule) + 5)
    request_id = submit(world, HEADER + "1,A,https://a.test/1.jpg\n", "https://hook.test/h")
    drain(world)
    job = world.store.get_job(request_id)
    assert job is not None and job.webhook.state == WebhookState.FAILED
    assert job.webhook.attempts == len(schedule) + 1


def test_a_webhook_url_refused_at_delivery_fails_at_once_without_a_post() -> None:
    """The URL passed at submission and resolves to a private address by the end: nothing
    is sent, and no retry is queued (it would be refused again on every attempt)."""
    world = make_world()
    world.fetcher.responses = {"https://a.test/1.jpg": jpeg()}
    request_id = submit(world, HEADER + "1,A,https://a.test/1.jpg\n", "https://hook.test/h")
    world.deps.check_webhook_url = lambda url: "resolves to 10.0.0.7, a private address"
    drain(world)
    job = world.store.get_job(request_id)
    assert job is not None and job.webhook.state == WebhookState.FAILED
    assert [a.error for a in job.webhook.history] == [
        "refused: resolves to 10.0.0.7, a private address"
    ]
    assert world.sender.posts == []
    assert len(world.webhook_queue.history) == 1  # the first attempt's message, no retry


def test_a_webhook_message_for_another_event_of_the_job_is_dropped() -> None:
    """A message with a stale `webhook-id` (an earlier event's retry arriving late) posts
    nothing and records nothing; the current event's message is delivered."""
    world = make_world()
    world.fetcher.responses = {"https://a.test/1.jpg": jpeg()}
    request_id = submit(world, HEADER + "1,A,https://a.test/1.jpg\n", "https://hook.test/h")
    for queue, handler in (
        (world.rows_queue, queue_handlers.rows),
        (world.finalize_queue, queue_handlers.finalize),
    ):
        handler(world.deps, [QueueRecord("m", json.dumps(m.body)) for m in queue.drain()])
    (current,) = [m.body for m in world.webhook_queue.drain()]
    stale = {**current, "webhookId": "msg_" + "0" * 32, "attempt": 2}
    queue_handlers.webhooks(world.deps, [QueueRecord("stale", json.dumps(stale))])
    job = world.store.get_job(request_id)
    assert job is not None
    assert (job.webhook.state, job.webhook.attempts, world.sender.posts) == (
        WebhookState.PENDING,
        0,
        [],
    )
    queue_handlers.webhooks(world.deps, [QueueRecord("current", json.dumps(current))])
    assert [h["webhook-id"] for _, _, h in world.sender.posts] == [current["webhookId"]]


@pytest.mark.parametrize("total", [1, 9, 10, 11, 20, 25])
def test_following_next_cursor_reads_every_product_once_and_no_empty_page(total: int) -> None:
    world = make_world()
    text = HEADER + "".join(f"{n},P{n},https://a.test/{n}.jpg\n" for n in range(1, total + 1))
    request_id = submit(world, text)
    serials: list[int] = []
    cursor: str | None = None
    for _ in range(total + 1):
        page = status.job_status(world.deps, request_id, "default", limit="10", cursor=cursor)
        products: list[dict[str, Any]] = page["products"]  # type: ignore[assignment]
        assert products, f"an empty page at cursor {cursor}"
        serials += [p["serialNumber"] for p in products]
        cursor = page["nextCursor"]  # type: ignore[assignment]
        if cursor is None:
            break
    assert serials == list(range(1, total + 1))


def test_status_pages_products_in_serial_order() -> None:
    world = make_world()
    text = HEADER + "".join(f"{n},P{n},https://a.test/{n}.jpg\n" for n in range(25, 0, -1))
    request_id = submit(world, text)
    first = status.job_status(world.deps, request_id, "default", limit="10")
    assert [p["serialNumber"] for p in first["products"]] == list(range(1, 11))  # type: ignore[attr-defined,index]
    assert first["nextCursor"] == "10" and first["outputCsvUrl"] is None
    last = status.job_status(world.deps, request_id, "default", limit="10", cursor="20")
    assert len(last["products"]) == 5 and last["nextCursor"] is None  # type: ignore[arg-type]
    assert first["progress"]["percent"] == 0.0  # type: ignore[index]


@pytest.mark.parametrize("limit", ["0", "1001", "x", "-1"])
def test_status_refuses_bad_limits(limit: str) -> None:
    world = make_world()
    request_id = submit(world, HEADER + "1,A,https://a.test/1.jpg\n")
    with pytest.raises(InvalidRequest):
        status.job_status(world.deps, request_id, "default", limit=limit)


def test_status_unknown_is_404_and_malformed_is_400() -> None:
    world = make_world()
    with pytest.raises(NotFound):
        status.job_status(world.deps, "00000000-0000-4000-8000-999999999999", "default")
    with pytest.raises(InvalidRequest):
        status.job_status(world.deps, "not-a-uuid", "default")


def test_finalize_twice_writes_one_terminal_state_and_one_webhook() -> None:
    world = make_world()
    world.fetcher.responses = {"https://a.test/1.jpg": jpeg()}
    request_id = submit(world, HEADER + "1,A,https://a.test/1.jpg\n", "https://hook.test/h")
    rows_msgs = world.rows_queue.drain()
    queue_handlers.rows(world.deps, [QueueRecord("r", json.dumps(rows_msgs[0].body))])
    finalize.finalize_job(world.deps, request_id)
    finalize.finalize_job(world.deps, request_id)
    assert len(world.webhook_queue.sent) == 1


def test_event_payload_matches_the_contract() -> None:
    world = make_world()
    world.fetcher.responses = {"https://a.test/1.jpg": jpeg()}
    request_id = submit(world, HEADER + "1,A,https://a.test/1.jpg\n")
    drain(world)
    job = world.store.get_job(request_id)
    assert job is not None
    payload = webhooks.event_payload(world.deps, job)
    assert set(payload) == {"type", "timestamp", "data"}
    assert set(payload["data"]) == {  # type: ignore[arg-type]
        "requestId",
        "status",
        "progress",
        "outputCsvUrl",
        "errors",
        "source",
    }
    assert payload["data"]["source"] == {  # type: ignore[index]
        "bucket": world.deps.settings.uploads_bucket,
        "key": f"incoming/{request_id}.csv",
    }


def test_ingest_parses_percent_encoded_keys() -> None:
    events = ingest.parse_storage_message(
        json.dumps(
            {
                "Records": [
                    {
                        "eventName": "ObjectCreated:Post",
                        "s3": {
                            "bucket": {"name": "b"},
                            "object": {"key": "incoming/a%2Fb+c.csv", "size": 3},
                        },
                    }
                ]
            }
        )
    )
    assert events[0].key == "incoming/a/b c.csv"


# -- output options ----------------------------------------------------------------------------


def picture(width: int, height: int) -> bytes:
    """A smooth colour picture (quick to make at any size) as a quality 90 JPEG."""
    bands = [
        Image.linear_gradient("L").resize((width, height)),
        Image.radial_gradient("L").resize((width, height)),
        Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize((width, height)),
    ]
    out = io.BytesIO()
    Image.merge("RGB", bands).save(out, "JPEG", quality=90)
    return out.getvalue()


def submit_with(world: FakeWorld[Any], text: str, options: OutputOptions) -> str:
    accepted = upload.submit_csv(world.deps, text.encode(), None, None, "default", options=options)
    queue_handlers.ingest(world.deps, [storage_record(accepted.job.input_key)])
    return accepted.job.request_id


def url_path(url: str) -> str:
    return urlsplit(url).path


def test_a_webp_job_with_a_box_stores_webp_outputs_that_fit() -> None:
    world = make_world()
    world.fetcher.responses = {
        "https://a.test/big.jpg": picture(1600, 1200),
        "https://a.test/small.jpg": picture(200, 100),
    }
    text = HEADER + (
        '1,Shirt,"https://a.test/big.jpg, https://a.test/small.jpg"\n2,Socks,https://a.test/big.jpg\n'
    )
    request_id = submit_with(world, text, OutputOptions(OutputFormat.WEBP, max_width=300))
    drain(world)
    job = world.store.get_job(request_id)
    assert job is not None and job.status == JobStatus.COMPLETED
    images = sorted(k for k in world.outputs.objects if k != job.output_csv_key)
    assert images == [f"outputs/{request_id}/1/0.webp", f"outputs/{request_id}/1/1.webp"]
    sizes = []
    for key in images:
        data, content_type = world.outputs.objects[key]
        assert content_type == "image/webp"
        assert world.outputs.cache_control[key] == "public, max-age=31536000, immutable"
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "WEBP"
            sizes.append(image.size)
    assert sizes == [(300, 225), (200, 100)]  # fitted, aspect kept; the small one not enlarged
    doc = status.job_status(world.deps, request_id, "default")
    assert doc["options"] == {"format": "webp", "quality": None, "maxWidth": 300, "maxHeight": None}
    products: list[dict[str, Any]] = doc["products"]  # type: ignore[assignment]
    urls = [url for p in products for url in p["outputImageUrls"]]
    assert len(urls) == 3 and all(url_path(u).endswith(".webp") for u in urls)
    table = list(csv.reader(io.StringIO(world.outputs.objects[job.output_csv_key][0].decode())))
    cells = [u.strip() for row in table[1:] for u in row[3].split(",")]
    assert len(cells) == 3 and all(url_path(u).endswith(".webp") for u in cells)


def test_an_avif_job_with_a_quality_stores_avif_outputs() -> None:
    world = make_world()
    world.fetcher.responses = {"https://a.test/1.jpg": picture(400, 300)}
    request_id = submit_with(
        world, HEADER + "1,A,https://a.test/1.jpg\n", OutputOptions(OutputFormat.AVIF, quality=40)
    )
    drain(world)
    key = f"outputs/{request_id}/1/0.avif"
    data, content_type = world.outputs.objects[key]
    assert content_type == "image/avif"
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "AVIF" and image.size == (400, 300)


def test_outputs_of_the_default_options_are_jpegs_with_a_long_cache_control() -> None:
    world = make_world(Settings(output_retention_days=10))
    world.fetcher.responses = {"https://a.test/1.jpg": jpeg()}
    request_id = submit(world, HEADER + "1,A,https://a.test/1.jpg\n")
    drain(world)
    key = f"outputs/{request_id}/1/0.jpg"
    assert world.outputs.objects[key][1] == "image/jpeg"
    assert world.outputs.cache_control[key] == "public, max-age=864000, immutable"
    job = world.store.get_job(request_id)
    assert job is not None and job.output_csv_key not in world.outputs.cache_control


def test_the_same_url_in_jobs_of_other_formats_is_made_in_each_format() -> None:
    """An output is reused only for the same options: another format is made again."""
    world = make_world()
    world.fetcher.responses = {"https://a.test/1.jpg": jpeg()}
    text = HEADER + "1,A,https://a.test/1.jpg\n"
    as_jpeg = submit(world, text)
    as_webp = submit_with(world, text, OutputOptions(OutputFormat.WEBP))
    drain(world)
    assert world.fetcher.calls == ["https://a.test/1.jpg"] * 2
    assert world.outputs.objects[f"outputs/{as_jpeg}/1/0.jpg"][1] == "image/jpeg"
    assert world.outputs.objects[f"outputs/{as_webp}/1/0.webp"][1] == "image/webp"


def test_the_time_kept_back_per_image_is_the_jobs_formats(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = make_world(
        Settings(
            webhook_secret="whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            download_deadline=1.0,
            max_image_pixels=1_000_000,
        )
    )
    monkeypatch.setitem(imaging.SECONDS_PER_MEGAPIXEL, "avif", 50.0)
    world.fetcher.responses = {"https://a.test/1.jpg": jpeg()}
    text = HEADER + "1,A,https://a.test/1.jpg\n"
    tasks = {}
    for fmt in (OutputFormat.JPEG, OutputFormat.AVIF):
        submit_with(world, text, OutputOptions(fmt))
        (message,) = world.rows_queue.drain()
        tasks[fmt] = RowTask.from_message(message.body)
    # 18 s to spend: a download attempt (1 s) and a JPEG's 0.08 s fit, an AVIF's 50 s do not
    outcomes = rows_batch.process_rows(
        world.deps, [tasks[OutputFormat.JPEG], tasks[OutputFormat.AVIF]], Budget.seconds(20)
    )
    assert outcomes[0] is None
    assert isinstance(outcomes[1], OutOfTime)
    assert world.fetcher.calls == ["https://a.test/1.jpg"]
