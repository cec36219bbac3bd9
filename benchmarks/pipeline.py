"""The whole local pipeline against the bare compressor, as a ratio.

    python -m benchmarks.pipeline [--quick] [--rounds N] [--scale K] [--cache .bench-cache]

Both sides get the same corpus (`benchmarks.corpus`) and the same two cores:

- bare: `chalicelib.imaging.compress_to_jpeg` in a pool of two spawned processes, the corpus
  in memory (the same engine as `benchmarks.compressor`'s "ours");
- pipeline: the local emulator (moto, the embedded MongoDB, the dispatchers, the functions,
  all in this process) running one job per round: a CSV of rows naming the same images
  served over loopback by a separate file server, each URL distinct (a query string), so
  nothing is deduplicated. Timed from the upload (`POST /api/uploadAndProcessDocument`) to
  the terminal status, so ingest, fan-out, download, compression, storage in S3, progress
  records and finalization (the output CSV) are all inside.

Rounds are interleaved (bare, pipeline, pipeline, bare, ...); the ratio printed is the
median over rounds of pipeline MP/s / bare MP/s measured within the same round. Each round
also prints the CPU time the hypervisor gave to other guests while each side ran ("steal",
from /proc/stat): on a shared VM it is what makes an outlier round.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from benchmarks import corpus
from benchmarks._api import submit_csv
from benchmarks._workers import Setup, Variant
from benchmarks.compressor import QUALITY, REPEATS, PoolEngine, batches, megapixels
from local_emulator.stack import Emulator, EmulatorOptions

MIN_ROUNDS = 5
DEFAULT_ROUNDS = 7
QUICK_ROUNDS = 3
TARGET = 0.85
IMAGES_PER_ROW = 2
TERMINAL = {"completed", "completed_with_errors", "failed"}
POLL = 1.0  # seconds between status reads (see Pipeline.run)


@dataclass
class Plan:
    """One round's work: the corpus indices, grouped into rows."""

    indices: list[int]
    rows: list[list[int]]
    megapixels: float


@dataclass
class Round:
    bare: float
    pipeline: float
    accepted: float = 0.0
    bare_steal: float | None = None
    pipeline_steal: float | None = None
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.bare / self.pipeline


def plan_for(items: Sequence[corpus.Item], scale: int, images_per_row: int) -> Plan:
    groups = batches(items, {g: n * scale for g, n in REPEATS.items()})
    indices = [i for g in corpus.GROUPS for i in groups[g]]
    random.Random(6).shuffle(indices)  # rows mix sizes, as a real catalogue does
    rows = [indices[k : k + images_per_row] for k in range(0, len(indices), images_per_row)]
    return Plan(indices, rows, megapixels(items, indices))


def csv_for(plan: Plan, items: Sequence[corpus.Item], base: str, tag: str) -> bytes:
    lines = ["S. No.,Product Name,Input Image Urls"]
    for n, row in enumerate(plan.rows, start=1):
        urls = ",".join(
            f"{base}/{items[i].spec.filename}?job={tag}&row={n}&img={k}" for k, i in enumerate(row)
        )
        lines.append(f'{n},Product {n},"{urls}"')
    return ("\n".join(lines) + "\n").encode()


def paired_median(rounds: Sequence[Round]) -> float:
    """Median of the within-round ratios (pipeline throughput over bare throughput)."""
    if not rounds:
        raise ValueError("no rounds")
    return statistics.median(r.ratio for r in rounds)


@contextlib.contextmanager
def file_server(folder: Path) -> Iterator[str]:
    """The corpus over loopback HTTP, from a separate process (an image host of its own)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-m", "benchmarks._image_host", str(port), str(folder)],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the image server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


class Pipeline:
    """The emulator, one job per run."""

    def __init__(self, emu: Any, items: Sequence[corpus.Item], base: str) -> None:
        self.emu = emu
        self.items = items
        self.base = base
        self.client: MongoClient[dict[str, Any]] = MongoClient(emu.mongo_uri)
        self.jobs = self.client[emu.environment.get("MONGO_DB", "image_pipeline")]["jobs"]
        self.runs = 0
        self.phases: dict[str, float] = {}

    def run(self, plan: Plan) -> tuple[float, float]:
        """(seconds from upload to terminal status, seconds to the upload's answer).

        The end is the job's own `updatedAt` when it turned terminal (the finalizer's write),
        so the status is polled only every POLL seconds: the embedded MongoDB shares the
        emulator's process, and polling it many times a second took a large share of its GIL
        time (py-spy), slowing the pipeline it measured; once a second is cheap (measured: see
        docs/performance.md)."""
        self.runs += 1
        body = csv_for(plan, self.items, self.base, f"{os.getpid()}-{self.runs}")
        wall_started = time.time()
        started = time.perf_counter()
        request_id, accepted = submit_csv(
            self.emu.api_url, self.emu.api_key, body, "bench.csv", timeout=120
        )
        deadline = started + 1800
        self.phases = {}
        while time.perf_counter() < deadline:
            time.sleep(POLL)
            doc = self.jobs.find_one(
                {"_id": request_id}, {"status": 1, "progress": 1, "updatedAt": 1}
            )
            if doc is not None and doc["status"] in TERMINAL:
                if doc["status"] != "completed":
                    progress = doc.get("progress", {})
                    raise RuntimeError(f"job {request_id} ended {doc['status']}: {progress}")
                ended = datetime.fromisoformat(str(doc["updatedAt"])).timestamp()
                # the record has millisecond precision: never report less than the upload took
                elapsed = max(ended - wall_started, accepted)
                self.phases["terminal"] = elapsed
                self.phases["seen"] = time.perf_counter() - started
                return elapsed, accepted
        raise RuntimeError(f"job {request_id} did not end")

    def close(self) -> None:
        self.client.close()


def cpu_steal() -> float | None:
    """Seconds of CPU the hypervisor gave to other guests (all cores), from /proc/stat; None
    where there is no such counter. A shared VM's steal slows whichever side runs then."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _stolen(before: float | None) -> float | None:
    after = cpu_steal()
    return None if before is None or after is None else after - before


