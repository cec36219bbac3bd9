"""The whole local pipeline against the bare compressor, as a ratio, in two modes.

    python -m benchmarks.pipeline [--quick] [--rounds N] [--scale K] [--modes served,embedded]
                                  [--worker-processes 0|1] [--cache .bench-cache]

Both sides get the same images and the same two cores:

- bare: `chalicelib.imaging.compress_to_jpeg` in a pool of two spawned processes, the corpus
  (`benchmarks.corpus`) in memory (the same engine as `benchmarks.compressor`'s "ours");
- pipeline: one job per round, a CSV of rows naming the same images served over loopback by a
  separate image host. Timed from the upload (`POST /api/uploadAndProcessDocument`) to the
  job's terminal status (its `updatedAt`), so ingest, fan-out, download, compression, storage,
  records and finalization (the output CSV) are all inside. Two modes:
  - served: `python -m local_emulator serve` as a process of its own, one `--tenant` per
    round, the CSV uploaded over HTTP and the status polled over HTTP ten times a second
    with the round's tenant's key, as a user does;
  - embedded: the emulator in this process (`local_emulator.stack.Emulator`), the status
    read from MongoDB once a second (polling it more often here would take the GIL the
    pipeline needs; docs/performance.md), a tenant per round too.

Every image of a round has bytes of its own (`benchmarks._distinct`: a tag where decoders
skip it; the bare side compresses the same tagged bytes), and each round is a new tenant, so
content-addressed reuse has nothing to copy; each round proves it by the functions' own
`ImagesReused` metric (their EMF lines), printed as "reused", which must be 0.

Rounds are interleaved (bare, pipeline, pipeline, bare, ...); a mode's ratio is the median
over rounds of pipeline MP/s / bare MP/s measured within the same round. Each round also
prints the CPU the hypervisor gave to other guests ("steal", from /proc/stat) and the load.
At the end, per mode, the CPU per image of each phase (the functions' `PhaseCpuSeconds`
metric, `observability.phase`: the CPU of the threads doing it), against the pipeline's
processes' whole CPU and the bare compressor's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from pathlib import Path
from typing import IO, Any, Protocol

import requests
from pymongo import MongoClient

from benchmarks import corpus
from benchmarks._api import get_status, submit_csv
from benchmarks._workers import Setup, Variant
from benchmarks.compressor import QUALITY, REPEATS, PoolEngine, batches, megapixels
from local_emulator.stack import Emulator, EmulatorOptions

REPO = Path(__file__).resolve().parent.parent
MIN_ROUNDS = 5
DEFAULT_ROUNDS = 7
QUICK_ROUNDS = 3
TARGET = 0.9
IMAGES_PER_ROW = 2
TERMINAL = {"completed", "completed_with_errors", "failed", "cancelled"}
POLL_SERVED = 0.1  # a user's client: ten status reads a second, over HTTP
POLL_EMBEDDED = 1.0  # the embedded mode reads MongoDB in the emulator's own process
MODES = ("served", "embedded")
# The phases, in the pipeline's order (the names `observability.phase` is given).
PHASES = (
    ("upload", "upload (API)"),
    ("ingest", "ingest and fan-out"),
    ("download", "download"),
    ("compress", "decode and encode"),
    ("storage", "storage (S3 put)"),
    ("records", "records (rows, reuse index, claims)"),
    ("finalize", "finalization"),
    ("status", "status reads (API)"),
)
SETTLE = 0.3  # seconds for the last invocation's metrics to be written after the job ends


@dataclass
class Plan:
    """One round's work: the corpus indices, grouped into rows."""

    indices: list[int]
    rows: list[list[int]]
    megapixels: float

    def tags(self, prefix: str) -> list[tuple[int, str]]:
        """(corpus index, tag) of every image, in row order: no two tags alike."""
        rows = enumerate(self.rows)
        return [(i, f"{prefix}-{n}-{k}") for n, row in rows for k, i in enumerate(row)]


