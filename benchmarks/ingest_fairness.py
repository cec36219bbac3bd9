"""Ingest fair between tenants, measured: a small CSV beside another tenant's large ones.

    python -m benchmarks.ingest_fairness [--csvs 4] [--rows 20000] [--repeats 1]
                                         [--slice-seconds S]

The local emulator with two tenants; every CSV is dropped in the uploads bucket (S3's event
starts its job, as for any integration). Tenant beta's CSV of 5 rows is timed alone first
(three times, after a warm-up); then tenant alpha drops `--csvs` CSVs of `--rows` rows and,
once 5% of alpha's rows have been sent (its ingest under way), beta drops its 5 rows again.
Alpha's rows name images the host answers 404 for (failed at once: the workers take little
of the two cores), beta's a small JPEG each.
Timed from beta's put to its job's rows all sent (`fanout.done`: the ingest's part) and to
its terminal `updatedAt` (the job's end). Printed: beta alone and beside alpha's CSVs, and
how much of alpha's rows had been sent when beta's ingest was done. Alpha's jobs are then
cancelled (their ingest stops at its next slice) and waited for; with `--finish`, only once
all their rows are sent, and the time that took is printed (what slicing costs alpha).
`--slice-seconds` sets
INGEST_SLICE_SECONDS for the stack (the app's default otherwise); code from before slices
ignores it, so the same command measures before and after.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pymongo
import requests
from PIL import Image

from benchmarks._api import auth
from benchmarks.pipeline import file_server
from local_emulator.stack import Emulator, EmulatorOptions

TERMINAL = {"completed", "completed_with_errors", "failed", "cancelled"}
HEADER = "S. No.,Product Name,Input Image Urls\n"
SMALL_ROWS = 5
STARTED = 0.05  # beta drops its CSV once this share of alpha's rows has been sent


@dataclass(frozen=True)
class Timed:
    """One of beta's jobs: seconds from its put to its rows all sent and to its end."""

    ingested: float
    ended: float
    alpha_sent: float = 0.0  # the share of alpha's rows sent when beta's were (0..1)
    alpha_ingest: float = 0.0  # --finish: seconds from alpha's first drop to its rows all sent


def summary(name: str, runs: Sequence[Timed]) -> str:
    ingested = statistics.median(r.ingested for r in runs)
    ended = statistics.median(r.ended for r in runs)
    each = ", ".join(f"{r.ingested:.2f}/{r.ended:.2f}" for r in runs)
    return (
        f"{name:<24} rows sent {ingested:7.2f} s, job ended {ended:7.2f} s "
        f"(median of {len(runs)}; each: {each})"
    )


