"""The rows handler's answer (`queue_handlers.rows`, what the worker's SQS entrypoint returns):
each failed message reported by its own id, whatever else its batch holds. A failure reported
against another message's id deletes the failed one (its row is never done) and reports the
other twice."""

from __future__ import annotations

import io
import json

import pytest
from chalicelib.entrypoints import queue_handlers
from chalicelib.entrypoints.queue_handlers import QueueRecord
from chalicelib.services import upload
from PIL import Image

from tests.fakes import FakeWorld, make_world

HEADER = "S. No.,Product Name,Input Image Urls\n"


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 40, 90)).save(out, "JPEG")
    return out.getvalue()


def _row_message(world: FakeWorld, url: str) -> tuple[str, str]:
    """A one-row job's id and its row message's body, as the ingest sent it."""
    accepted = upload.submit_csv(
        world.deps, (HEADER + f"1,A,{url}\n").encode(), None, None, "default"
    )
    created = {
        "eventName": "ObjectCreated:Put",
        "s3": {
            "bucket": {"name": "uploads"},
            "object": {"key": accepted.job.input_key, "size": 10, "eTag": "abc"},
        },
    }
    queue_handlers.ingest(world.deps, [QueueRecord("s3", json.dumps({"Records": [created]}))])
    (message,) = world.rows_queue.drain()
    return accepted.job.request_id, json.dumps(message.body)


@pytest.mark.parametrize(
    "order",
    [
        ("malformed", "failing", "fine"),
        ("fine", "malformed", "failing"),
        ("failing", "fine", "malformed"),
    ],
)
def test_a_malformed_and_a_failing_message_are_each_reported_by_their_own_id(
    order: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    world = make_world()
    world.fetcher.responses = {"https://a.test/f.jpg": _jpeg(), "https://a.test/ok.jpg": _jpeg()}
    failing_job, failing_body = _row_message(world, "https://a.test/f.jpg")
    fine_job, fine_body = _row_message(world, "https://a.test/ok.jpg")
    put_bytes = world.outputs.put_bytes

    def down_for_one_job(key: str, *args: object, **kwargs: object) -> None:
        if failing_job in key:
            raise ConnectionError("storage is down for this job's outputs")
        put_bytes(key, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(world.outputs, "put_bytes", down_for_one_job)
    bodies = {
        "malformed": json.dumps({"requestId": "x"}),
        "failing": failing_body,
        "fine": fine_body,
    }

    answer = queue_handlers.rows(world.deps, [QueueRecord(name, bodies[name]) for name in order])

    reported = sorted(failure["itemIdentifier"] for failure in answer["batchItemFailures"])
    assert reported == ["failing", "malformed"]
    fine, failing = world.store.get_job(fine_job), world.store.get_job(failing_job)
    assert fine is not None and fine.progress.processed_products == 1
    assert failing is not None and failing.progress.processed_products == 0