@dataclass
class Job:
    """One job through the pipeline, as measured."""

    seconds: float  # upload to the terminal status (the job's updatedAt)
    accepted: float  # the upload's answer
    seen: float  # when the client saw it terminal
    images: int
    metrics: dict[str, float] = field(default_factory=dict)  # EMF sums during the job
    cpu: float = 0.0  # the pipeline's processes' CPU seconds during the job
    mongo_cpu: float = 0.0  # of which the embedded MongoDB server's own process's

    @property
    def reused(self) -> int:
        return round(self.metrics.get("ImagesReused", 0))


@dataclass
class Round:
    bare: float
    pipeline: float
    accepted: float = 0.0
    bare_steal: float | None = None
    pipeline_steal: float | None = None
    bare_cpu: float = 0.0
    job: Job | None = None

    @property
    def ratio(self) -> float:
        return self.bare / self.pipeline


def plan_for(items: Sequence[corpus.Item], scale: int, images_per_row: int) -> Plan:
    groups = batches(items, {g: n * scale for g, n in REPEATS.items()})
    indices = [i for g in corpus.GROUPS for i in groups[g]]
    random.Random(6).shuffle(indices)  # rows mix sizes, as a real catalogue does
    rows = [indices[k : k + images_per_row] for k in range(0, len(indices), images_per_row)]
    return Plan(indices, rows, megapixels(items, indices))


def csv_for(plan: Plan, items: Sequence[corpus.Item], base: str, prefix: str) -> bytes:
    """The round's CSV: every image its own URL and, by its tag, its own bytes."""
    tags = iter(plan.tags(prefix))
    lines = ["S. No.,Product Name,Input Image Urls"]
    for n, row in enumerate(plan.rows, start=1):
        urls = ",".join(f"{base}/{items[i].spec.filename}?tag={next(tags)[1]}" for i in row)
        lines.append(f'{n},Product {n},"{urls}"')
    return ("\n".join(lines) + "\n").encode()


def paired_median(rounds: Sequence[Round]) -> float:
    """Median of the within-round ratios (pipeline throughput over bare throughput)."""
    if not rounds:
        raise ValueError("no rounds")
    return statistics.median(r.ratio for r in rounds)


# -- metrics and CPU ----------------------------------------------------------------------------


class MetricSums:
    """The functions' EMF metric lines, summed by name (and `Phase` dimension): what
    CloudWatch would chart. Fed line by line, from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sums: dict[str, float] = {}

    def feed(self, line: str) -> bool:
        """Sum the metrics of one line; False when it is not an EMF document."""
        if '"_aws"' not in line:
            return False
        try:
            document = json.loads(line)
            declared = document["_aws"]["CloudWatchMetrics"]
        except (ValueError, KeyError, TypeError):
            return False
        phase = document.get("Phase")
        with self._lock:
            for block in declared:
                for metric in block.get("Metrics", []):
                    name = metric["Name"]
                    key = f"{name}:{phase}" if phase and name == "PhaseCpuSeconds" else name
                    self._sums[key] = self._sums.get(key, 0.0) + float(document.get(name, 0))
        return True

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self._sums)


def difference(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def _ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _ticks()
    except (OSError, IndexError, ValueError):
        return 0.0


def descendants(root: int) -> list[int]:
    """`root` and every process under it, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += parents.get(pid, [])
    return found


def tree_cpu(root: int, exclude: Sequence[int] = ()) -> dict[int, float]:
    """CPU seconds of `root` and its descendants, by pid, but `exclude`d ones and theirs."""
    skip = {p for e in exclude for p in descendants(e)}
    return {pid: process_cpu(pid) for pid in descendants(root) if pid not in skip}


def cpu_between(
    before: dict[int, float], after: dict[int, float], only: Callable[[int], bool] | None = None
) -> float:
    """CPU seconds used between two `tree_cpu` readings (a process new since counts whole),
    of the processes `only` accepts (default: all)."""
    return sum(v - before.get(pid, 0.0) for pid, v in after.items() if only is None or only(pid))


