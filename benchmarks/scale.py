"""How a job scales with its rows: fan-out time, memory per function, MongoDB cost, status.

    python -m benchmarks.scale --rows 1000,10000,100000 [--sample-batches 5]

Per size, on a fresh local stack (moto, the embedded MongoDB, the Chalice API; the
dispatchers off, so each step is run and measured on its own):

1. accept: the CSV is uploaded through the API (validated before the answer);
2. ingest: the ingest function runs once, in a process of its own (as a Lambda would), on
   the storage event: validation, then the rows written chunk by chunk, each chunk's
   messages sent as soon as it is stored (timed: "fan-out");
3. worker: the worker function runs, in a process of its own, on the first
   `--sample-batches` batches of ten rows from the rows queue, with real downloads (a 3 MP
   photo over loopback) and compression;
4. FAST PATH, not the worker: the remaining rows are recorded straight through the store
   (`row_records.record_batch` with made-up results, a chunk of rows per call), because
   compressing 100,000 images takes hours on two cores; the rows queue is purged. What this
   times is MongoDB's cost of recording rows, not image work;
5. finalize: the finalizer runs, in a process of its own, on the finalize message that the
   last recorded row sent: the output CSV streamed from the rows, the terminal status.

Memory is measured inside each function's process: the peak of Python allocations during
the handler (tracemalloc) and the process's peak resident set (which includes the imports).
MongoDB operations are counted with a pymongo CommandListener in every process. Status page
latency (`GET /api/getProcessingStatus/{id}`, first page of 100 and last page) is the median
of 5 calls at the start (after fan-out), in the middle (half the rows recorded) and at the end.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from pymongo import MongoClient, monitoring

REPO = Path(__file__).resolve().parent.parent
FUNCTIONS = REPO / "functions"
if str(FUNCTIONS) not in sys.path:
    sys.path.insert(0, str(FUNCTIONS))

from chalicelib import bootstrap  # noqa: E402
from chalicelib.adapters.mongo_store import MongoJobStore  # noqa: E402
from chalicelib.domain.models import ImageResult, RowStatus  # noqa: E402
from chalicelib.services.row_messages import RowTask  # noqa: E402
from chalicelib.services.row_records import record_batch  # noqa: E402

from benchmarks import corpus  # noqa: E402
from benchmarks._api import get_status, submit_csv  # noqa: E402
from benchmarks._workers import own_peak_rss  # noqa: E402
from local_emulator.stack import Emulator, EmulatorOptions  # noqa: E402
from tests.support.servers import serve_bytes  # noqa: E402

BATCH = 10
_NOW = datetime(2026, 1, 1, tzinfo=UTC)
STATUS_CALLS = 5


class CountingListener(monitoring.CommandListener):
    """Counts MongoDB commands by name."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name not in {"endSessions", "hello", "isMaster", "ismaster", "ping"}:
            self.counts[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        return None

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return None


class Context:
    """The parts of Lambda's context object the handlers read."""

    def __init__(self, name: str, memory: int) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = name
        self.memory_limit_in_mb = memory
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
        self._deadline = time.monotonic() + 900

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


# -- one function invocation in a process of its own ------------------------------------------


def _record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {},
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": "us-east-1",
    }


def invoke(function: str, queue_env: str, handler_name: str, batches: int) -> dict[str, Any]:
    """Receive from the function's queue and run its handler up to `batches` times;
    answers time, peak traced memory, peak RSS and MongoDB commands."""
    listener = CountingListener()
    monitoring.register(listener)
    import app  # noqa: PLC0415 - the Chalice app, imported as the Lambda runtime does

    handler = getattr(app, handler_name)
    sqs = boto3.client("sqs")
    url = os.environ[queue_env]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    rss_before = own_peak_rss()
    seconds = 0.0
    peak = 0
    records = 0
    tracemalloc.start()
    for _ in range(batches):
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=BATCH, WaitTimeSeconds=5)
        got = messages.get("Messages", [])
        if not got:
            break
        event = {"Records": [_record(dict(m), arn) for m in got]}
        tracemalloc.reset_peak()
        started = time.perf_counter()
        answer = handler(event, Context(function, 1769))
        seconds += time.perf_counter() - started
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        records += len(got)
        failed = {f["itemIdentifier"] for f in (answer or {}).get("batchItemFailures", [])}
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
            for i, m in enumerate(got)
            if m["MessageId"] not in failed
        ]
        if entries:
            sqs.delete_message_batch(QueueUrl=url, Entries=entries)  # type: ignore[arg-type]
    tracemalloc.stop()
    return {
        "function": function,
        "records": records,
        "seconds": seconds,
        "traced_peak": peak,
        "rss_peak": own_peak_rss(),
        "rss_after_imports": rss_before,
        "mongo_ops": dict(listener.counts),
    }


