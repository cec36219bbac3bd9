"""Fair shares between tenants, measured: a small job beside another tenant's batch.

    python -m benchmarks.fairness [--quick] [--repeats N] [--jobs 10] [--rows 100] [--served]

The local emulator with two tenants. Tenant beta's job of 5 rows is timed alone first; then
tenant alpha submits ten jobs of 100 rows and, as soon as they are accepted, beta submits its
5 rows again. Every row names one small image (640x480 JPEG, about 30 KB) of its own bytes,
served over loopback by a separate process, so nothing is reused or deduplicated. Timed from
beta's upload to its job's terminal status (its `updatedAt`, the finalizer's write). While
alpha's batch runs, beta polls its job's status over HTTP ten times a second, each read
timed. Printed: beta's time alone and beside the batch, how far the batch had got when beta
ended, the status reads' p50 and p99, and the targets (beta within `SLOWER_BY` seconds of
its time alone; status p99 at most `STATUS_P99_MS`).

By default the emulator runs in this process, its clients' threads sharing its GIL; with
`--served` it is `python -m local_emulator serve`, a process of its own, as a user's client
meets it (`benchmarks.pipeline`'s served mode): the status reads' times are then the
server's and the loopback's, not this process's threads'.

The functions run in this process (and in the emulator's worker processes; with `--served`,
in `serve`'s) and write their JSON log and metric (EMF) lines to stderr, as locally they do
everywhere: here those go to a file (`--functions-log`, else a new file in the temporary
directory, named at the start), so the terminal shows the report alone. What the functions
emit is not changed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import requests
from PIL import Image

from benchmarks._api import auth, get_status, submit_csv
from benchmarks.pipeline import REPO, file_server
from local_emulator.stack import Emulator, EmulatorOptions

SLOWER_BY = 2.0  # seconds beta may take beside the batch more than alone
STATUS_P99_MS = 50.0
POLL = 0.1  # seconds between beta's status reads, as a client polling ten times a second
TERMINAL = {"completed", "completed_with_errors", "failed", "cancelled"}
HEADER = "S. No.,Product Name,Input Image Urls\n"
SMALL_ROWS = 5
WIDTH, HEIGHT = 640, 480


@dataclass(frozen=True)
class Busy:
    """One run of beta's job beside alpha's batch."""

    beta_seconds: float
    batch_done: float  # the share of alpha's rows done when beta's job ended (0..1)
    batch_seconds: float  # from alpha's first upload to its last job's end
    status_ms: Sequence[float] = field(default_factory=tuple)  # beta's status reads


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (`share` in 0..1)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, int(np.ceil(share * len(ordered))))
    return float(ordered[rank - 1])


def report(alone: Sequence[float], busy: Sequence[Busy], jobs: int, rows: int) -> list[str]:
    """The figures and the targets' verdicts (the suite collects the PASS/MISS lines)."""
    if not alone or not busy:
        raise ValueError("nothing measured")
    alone_s = statistics.median(alone)
    beside = statistics.median(b.beta_seconds for b in busy)
    reads = [ms for b in busy for ms in b.status_ms]
    lines = [
        f"tenant alpha: {jobs} jobs of {rows} rows; then tenant beta: {SMALL_ROWS} rows "
        f"(one small image each); median of {len(busy)} run(s)",
        f"beta alone:             {alone_s:6.2f} s (median of {len(alone)})",
        f"beta beside the batch:  {beside:6.2f} s "
        f"({beside / alone_s:.1f}x alone; runs: "
        + ", ".join(f"{b.beta_seconds:.2f}" for b in busy)
        + ")",
        "alpha's batch when beta ended: "
        + ", ".join(f"{b.batch_done:.0%} done" for b in busy)
        + "; the batch took "
        + ", ".join(f"{b.batch_seconds:.1f}" for b in busy)
        + " s",
    ]
    if reads:
        p50, p99 = percentile(reads, 0.5), percentile(reads, 0.99)
        lines.append(
            f"beta's status while busy: p50 {p50:.1f} ms, p99 {p99:.1f} ms ({len(reads)} reads)"
        )
    lines.append("targets:")
    slower = beside - alone_s
    verdict = "PASS" if slower <= SLOWER_BY else "MISS"
    lines.append(
        f"  beta beside the batch {slower:+.2f} s against alone (within {SLOWER_BY:g} s)  {verdict}"
    )
    if reads:
        verdict = "PASS" if p99 <= STATUS_P99_MS else "MISS"
        lines.append(f"  status p99 while busy {p99:.1f} ms <= {STATUS_P99_MS:g} ms  {verdict}")
    return lines