def is_mongo_server(pid: int) -> bool:
    """Whether `pid` is the embedded MongoDB server's own process (local_emulator.mongo_process)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"local_emulator.mongo_process" in cmdline.read()
    except OSError:
        return False


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


# -- the image host -----------------------------------------------------------------------------


@contextlib.contextmanager
def file_server(folder: Path) -> Iterator[tuple[str, int]]:
    """The corpus over loopback HTTP, from a separate process (an image host of its own):
    its base URL and its pid."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-m", "benchmarks._image_host", str(port), str(folder)],
        cwd=REPO,
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
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(10)


# -- the pipeline's two modes -------------------------------------------------------------------


class Pipeline(Protocol):
    name: str

    def run(self, plan: Plan, items: Sequence[corpus.Item], round_no: int) -> Job: ...

    def close(self) -> None: ...


def tenant_names(rounds: int) -> list[str]:
    """The warm-up's tenant, then one per round."""
    return ["warm-up", *(f"round-{n}" for n in range(1, rounds + 1))]


def _ended_at(updated: object) -> float:
    return datetime.fromisoformat(str(updated).replace("Z", "+00:00")).timestamp()


class Served:
    """`python -m local_emulator serve` in a process of its own; one tenant per round; the
    CSV uploaded and the status polled over HTTP, as a user does."""

    name = "served"

    def __init__(
        self, base: str, rounds: int, worker_processes: bool | None, say: Callable[[str], None]
    ) -> None:
        self.base = base
        self.keys = {name: secrets.token_urlsafe(24) for name in tenant_names(rounds)}
        env = {**os.environ, "PHASE_METRICS": "1"}
        if worker_processes is not None:
            env["LOCAL_WORKER_PROCESSES"] = "1" if worker_processes else "0"
        command = [sys.executable, "-m", "local_emulator", "serve", "--port", "0"]
        command += ["--allow-private-hosts", "--quiet"]
        for name, key in self.keys.items():
            command += ["--tenant", f"{name}={key}"]
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            command,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.metrics = MetricSums()
        self._errors: list[str] = []
        assert self.process.stderr is not None and self.process.stdout is not None
        threading.Thread(target=self._read_stderr, args=(self.process.stderr,), daemon=True).start()
        self.api_url = ""
        self.describe: list[str] = []
        for line in self.process.stdout:
            if line.startswith("ready "):
                self.api_url = line.split()[1]
                break
        if not self.api_url:
            raise RuntimeError("serve did not start:\n" + "\n".join(self._errors[-20:]))
        threading.Thread(target=self.process.stdout.read, daemon=True).start()
        say(f"served: {' '.join(command[1:5])} ... ({len(self.keys)} tenants), {self.api_url}")
        for line in self.describe:
            if "runs in processes" in line:
                say(f"  {line}")

    def _read_stderr(self, stream: IO[str]) -> None:
        for line in stream:
            if self.metrics.feed(line):
                continue
            if "runs in processes of its own" in line:
                self.describe.append(line.strip())
            self._errors.append(line.rstrip())
            del self._errors[:-200]

    def run(self, plan: Plan, items: Sequence[corpus.Item], round_no: int) -> Job:
        tenant = tenant_names(round_no)[round_no]
        key = self.keys[tenant]
        body = csv_for(plan, items, self.base, f"{tenant}-{os.getpid()}")
        before_metrics, before_cpu = self.metrics.snapshot(), tree_cpu(self.process.pid)
        wall_started = time.time()
        started = time.perf_counter()
        request_id, accepted = submit_csv(self.api_url, key, body, "bench.csv", timeout=120)
        deadline = started + 1800
        etag, doc = "", {}
        with requests.Session() as session:  # a client keeps its connection, as the CLI's does
            while time.perf_counter() < deadline:
                time.sleep(POLL_SERVED)
                # as the command-line client watches a job: the progress (`limit=1`), with
                # the tag of the last answer; then the whole status once it has ended
                answer = get_status(
                    self.api_url, key, request_id, 30, etag=etag, session=session, limit=1
                )
                if answer.status_code == HTTPStatus.NOT_MODIFIED:
                    continue
                answer.raise_for_status()
                etag, doc = answer.headers.get("ETag", ""), answer.json()
                if doc["status"] in TERMINAL:
                    seen = time.perf_counter() - started
                    get_status(self.api_url, key, request_id, 30, session=session)
                    break
            else:
                raise RuntimeError(f"job {request_id} did not end")
        if doc["status"] != "completed":
            raise RuntimeError(f"job {request_id} ended {doc['status']}: {doc.get('progress')}")
        time.sleep(SETTLE)
        after_cpu = tree_cpu(self.process.pid)
        cpu = cpu_between(before_cpu, after_cpu)
        mongo_cpu = cpu_between(before_cpu, after_cpu, is_mongo_server)
        # the record has millisecond precision: never report less than the upload took
        elapsed = max(_ended_at(doc["updatedAt"]) - wall_started, accepted)
        metrics = difference(self.metrics.snapshot(), before_metrics)
        return Job(elapsed, accepted, seen, len(plan.indices), metrics, cpu, mongo_cpu)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


