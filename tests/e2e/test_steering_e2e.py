"""Steering a job through the emulator: a job whose images are slow is cancelled while some of
them are being fetched. It ends `cancelled` with exactly one `job.cancelled` webhook (its
signature verified); no image starts after the cancel, not even once the slow ones come back;
the counters stay as they were at the cancel; cancelling or retrying it again is a 409.
Deleting it removes its outputs from storage (a GET of an output is then a 403, as the CDN
answers for a missing object of a private bucket), its
uploaded CSV and its records (its status is a 404)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from chalicelib.services.cancel_watch import CANCEL_CHECK_SECONDS

from local_emulator.stack import Emulator
from tests.e2e.emulator_support import keyed
from tests.e2e.test_pipeline_e2e import HEADER, upload
from tests.support.emulator import running_emulator
from tests.support.servers import SlowImageHost, WebhookReceiver, slow_image_host
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

ROWS = 30  # three batches of ten; one poller takes one batch at a time
HOLD_SECONDS = 6.0  # at most; a byte every 0.25 s keeps the fetch under its read timeout


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    """One poller of the rows queue: one batch is in the worker at a time, so the rows of
    the batches behind it can only start after the cancel."""
    with running_emulator(workers=1) as emu:
        yield emu


@pytest.fixture(scope="module")
def host() -> Iterator[tuple[SlowImageHost, str]]:
    """`/fast/...` answers at once; `/slow/...` sends its headers and a byte at a time until
    released, then the rest."""
    with slow_image_host(HOLD_SECONDS) as slow:
        yield slow, slow.url


def status_of(emulator: Emulator, request_id: str) -> dict[str, Any]:
    """Every product of the job (one page holds them)."""
    response = keyed(emulator).get(
        f"{emulator.api_url}/api/getProcessingStatus/{request_id}?limit=1000", timeout=10
    )
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def test_a_slow_job_cancelled_ends_cancelled_once_and_its_deletion_removes_it(
    emulator: Emulator, host: tuple[SlowImageHost, str], receiver: WebhookReceiver
) -> None:
    state, base = host
    api = keyed(emulator)
    rows = "".join(
        f"{n},Product {n},{base}/{'fast' if n % 2 else 'slow'}/{n}.jpg\n"
        for n in range(1, ROWS + 1)
    )
    request_id = upload(emulator, HEADER + rows, webhook=receiver.url)

    def fast_recorded_and_slow_started() -> bool:
        products = status_of(emulator, request_id)["products"]
        done = sum(p["status"] == "completed" for p in products)
        return done > 0 and state.slow_started() > 0

    assert wait_until(fast_recorded_and_slow_started, timeout=30), "no image started"
    cancelled = api.post(f"{emulator.api_url}/api/jobs/{request_id}/cancel", timeout=10)
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["requestId"] == request_id

    # The cancel is carried out while the slow images are still on the wire.
    assert wait_until(
        lambda: status_of(emulator, request_id)["status"] == "cancelled", timeout=5
    ), "the cancel was not carried out while the slow images were held"
    at_cancel = status_of(emulator, request_id)
    fetched_at_cancel = state.fetched()
    # The batch holding the slow images looks again every CANCEL_CHECK_SECONDS whether its
    # job was cancelled: the images of its rows still waiting for a thread do not start.
    time.sleep(2 * CANCEL_CHECK_SECONDS)
    state.released.set()  # the slow images come back; their rows were cancelled meanwhile
    assert wait_until(lambda: sum(state.served.values()) == state.fetched(), timeout=15)
    (delivery,) = receiver.wait_for(1, timeout=30)
    time.sleep(2.0)  # what a late record, a second webhook or a new fetch would need

    final = status_of(emulator, request_id)
    assert final["status"] == "cancelled"
    assert final["progress"] == at_cancel["progress"]  # the counters stayed as they were
    assert state.fetched() == fetched_at_cancel < ROWS  # nothing started after it
    statuses = Counter(p["status"] for p in final["products"])
    assert set(statuses) == {"completed", "cancelled"}, statuses
    assert final["progress"]["processedProducts"] == statuses["completed"]
    assert final["progress"]["failedImages"] == 0
    for product in final["products"]:
        if product["status"] == "cancelled":
            assert not any(product["outputImageUrls"]), product
    assert final["outputCsvUrl"]

    assert len(receiver.deliveries) == 1 and delivery.verified
    event = json.loads(delivery.body)
    assert event["type"] == "job.cancelled"
    assert event["data"]["requestId"] == request_id and event["data"]["status"] == "cancelled"
    assert event["data"]["progress"] == final["progress"]

    for path in (f"/api/jobs/{request_id}/cancel", f"/api/jobs/{request_id}/retry"):
        again = api.post(f"{emulator.api_url}{path}", timeout=10)
        assert again.status_code == 409, (path, again.text)
        assert "cancelled" in again.json()["error"]

    # -- delete ---------------------------------------------------------------------------
    outputs_bucket = emulator.environment["OUTPUTS_BUCKET"]
    s3 = emulator.s3_client()
    prefix = f"outputs/{request_id}/"
    stored = s3.list_objects_v2(Bucket=outputs_bucket, Prefix=prefix).get("KeyCount", 0)
    assert stored >= statuses["completed"] + 1  # the images done and the output CSV
    image_url = next(
        p["outputImageUrls"][0] for p in final["products"] if p["status"] == "completed"
    )
    assert requests.get(image_url, timeout=10).status_code == 200

    deleted = api.delete(f"{emulator.api_url}/api/jobs/{request_id}", timeout=30)
    assert deleted.status_code == 204, deleted.text
    assert s3.list_objects_v2(Bucket=outputs_bucket, Prefix=prefix).get("KeyCount", 0) == 0
    # through the CDN a missing object is a 403, as CloudFront answers for a private bucket
    # whose policy grants the distribution no s3:ListBucket
    assert requests.get(image_url, timeout=10).status_code == 403
    uploads = s3.list_objects_v2(Bucket=emulator.uploads_bucket, Prefix="incoming/")
    assert f"incoming/{request_id}.csv" not in [o["Key"] for o in uploads.get("Contents", [])]
    gone = api.get(f"{emulator.api_url}/api/getProcessingStatus/{request_id}", timeout=10)
    assert gone.status_code == 404 and gone.json()["error"]
    assert api.delete(f"{emulator.api_url}/api/jobs/{request_id}", timeout=10).status_code == 404
    listing = api.get(f"{emulator.api_url}/api/jobs", timeout=10).json()
    assert request_id not in [job["requestId"] for job in listing["jobs"]]


def test_the_jobs_list_is_newest_first_paged_and_filtered_by_status(
    emulator: Emulator, host: tuple[SlowImageHost, str]
) -> None:
    """Three jobs of the tenant, one page of one job at a time through `nextCursor`: each of
    them once, newest first; `status=` keeps only that status; bad parameters are 400s
    naming the field."""
    _, base = host
    api = keyed(emulator)
    mine = []
    for n in range(3):
        mine.append(upload(emulator, HEADER + f"1,Listed {n},{base}/fast/list-{n}.jpg\n"))
        time.sleep(0.01)  # distinct creation times (milliseconds in the listing)
    for request_id in mine:
        assert wait_until(
            lambda r=request_id: status_of(emulator, r)["status"] == "completed", timeout=60
        )

    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        params = {"limit": "1", **({"cursor": cursor} if cursor else {})}
        answer = api.get(f"{emulator.api_url}/api/jobs", params=params, timeout=10)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert len(page["jobs"]) <= 1
        seen += page["jobs"]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    ids = [job["requestId"] for job in seen]
    assert len(ids) == len(set(ids))  # no job twice across pages
    assert [i for i in ids if i in mine] == mine[::-1]  # all three, newest first
    created = [job["createdAt"] for job in seen]
    assert created == sorted(created, reverse=True)
    for job in seen:
        assert set(job) >= {"requestId", "status", "createdAt", "updatedAt", "progress"}

    completed = api.get(f"{emulator.api_url}/api/jobs?status=completed&limit=100", timeout=10)
    assert completed.status_code == 200
    assert {j["status"] for j in completed.json()["jobs"]} == {"completed"}
    assert set(mine) <= {j["requestId"] for j in completed.json()["jobs"]}
    failed = api.get(f"{emulator.api_url}/api/jobs?status=failed", timeout=10).json()
    assert not set(mine) & {j["requestId"] for j in failed["jobs"]}

    for query, field in (("status=done", "status"), ("limit=0", "limit"), ("limit=x", "limit")):
        bad = api.get(f"{emulator.api_url}/api/jobs?{query}", timeout=10)
        assert bad.status_code == 400, (query, bad.text)
        assert bad.json()["error"] and field in {d.get("field") for d in bad.json()["details"]}
