"""A job deleted while its rows are queued, through the emulator: a 200-row job whose images
are held back is cancelled and deleted while one poller works on its first batch (images in
flight until the deletion is done) and the rest of its rows wait in the queue. Its queued
rows are let go (acknowledged and counted, never failures), the images in flight leave no
output behind, a small job submitted after it completes, and every queue, dead-letter
queues included, is empty, all within a minute."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from local_emulator.stack import Emulator
from tests.e2e.emulator_support import keyed
from tests.e2e.test_pipeline_e2e import HEADER, upload, wait_terminal
from tests.support.emulator import running_emulator
from tests.support.metrics import EmittedMetrics, emitted_metrics
from tests.support.servers import SlowImageHost, slow_image_host
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

ROWS = 200
HOLD_SECONDS = 6.0  # at most; a byte every 0.25 s keeps the fetch under its read timeout


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    """One poller of the rows queue: the big job's first batch holds it while the others
    wait in the queue, so they are received after the deletion."""
    with running_emulator(workers=1) as emu:
        yield emu


@pytest.fixture(scope="module")
def host() -> Iterator[tuple[str, SlowImageHost]]:
    """`/slow/...` sends its headers, then a byte at a time until released; `/fast/...` at
    once."""
    with slow_image_host(HOLD_SECONDS) as slow:
        yield slow.url, slow


def queue_depths(emulator: Emulator) -> dict[str, int]:
    """Messages each queue holds (visible, in flight and delayed), by logical id."""
    sqs = emulator.sqs_client()
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    depths = {}
    for logical_id, queue in emulator.stack.queues.items():
        attributes = sqs.get_queue_attributes(QueueUrl=queue.url, AttributeNames=names)
        depths[logical_id] = sum(int(attributes["Attributes"].get(n, 0)) for n in names)
    return depths


def test_a_job_deleted_with_rows_queued_delays_no_job_and_leaves_every_queue_empty(
    emulator: Emulator, host: tuple[str, SlowImageHost]
) -> None:
    with emitted_metrics(emulator) as metrics:
        delete_with_rows_queued(emulator, host, metrics)


def delete_with_rows_queued(
    emulator: Emulator, host: tuple[str, SlowImageHost], metrics: EmittedMetrics
) -> None:
    base, state = host
    api = keyed(emulator)
    big = upload(
        emulator, HEADER + "".join(f"{n},P{n},{base}/slow/{n}.jpg\n" for n in range(1, ROWS + 1))
    )
    assert state.slow_asked.wait(30), "the big job's first image was never asked for"
    assert api.post(f"{emulator.api_url}/api/jobs/{big}/cancel", timeout=10).status_code == 202
    status_url = f"{emulator.api_url}/api/getProcessingStatus/{big}"
    assert wait_until(
        lambda: api.get(status_url, timeout=10).json()["status"] == "cancelled", timeout=30
    )
    start = time.monotonic()
    deleted = api.delete(f"{emulator.api_url}/api/jobs/{big}", timeout=30)
    assert deleted.status_code == 204, deleted.text
    state.released.set()  # the images in flight end now, after the deletion: stored, then?

    small = upload(emulator, HEADER + "".join(f"{n},S{n},{base}/fast/{n}.jpg\n" for n in (1, 2, 3)))
    assert wait_terminal(emulator, small, timeout=60)["status"] == "completed"
    assert wait_until(lambda: not any(queue_depths(emulator).values()), timeout=60, step=0.5), (
        queue_depths(emulator)
    )
    took = time.monotonic() - start
    assert took < 60, f"{took:.1f}s"

    gone = api.get(status_url, timeout=10)
    assert gone.status_code == 404
    s3 = emulator.s3_client()
    outputs = emulator.stack.buckets["OutputsBucket"].name
    # every message handled (no queue holds one in flight), so every image in flight is done
    listed = s3.list_objects_v2(Bucket=outputs, Prefix=f"outputs/{big}/")
    left = [item["Key"] for item in listed.get("Contents", [])]
    assert left == []  # the images in flight at the deletion left nothing behind
    counted = int(metrics.total("MessagesForGoneJobs"))
    print(f"deleted with rows queued: {counted} message(s) let go; all quiet in {took:.1f}s")
    assert counted >= ROWS // 2  # most of its rows were still queued: let go, not failed