def run_function(function: str, queue_env: str, handler: str, batches: int = 1) -> dict[str, Any]:
    out = subprocess.run(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "benchmarks.scale",
            "--invoke",
            json.dumps([function, queue_env, handler, batches]),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{function} failed:\n{out.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# -- the measurement of one size --------------------------------------------------------------


def _csv(rows: int, base: str) -> bytes:
    lines = ["S. No.,Product Name,Input Image Urls"]
    lines += [f"{n},Product {n},{base}/p.jpg?n={n}" for n in range(1, rows + 1)]
    return ("\n".join(lines) + "\n").encode()


def _status_latency(api: str, api_key: str, request_id: str, rows: int) -> tuple[float, float]:
    """Median seconds of the first page and of the last page of the status."""
    out = []
    for cursor in ("", str(max(0, rows - 100))):
        times = []
        for _ in range(STATUS_CALLS):
            started = time.perf_counter()
            answer = (
                get_status(api, api_key, request_id, 60, cursor=cursor)
                if cursor
                else get_status(api, api_key, request_id, 60)
            )
            answer.raise_for_status()
            times.append(time.perf_counter() - started)
        out.append(statistics.median(times))
    return out[0], out[1]


@contextlib.contextmanager
def _photo_server(cache: Path) -> Iterator[str]:
    items = corpus.build(cache)
    photo = next(i for i in items if i.spec.group == "3MP").read()
    with serve_bytes(photo, "image/jpeg") as base:
        yield base


def measure(rows: int, sample_batches: int, cache: Path) -> dict[str, Any]:
    with (
        _photo_server(cache) as images,
        Emulator(
            EmulatorOptions(
                port=0,
                allow_private_hosts=True,
                quiet=True,
                verbose_dispatch=False,
                start_dispatchers=False,
                log=lambda line: None,
                # the status pages are read STATUS_CALLS times in a row to time them, past a
                # tenant's burst (5 at the default DatabaseConnections): not a throttle test
                parameter_overrides={"TenantRateLimit": "100000", "TenantBurstLimit": "100000"},
            )
        ) as emu,
    ):
        api = emu.api_url
        db_name = emu.environment.get("MONGO_DB", "image_pipeline")
        listener = CountingListener()
        client: MongoClient[dict[str, Any]] = MongoClient(emu.mongo_uri, event_listeners=[listener])
        out: dict[str, Any] = {"rows": rows}
        try:
            body = _csv(rows, images)
            request_id, out["accept_s"] = submit_csv(
                api, emu.api_key, body, "scale.csv", timeout=600
            )
            out["csv_bytes"] = len(body)

            ingest = run_function("IngestFunction", "INGEST_QUEUE_URL", "ingest_csv")
            out["ingest"] = ingest
            out["fanout_s"] = ingest["seconds"]
            out["status_start"] = _status_latency(api, emu.api_key, request_id, rows)

            batches = min(sample_batches, max(1, rows // BATCH))
            worker = run_function("WorkerFunction", "ROWS_QUEUE_URL", "process_rows", batches)
            out["worker"] = worker

            # FAST PATH: the remaining rows recorded straight through the store.
            sqs = emu.sqs_client()
            sqs.purge_queue(QueueUrl=emu.environment["ROWS_QUEUE_URL"])
            store = MongoJobStore(client[db_name])
            deps = replace(bootstrap.dependencies(), store=store)
            listener.counts.clear()
            fast_rows = 0
            started = time.perf_counter()
            halfway_done = False
            chunk: list[tuple[int, RowTask, list[ImageResult]]] = []

            def flush() -> None:
                for _, error in record_batch(deps, chunk):
                    if error is not None:
                        raise error
                chunk.clear()

            for row in store.iter_rows(request_id):
                if row.status != RowStatus.PENDING:
                    continue
                task = RowTask(request_id, row.position, row.serial, row.urls)
                results = [
                    ImageResult(
                        url,
                        output_key=f"outputs/{request_id}/{row.serial}/{i}.jpg",
                        bytes_in=300_000,
                        bytes_out=60_000,
                    )
                    for i, url in enumerate(row.urls)
                ]
                chunk.append((len(chunk), task, results))
                fast_rows += 1
                if len(chunk) == 50:
                    flush()
                if not halfway_done and row.position >= rows // 2:
                    flush()
                    halfway_done = True
                    pause = time.perf_counter()
                    out["status_middle"] = _status_latency(api, emu.api_key, request_id, rows)
                    started += time.perf_counter() - pause
            flush()
            out["fast_path"] = {
                "rows": fast_rows,
                "seconds": time.perf_counter() - started,
                "mongo_ops": dict(listener.counts),
            }
            if "status_middle" not in out:
                out["status_middle"] = out["status_start"]

            final = run_function("FinalizeFunction", "FINALIZE_QUEUE_URL", "finalize_jobs")
            out["finalize"] = final
            out["status_end"] = _status_latency(api, emu.api_key, request_id, rows)
            doc = client[db_name]["jobs"].find_one({"_id": request_id})
            out["final_status"] = (doc or {}).get("status")
            out["documents"] = 1 + client[db_name]["rows"].count_documents({"jobId": request_id})
        finally:
            client.close()
    return out


# -- the chunk size: what recording a worker's batch costs ------------------------------------


def chunk_costs(sizes: Sequence[int], rows: int = 2000, urls: int = 2) -> list[str]:
    """Rows recorded as the worker does (batches of ten, `record_rows`) on the embedded
    MongoDB, per ROWS_PER_CHUNK: milliseconds per row, documents, commands per batch."""
    from chalicelib.domain.chunking import chunks  # noqa: PLC0415
    from chalicelib.domain.models import Job, JobStatus, Progress, StoredRow  # noqa: PLC0415

    from local_emulator.mongo import EmbeddedMongo  # noqa: PLC0415

    lines = [
        "",
        f"ROWS_PER_CHUNK: {rows:,} rows of {urls} images recorded in batches of {BATCH} "
        "(record_rows), embedded MongoDB",
        "| rows per chunk | documents | ingest ms/row | record_rows ms/row "
        "| commands per batch of 10 | record_row one by one ms/row (before) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    mongo = EmbeddedMongo()
    uri = mongo.start()
    try:
        for size in sizes:
            listener = CountingListener()
            client: MongoClient[dict[str, Any]] = MongoClient(uri, event_listeners=[listener])
            try:
                store = MongoJobStore(client[f"chunks{size}"])
                request_id = str(uuid.uuid4())
                store.create_job(Job(request_id, JobStatus.PENDING, "t", "t", "k", chunk_size=size))
                stored = [
                    StoredRow(
                        p,
                        p + 1,
                        f"Product {p}",
                        tuple(f"https://img.example/{p}/{i}.jpg" for i in range(urls)),
                    )
                    for p in range(rows)
                ]
                started = time.perf_counter()
                for number, chunk in enumerate(chunks(stored, size)):
                    store.insert_rows(request_id, number, chunk)
                ingest = time.perf_counter() - started
                store.start_processing(request_id, Progress(rows, 0, rows * urls), _NOW)
                listener.counts.clear()
                half = rows // 2

                def results(row: StoredRow) -> list[ImageResult]:
                    return [
                        ImageResult(u, output_key="o", bytes_in=9, bytes_out=3) for u in row.urls
                    ]

                started = time.perf_counter()
                for batch in chunks(stored[:half], BATCH):
                    store.record_rows(request_id, [(r.position, results(r)) for r in batch], _NOW)
                record = time.perf_counter() - started
                per_batch = sum(listener.counts.values()) / (half / BATCH)
                started = time.perf_counter()
                for row in stored[half:]:  # as before: one row, two commands, at a time
                    store.record_row(request_id, row.position, results(row), _NOW)
                one_by_one = time.perf_counter() - started
                docs = 1 + client[f"chunks{size}"]["rows"].count_documents({})
                lines.append(
                    f"| {size} | {docs:,} | {ingest / rows * 1000:.2f} "
                    f"| {record / half * 1000:.2f} | {per_batch:.1f} "
                    f"| {one_by_one / (rows - half) * 1000:.2f} |"
                )
            finally:
                client.close()
    finally:
        mongo.stop()
    return lines


# -- the report -------------------------------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def _ops(counts: dict[str, int]) -> int:
    return sum(counts.values())


def report(results: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "| rows | accept s | fan-out s | ingest MB traced / RSS | worker MB traced / RSS "
        "| finalize MB traced / RSS | output CSV s | Mongo docs | Mongo ops/job "
        "| status ms start / middle / end (first page; last page) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        ing, wrk, fin = r["ingest"], r["worker"], r["finalize"]
        per_batch = _ops(wrk["mongo_ops"]) / max(1, wrk["records"]) * BATCH
        ops = _ops(ing["mongo_ops"]) + per_batch * r["rows"] / BATCH + _ops(fin["mongo_ops"])
        status = " / ".join(
            f"{r[k][0] * 1000:.0f}; {r[k][1] * 1000:.0f}"
            for k in ("status_start", "status_middle", "status_end")
        )
        lines.append(
            f"| {r['rows']:,} | {r['accept_s']:.2f} | {r['fanout_s']:.1f} "
            f"| {_mb(ing['traced_peak'])} / {_mb(ing['rss_peak'])} "
            f"| {_mb(wrk['traced_peak'])} / {_mb(wrk['rss_peak'])} "
            f"| {_mb(fin['traced_peak'])} / {_mb(fin['rss_peak'])} "
            f"| {fin['seconds']:.2f} | {r['documents']:,} | {ops:,.0f} | {status} |"
        )
    lines.append("")
    for r in results:
        ing, wrk, fin, fast = r["ingest"], r["worker"], r["finalize"], r["fast_path"]
        lines.append(
            f"{r['rows']:,} rows ({r['final_status']}): ingest ops {ing['mongo_ops']}; "
            f"worker {wrk['records']} real rows in {wrk['seconds']:.1f}s, ops {wrk['mongo_ops']}; "
            f"FAST PATH (store only, no images) {fast['rows']:,} rows in {fast['seconds']:.1f}s, "
            f"ops {fast['mongo_ops']}; finalize ops {fin['mongo_ops']}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", default="1000,10000,100000")
    parser.add_argument("--sample-batches", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=corpus.DEFAULT_CACHE)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--chunk-sizes", default="", help="e.g. 10,25,50,100: compare ROWS_PER_CHUNK only"
    )
    parser.add_argument("--invoke", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.invoke:
        function, queue_env, handler, batches = json.loads(args.invoke)
        profile_to = os.environ.get("SCALE_PROFILE_DIR")  # cProfile each function's run
        if profile_to:
            import cProfile  # noqa: PLC0415 - only when asked

            profiler = cProfile.Profile()
            result = profiler.runcall(invoke, function, queue_env, handler, int(batches))
            profiler.dump_stats(str(Path(profile_to) / f"{function}.prof"))
        else:
            result = invoke(function, queue_env, handler, int(batches))
        sys.stdout = sys.__stdout__
        print(json.dumps(result), flush=True)
        return 0
    if args.chunk_sizes:
        for line in chunk_costs([int(s) for s in args.chunk_sizes.split(",") if s.strip()]):
            print(line)
        return 0
    sizes = [int(s) for s in args.rows.split(",") if s.strip()]
    print(f"scale: {sizes} rows; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(
        "rows beyond the worker's sample are recorded by a FAST PATH straight through the "
        "store (no download, no compression): see the docstring"
    )
    results = []
    for rows in sizes:
        started = time.perf_counter()
        results.append(measure(rows, args.sample_batches, args.cache))
        print(f"{rows:,} rows measured in {time.perf_counter() - started:.0f}s", flush=True)
        print("\n".join(report(results[-1:])[3:4]), flush=True)
    for line in report(results):
        print(line)
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} at end")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    with (
        contextlib.redirect_stderr(io.StringIO())
        if os.environ.get("SCALE_QUIET")
        else (contextlib.nullcontext())
    ):
        sys.exit(main())