@contextlib.contextmanager
def functions_output(path: Path) -> Iterator[None]:
    """While it lasts, stderr (`sys.stderr`, where the functions' log and metric lines go
    off Lambda, and file descriptor 2, which the emulator's worker processes inherit) writes
    to `path`, appended; then both are as they were."""
    sys.stderr.flush()
    saved_stream, saved_fd = sys.stderr, os.dup(2)
    with path.open("a", encoding="utf-8", buffering=1) as out:
        os.dup2(out.fileno(), 2)
        sys.stderr = out
        try:
            yield
        finally:
            out.flush()
            sys.stderr = saved_stream
            os.dup2(saved_fd, 2)
            os.close(saved_fd)


def make_images(folder: Path, count: int) -> None:
    """`count` small JPEGs, each of its own bytes (a gradient shifted per image, some grain)."""
    rng = np.random.default_rng(22)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    for n in range(count):
        path = folder / f"{n}.jpg"
        if path.exists():
            continue
        base = np.stack(
            [(x + 3 * n) % 256, (y + 7 * n) % 256, ((x + y) // 2 + 11 * n) % 256], axis=-1
        )
        grain = rng.integers(-12, 13, size=base.shape)
        pixels = np.clip(base + grain, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=85)
        path.write_bytes(buffer.getvalue())


@dataclass(frozen=True)
class ServedTenant:
    name: str
    api_key: str


@dataclass(frozen=True)
class ServedStack:
    """`serve` as a process of its own: what `Run` needs of an emulator."""

    api_url: str
    tenants: Sequence[ServedTenant]


@contextlib.contextmanager
def served(names: Sequence[str]) -> Iterator[ServedStack]:
    """`python -m local_emulator serve` with a key of ours per tenant, until the block ends."""
    tenants = [ServedTenant(name, secrets.token_urlsafe(24)) for name in names]
    command = [sys.executable, "-m", "local_emulator", "serve", "--port", "0"]
    command += ["--allow-private-hosts", "--quiet"]
    for tenant in tenants:
        command += ["--tenant", f"{tenant.name}={tenant.api_key}"]
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        command, cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        api_url = ""
        for line in process.stdout:
            if line.startswith("ready "):
                api_url = line.split()[1]
                break
        if not api_url:
            raise RuntimeError(f"serve did not start (exit status {process.poll()})")
        threading.Thread(target=process.stdout.read, daemon=True).start()
        yield ServedStack(api_url, tenants)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class Run:
    """The emulator with tenants alpha and beta, and the images' host."""

    def __init__(self, emu: Any, base: str) -> None:
        self.emu = emu
        self.base = base
        self.keys = {t.name: t.api_key for t in emu.tenants}
        self.next_image = 0

    def csv(self, rows: int) -> bytes:
        lines = []
        for n in range(1, rows + 1):
            lines.append(f"{n},P{n},{self.base}/{self.next_image}.jpg\n")
            self.next_image += 1
        return (HEADER + "".join(lines)).encode()

    def submit(self, tenant: str, rows: int) -> tuple[str, float]:
        """The job's id and the wall time its upload started."""
        started = time.time()
        request_id, _ = submit_csv(
            self.emu.api_url, self.keys[tenant], self.csv(rows), "f.csv", timeout=120
        )
        return request_id, started

    def status(self, tenant: str, request_id: str) -> dict[str, Any]:
        """The job's status; a 429 (the tenant's burst spent) waits its Retry-After, as a
        client does, and asks again."""
        while True:
            answer = get_status(self.emu.api_url, self.keys[tenant], request_id, 30, limit=1)
            if answer.status_code != 429:
                break
            time.sleep(float(answer.headers.get("Retry-After", "1")))
        answer.raise_for_status()
        doc: dict[str, Any] = answer.json()
        return doc

    def ended_after(
        self, tenant: str, request_id: str, started: float, every: float = POLL
    ) -> float:
        """Seconds from `started` (wall) to the job's terminal `updatedAt`."""
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            doc = self.status(tenant, request_id)
            if doc["status"] in TERMINAL:
                ended = datetime.fromisoformat(str(doc["updatedAt"])).timestamp()
                return ended - started
            time.sleep(every)
        raise RuntimeError(f"job {request_id} did not end")

    def alone(self) -> float:
        request_id, started = self.submit("beta", SMALL_ROWS)
        return self.ended_after("beta", request_id, started)

    def beside(self, jobs: int, rows: int) -> Busy:
        first = time.time()
        batch = [self.submit("alpha", rows)[0] for _ in range(jobs)]
        request_id, started = self.submit("beta", SMALL_ROWS)
        reads: list[float] = []
        beta_ended: list[float] = []
        errors: list[str] = []
        stop = threading.Event()
        session = requests.Session()
        session.headers.update(auth(self.keys["beta"]))
        url = f"{self.emu.api_url}/api/getProcessingStatus/{request_id}"

        def poll() -> None:
            while not stop.is_set():
                try:
                    t0 = time.perf_counter()
                    answer = session.get(url, timeout=30)
                    took = (time.perf_counter() - t0) * 1000
                    if answer.status_code != 200:
                        errors.append(f"{answer.status_code} {answer.text[:200]}")
                        stop.wait(1)
                        continue
                    reads.append(took)
                    doc = answer.json()
                    if not beta_ended and doc.get("status") in TERMINAL:
                        ended = datetime.fromisoformat(str(doc["updatedAt"])).timestamp()
                        done = sum(
                            self.status("alpha", j)["progress"]["processedProducts"] for j in batch
                        )
                        beta_ended.extend((ended, done / (jobs * rows)))
                except Exception as exc:  # said at the end; the batch is still waited for
                    errors.append(repr(exc))
                stop.wait(POLL)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            last = max(self.ended_after("alpha", j, first, every=1.0) for j in batch)
        finally:
            stop.set()
            poller.join(30)
        if errors:
            print(f"beta's status reads: {len(errors)} failed, the first: {errors[0]}")
        if not beta_ended:
            raise RuntimeError(f"beta's job {request_id} did not end")
        return Busy(beta_ended[0] - started, beta_ended[1], last, tuple(reads))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run beside the batch")
    parser.add_argument("--repeats", type=int, default=None, help="runs beside the batch")
    parser.add_argument("--jobs", type=int, default=10, help="alpha's jobs")
    parser.add_argument("--rows", type=int, default=100, help="rows per job of alpha's")
    parser.add_argument(
        "--served", action="store_true", help="the emulator as `serve`, a process of its own"
    )
    parser.add_argument(
        "--functions-log",
        type=Path,
        default=None,
        help="where the functions' log and metric lines go (default: a new temporary file)",
    )
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 2)
    per_run = args.jobs * args.rows + SMALL_ROWS
    functions_log: Path | None = args.functions_log
    if functions_log is None:
        handle, name = tempfile.mkstemp(prefix="fairness-functions-", suffix=".log")
        os.close(handle)
        functions_log = Path(name)
    where = "served (a process of its own)" if args.served else "in this process"
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores; the emulator {where}", flush=True
    )
    print(f"the functions' log and metric lines: {functions_log}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        make_images(Path(folder), 3 * SMALL_ROWS + repeats * per_run + SMALL_ROWS)
        options = EmulatorOptions(
            port=0,
            allow_private_hosts=True,
            quiet=True,
            verbose_dispatch=False,
            tenants=("alpha", "beta"),
            log=lambda line: None,
        )
        stack = served(("alpha", "beta")) if args.served else Emulator(options)
        with (
            functions_output(functions_log),  # serve inherits it as its stderr
            file_server(Path(folder)) as (base, _host_pid),
            stack as emu,
        ):
            run = Run(emu, base)
            run.alone()  # warm-up: imports, first clients
            alone = [run.alone() for _ in range(3)]
            busy = []
            for n in range(repeats):
                busy.append(run.beside(args.jobs, args.rows))
                print(f"run {n + 1}/{repeats}: beta {busy[-1].beta_seconds:.2f} s", flush=True)
    for line in report(alone, busy, args.jobs, args.rows):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