def _loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds, half the work")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--scale", type=int, default=None, help="corpus repeats per round")
    parser.add_argument("--images-per-row", type=int, default=IMAGES_PER_ROW)
    parser.add_argument("--workers", type=int, default=None, help="row pollers (emulator)")
    parser.add_argument("--cache", type=Path, default=corpus.DEFAULT_CACHE)
    args = parser.parse_args(argv)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    if rounds < (QUICK_ROUNDS if args.quick else MIN_ROUNDS):
        parser.error(f"at least {QUICK_ROUNDS if args.quick else MIN_ROUNDS} rounds")
    scale = args.scale or (2 if args.quick else 4)

    def say(text: str) -> None:
        print(text, flush=True)

    items = corpus.build(args.cache, log=True)
    plan = plan_for(items, scale, args.images_per_row)
    say(
        f"pipeline vs bare compressor: {len(plan.indices)} images ({plan.megapixels:.0f} MP) in "
        f"{len(plan.rows)} rows per round, {rounds} rounds, interleaved"
    )
    say(
        f"python {platform.python_version()}, {os.cpu_count()} cores, "
        f"load average {_loadavg()} at start"
    )
    paths = tuple(str(item.path) for item in items)
    bare = PoolEngine("ours", "bare", Setup("ours", paths, QUALITY, Variant("ours", "ours")), 2)
    results: list[Round] = []
    try:
        with (
            file_server(args.cache / "corpus") as base,
            Emulator(
                EmulatorOptions(
                    port=0,
                    allow_private_hosts=True,
                    quiet=True,
                    verbose_dispatch=False,
                    workers=args.workers,
                    log=lambda line: None,
                )
            ) as emu,
        ):
            pipe = Pipeline(emu, items, base)
            try:
                # warm-up: imports, first clients, the pool's processes
                bare.run(plan.indices[:8])
                pipe.run(plan_for(items, 1, args.images_per_row))
                for r in range(rounds):
                    one = Round(0.0, 0.0)
                    for side in ("bare", "pipeline") if r % 2 == 0 else ("pipeline", "bare"):
                        before = cpu_steal()
                        if side == "bare":
                            one.bare = bare.run(plan.indices)[0]
                            one.bare_steal = _stolen(before)
                        else:
                            one.pipeline, one.accepted = pipe.run(plan)
                            one.pipeline_steal = _stolen(before)
                    one.phases = dict(pipe.phases)
                    results.append(one)
                    b, p = one.bare, one.pipeline
                    stolen = (
                        f"  steal {one.bare_steal:.2f}s / {one.pipeline_steal:.2f}s"
                        if one.bare_steal is not None and one.pipeline_steal is not None
                        else ""
                    )
                    say(
                        f"round {r + 1}/{rounds}: bare {b:6.2f}s "
                        f"({plan.megapixels / b:5.1f} MP/s)  pipeline {p:6.2f}s "
                        f"({plan.megapixels / p:5.1f} MP/s, upload answered in "
                        f"{one.accepted:.2f}s)  ratio {one.ratio:.3f}{stolen}  load {_loadavg()}"
                    )
                    say(
                        "  pipeline timeline: "
                        + ", ".join(f"{k} at {v:.2f}s" for k, v in one.phases.items())
                    )
            finally:
                pipe.close()
    finally:
        bare.close()
    ratio = paired_median(results)
    bare_mps = plan.megapixels / statistics.median(r.bare for r in results)
    pipe_mps = plan.megapixels / statistics.median(r.pipeline for r in results)
    say("")
    say(f"bare compressor  {bare_mps:6.1f} MP/s (median)")
    say(f"whole pipeline   {pipe_mps:6.1f} MP/s (median)")
    verdict = "meets" if ratio >= TARGET else "MISSES"
    say(
        f"RATIO pipeline/bare = {ratio:.3f} (median of {len(results)} paired rounds; "
        f"min {min(r.ratio for r in results):.3f}, max {max(r.ratio for r in results):.3f}); "
        f"{verdict} the {TARGET} target"
    )
    say(f"load average {_loadavg()} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
