"""At-least-once on the emulator: lost messages repaired by the scheduled sweeper, lifecycle
events read back from EventBridge, retry of failed images and webhook redelivery over the
API, and fifty jobs submitted at once."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from local_emulator.stack import Emulator
from tests.e2e.emulator_support import SAMPLES, keyed
from tests.e2e.test_pipeline_e2e import TERMINAL, upload, wait_terminal
from tests.support.emulator import running_emulator
from tests.support.servers import WebhookReceiver, image_host

HEADER = "S. No.,Product Name,Input Image Urls\n"
FAST = {"WEBHOOK_RETRY_SCHEDULE": "1,1,1", "STALL_AFTER": "4", "FINALIZE_LEASE": "4"}


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with running_emulator(
        FAST,
        schedule_scale=1 / 100,
        # fifty jobs at once, and their status polls, from one tenant
        parameter_overrides={"TenantBurstLimit": "400", "TenantRateLimit": "400"},
    ) as emu:
        yield emu


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    shutil.copy(SAMPLES / "images" / "mug.jpg", root / "mug.jpg")
    return root


@pytest.fixture(scope="module")
def images(image_dir: Path) -> Iterator[str]:
    with image_host(image_dir) as url:
        yield url


def products(images: str, rows: int, name: str = "mug.jpg") -> str:
    return HEADER + "".join(f"{n},Item {n},{images}/{name}\n" for n in range(1, rows + 1))


def wait_until(predicate: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def status(emulator: Emulator, request_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = (
        keyed(emulator)
        .get(f"{emulator.api_url}/api/getProcessingStatus/{request_id}", timeout=10)
        .json()
    )
    return answer


def test_lost_row_messages_are_resent_by_the_scheduled_sweeper(
    emulator: Emulator, images: str
) -> None:
    """Purge the rows queue as the fan-out happens (every message lost, as if the queue was
    emptied by hand); the sweeper notices the job stopped moving and sends the rows again."""
    sqs = emulator.sqs_client()
    rows_queue = emulator.environment["ROWS_QUEUE_URL"]
    rows_queue_name = rows_queue.rsplit("/", 1)[1]
    dispatcher = emulator.dispatcher
    assert dispatcher is not None
    dispatcher.disable(rows_queue_name)
    time.sleep(1.5)  # a poll already waiting on the queue ends
    try:
        request_id = upload(emulator, products(images, 12))
        wait_until(lambda: status(emulator, request_id)["status"] == "processing")
        wait_until(
            lambda: (
                int(
                    sqs.get_queue_attributes(
                        QueueUrl=rows_queue, AttributeNames=["ApproximateNumberOfMessages"]
                    )["Attributes"]["ApproximateNumberOfMessages"]
                )
                == 12
            )
        )
        sqs.purge_queue(QueueUrl=rows_queue)
    finally:
        dispatcher.enable(rows_queue_name)
    doc = wait_terminal(emulator, request_id, timeout=120)
    assert doc["status"] == "completed"
    assert doc["progress"]["processedProducts"] == 12 == doc["progress"]["totalProducts"]


def test_lifecycle_events_reach_eventbridge(emulator: Emulator, images: str) -> None:
    events = emulator.session().client("events", endpoint_url=emulator.storage_url)
    sqs = emulator.sqs_client()
    bus = emulator.environment["EVENT_BUS_NAME"]
    queue_url = sqs.create_queue(QueueName="job-events-tap")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    events.put_rule(
        Name="tap", EventBusName=bus, EventPattern=json.dumps({"source": ["image-pipeline"]})
    )
    events.put_targets(Rule="tap", EventBusName=bus, Targets=[{"Id": "q", "Arn": queue_arn}])

    request_id = upload(emulator, products(images, 2))
    assert wait_terminal(emulator, request_id)["status"] == "completed"
    seen: list[dict[str, Any]] = []

    def both_arrived() -> bool:
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        seen.extend(json.loads(m["Body"]) for m in answer.get("Messages", []))
        mine = [e for e in seen if e["detail"]["requestId"] == request_id]
        return {e["detail-type"] for e in mine} >= {"job.accepted", "job.completed"}

    wait_until(both_arrived, timeout=30)
    mine = [e for e in seen if e["detail"]["requestId"] == request_id]
    assert sorted(e["detail-type"] for e in mine) == ["job.accepted", "job.completed"]
    completed = next(e for e in mine if e["detail-type"] == "job.completed")
    assert completed["source"] == "image-pipeline"
    assert completed["detail"]["progress"]["processedImages"] == 2


def test_retry_failed_images_and_redeliver_the_webhook(
    emulator: Emulator, images: str, image_dir: Path, receiver: WebhookReceiver
) -> None:
    text = HEADER + f'1,Mug,{images}/mug.jpg\n2,Later,"{images}/mug.jpg,{images}/later.jpg"\n'
    request_id = upload(emulator, text, receiver.url)
    first = wait_terminal(emulator, request_id)
    assert first["status"] == "completed_with_errors"
    assert first["progress"]["failedImages"] == 1
    api = emulator.api_url

    wait_until(lambda: status(emulator, request_id)["webhook"]["state"] == "delivered")
    shutil.copy(image_dir / "mug.jpg", image_dir / "later.jpg")
    retried = keyed(emulator).post(f"{api}/api/jobs/{request_id}/retry", timeout=10)
    assert retried.status_code == 202, retried.text
    assert retried.json()["generation"] == 1
    second = wait_terminal(emulator, request_id)
    wait_until(lambda: len(receiver.deliveries) >= 2)
    assert second["status"] == "completed" and second["generation"] == 1
    assert second["progress"]["failedImages"] == 0
    types = [json.loads(d.body)["type"] for d in receiver.deliveries]
    assert types == ["job.completed_with_errors", "job.completed"]
    ids = [d.headers["webhook-id"] for d in receiver.deliveries]
    assert ids[0] != ids[1]

    again = keyed(emulator).post(f"{api}/api/jobs/{request_id}/webhook/redeliver", timeout=10)
    assert again.status_code == 202, again.text
    wait_until(lambda: len(receiver.deliveries) >= 3)
    assert receiver.deliveries[2].headers["webhook-id"] == ids[1]
    assert all(d.verified for d in receiver.deliveries)
    wait_until(lambda: status(emulator, request_id)["webhook"]["state"] == "delivered")

    nothing = keyed(emulator).post(f"{api}/api/jobs/{request_id}/retry", timeout=10)
    assert nothing.status_code == 409
    assert "no failed images" in nothing.json()["error"]


def test_fifty_jobs_at_once_all_end_with_nothing_lost(emulator: Emulator, images: str) -> None:
    def submit(n: int) -> str:
        return upload(emulator, products(images, 1 + n % 3))

    with ThreadPoolExecutor(max_workers=10) as pool:
        ids = list(pool.map(submit, range(50)))
    assert len(set(ids)) == 50
    docs = [wait_terminal(emulator, request_id, timeout=240) for request_id in ids]
    for n, doc in enumerate(docs):
        assert doc["status"] == "completed", doc
        rows = 1 + n % 3
        progress = doc["progress"]
        assert progress["totalProducts"] == progress["processedProducts"] == rows
        assert progress["processedImages"] == rows and progress["failedImages"] == 0
        assert [p["serialNumber"] for p in doc["products"]] == list(range(1, rows + 1))
    assert {d["status"] for d in docs} <= TERMINAL
