"""Time to a terminal state on the emulator with the sweeper out of the way.

The sweeper repairs a job that stopped moving, so a missing step (a batch of rows recorded
without asking for finalization, say) still ends green, minutes late. Here its schedule is
stretched to days and STALL_AFTER with it: a job of several worker batches, on MongoDB,
must end and its webhook arrive within TERMINAL_BOUND seconds, about ten times what it takes
on a loaded 2-core machine, and far under the sweeper's period on AWS (five minutes)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from local_emulator.stack import Emulator
from tests.e2e.test_pipeline_e2e import upload, wait_terminal
from tests.support.emulator import running_emulator
from tests.support.servers import WebhookReceiver

pytestmark = pytest.mark.e2e

HEADER = "S. No.,Product Name,Input Image Urls\n"
ROWS = 24  # the worker takes up to 10 rows a batch: several batches of several rows
TERMINAL_BOUND = 30.0  # seconds from upload to the webhook's arrival (1 to 3 s is normal)
NO_SWEEPER_SCALE = 1000.0  # the sweeper's rate(5 minutes) every 83 hours
NO_RECOVERY = {"STALL_AFTER": "86400", "WEBHOOK_RETRY_SCHEDULE": "1,1,1"}


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with running_emulator(NO_RECOVERY, schedule_scale=NO_SWEEPER_SCALE) as emu:
        yield emu


def test_a_job_of_several_batches_ends_and_calls_back_without_the_sweeper(
    emulator: Emulator, images: str, receiver: WebhookReceiver
) -> None:
    text = HEADER + "".join(
        f"{n},Item {n},{images}/meadow.webp?copy={n}\n" for n in range(1, ROWS + 1)
    )
    started = time.monotonic()
    request_id = upload(emulator, text, receiver.url)
    doc = wait_terminal(emulator, request_id, timeout=TERMINAL_BOUND)
    terminal_s = time.monotonic() - started
    deliveries = receiver.wait_for(1, timeout=max(0.0, TERMINAL_BOUND - terminal_s))
    delivered_s = time.monotonic() - started
    print(f"\n{ROWS} rows: terminal after {terminal_s:.1f} s, webhook after {delivered_s:.1f} s")

    assert doc["status"] == "completed"
    assert doc["progress"]["processedProducts"] == ROWS
    assert [json.loads(d.body)["data"]["requestId"] for d in deliveries] == [request_id]
    assert deliveries[0].verified
    assert delivered_s < TERMINAL_BOUND
    dispatcher = emulator.dispatcher
    assert dispatcher is not None
    functions = emulator.stack.functions.values()
    scheduled = {f.name for f in functions if f.schedules}
    assert scheduled and not scheduled & set(dispatcher.stats)  # the sweeper never ran
    rows_queue = emulator.environment["ROWS_QUEUE_URL"]
    worker = next(
        f.name for f in functions if any(s.queue.url == rows_queue for s in f.sqs_sources)
    )
    batches = dispatcher.stats[worker]
    assert batches.records > batches.invocations  # some batch recorded several rows
