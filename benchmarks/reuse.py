"""Work not done twice, measured: what a re-submitted job saves.

    python -m benchmarks.reuse [--quick] [--rounds N] [--format jpeg|webp|avif]
                               [--max-width PX] [--cache .bench-cache]

A job of the corpus's images (`benchmarks.corpus`: JPEGs of 1, 3 and 12 MP and PNGs, each
its own bytes), three times per round:

1. first: tenant A's job; every image is decoded, encoded and stored (PutObject);
2. re-submitted: the same CSV, bytes and options from tenant A; every image is found by its
   content address and copied in the store (CopyObject), nothing decoded or encoded;
3. another tenant: the same job from tenant B, whose reuse key is another: made anew.

Each round has a fresh pair of tenants, so its first job is a first; a job of a tenant of
its own warms up (imports, codecs, indexes) before the first round. Timed: the worker's
handler (`queue_handlers.rows`, what the rows queue's function runs), in this process, on the
job's row messages ten at a time as the queue delivers them, images one after another; the
ingest and the finalizer run around it, untimed. The adapters are those the functions use
where reuse works: outputs in S3 (moto, in process), the job store, tenants and reuse index
in MongoDB (the embedded server). The downloads come from memory: reuse does not save the
download (the address is of the bytes), so what is timed is the work it saves and what
looking for it costs. Printed: time per image each way (the median over rounds), the
re-submitted job's speed-up (the median of each round's first/re-submitted), the bytes not
decoded and not encoded, and the targets: a re-submitted job copies every image, at least
`SPEEDUP` times faster per image; another tenant's copies none.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parent.parent
FUNCTIONS = REPO / "functions"
if str(FUNCTIONS) not in sys.path:
    sys.path.insert(0, str(FUNCTIONS))

import boto3  # noqa: E402
from chalicelib.adapters.mongo_reuse import MongoReuseIndex  # noqa: E402
from chalicelib.adapters.mongo_store import MongoJobStore  # noqa: E402
from chalicelib.adapters.mongo_tenants import MongoTenantStore  # noqa: E402
from chalicelib.adapters.s3 import S3ObjectStore  # noqa: E402
from chalicelib.config import Settings  # noqa: E402
from chalicelib.domain.output_options import OutputFormat, OutputOptions  # noqa: E402
from chalicelib.entrypoints import queue_handlers  # noqa: E402
from chalicelib.entrypoints.queue_handlers import QueueRecord  # noqa: E402
from chalicelib.services import status, tenant_admin, upload  # noqa: E402
from moto import mock_aws  # noqa: E402
from pymongo import MongoClient  # noqa: E402

from benchmarks import corpus  # noqa: E402
from local_emulator.mongo import EmbeddedMongo  # noqa: E402
from tests.fakes import FakeSecrets, FakeWorld, make_world  # noqa: E402

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SPEEDUP = 2.0  # a reused image costs at most half of one made the first time
DEFAULT_ROUNDS = 3
QUICK_ROUNDS = 1
BATCH = 10  # the rows queue's batch size in template.yaml
BUCKET = "bench-outputs"
HOST = "https://images.bench.test"
QUICK_GROUPS = ("1MP", "3MP", "PNG")


@dataclass(frozen=True)
class Pass:
    """One job through the worker: how long its rows took and what became of its images."""

    seconds: float
    images: int
    encoded: int  # outputs written (PutObject): decoded and encoded here
    copied: int  # outputs copied in the store (CopyObject): made before
    bytes_in: int  # the sources' bytes
    bytes_out: int  # the outputs' bytes

    @property
    def per_image(self) -> float:
        return self.seconds / self.images


@dataclass(frozen=True)
class Round:
    first: Pass
    same: Pass  # re-submitted by the same tenant
    other: Pass  # the same job from another tenant


class CountingStore(S3ObjectStore):
    """The outputs' S3 store, counting the images written (made here) and copied (reused)."""

    def __init__(self, client: S3Client, bucket: str) -> None:
        super().__init__(client, bucket)
        self.puts = 0
        self.copies = 0

    def put_bytes(self, key: str, data: bytes, content_type: str, cache_control: str = "") -> None:
        self.puts += 1
        super().put_bytes(key, data, content_type, cache_control)

    def copy(self, source_key: str, key: str) -> bool:
        copied = super().copy(source_key, key)
        self.copies += int(copied)
        return copied


