"""Where a pipeline job's wall time goes: its start, its images, its tail (embedded only).

    .venv/bin/python -m benchmarks.pipeline_timeline            # 3 rounds of 90 images
    .venv/bin/python -m benchmarks.pipeline_timeline --rounds 5 --scale 4

`benchmarks.pipeline`'s embedded mode (the emulator in this process, one new tenant per round,
every image its own bytes), with the dispatcher's deliveries and the worker's images timed
from inside: per round, from the upload, when the ingest and the first rows batch were
delivered, when the first image started and the last ended, when the finalizer was
delivered and when the job's record says it ended; the time within the images' span when
fewer images were in flight than the machine has cores (a core with nothing of the job's to
do, waits on the GIL aside); the deliveries of rows batches; and the cores the process used
with its MongoDB server's process (their CPU time over the wall time) during the images' span
and over the whole job. It answers
whether the pipeline's gap to the bare compressor is wall time where the cores wait (start,
tail, pollers) or CPU spent besides the compressor (`benchmarks.pipeline`'s breakdown).

The timing wraps `Dispatcher._deliver` and `one_image.process_image` in this process: a
measuring tool, not a benchmark of its own (it prints no ratio).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import corpus
from benchmarks import pipeline as bench
from local_emulator import dispatch

_lock = threading.Lock()
_events: list[tuple[float, str, str, float]] = []  # (when, what, detail, process CPU then)


_servers: list[int] = []  # the embedded MongoDB server's process, when it has one


def _process_cpu() -> float:
    """This process's CPU, and its MongoDB server's (a process of its own by default)."""
    times = os.times()
    return times.user + times.system + sum(bench.process_cpu(pid) for pid in _servers)


def _record(kind: str, info: str = "") -> None:
    cpu = _process_cpu()
    with _lock:
        _events.append((time.perf_counter(), kind, info, cpu))


def instrument() -> None:
    """Time the dispatcher's deliveries and the worker's images (this process only)."""
    # the functions' package is on the path once the emulator has started
    from chalicelib.services import one_image  # noqa: PLC0415

    deliver: Callable[..., None] = dispatch.Dispatcher._deliver
    process_image: Callable[..., Any] = one_image.process_image

    def timed_deliver(self: Any, function: Any, source: Any, handler: Any, messages: Any) -> None:
        _record("deliver", f"{source.queue.name.rsplit('-', 1)[-1]}:{len(messages)}")
        deliver(self, function, source, handler, messages)

    def timed_image(*args: Any, **kwargs: Any) -> Any:
        _record("image-start")
        try:
            return process_image(*args, **kwargs)
        finally:
            _record("image-end")

    dispatch.Dispatcher._deliver = timed_deliver  # type: ignore[method-assign]
    one_image.process_image = timed_image


def starved(starts: list[float], ends: list[float], cores: int) -> float:
    """Seconds between the first start and the last end with fewer than `cores` in flight."""
    moves = sorted([(t, 1) for t in starts] + [(t, -1) for t in ends])
    running, previous, total = 0, moves[0][0], 0.0
    for at, step in moves:
        if running < cores:
            total += at - previous
        running += step
        previous = at
    return total


def report(round_no: int, started: float, job: bench.Job) -> dict[str, float]:
    with _lock:
        events = [(at - started, kind, info, cpu) for at, kind, info, cpu in _events]
    starts = [at for at, kind, _, _ in events if kind == "image-start"]
    ends = [at for at, kind, _, _ in events if kind == "image-end"]
    delivered = [(at, info) for at, kind, info, _ in events if kind == "deliver"]
    cpu_first = min(cpu for at, kind, _, cpu in events if kind == "image-start")
    cpu_last = max(cpu for at, kind, _, cpu in events if kind == "image-end")

    def first(queue: str) -> float:
        return min((at for at, info in delivered if info.startswith(queue)), default=float("nan"))

    cores = os.cpu_count() or 1
    span = max(ends) - min(starts)
    figures = {
        "ingest": first("IngestQueue"),
        "rows": first("RowsQueue"),
        "first image": min(starts),
        "last image": max(ends),
        "finalize": first("FinalizeQueue"),
        "end": job.seconds,
        "starved": starved(starts, ends, cores),
        "span cores": (cpu_last - cpu_first) / span,
        "job cores": job.cpu / job.seconds,
    }
    batches = " ".join(
        f"{at:.2f}s:{info.split(':')[1]}" for at, info in delivered if info.startswith("RowsQueue")
    )
    print(
        f"round {round_no}: upload {job.accepted:.2f}s, ingest delivered "
        f"{figures['ingest']:.3f}s, first rows batch {figures['rows']:.3f}s, first image "
        f"started {figures['first image']:.3f}s, "
        f"last image ended {figures['last image']:.3f}s, finalizer delivered "
        f"{figures['finalize']:.3f}s, job ended {job.seconds:.3f}s\n"
        f"  {len(starts)} images; fewer than {cores} in flight for {figures['starved']:.3f}s of "
        f"their {span:.2f}s; the process used {figures['span cores']:.2f} cores over that span, "
        f"{figures['job cores']:.2f} over the job\n"
        f"  rows batches delivered (at: rows): {batches}",
        flush=True,
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=int, default=2, help="corpus repeats per round")
    parser.add_argument("--images-per-row", type=int, default=bench.IMAGES_PER_ROW)
    parser.add_argument("--cache", default=str(corpus.DEFAULT_CACHE))
    args = parser.parse_args(argv)
    cache = Path(args.cache)
    items = corpus.build(cache, log=True)
    plan = bench.plan_for(items, args.scale, args.images_per_row)
    warm = bench.plan_for(items, 1, args.images_per_row)
    print(
        f"pipeline timeline (embedded): {len(plan.indices)} images ({plan.megapixels:.0f} MP) in "
        f"{len(plan.rows)} rows per round, {args.rounds} rounds, {os.cpu_count()} cores, "
        f"load average {bench._loadavg()}",
        flush=True,
    )
    found: list[dict[str, float]] = []
    with bench.file_server(cache / "corpus") as (base, host_pid):
        pipe = bench.Embedded(base, args.rounds, None, [host_pid], print)
        server = getattr(pipe.emu._mongo, "pid", None)
        if server is not None:
            _servers.append(server)
        try:
            instrument()
            pipe.run(warm, items, 0)
            for r in range(1, args.rounds + 1):
                with _lock:
                    _events.clear()
                started = time.perf_counter()
                job = pipe.run(plan, items, r)
                found.append(report(r, started, job))
        finally:
            pipe.close()
    print("\nmedians over the rounds:")
    for key in found[0]:
        print(f"  {key:12} {statistics.median(f[key] for f in found):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
