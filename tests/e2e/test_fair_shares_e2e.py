"""Fair shares between tenants, through the emulator (issue 22's "done when"): tenant beta's
small job, submitted after tenant alpha's ten jobs of 100 rows, ends while alpha's batch is
still far from done; beta's webhook is not held up by alpha's receiver that hangs. Each test
asserts an order (how far alpha had got when beta was done), not a time;
`benchmarks.fairness` prints the times."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
import requests

from local_emulator.stack import Emulator
from tests.support.emulator import running_emulator
from tests.support.servers import serve, webhook_receiver
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

HEADER = "S. No.,Product Name,Input Image Urls\n"
TERMINAL = {"completed", "completed_with_errors", "failed", "cancelled"}
ALPHA_JOBS, ALPHA_ROWS, BETA_ROWS = 10, 100, 5
SLOW_IMAGE = 0.05  # seconds each of alpha's images takes to come: its batch lasts
TIME_SCALE = 0.5  # a webhook attempt times out after 5 s: long beside a 1-row job


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with running_emulator(tenants=("alpha", "beta"), time_scale=TIME_SCALE) as emu:
        yield emu


def api(emulator: Emulator, tenant: str) -> requests.Session:
    (key,) = [t.api_key for t in emulator.tenants if t.name == tenant]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    return session


def secret(emulator: Emulator, tenant: str) -> str:
    (found,) = [t.webhook_secret for t in emulator.tenants if t.name == tenant]
    return found


def submit(session: requests.Session, emulator: Emulator, csv: str, **data: str) -> str:
    answer = session.post(
        f"{emulator.api_url}/api/uploadAndProcessDocument",
        files={"file": ("p.csv", csv.encode(), "text/csv")},
        data=data,
        timeout=60,
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["requestId"])


def status(session: requests.Session, emulator: Emulator, request_id: str) -> dict[str, Any]:
    for _ in range(20):
        answer = session.get(
            f"{emulator.api_url}/api/getProcessingStatus/{request_id}",
            params={"limit": 1},
            timeout=30,
        )
        if answer.status_code != 429:  # the tenant's throttle: honest, and passing
            assert answer.status_code == 200, answer.text
            doc: dict[str, Any] = answer.json()
            return doc
        time.sleep(1)
    raise AssertionError("throttled throughout")


@contextmanager
def image_host(jpeg: bytes) -> Iterator[str]:
    """Every GET answers the same small JPEG; under /slow/ after SLOW_IMAGE seconds."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            if self.path.startswith("/slow/"):
                time.sleep(SLOW_IMAGE)
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(jpeg)))
            self.end_headers()
            self.wfile.write(jpeg)

    with serve(Handler) as base:
        yield base


def small_jpeg() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(buffer, "JPEG")
    return buffer.getvalue()


def rows(base: str, count: int, tag: str) -> str:
    return HEADER + "".join(f"{n},P{n},{base}/{tag}/{n}.jpg\n" for n in range(1, count + 1))


def test_a_small_job_ends_while_another_tenants_batch_is_far_from_done(
    emulator: Emulator,
) -> None:
    alpha, beta = api(emulator, "alpha"), api(emulator, "beta")
    with image_host(small_jpeg()) as base:
        batch = [
            submit(alpha, emulator, rows(base, ALPHA_ROWS, f"slow/{n}")) for n in range(ALPHA_JOBS)
        ]
        try:
            small = submit(beta, emulator, rows(base, BETA_ROWS, "beta"))
            assert wait_until(lambda: status(beta, emulator, small)["status"] in TERMINAL, 120, 0.2)
            done = sum(status(alpha, emulator, j)["progress"]["processedProducts"] for j in batch)
        finally:
            for request_id in batch:  # the rest of the batch is not this test's business
                alpha.post(f"{emulator.api_url}/api/jobs/{request_id}/cancel", timeout=30)
            wait_until(
                lambda: all(status(alpha, emulator, j)["status"] in TERMINAL for j in batch),
                120,
                0.5,
            )
    assert status(beta, emulator, small)["status"] == "completed"
    # first in, first out, beta's rows would have come after all of alpha's 1,000
    assert done < ALPHA_JOBS * ALPHA_ROWS / 2, f"alpha had {done} rows done when beta ended"


@dataclass
class Hanging:
    """A receiver that never answers: each POST is held until the test ends."""

    arrived: list[float] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    release: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def count(self) -> int:
        with self.changed:
            return len(self.arrived)


@contextmanager
def hanging_receiver() -> Iterator[Hanging]:
    hanging = Hanging()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_POST(self) -> None:
            with hanging.changed:
                hanging.arrived.append(time.monotonic())
                hanging.changed.notify_all()
            hanging.release.wait(120)

    try:
        with serve(Handler) as base:
            hanging.url = f"{base}/hook"
            yield hanging
    finally:
        hanging.release.set()


def test_a_tenants_webhook_is_not_held_up_by_another_tenants_hanging_receivers(
    emulator: Emulator,
) -> None:
    alpha, beta = api(emulator, "alpha"), api(emulator, "beta")
    with (
        image_host(small_jpeg()) as base,
        hanging_receiver() as hangs,
        webhook_receiver(secret(emulator, "beta")) as answers,
    ):
        jobs = [
            submit(alpha, emulator, rows(base, 1, f"a{n}"), webhookUrl=hangs.url) for n in range(6)
        ]
        assert wait_until(
            lambda: all(status(alpha, emulator, j)["status"] in TERMINAL for j in jobs), 60, 0.2
        )
        # the two pollers' first attempts hung until their timeout; the next one has begun
        with hangs.changed:
            assert hangs.changed.wait_for(lambda: len(hangs.arrived) >= 3, 60)
        submit(beta, emulator, rows(base, 1, "b"), webhookUrl=answers.url)
        deliveries = answers.wait_for(1, 60)
        assert deliveries, "beta's webhook never came"
        delivery = deliveries[0]
        with hangs.changed:
            before = [at for at in hangs.arrived if at < delivery.at]
    assert delivery.verified and delivery.status_sent == 204
    # Without a limit, both pollers would take alpha's next two attempts to the receiver that
    # timed out, and beta's webhook would wait for them to time out in turn. Its origin now
    # has one attempt at a time: the other poller put alpha's other attempts back and took
    # beta's, while the one attempt under way still hung.
    assert len(before) == 3, f"alpha's hanging receiver got {len(before)} attempts first"