class Embedded:
    """The emulator in this process (one tenant per round); the status read from MongoDB."""

    name = "embedded"

    def __init__(
        self,
        base: str,
        rounds: int,
        worker_processes: bool | None,
        exclude: Sequence[int],
        say: Callable[[str], None],
    ) -> None:
        self.base = base
        self.exclude = list(exclude)
        os.environ["PHASE_METRICS"] = "1"
        # The functions write their metric lines (EMF) to stderr: this process's, and that of
        # the worker's processes it starts. Both go through a pipe read here, as CloudWatch
        # reads a function's log; the other lines go on to the real stderr.
        self.metrics = MetricSums()
        self._stderr = os.dup(2)
        readable, writable = os.pipe()
        os.dup2(writable, 2)
        os.close(writable)
        threading.Thread(
            target=self._pump, args=(readable, os.dup(self._stderr)), daemon=True
        ).start()
        self.emu = Emulator(
            EmulatorOptions(
                port=0,
                allow_private_hosts=True,
                quiet=True,
                verbose_dispatch=False,
                log=lambda line: None,
                tenants=tenant_names(rounds),
                worker_processes=worker_processes,
            )
        ).start()
        self.keys = {t.name: t.api_key for t in self.emu.tenants}
        self.client: Any = MongoClient(self.emu.mongo_uri)
        self.jobs = self.client[self.emu.environment.get("MONGO_DB", "image_pipeline")]["jobs"]
        say(
            "embedded: the emulator in this process"
            + (", the worker in processes of its own" if self.emu.worker_processes else "")
        )

    def run(self, plan: Plan, items: Sequence[corpus.Item], round_no: int) -> Job:
        tenant = tenant_names(round_no)[round_no]
        body = csv_for(plan, items, self.base, f"{tenant}-{os.getpid()}-e")
        before_metrics = self.metrics.snapshot()
        before_cpu = tree_cpu(os.getpid(), self.exclude)
        wall_started = time.time()
        started = time.perf_counter()
        request_id, accepted = submit_csv(
            self.emu.api_url, self.keys[tenant], body, "bench.csv", timeout=120
        )
        deadline = started + 1800
        while time.perf_counter() < deadline:
            time.sleep(POLL_EMBEDDED)
            doc = self.jobs.find_one({"_id": request_id}, {"status": 1, "updatedAt": 1})
            if doc is not None and doc["status"] in TERMINAL:
                seen = time.perf_counter() - started
                break
        else:
            raise RuntimeError(f"job {request_id} did not end")
        if doc["status"] != "completed":
            raise RuntimeError(f"job {request_id} ended {doc['status']}")
        time.sleep(SETTLE)
        after_cpu = tree_cpu(os.getpid(), self.exclude)
        cpu = cpu_between(before_cpu, after_cpu)
        mongo_cpu = cpu_between(before_cpu, after_cpu, is_mongo_server)
        elapsed = max(_ended_at(doc["updatedAt"]) - wall_started, accepted)
        metrics = difference(self.metrics.snapshot(), before_metrics)
        return Job(elapsed, accepted, seen, len(plan.indices), metrics, cpu, mongo_cpu)

    def _pump(self, readable: int, out: int) -> None:
        with open(readable, errors="replace") as lines, open(out, "w") as sink:
            for line in lines:
                if not self.metrics.feed(line):
                    sink.write(line)
                    sink.flush()

    def close(self) -> None:
        try:
            self.client.close()
            self.emu.stop()
        finally:
            sys.stderr.flush()
            os.dup2(self._stderr, 2)  # the pipe's last writer goes: the pump ends
            os.close(self._stderr)


