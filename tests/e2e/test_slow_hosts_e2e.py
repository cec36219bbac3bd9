"""A slow image fails alone, on the emulator as on Lambda: a host that trickles its image a
byte at a time holds neither its own job's other products, nor another job, nor any
invocation past its function's Timeout."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from local_emulator.stack import Emulator
from tests.e2e.emulator_support import keyed
from tests.e2e.test_pipeline_e2e import HEADER, upload, wait_terminal
from tests.support.servers import SlowImageHost, slow_image_host
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

TRICKLE_SECONDS = 120  # the host would go on this long: far past any deadline


@pytest.fixture(scope="module")
def host() -> Iterator[tuple[SlowImageHost, str]]:
    """`/slow/...` trickles a byte every 0.2 s: never silent for a read timeout, never done
    within the test; `/fast/...` at once."""
    with slow_image_host(TRICKLE_SECONDS, step=0.2) as slow:
        yield slow, slow.url


def _status(emulator: Emulator, request_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = (
        keyed(emulator)
        .get(f"{emulator.api_url}/api/getProcessingStatus/{request_id}", timeout=10)
        .json()
    )
    return doc


def test_a_trickling_image_fails_alone_and_holds_up_nobody(
    emulator: Emulator, host: tuple[SlowImageHost, str]
) -> None:
    state, base = host
    settings_deadline = float(emulator.environment["DOWNLOAD_DEADLINE"])
    rows = "".join(
        f"{n},Product {n},{base}/{'slow' if n == 5 else 'fast'}/{n}.jpg\n" for n in range(1, 11)
    )
    slow_job = upload(emulator, HEADER + rows)
    started = time.monotonic()
    other_job = upload(emulator, HEADER + f'1,Other,"{base}/fast/b1.jpg,{base}/fast/b2.jpg"\n')

    def good_products_done() -> bool:
        products = _status(emulator, slow_job)["products"]
        return sum(p["status"] == "completed" for p in products) == 9

    # Normal time is about a second; the bound is ten times that, and far below the
    # trickle's deadline (and the sweeper's period): the good rows did not wait for it.
    assert wait_until(good_products_done, timeout=min(10.0, settings_deadline)), (
        "the nine good products waited for the slow one"
    )
    took = time.monotonic() - started
    doc = _status(emulator, slow_job)
    assert doc["status"] == "processing"  # the trickling image is still being fetched
    assert [p["status"] for p in doc["products"]][4] == "pending"

    other = wait_terminal(emulator, other_job, timeout=30)
    assert other["status"] == "completed"
    other_took = time.monotonic() - started
    assert other_took < 30  # well under a minute (over five before)

    final = wait_terminal(emulator, slow_job, timeout=6 * settings_deadline)
    slow_took = time.monotonic() - started
    assert final["status"] == "completed_with_errors"
    slow = final["products"][4]
    assert slow["status"] == "failed"
    assert [e["code"] for e in slow["errors"]] == ["timeout"]
    # a body still trickling at the deadline is not retried: fetched once
    assert state.hits["/slow/5.jpg"] == 1

    print(  # the figures, with `pytest -s`
        f"\nnine good products recorded {took:.2f}s after the upload; the other job completed "
        f"after {other_took:.2f}s; the slow job {final['status']} after {slow_took:.2f}s "
        f"(deadline {settings_deadline:g}s); the trickling URL fetched "
        f"{state.hits['/slow/5.jpg']} time(s)"
    )
    for line in emulator.invocation_report():
        print(line)
    assert emulator.dispatcher is not None
    for function in emulator.stack.functions.values():
        stats = emulator.dispatcher.stats.get(function.name)
        if stats is None:
            continue
        assert stats.timeouts == 0, function.name
        assert stats.worst_seconds <= function.timeout, function.name