class Run:
    def __init__(self, emu: Emulator, base: str) -> None:
        self.emu = emu
        self.base = base
        self.s3 = emu.s3_client()
        self.bucket = emu.uploads_bucket
        self.client: Any = pymongo.MongoClient(emu.mongo_uri, serverSelectionTimeoutMS=10_000)
        self.db = self.client[emu.environment.get("MONGO_DB", "image_pipeline")]
        self.drops = 0

    def drop(self, tenant: str, rows: int, folder: str) -> tuple[str, float]:
        """Put a CSV under incoming/<tenant>/; its key and the wall time of the put."""
        self.drops += 1
        key = f"incoming/{tenant}/drop-{self.drops}.csv"
        lines = "".join(f"{n},P{n},{self.base}/{folder}/{n}.jpg\n" for n in range(1, rows + 1))
        started = time.time()
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=(HEADER + lines).encode())
        return key, started

    def job(self, key: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.db.jobs.find_one({"inputKey": key})
        return found

    def wait(self, predicate: Callable[[], bool], every: float = 0.02, limit: float = 1800) -> None:
        deadline = time.monotonic() + limit
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError("waited too long")
            time.sleep(every)

    def beta(self, on_ingested: Callable[[], float] = lambda: 0.0) -> Timed:
        key, started = self.drop("beta", SMALL_ROWS, "beta")
        self.wait(lambda: bool((job := self.job(key)) and job["fanout"]["done"]))
        ingested = time.time() - started
        share = on_ingested()
        self.wait(lambda: bool((job := self.job(key)) and job["status"] in TERMINAL))
        job = self.job(key)
        assert job is not None
        ended = datetime.fromisoformat(str(job["updatedAt"])).timestamp() - started
        return Timed(ingested, ended, share)

    def beside(self, csvs: int, rows: int, finish: bool = False) -> Timed:
        first = time.time()
        keys = [self.drop("alpha", rows, "gone")[0] for _ in range(csvs)]

        def alpha_sent() -> float:
            sent = 0
            for key in keys:
                job = self.job(key)
                sent += int(job["fanout"]["sent"]) if job else 0
            return sent / (csvs * rows)

        self.wait(lambda: alpha_sent() >= STARTED)  # alpha's ingest is under way
        timed = self.beta(alpha_sent)
        if finish:  # what the slices cost alpha: its ingest to the end
            self.wait(lambda: alpha_sent() >= 1.0, every=0.2)
            timed = replace(timed, alpha_ingest=time.time() - first)
        key_of = {self.job(k)["_id"]: k for k in keys if self.job(k)}  # type: ignore[index]
        session = requests.Session()
        session.headers.update(auth(self.key("alpha")))
        for request_id in key_of:
            session.post(f"{self.emu.api_url}/api/jobs/{request_id}/cancel", timeout=60)
        self.wait(
            lambda: all((j := self.job(k)) and j["status"] in TERMINAL for k in keys), every=0.5
        )
        return timed

    def key(self, tenant: str) -> str:
        (found,) = [t.api_key for t in self.emu.tenants if t.name == tenant]
        return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--csvs", type=int, default=4, help="alpha's CSVs")
    parser.add_argument("--rows", type=int, default=20000, help="rows per CSV of alpha's")
    parser.add_argument("--repeats", type=int, default=1, help="runs beside alpha's CSVs")
    parser.add_argument("--slice-seconds", type=float, default=None)
    parser.add_argument(
        "--finish", action="store_true", help="wait for alpha's rows all sent (before cancelling)"
    )
    args = parser.parse_args(argv)
    if args.slice_seconds is not None:
        os.environ["INGEST_SLICE_SECONDS"] = str(args.slice_seconds)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        images = Path(folder) / "beta"
        images.mkdir()
        for n in range(1, SMALL_ROWS + 1):
            buffer = io.BytesIO()
            Image.new("RGB", (640, 480), (40 * n, 90, 160)).save(buffer, "JPEG", quality=85)
            (images / f"{n}.jpg").write_bytes(buffer.getvalue())
        options = EmulatorOptions(
            port=0,
            allow_private_hosts=True,
            quiet=True,
            verbose_dispatch=False,
            tenants=("alpha", "beta"),
            log=lambda line: None,
        )
        with file_server(Path(folder)) as (base, _pid), Emulator(options) as emu:
            run = Run(emu, base)
            run.beta()  # warm-up: imports, first clients
            alone = [run.beta() for _ in range(3)]
            busy = []
            for n in range(args.repeats):
                busy.append(run.beside(args.csvs, args.rows, args.finish))
                print(f"run {n + 1}/{args.repeats}: {summary('beta', busy[-1:])}", flush=True)
            run.client.close()
    slice_note = os.environ.get("INGEST_SLICE_SECONDS", "the app's default")
    print(
        f"tenant alpha: {args.csvs} CSVs of {args.rows} rows dropped; then tenant beta: "
        f"{SMALL_ROWS} rows (INGEST_SLICE_SECONDS: {slice_note})"
    )
    print(summary("beta alone", alone))
    print(summary("beta beside alpha's CSVs", busy))
    print("alpha's rows sent when beta's were: " + ", ".join(f"{b.alpha_sent:.0%}" for b in busy))
    if args.finish:
        print("alpha's rows all sent after: " + ", ".join(f"{b.alpha_ingest:.1f} s" for b in busy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