# -- the report ---------------------------------------------------------------------------------


def breakdown(rounds: Sequence[Round]) -> list[str]:
    """CPU per image of each phase over all the rounds, against the pipeline's whole CPU and
    the bare compressor's."""
    jobs = [r.job for r in rounds if r.job is not None]
    images = sum(j.images for j in jobs)
    if not images:
        return []

    def per_image(seconds: float) -> str:
        return f"{seconds / images * 1000:7.1f} ms"

    lines = ["  CPU per image, by phase (the threads doing each; all rounds):"]
    counted = 0.0
    for key, label in PHASES:
        seconds = sum(j.metrics.get(f"PhaseCpuSeconds:{key}", 0.0) for j in jobs)
        counted += seconds
        lines.append(f"    {label:<44}{per_image(seconds)}")
    whole = sum(j.cpu for j in jobs)
    lines.append(
        f"    {'the rest (MongoDB server, moto, dispatch)':<44}{per_image(whole - counted)}"
    )
    mongo = sum(j.mongo_cpu for j in jobs)
    if mongo:
        lines.append(f"    {'  of which the MongoDB server process':<44}{per_image(mongo)}")
    lines.append(f"    {'the pipeline, all its processes':<44}{per_image(whole)}")
    bare_cpu = sum(r.bare_cpu for r in rounds)
    lines.append(f"    {'the bare compressor':<44}{per_image(bare_cpu)}")
    # CPU over wall: how many of the cores each side kept busy (the GIL caps the pipeline's)
    pipeline_wall = sum(j.seconds for j in jobs)
    bare_wall = sum(r.bare for r in rounds if r.job is not None)
    if pipeline_wall > 0 and bare_wall > 0:
        lines.append(
            f"  cores used: the pipeline {whole / pipeline_wall:.2f}, "
            f"the bare compressor {bare_cpu / bare_wall:.2f}"
        )
    return lines


def summary(mode: str, worker: str, plan: Plan, rounds: Sequence[Round]) -> list[str]:
    ratio = paired_median(rounds)
    bare_mps = plan.megapixels / statistics.median(r.bare for r in rounds)
    pipe_mps = plan.megapixels / statistics.median(r.pipeline for r in rounds)
    reused = sum(r.job.reused for r in rounds if r.job is not None)
    verdict = "meets" if ratio >= TARGET else "MISSES"
    return [
        f"{mode} ({worker}): bare {bare_mps:.1f} MP/s, pipeline {pipe_mps:.1f} MP/s (medians); "
        f"{reused} output(s) reused in all",
        *breakdown(rounds),
        f"RATIO pipeline/bare ({mode}, {worker}) = {ratio:.3f} (median of {len(rounds)} paired "
        f"rounds; min {min(r.ratio for r in rounds):.3f}, max {max(r.ratio for r in rounds):.3f}"
        f"); {verdict} the {TARGET} target",
    ]