# -- the measurement ---------------------------------------------------------------------------


@contextmanager
def worker_world(database: str) -> Iterator[tuple[FakeWorld[MongoJobStore], CountingStore]]:
    """The worker's dependencies: S3 on moto and MongoDB on the embedded server where reuse
    works; in-memory queues, downloads and secrets around them."""
    mongo = EmbeddedMongo()
    uri = mongo.start()
    client: MongoClient[Any] = MongoClient(uri)
    try:
        with mock_aws():
            s3 = boto3.client("s3", region_name="us-east-1")
            s3.create_bucket(Bucket=BUCKET)
            outputs = CountingStore(s3, BUCKET)
            db = client[database]
            world = make_world(
                Settings(tenant_secrets_prefix="bench/tenants/"),
                store=MongoJobStore(db),
                outputs=outputs,
                tenants=MongoTenantStore(db),
                reuse=MongoReuseIndex(db),
            )
            yield world, outputs
    finally:
        client.close()
        mongo.stop()


def add_tenant(world: FakeWorld[MongoJobStore], name: str) -> None:
    admin = tenant_admin.Admin(
        tenants=world.deps.tenants,
        secrets=FakeSecrets(),
        usage=None,
        secrets_prefix="bench/tenants/",
        clock=world.clock,
    )
    tenant_admin.create_tenant(admin, name)


def csv_for(items: Sequence[corpus.Item]) -> bytes:
    lines = ["S. No.,Product Name,Input Image Urls"]
    lines += [
        f"{n},{item.spec.name},{HOST}/{item.spec.filename}" for n, item in enumerate(items, 1)
    ]
    return ("\n".join(lines) + "\n").encode()


def run_job(
    world: FakeWorld[MongoJobStore],
    outputs: CountingStore,
    text: bytes,
    tenant: str,
    options: OutputOptions,
) -> Pass:
    """Submit, ingest (untimed), the rows through the worker's handler (timed), finalize."""
    deps = world.deps
    accepted = upload.submit_csv(deps, text, None, None, tenant, options=options)
    key = accepted.job.input_key
    created = {"bucket": {"name": "uploads"}, "object": {"key": key, "size": len(text)}}
    event = {"Records": [{"eventName": "ObjectCreated:Put", "s3": created}]}
    queue_handlers.ingest(deps, [QueueRecord("ingest", json.dumps(event))])
    puts, copies = outputs.puts, outputs.copies
    seconds = 0.0
    while sent := world.rows_queue.drain():
        for start in range(0, len(sent), BATCH):
            records = [
                QueueRecord(f"row-{start + i}", json.dumps(m.body))
                for i, m in enumerate(sent[start : start + BATCH])
            ]
            began = time.perf_counter()
            answer = queue_handlers.rows(deps, records)
            seconds += time.perf_counter() - began
            if answer.get("batchItemFailures"):
                raise RuntimeError(f"the worker failed rows: {answer}")
    for message in world.finalize_queue.drain():
        queue_handlers.finalize(deps, [QueueRecord("finalize", json.dumps(message.body))])
    world.webhook_queue.drain()
    doc = status.job_status(deps, accepted.job.request_id, tenant)
    if doc["status"] != "completed":
        raise RuntimeError(f"job ended {doc['status']}: {doc}")
    products: list[dict[str, Any]] = doc["products"]  # type: ignore[assignment]
    return Pass(
        seconds=seconds,
        images=sum(len(p["inputImageUrls"]) for p in products),
        encoded=outputs.puts - puts,
        copied=outputs.copies - copies,
        bytes_in=sum(sum(p["inputBytes"]) for p in products),
        bytes_out=sum(sum(p["outputBytes"]) for p in products),
    )


