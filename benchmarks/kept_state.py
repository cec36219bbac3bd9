"""What `--data-dir` adds to the hot path, per call, against moto in this process:

    python -m benchmarks.kept_state [--calls N] [--rounds R]

- an output's store as the worker makes it (the in-process put of a 60 kB object and its
  headers, `InProcessObjectStore.put_bytes`), in memory and kept (its file written);
- a row message's life (sent, received in a batch of 10, deleted), in memory and journaled.

Rounds interleave the two sides; the median over rounds of each side's microseconds per
call is printed, and the difference: what a kept stack pays per output and per message.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import boto3
from moto import mock_aws
from moto.s3.models import s3_backends
from moto.sqs.models import sqs_backends

from local_emulator import moto_patches
from local_emulator.kept_objects import KeptObjects, one_write
from local_emulator.kept_queues import QueueJournal
from local_emulator.provision import ACCOUNT_ID, REGION

OUTPUT_BYTES = 60_000


def puts(calls: int, kept: KeptObjects | None) -> float:
    """Seconds per output stored."""
    body = os.urandom(OUTPUT_BYTES)
    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket="outputs")
        backend = s3_backends[ACCOUNT_ID]["aws"]
        if kept is not None:
            kept.activate()
        try:
            started = time.perf_counter()
            for n in range(calls):
                with one_write():
                    stored = backend.put_object("outputs", f"outputs/job/{n}/0.jpg", body)
                    stored.set_metadata({"Content-Type": "image/jpeg", "Cache-Control": "x"})
            return (time.perf_counter() - started) / calls
        finally:
            if kept is not None:
                kept.deactivate()


def messages(calls: int, journal: QueueJournal | None) -> float:
    """Seconds per message sent, received and deleted."""
    with mock_aws():
        boto3.client("sqs", region_name=REGION).create_queue(QueueName="rows")
        backend = sqs_backends[ACCOUNT_ID][REGION]
        if journal is not None:
            journal.restore(print)
            journal.activate()
        try:
            started = time.perf_counter()
            for batch in range(calls // 10):
                for n in range(10):
                    backend.send_message("rows", f'{{"jobId":"j","serial":{batch * 10 + n}}}')
                taken = backend.receive_message("rows", 10, 0, 30)
                backend.delete_message_batch(
                    "rows",
                    [
                        {"Id": str(i), "ReceiptHandle": m.receipt_handle}
                        for i, m in enumerate(taken)
                    ],
                )
            return (time.perf_counter() - started) / (calls // 10 * 10)
        finally:
            if journal is not None:
                journal.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    moto_patches.apply()
    root = Path(tempfile.mkdtemp(prefix="kept-state-"))
    put_mem: list[float] = []
    put_kept: list[float] = []
    msg_mem: list[float] = []
    msg_kept: list[float] = []
    for r in range(args.rounds):
        put_mem.append(puts(args.calls, None))
        put_kept.append(puts(args.calls, KeptObjects(root / f"objects-{r}")))
        msg_mem.append(messages(args.calls, None))
        msg_kept.append(messages(args.calls, QueueJournal(root / f"queues-{r}.jsonl")))
        print(
            f"round {r + 1}/{args.rounds}: output put {put_mem[-1] * 1e6:.0f} / "
            f"{put_kept[-1] * 1e6:.0f} us, message {msg_mem[-1] * 1e6:.0f} / "
            f"{msg_kept[-1] * 1e6:.0f} us (in memory / kept)",
            flush=True,
        )
    for name, memory, kept in (
        (f"output put ({OUTPUT_BYTES // 1000} kB)", put_mem, put_kept),
        ("message sent, received, deleted", msg_mem, msg_kept),
    ):
        m, k = statistics.median(memory), statistics.median(kept)
        print(f"{name}: {m * 1e6:.0f} us in memory, {k * 1e6:.0f} us kept: +{(k - m) * 1e6:.0f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