def measure(
    pipe: Pipeline,
    *,
    bare: PoolEngine,
    plan: Plan,
    warm: Plan,
    items: Sequence[corpus.Item],
    rounds: int,
    say: Callable[[str], None],
) -> list[Round]:
    pipe.run(warm, items, 0)  # imports, first clients, codecs, indexes
    results: list[Round] = []
    for r in range(rounds):
        one = Round(0.0, 0.0)
        tags = plan.tags(f"{pipe.name}-{r + 1}-{os.getpid()}")
        for side in ("bare", "pipeline") if r % 2 == 0 else ("pipeline", "bare"):
            before = cpu_steal()
            if side == "bare":
                cpu = {pid: process_cpu(pid) for pid in bare.pids()}
                one.bare = bare.run_tagged(tags)
                one.bare_cpu = sum(process_cpu(pid) - cpu.get(pid, 0.0) for pid in bare.pids())
                one.bare_steal = _stolen(before)
            else:
                one.job = pipe.run(plan, items, r + 1)
                one.pipeline, one.accepted = one.job.seconds, one.job.accepted
                one.pipeline_steal = _stolen(before)
        job = one.job
        assert job is not None
        results.append(one)
        stolen = (
            f"  steal {one.bare_steal:.2f}s / {one.pipeline_steal:.2f}s"
            if one.bare_steal is not None and one.pipeline_steal is not None
            else ""
        )
        say(
            f"round {r + 1}/{rounds}: bare {one.bare:6.2f}s ({plan.megapixels / one.bare:5.1f} "
            f"MP/s)  pipeline {one.pipeline:6.2f}s ({plan.megapixels / one.pipeline:5.1f} MP/s, "
            f"upload answered in {one.accepted:.2f}s, seen at {job.seen:.2f}s)  ratio "
            f"{one.ratio:.3f}  reused {job.reused}{stolen}  load {_loadavg()}"
        )
        if job.reused:
            say(f"  {job.reused} output(s) were copied, not made: this round is not like with like")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds, half the work")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--scale", type=int, default=None, help="corpus repeats per round")
    parser.add_argument("--images-per-row", type=int, default=IMAGES_PER_ROW)
    parser.add_argument(
        "--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}"
    )
    parser.add_argument(
        "--worker-processes",
        choices=("0", "1"),
        default=None,
        help="the rows' function in processes of its own (1) or not (0); "
        "default: the emulator's default",
    )
    parser.add_argument("--cache", type=Path, default=corpus.DEFAULT_CACHE)
    args = parser.parse_args(argv)
    # killed, still stop `serve` and the pools (the finally blocks run on SystemExit)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    if rounds < (QUICK_ROUNDS if args.quick else MIN_ROUNDS):
        parser.error(f"at least {QUICK_ROUNDS if args.quick else MIN_ROUNDS} rounds")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        parser.error(f"--modes: some of {', '.join(MODES)}")
    scale = args.scale or (2 if args.quick else 4)
    worker_processes = None if args.worker_processes is None else args.worker_processes == "1"

    def say(text: str) -> None:
        print(text, flush=True)

    items = corpus.build(args.cache, log=True)
    plan = plan_for(items, scale, args.images_per_row)
    warm = plan_for(items, 1, args.images_per_row)
    say(
        f"pipeline vs bare compressor: {len(plan.indices)} images ({plan.megapixels:.0f} MP) in "
        f"{len(plan.rows)} rows per round, every image its own bytes, {rounds} rounds per mode "
        f"({', '.join(modes)}), interleaved"
    )
    say(
        f"python {platform.python_version()}, {os.cpu_count()} cores, "
        f"load average {_loadavg()} at start"
    )
    paths = tuple(str(item.path) for item in items)
    bare = PoolEngine("ours", "bare", Setup("ours", paths, QUALITY, Variant("ours", "ours")), 2)
    lines: list[str] = []
    try:
        bare.run(plan.indices[:8])  # the pool's processes, imports, codecs
        with file_server(args.cache / "corpus") as (base, host_pid):
            for mode in modes:
                say(f"\n== {mode}")
                pipe: Pipeline
                if mode == "served":
                    pipe = Served(base, rounds, worker_processes, say)
                else:
                    pipe = Embedded(base, rounds, worker_processes, [host_pid, *bare.pids()], say)
                try:
                    in_processes = (
                        worker_processes
                        if worker_processes is not None
                        else os.environ.get("LOCAL_WORKER_PROCESSES", "0").strip().lower()
                        in {"1", "true", "yes", "on"}
                    )
                    worker = (
                        "the worker in processes of its own"
                        if in_processes
                        else "the worker in the emulator's process"
                    ) + (" (the default)" if worker_processes is None else "")
                    found = measure(
                        pipe, bare=bare, plan=plan, warm=warm, items=items, rounds=rounds, say=say
                    )
                    lines += summary(mode, worker, plan, found)
                finally:
                    pipe.close()
    finally:
        bare.close()
    say("")
    for line in lines:
        say(line)
    say(f"load average {_loadavg()} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