def measure(items: Sequence[corpus.Item], rounds: int, options: OutputOptions) -> list[Round]:
    text = csv_for(items)
    results = []
    with worker_world("reuse-bench") as (world, outputs):
        world.fetcher.responses = {f"{HOST}/{item.spec.filename}": item.read() for item in items}
        add_tenant(world, "warm-up")  # imports, codecs, indexes: before anything is timed
        run_job(world, outputs, text, "warm-up", options)
        for n in range(1, rounds + 1):
            shop, other = f"shop-{n}", f"other-{n}"
            add_tenant(world, shop)
            add_tenant(world, other)
            first = run_job(world, outputs, text, shop, options)
            same = run_job(world, outputs, text, shop, options)
            elsewhere = run_job(world, outputs, text, other, options)
            results.append(Round(first, same, elsewhere))
            print(
                f"round {n}/{rounds}: first {first.per_image * 1000:.1f} ms/image, "
                f"re-submitted {same.per_image * 1000:.1f}, "
                f"another tenant {elsewhere.per_image * 1000:.1f}",
                flush=True,
            )
    return results


# -- the report --------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms/image"


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def report(rounds: Sequence[Round]) -> list[str]:
    """Time per image each way (medians over rounds), the speed-ups (the median of each
    round's ratio), the bytes a reuse did not decode or encode, and the targets."""
    if not rounds:
        raise ValueError("no rounds to report")
    images = rounds[0].first.images
    first = statistics.median(r.first.per_image for r in rounds)
    same = statistics.median(r.same.per_image for r in rounds)
    other = statistics.median(r.other.per_image for r in rounds)
    speedup = statistics.median(r.first.per_image / r.same.per_image for r in rounds)
    other_ratio = statistics.median(r.first.per_image / r.other.per_image for r in rounds)
    last = rounds[-1]
    copied = min(r.same.copied for r in rounds)
    encoded_again = max(r.same.encoded for r in rounds)
    other_copied = max(r.other.copied for r in rounds)
    every = copied == images and encoded_again == 0
    lines = [
        f"a job of {images} images ({_mb(last.first.bytes_in)} in, "
        f"{_mb(last.first.bytes_out)} out), median of {len(rounds)} round(s):",
        f"  first time       {_ms(first)}  ({last.first.encoded} encoded, "
        f"{last.first.copied} copied)",
        f"  re-submitted     {_ms(same)}  ({last.same.encoded} encoded, "
        f"{last.same.copied} copied): {speedup:.1f}x faster per image; "
        f"{_mb(last.same.bytes_in)} not decoded, {_mb(last.same.bytes_out)} not encoded",
        f"  another tenant   {_ms(other)}  ({last.other.encoded} encoded, "
        f"{last.other.copied} copied): made anew, first/this {other_ratio:.2f}x",
        "targets:",
        f"  reuse: a re-submitted job copies every image, encodes none "
        f"({copied}/{images} copied, {encoded_again} encoded)  {'PASS' if every else 'FAIL'}",
        f"  reuse: a re-submitted job's images {speedup:.1f}x faster than the first time "
        f">= {SPEEDUP}x  {'PASS' if speedup >= SPEEDUP else 'MISS'}",
        f"  reuse: another tenant's same job copies nothing "
        f"({other_copied}/{images} copied)  {'PASS' if other_copied == 0 else 'FAIL'}",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round, no 12 MP photos")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--format", choices=[f.value for f in OutputFormat], default="jpeg")
    parser.add_argument("--max-width", type=int, default=None)
    parser.add_argument("--cache", type=Path, default=corpus.DEFAULT_CACHE)
    args = parser.parse_args(argv)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    specs = [s for s in corpus.SPECS if not args.quick or s.group in QUICK_GROUPS]
    items = corpus.build(args.cache, specs, log=True)
    options = OutputOptions(OutputFormat(args.format), None, args.max_width, None)
    print(
        f"reuse: {len(items)} images, options {options.to_dict()}, {rounds} round(s); "
        "the worker's handler timed, downloads from memory",
        flush=True,
    )
    for line in report(measure(items, rounds, options)):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
