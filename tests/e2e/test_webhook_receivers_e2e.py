"""Webhooks that respect the receiver, through the emulator with its default schedule: a real
receiver on loopback answering `410 Gone`, `503` with `Retry-After`, or `500`."""

from __future__ import annotations

import time
from typing import Any

import pytest

from local_emulator.stack import Emulator
from tests.e2e.emulator_support import keyed
from tests.support.servers import WebhookReceiver, webhook_receiver

pytestmark = pytest.mark.e2e

HEADER = "S. No.,Product Name,Input Image Urls\n"
TERMINAL = {"completed", "completed_with_errors", "failed", "cancelled"}


def submit(emulator: Emulator, images: str, hook: WebhookReceiver) -> str:
    response = keyed(emulator).post(
        f"{emulator.api_url}/api/uploadAndProcessDocument",
        files={"file": ("p.csv", (HEADER + f"1,Mug,{images}/mug.jpg\n").encode(), "text/csv")},
        data={"webhookUrl": hook.url},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["requestId"])


def webhook_settled(emulator: Emulator, request_id: str, timeout: float = 60) -> dict[str, Any]:
    """The job's `webhook` once the job has ended and its webhook is no longer pending."""
    deadline = time.monotonic() + timeout
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        doc = (
            keyed(emulator)
            .get(f"{emulator.api_url}/api/getProcessingStatus/{request_id}", timeout=10)
            .json()
        )
        if doc.get("status") in TERMINAL and doc["webhook"]["state"] in ("delivered", "failed"):
            return dict(doc["webhook"])
        time.sleep(0.3)
    raise AssertionError(f"the webhook of job {request_id} did not settle: {doc.get('webhook')}")


def the_schedule(emulator: Emulator) -> list[int]:
    return [int(part) for part in emulator.environment["WEBHOOK_RETRY_SCHEDULE"].split(",")]


def test_a_receiver_answering_410_gets_exactly_one_delivery(
    emulator: Emulator, images: str
) -> None:
    with webhook_receiver(emulator.webhook_secret, fail_first=99, fail_with=410) as hook:
        request_id = submit(emulator, images, hook)
        webhook = webhook_settled(emulator, request_id)
        # had it been retried, the next attempt would have come after the schedule's delay
        time.sleep(the_schedule(emulator)[0] + 2)
        assert [d.status_sent for d in hook.deliveries] == [410]
    assert (webhook["state"], webhook["attempts"], webhook["lastStatusCode"]) == ("failed", 1, 410)
    assert webhook["nextAttemptAt"] is None
    ((attempt, code),) = [(a["attempt"], a["statusCode"]) for a in webhook["history"]]
    assert (attempt, code) == (1, 410)


def test_a_503_with_retry_after_gets_its_next_attempt_no_sooner(
    emulator: Emulator, images: str
) -> None:
    wait = 6
    assert the_schedule(emulator)[0] < wait < max(the_schedule(emulator))
    with webhook_receiver(
        emulator.webhook_secret, fail_first=1, fail_with=503, fail_headers={"Retry-After": "6"}
    ) as hook:
        request_id = submit(emulator, images, hook)
        first, second = hook.wait_for(2, 60)[:2]
        webhook = webhook_settled(emulator, request_id)
    assert (first.status_sent, second.status_sent) == (503, 204)
    assert second.at - first.at >= wait
    assert second.at - first.at < wait + 10  # honoured, not capped at a longer delay
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert webhook["state"] == "delivered"
    assert [(a["statusCode"], a["error"]) for a in webhook["history"]] == [
        (503, "HTTP 503 (Retry-After: 6)"),
        (204, ""),
    ]


def test_the_emulators_default_schedule_makes_three_attempts_within_a_minute(
    emulator: Emulator, images: str
) -> None:
    with webhook_receiver(emulator.webhook_secret, fail_first=2) as hook:
        started = time.monotonic()
        request_id = submit(emulator, images, hook)
        deliveries = hook.wait_for(3, 60)
        assert len(deliveries) == 3, [d.status_sent for d in deliveries]
        assert deliveries[2].at - started < 60
        assert [d.status_sent for d in deliveries] == [500, 500, 204]
        assert webhook_settled(emulator, request_id)["attempts"] == 3
