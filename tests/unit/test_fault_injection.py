"""Exact results on an at-least-once world: every crash point, duplicated and reordered
deliveries and a failing receiver end in a terminal job with the right counts, each product
once in the output CSV, and one final event (one `webhook-id`) at the receiver. Every test
runs on each store (`job_store`: the in-memory fake and MongoJobStore, tests/support/stores.py).

The harness models SQS as Lambda sees it: a message whose handler raised, or that the handler
reported in `batchItemFailures`, comes back after its visibility timeout; after five receives
it goes to the dead-letter queue (rows) or is dropped (the others, as their DLQs would hold
them). A simulated clock moves ten seconds per delivery round, and on by whatever simulated
time the work itself takes (a slow fetch, a MongoDB call waiting for its server); the
sweeper runs every minute. Each invocation gets its function's `Budget` on that clock, from
its Timeout in template.yaml, as Lambda's context gives it; an invocation still running at
its Timeout is killed as Lambda kills it: nothing after that point runs, its answer never
arrives (its whole batch comes back), and its container, with what it cached, is gone.
Every fetch is counted by URL: the table gives the most fetches of any one image and the
mean per image.

Where redelivery alone must recover, the sweeper does not run at all, and the job must never
be what the sweeper looks for: untouched for STALL_AFTER, or its webhook overdue by as much (a
job whose rounds take no simulated time is then terminal before STALL_AFTER). A step that went
missing, which the sweeper would have repaired minutes later, fails the test. Where it runs,
the table says what it repaired.
"""

from __future__ import annotations

import contextlib
import csv
import inspect
import io
import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from chalicelib.adapters.fair_pool import FairThreadPool
from chalicelib.config import Settings
from chalicelib.domain.budget import Budget
from chalicelib.domain.models import ImageErrorCode, Job, JobStatus, RowStatus, WebhookState
from chalicelib.domain.timefmt import iso, parse_iso
from chalicelib.entrypoints import queue_handlers
from chalicelib.entrypoints.queue_handlers import BatchResponse, QueueRecord
from chalicelib.errors import Conflict, ImageFailure, TransientError
from chalicelib.ports import BatchRecorder
from chalicelib.services import ingest, job_actions, sweeper, upload
from chalicelib.services.deps import Dependencies
from chalicelib.services.job_url_cache import job_url_cache
from PIL import Image
from pymongo.errors import PyMongoError, ServerSelectionTimeoutError

from infra.cfn_yaml import load_template
from tests.fakes import FakeFetcher, FakeQueue, FakeWorld, FixedClock, SentMessage, make_world
from tests.support.stores import StoreUnderTest

HEADER = "S. No.,Product Name,Input Image Urls\n"
ROWS = 25
ROUND_SECONDS = 10
SWEEP_EVERY = 60
MAX_RECEIVES = 5
VISIBILITY_ROUNDS = 3

SETTINGS = Settings(
    webhook_secret="whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    webhook_retry_schedule=(10, 20, 30),
    ingest_lease=120,
    finalize_lease=120,
    stall_after=120,
    upload_url_ttl=300,
    rows_per_chunk=4,
    fetch_backoff=0.0,
    webhook_url="https://hook.test/for-jobs-without-their-own",
)


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 120, 40)).save(out, "JPEG", quality=90)
    return out.getvalue()


def products_csv(rows: int = ROWS) -> str:
    lines = [
        f'{n},Product {n},"https://img.test/{n}/a.jpg,https://img.test/{n}/b.jpg"'
        for n in range(1, rows + 1)
    ]
    return HEADER + "\n".join(lines) + "\n"


def storage_event(key: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": "uploads"},
                    "object": {"key": key, "size": 1, "eTag": "e"},
                },
            }
        ]
    }


class Crash(Exception):
    """A Lambda dying at an injected point."""


def crash_once(target: object, *methods: str, on_call: int = 1, after: bool = False) -> list[int]:
    """Make the `on_call`-th call of any of `target`'s `methods` (those it has; counted
    together) die, before or after doing its work."""
    calls = [0]

    def wrap(method: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            if calls[0] == on_call and not after:
                raise Crash(f"{method} died before its work")
            result = original(*args, **kwargs)
            if calls[0] == on_call and after:
                raise Crash(f"{method} died after its work")
            return result

        return wrapper

    for method in methods:
        if hasattr(target, method):
            setattr(target, method, wrap(method, getattr(target, method)))
    return calls


RECORDING = ("record_row", "record_rows")  # every way a store records rows


def _timeouts() -> dict[str, int]:
    """Each function's Timeout (s), read from template.yaml."""
    resources = load_template(Path(__file__).resolve().parents[2] / "template.yaml")["Resources"]
    return {
        name: int(resources[function]["Properties"]["Timeout"])
        for name, function in {
            "ingest": "IngestFunction",
            "rows": "WorkerFunction",
            "rows-dlq": "RowsDeadLetterFunction",
            "finalize": "FinalizeFunction",
            "webhook": "WebhookFunction",
            "sweeper": "SweepFunction",
        }.items()
    }


TIMEOUT = _timeouts()


class Killed(BaseException):
    """Lambda ending an invocation at its Timeout. A BaseException, as the end of the process
    is: no handler of the code catches it, so nothing after the point of the kill runs."""


PORTS = (
    "store",
    "uploads",
    "outputs",
    "rows_queue",
    "finalize_queue",
    "webhook_queue",
    "ingest_queue",
    "fetcher",
    "webhook_sender",
    "events",
)


@dataclass
class SimTime:
    """The simulated clock (the world's), read as seconds since the harness was built."""

    clock: FixedClock
    origin: datetime

    def seconds(self) -> float:
        return (self.clock.now() - self.origin).total_seconds()

    def budget(self, timeout: int) -> Budget:
        """An invocation's budget, as `Budget.from_context` makes it, on the simulated clock."""
        return Budget.seconds(timeout, self.seconds)


class Runtime:
    """Lambda's hold on an invocation: the ports an invocation is given raise Killed once the
    simulated clock is past its Timeout, on entering a call or on its return (the process
    ended during the call, whose effect, if any, stays)."""

    def __init__(self, time: SimTime) -> None:
        self.time = time
        self.ends_at = math.inf
        self._mortal: dict[int, Mortal] = {}

    def start(self, deps: Dependencies, timeout: int) -> Dependencies:
        """The dependencies of an invocation starting now."""
        self.ends_at = self.time.seconds() + timeout
        ports: dict[str, Any] = {port: self.mortal(getattr(deps, port)) for port in PORTS}
        return replace(deps, **ports)

    def end(self) -> None:
        self.ends_at = math.inf

    def mortal(self, target: object) -> Mortal:
        """One wrapper per port object, kept: the worker's caches are keyed by them."""
        found = self._mortal.get(id(target))
        if found is None or found._target is not target:
            found = self._mortal[id(target)] = Mortal(target, self)
            # still what the code asks of it: a store that records batches goes on doing so
            recorder = isinstance(target, BatchRecorder)
            assert isinstance(found, BatchRecorder) == recorder
        return found

    def check(self, call: str) -> None:
        if self.time.seconds() > self.ends_at:
            raise Killed(f"the invocation's Timeout passed during {call}")


class Proxy:
    """Stands for `target`: each of its methods is an attribute of the proxy itself (a
    runtime-checkable Protocol's isinstance looks them up statically: MongoJobStore must still
    be a BatchRecorder), calling through `_call`, which finds the method on the target at call
    time (a test may have replaced it). Other attributes are the target's."""

    def __init__(self, target: object) -> None:
        self._target = target
        for name in dir(target):
            if not name.startswith("_") and inspect.isroutine(getattr(target, name, None)):
                setattr(self, name, self._method(name))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)

    def _method(self, name: str) -> Callable[..., Any]:
        def method(*args: Any, **kwargs: Any) -> Any:
            return self._call(name, *args, **kwargs)

        method.__name__ = name
        return method  # a function: a proxy of a proxy sees it as a method too

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._target, name)(*args, **kwargs)


class Mortal(Proxy):
    """A port whose calls end with the invocation (Runtime)."""

    def __init__(self, target: object, runtime: Runtime) -> None:
        self._runtime = runtime
        super().__init__(target)

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self._runtime.check(name)
        result = super()._call(name, *args, **kwargs)
        self._runtime.check(name)
        return result


class CountingFetcher:
    """The code's fetcher: the world's, each fetch counted by URL; a URL in `seconds` takes
    that much simulated time (a slow host)."""

    def __init__(self, inner: FakeFetcher, clock: FixedClock) -> None:
        self.inner = inner
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def fetch(self, url: str) -> bytes:
        with self._lock:
            self.counts[url] += 1
        if url in self.seconds:
            self.clock.advance(self.seconds[url])
        return self.inner.fetch(url)  # looked up now: a test may have replaced it


@dataclass
class InFlight:
    message: SentMessage
    receives: int = 0
    visible_at: float = 0


@dataclass
class Sqs:
    """At-least-once delivery over a FakeQueue, with visibility timeout and receive count, to
    a function with a Timeout (seconds). With `budgeted`, the handler gets its invocation's
    Budget; an invocation that was killed, or that is found past its Timeout when it returns,
    failed its whole batch (Lambda never sees its answer)."""

    source: FakeQueue
    handler: Callable[..., BatchResponse]
    batch_size: int
    runtime: Runtime
    timeout: int
    budgeted: bool = False
    dead_letter: Sqs | None = None
    waiting: list[InFlight] = field(default_factory=list)
    shuffle: random.Random | None = None
    duplicate: bool = False
    kills: int = 0
    longest: float = 0.0  # the longest invocation seen, simulated seconds

    @property
    def time(self) -> SimTime:
        return self.runtime.time

    def collect(self, now: float) -> None:
        for message in self.source.drain():
            copies = 2 if self.duplicate else 1
            for _ in range(copies):
                self.waiting.append(InFlight(message, 0, now + message.delay_seconds))

    def deliver(self, deps: Any, now: float) -> bool:
        ready = [m for m in self.waiting if m.visible_at <= now]
        if not ready:
            return False
        if self.shuffle is not None:
            self.shuffle.shuffle(ready)
        for start in range(0, len(ready), self.batch_size):
            batch = ready[start : start + self.batch_size]
            records = []
            for n, item in enumerate(batch):
                item.receives += 1
                records.append(
                    QueueRecord(f"m{id(item)}-{n}", json.dumps(item.message.body), item.receives)
                )
            failed = self._invoke(deps, records)
            ended = max(now, self.time.seconds())  # the work may have taken simulated time
            for item, record in zip(batch, records, strict=True):
                if record.message_id not in failed:
                    self.waiting.remove(item)
                elif item.receives >= MAX_RECEIVES:
                    self.waiting.remove(item)
                    if self.dead_letter is not None:
                        self.dead_letter.waiting.append(InFlight(item.message, 0, ended))
                else:
                    item.visible_at = ended + VISIBILITY_ROUNDS * ROUND_SECONDS
        return True

    def _invoke(self, deps: Any, records: list[QueueRecord]) -> set[str]:
        """One invocation; the ids of the records that come back."""
        everything = {r.message_id for r in records}
        started = self.time.seconds()
        mortal = self.runtime.start(deps, self.timeout)
        try:
            if self.budgeted:
                response = self.handler(mortal, records, self.time.budget(self.timeout))
            else:
                response = self.handler(mortal, records)
            failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        except Killed:
            failed = everything
        except Exception:  # a handler that raises fails its whole batch, as on Lambda
            failed = everything
        finally:
            self.runtime.end()
        took = self.time.seconds() - started
        self.longest = max(self.longest, took)
        if took > self.timeout:  # killed at its Timeout: its answer never arrived
            self.kills += 1
            job_url_cache(mortal).clear()  # a new container takes the batch
            failed = everything
        return failed


@dataclass
class Harness:
    world: FakeWorld[Any]
    stores: StoreUnderTest
    queues: dict[str, Sqs]
    time: SimTime
    fetches: CountingFetcher
    _created: str = ""
    delivered_at: int | None = None
    repairs: set[str] = field(default_factory=set)  # what the sweeper did (SweepReport)

    @classmethod
    def build(
        cls, job_store: StoreUnderTest, *, shuffle: int | None = None, duplicate: bool = False
    ) -> Harness:
        world = make_world(SETTINGS, store=job_store.store)
        world.fetcher.responses = {
            f"https://img.test/{n}/{x}.jpg": jpeg() for n in range(1, ROWS + 1) for x in "ab"
        }
        fetches = CountingFetcher(world.fetcher, world.clock)
        world.deps.fetcher = fetches
        time = SimTime(world.clock, world.clock.now())
        runtime = Runtime(time)
        rng = random.Random(shuffle) if shuffle is not None else None

        def sqs(
            source: FakeQueue, handler: Callable[..., BatchResponse], name: str, **more: Any
        ) -> Sqs:
            size = 10 if name.startswith("rows") else 1
            return Sqs(source, handler, size, runtime, TIMEOUT[name], **more)

        dlq = sqs(FakeQueue(), queue_handlers.rows_dead_letter, "rows-dlq")
        queues = {
            "ingest": sqs(
                world.ingest_queue,
                queue_handlers.ingest,
                "ingest",
                budgeted=True,
                duplicate=duplicate,
            ),
            "rows": sqs(
                world.rows_queue,
                queue_handlers.rows,
                "rows",
                budgeted=True,
                dead_letter=dlq,
                shuffle=rng,
                duplicate=duplicate,
            ),
            "rows-dlq": dlq,
            "finalize": sqs(
                world.finalize_queue, queue_handlers.finalize, "finalize", duplicate=duplicate
            ),
            "webhook": sqs(
                world.webhook_queue, queue_handlers.webhooks, "webhook", duplicate=duplicate
            ),
        }
        return cls(world, job_store, queues, time, fetches)

    def elapsed(self) -> int:
        return int((self.world.clock.now() - parse_iso(self._created)).total_seconds())

    def submit(self, webhook: str = "https://hook.test/h") -> str:
        accepted = upload.submit_csv(
            self.world.deps, products_csv().encode(), webhook, None, "default"
        )
        self._created = accepted.job.created_at
        self.notify(accepted.job.input_key)
        return accepted.job.request_id

    def notify(self, key: str) -> None:
        self.world.ingest_queue.send_batch([storage_event(key)])

    def run(self, request_id: str, max_seconds: int = 3600, *, sweeper: bool = True) -> int:
        """Deliver and sweep until the job is terminal and its webhook settled; returns the
        simulated seconds from submission to the terminal state. Without the sweeper, the job
        must never be found stalled (the sweeper would have stepped in)."""
        terminal_at: int | None = None
        next_sweep = self.time.seconds()
        until = self.time.seconds() + max_seconds
        while (now := self.time.seconds()) < until:
            for sqs in self.queues.values():
                sqs.collect(now)
            for sqs in self.queues.values():
                sqs.deliver(self.world.deps, now)
            job = self.world.store.get_job(request_id)
            if job is None:  # not created yet (its creator died; the event comes back)
                self.world.clock.advance(ROUND_SECONDS)
                continue
            if job.status.terminal and terminal_at is None:
                terminal_at = self.elapsed()
            settled = job.webhook.state in (WebhookState.DELIVERED, WebhookState.FAILED)
            if settled and self.delivered_at is None and job.status.terminal:
                self.delivered_at = self.elapsed()
            idle = not any(q.waiting or q.source.sent for q in self.queues.values())
            if job.status.terminal and settled and idle:
                assert terminal_at is not None
                return terminal_at
            assert sweeper or not self.stalled(job), (
                f"{job.status} and untouched for {SETTINGS.stall_after} s at "
                f"{self.elapsed()} s: only the sweeper would move it"
            )
            self.world.clock.advance(ROUND_SECONDS)
            if sweeper and now >= next_sweep:
                next_sweep = now + SWEEP_EVERY
                self.sweep()
        raise AssertionError(
            f"job {request_id} did not settle: {self.world.store.get_job(request_id)}"
        )

    def stalled(self, job: Job) -> bool:
        """Whether the sweeper would repair the job now (`find_stalled`, `find_webhooks_due`)."""
        before = self.world.clock.now() - timedelta(seconds=SETTINGS.stall_after)
        if not job.status.terminal:
            return parse_iso(job.updated_at) < before
        hook = job.webhook
        due = hook.state == WebhookState.PENDING and bool(hook.next_attempt_at)
        return due and parse_iso(hook.next_attempt_at) < before

    def sweep(self) -> None:
        # MongoDB unreachable fails the run: the next scheduled one tries again
        with contextlib.suppress(PyMongoError):
            report = sweeper.sweep(self.world.deps, self.time.budget(TIMEOUT["sweeper"]))
            self.repairs.update(name for name, jobs in report.to_dict().items() if jobs)

    def fetched(self) -> str:
        """The most fetches of any one image, and fetches per image on average."""
        counts = self.fetches.counts
        return f"{max(counts.values(), default=0)} | {sum(counts.values()) / (2 * ROWS):.2f}"

    def final_events(self) -> set[str]:
        """Distinct final events the receiver accepted (2xx), by webhook-id."""
        return {
            h["webhook-id"]
            for (_, _, h), code in zip(
                self.world.sender.posts, self.world.sender.answered, strict=True
            )
            if code is not None and 200 <= code < 300
        }

    def assert_exact(self, request_id: str, *, failed_images: int = 0) -> None:
        job = self.world.store.get_job(request_id)
        assert job is not None
        assert job.status == (
            JobStatus.COMPLETED if failed_images == 0 else JobStatus.COMPLETED_WITH_ERRORS
        )
        p = job.progress
        assert (p.total_products, p.processed_products) == (ROWS, ROWS)
        assert (p.total_images, p.processed_images, p.failed_images) == (
            2 * ROWS,
            2 * ROWS,
            failed_images,
        )
        data = self.world.outputs.objects[job.output_csv_key][0].decode()
        serials = [int(r[0]) for r in list(csv.reader(io.StringIO(data)))[1:]]
        assert serials == list(range(1, ROWS + 1))
        assert self.final_events() == {job.webhook.webhook_id}
        assert job.webhook.state == WebhookState.DELIVERED


OUTCOMES: list[tuple[str, str, str, int, int | None, str, str]] = []


@pytest.fixture(scope="module", autouse=True)
def outcome_table() -> Any:
    yield
    print(
        "\nfault | store | outcome | s to terminal | s to webhook delivered (simulated clock)"
        " | fetches of the most fetched image | fetches per image | sweeper"
    )
    for fault, store, outcome, seconds, delivered, fetched, by_sweeper in OUTCOMES:
        print(f"{fault} | {store} | {outcome} | {seconds} | {delivered} | {fetched} | {by_sweeper}")


def record(fault: str, harness: Harness, request_id: str, seconds: int, sweeper: bool) -> None:
    job = harness.world.store.get_job(request_id)
    assert job is not None
    OUTCOMES.append(
        (
            fault,
            harness.stores.kind,
            str(job.status),
            seconds,
            harness.delivered_at,
            harness.fetched(),
            "off" if not sweeper else f"ran: {', '.join(sorted(harness.repairs)) or 'nothing'}",
        )
    )


def test_no_fault_baseline(job_store: StoreUnderTest) -> None:
    h = Harness.build(job_store)
    request_id = h.submit()
    seconds = h.run(request_id, sweeper=False)
    h.assert_exact(request_id)
    record("none", h, request_id, seconds, sweeper=False)


def test_crash_after_the_csv_is_stored_before_the_job_record(job_store: StoreUnderTest) -> None:
    """A CSV dropped in the bucket: the ingest dies before creating the job; the storage
    event comes back and the job is created once."""
    h = Harness.build(job_store)
    data = products_csv().encode()
    key = "incoming/partner/drop.csv"
    h.world.uploads.put_bytes(key, data, "text/csv")
    crash_once(h.world.store, "create_job")
    h.notify(key)
    request_id = ingest.job_id_for_key(key, "e")
    h._created = iso(h.world.clock.now())
    seconds = h.run(request_id, sweeper=False)
    h.assert_exact(request_id)
    assert job_store.job_count() == 1
    record("after CSV stored, before job record", h, request_id, seconds, sweeper=False)


def test_crash_after_the_job_record_before_the_csv_is_stored(job_store: StoreUnderTest) -> None:
    """The API died between writing the job and storing its CSV: the sweeper ends the job
    `failed` with the reason once the upload window has passed, and says so by webhook."""
    h = Harness.build(job_store)
    crash_once(h.world.uploads, "put_bytes")
    with pytest.raises(Crash):
        upload.submit_csv(
            h.world.deps, products_csv().encode(), "https://hook.test/h", None, "default"
        )
    (created,) = h.world.store.find_stalled(h.world.clock.now() + timedelta(days=1), 10)
    request_id, h._created = created.request_id, created.created_at
    seconds = h.run(request_id)
    job = h.world.store.get_job(request_id)
    assert job is not None and job.status == JobStatus.FAILED
    assert "no CSV arrived" in str(job.errors[0]["message"])
    assert h.final_events() == {job.webhook.webhook_id}
    record("after job record, before CSV stored (API)", h, request_id, seconds, sweeper=True)


@pytest.mark.parametrize(
    ("method", "on_call", "after", "fault"),
    [
        ("start_processing", 1, False, "after job record, before fan-out"),
        ("send_batch", 1, False, "fan-out: first batch"),
        ("send_batch", 2, True, "fan-out: middle"),
        ("insert_rows", 3, False, "storing rows: two chunks stored and sent"),
        ("insert_rows", 5, True, "storing rows: a chunk stored, not sent"),
        ("record_fanout", 1, False, "every row stored and sent, fan-out not recorded"),
    ],
)
def test_crash_in_ingest(
    job_store: StoreUnderTest, method: str, on_call: int, after: bool, fault: str
) -> None:
    """The ingest's claim has a lease: a crash in it waits for the lease, not the sweeper."""
    h = Harness.build(job_store)
    target = h.world.rows_queue if method == "send_batch" else h.world.store
    crash_once(target, method, on_call=on_call, after=after)
    request_id = h.submit()
    seconds = h.run(request_id)
    h.assert_exact(request_id)
    record(fault, h, request_id, seconds, sweeper=True)


def test_crash_after_an_image_is_stored_before_it_is_recorded(job_store: StoreUnderTest) -> None:
    h = Harness.build(job_store)
    crash_once(h.world.store, *RECORDING, on_call=3)
    request_id = h.submit()
    seconds = h.run(request_id, sweeper=False)
    h.assert_exact(request_id)
    assert len(h.world.outputs.objects) == 2 * ROWS + 1  # keys rewritten, never duplicated
    record("image stored, row not recorded", h, request_id, seconds, sweeper=False)


def test_crash_between_a_row_and_its_counter(job_store: StoreUnderTest) -> None:
    """The row's update landed and its counter never did: the sweeper recounts."""
    h = Harness.build(job_store)
    store = h.world.store
    lost = [False]

    def lose_the_last_rows_count(request_id: str, recorded: list[int]) -> None:
        if ROWS - 1 in recorded and not lost[0]:
            lost[0] = True
            job_store.lose_counts(request_id, products=1)
            raise Crash("died between the row and its counter")

    record_row = store.record_row

    def record_one(request_id: str, position: int, results: Any, now: Any) -> Any:
        progress = record_row(request_id, position, results, now)
        lose_the_last_rows_count(request_id, [position] if progress is not None else [])
        return progress

    store.record_row = record_one
    record_rows = getattr(store, "record_rows", None)
    if record_rows is not None:

        def record_many(request_id: str, rows: Any, now: Any) -> Any:
            progress = record_rows(request_id, rows, now)
            counted = [p for (p, _), c in zip(rows, progress, strict=True) if c is not None]
            lose_the_last_rows_count(request_id, counted)
            return progress

        store.record_rows = record_many
    request_id = h.submit()
    seconds = h.run(request_id)
    h.assert_exact(request_id)
    record("row recorded, counter lost", h, request_id, seconds, sweeper=True)


@pytest.mark.parametrize(
    ("point", "after", "sweeper", "fault"),
    [
        ("store.claim_finalization", False, False, "last row, dies before its claim"),
        ("store.claim_finalization", True, True, "last row, claim taken, finalize not sent"),
        ("finalize_queue.send_batch", False, True, "last row, before finalization message"),
        ("store.finish_job", False, False, "finalizer dies before the terminal status"),
        ("webhook_queue.send_batch", False, True, "terminal, webhook never queued"),
        ("sender.post", True, False, "webhook POSTed, attempt not recorded"),
        ("sender.post", False, False, "webhook sender dies before POST"),
    ],
)
def test_crash_at_the_end_of_the_job_or_in_its_webhook(
    job_store: StoreUnderTest, point: str, after: bool, sweeper: bool, fault: str
) -> None:
    """Without `sweeper` the redelivered message alone must finish the job (a claim taken
    and lost waits for its lease, which the sweeper's visit may come before)."""
    h = Harness.build(job_store)
    target, method = point.split(".")
    crash_once(getattr(h.world, target), method, after=after)
    request_id = h.submit()
    seconds = h.run(request_id, sweeper=sweeper)
    h.assert_exact(request_id)
    record(fault, h, request_id, seconds, sweeper)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_duplicated_and_reordered_deliveries(job_store: StoreUnderTest, seed: int) -> None:
    h = Harness.build(job_store, shuffle=seed, duplicate=True)
    request_id = h.submit()
    h.notify(f"incoming/{request_id}.csv")  # and the storage event twice more
    seconds = h.run(request_id, sweeper=False)
    h.assert_exact(request_id)
    assert job_store.job_count() == 1
    record(f"every message twice, shuffled (seed {seed})", h, request_id, seconds, sweeper=False)


def test_receiver_failing_its_first_attempts(job_store: StoreUnderTest) -> None:
    h = Harness.build(job_store)
    h.world.sender.answers = [500, None, 503]
    request_id = h.submit()
    seconds = h.run(request_id, sweeper=False)
    h.assert_exact(request_id)
    job = h.world.store.get_job(request_id)
    assert job is not None
    assert [a.status_code for a in job.webhook.history] == [500, None, 503, 200]
    assert len({h["webhook-id"] for _, _, h in h.world.sender.posts}) == 1
    record("receiver fails its first 3 attempts", h, request_id, seconds, sweeper=False)


def test_a_row_that_always_crashes_goes_to_the_dead_letter_queue(
    job_store: StoreUnderTest,
) -> None:
    """Five receives take longer than STALL_AFTER: the sweeper runs, as it would."""
    h = Harness.build(job_store)
    original = h.world.outputs.put_bytes

    def put_bytes(key: str, data: bytes, content_type: str, cache_control: str = "") -> None:
        if "/7/" in key:
            raise ConnectionError("storing this row's images fails on every receive")
        original(key, data, content_type, cache_control)

    h.world.outputs.put_bytes = put_bytes  # type: ignore[method-assign]
    request_id = h.submit()
    seconds = h.run(request_id)
    job = h.world.store.get_job(request_id)
    assert job is not None and job.status == JobStatus.COMPLETED_WITH_ERRORS
    assert job.progress.failed_images == 2
    (row,) = [r for r in h.world.store.iter_rows(request_id) if r.serial == 7]
    assert "dead-letter" in row.errors[0]["message"]
    assert h.final_events() == {job.webhook.webhook_id}
    record("a row crashes on every receive (DLQ)", h, request_id, seconds, sweeper=True)


def test_transient_failures_are_retried_and_permanent_ones_are_not(
    job_store: StoreUnderTest,
) -> None:
    h = Harness.build(job_store)
    flaky = "https://img.test/3/a.jpg"
    gone = "https://img.test/4/b.jpg"
    answers: dict[str, list[bytes | ImageFailure]] = {
        flaky: [
            ImageFailure(ImageErrorCode.HTTP_ERROR, "HTTP 503", retryable=True),
            ImageFailure(ImageErrorCode.TIMEOUT, "timed out", retryable=True),
            jpeg(),
        ],
    }
    original = h.world.fetcher.fetch
    calls: dict[str, int] = {}

    def fetch(url: str) -> bytes:
        calls[url] = calls.get(url, 0) + 1
        if url == gone:
            raise ImageFailure(ImageErrorCode.HTTP_ERROR, "HTTP 404")
        if answers.get(url):
            answer = answers[url].pop(0)
            if isinstance(answer, ImageFailure):
                raise answer
            return answer
        return original(url)

    h.world.fetcher.fetch = fetch  # type: ignore[method-assign]
    request_id = h.submit()
    h.run(request_id, sweeper=False)
    h.assert_exact(request_id, failed_images=1)
    assert calls[flaky] == 3 and calls[gone] == 1
    assert len(h.world.sleeps) == 2  # one backoff per retry


def test_retry_requeues_only_the_failed_images_and_finalizes_again(
    job_store: StoreUnderTest,
) -> None:
    h = Harness.build(job_store)
    gone = "https://img.test/4/b.jpg"
    image = h.world.fetcher.responses.pop(gone)
    request_id = h.submit()
    h.run(request_id, sweeper=False)
    first = h.world.store.get_job(request_id)
    assert first is not None and first.status == JobStatus.COMPLETED_WITH_ERRORS
    first_csv = h.world.outputs.objects[first.output_csv_key][0]

    h.world.fetcher.responses[gone] = image
    h.world.fetcher.calls.clear()
    job_actions.retry_failed(h.world.deps, request_id)
    h.run(request_id, sweeper=False)
    job = h.world.store.get_job(request_id)
    assert job is not None and job.status == JobStatus.COMPLETED
    assert job.progress.processed_images == 2 * ROWS and job.progress.failed_images == 0
    assert h.final_events() == {first.webhook.webhook_id, job.webhook.webhook_id}
    assert h.world.fetcher.calls == [gone]
    second = h.world.store.get_job(request_id)
    assert second is not None and second.generation == 1
    assert second.webhook.webhook_id != first.webhook.webhook_id
    assert h.world.outputs.objects[second.output_csv_key][0] != first_csv
    assert h.world.events.types().count("job.completed_with_errors") == 1
    assert h.world.events.types().count("job.completed") == 1


def test_retry_waits_for_the_first_final_event(job_store: StoreUnderTest) -> None:
    h = Harness.build(job_store)
    h.world.fetcher.responses.pop("https://img.test/4/b.jpg")
    request_id = h.submit()
    working = [q for name, q in h.queues.items() if name != "webhook"]

    def terminal() -> bool:
        job = h.world.store.get_job(request_id)
        return job is not None and job.status.terminal

    for _ in range(20):  # deliveries at once, no sweeper: a few rounds end the job
        if terminal():  # the webhook stays queued
            break
        for sqs in working:
            sqs.collect(0)
            sqs.deliver(h.world.deps, 0)
    assert terminal()
    with pytest.raises(Conflict, match="still being delivered"):
        job_actions.retry_failed(h.world.deps, request_id)


def test_redeliver_sends_the_same_event_again(job_store: StoreUnderTest) -> None:
    h = Harness.build(job_store)
    request_id = h.submit()
    h.run(request_id, sweeper=False)
    job = job_actions.redeliver_webhook(h.world.deps, request_id)
    assert job.webhook.state == WebhookState.PENDING
    h.run(request_id, sweeper=False)
    ids = [headers["webhook-id"] for _, _, headers in h.world.sender.posts]
    assert len(ids) == 2 and len(set(ids)) == 1
    final = h.world.store.get_job(request_id)
    assert final is not None and final.webhook.attempts == 2


def test_lifecycle_events_are_published_once(job_store: StoreUnderTest) -> None:
    h = Harness.build(job_store, duplicate=True)
    request_id = h.submit()
    h.run(request_id, sweeper=False)
    assert h.world.events.types() == ["job.accepted", "job.completed"]
    assert all(detail["requestId"] == request_id for _, detail in h.world.events.published)


# -- faults of Lambda's limits and of the services around it ------------------------------------


class ThreadPool(ThreadPoolExecutor):
    """A WorkPool on a plain ThreadPoolExecutor, which starts a thread whenever no idle one is
    left for the work queued: every image of a batch is under way at once."""

    def run[T](self, key: str, work: Callable[[], T], *, tenant: str = "") -> Future[T]:
        return self.submit(work)


class BurstPool(FairThreadPool):
    """The worker's pool, warm (one thread idle since an earlier batch), under a schedule a
    loaded machine can produce and this forces: the first `burst` pieces of work are all
    handed over before the idle thread wakes (the pool's lock is held until then)."""

    def __init__(self, max_workers: int, burst: int) -> None:
        super().__init__(max_workers)
        self._burst = burst
        self._submitted = 0
        super().run("an earlier batch", lambda: None).result(10)
        assert _within(10, lambda: self._idle == 1)

    def run[T](self, key: str, work: Callable[[], T], *, tenant: str = "") -> Future[T]:
        if self._submitted == 0:
            self._lock.acquire()
        try:
            return super().run(key, work, tenant=tenant)
        finally:
            self._submitted += 1
            if self._submitted == self._burst:
                self._lock.release()

    def shutdown(self, wait: bool = True) -> None:
        if 0 < self._submitted < self._burst:  # fewer came: let the threads have the lock
            self._submitted = self._burst
            self._lock.release()
        super().shutdown(wait)


def kill_mid_batch(
    job_store: StoreUnderTest, pool: ThreadPool | FairThreadPool, patience: float = 10
) -> tuple[Harness, str, int]:
    """One fetch of the first batch hangs past the worker's Timeout (a stall its download
    deadline does not cover) and Lambda kills the invocation there: the hung fetch waits (at
    most `patience` real seconds) for the batch's nine other rows to be recorded first."""
    h = Harness.build(job_store)
    h.world.deps.image_pool = pool
    stuck = "https://img.test/7/a.jpg"
    fetch = h.world.fetcher.fetch
    request_id = ""

    def others_recorded() -> bool:
        rows = h.world.store.list_rows(request_id, 0, 10)
        return all(r.status != RowStatus.PENDING for r in rows if r.serial != 7)

    gate: list[bool] = []

    def hang_once(url: str) -> bytes:
        if url == stuck and not gate:
            gate.append(_within(patience, others_recorded))
            h.world.clock.advance(TIMEOUT["rows"] + ROUND_SECONDS)  # killed as it returns
        return fetch(url)

    h.world.fetcher.fetch = hang_once  # type: ignore[method-assign]
    try:
        request_id = h.submit()
        seconds = h.run(request_id, sweeper=False)
    finally:
        pool.shutdown()
    assert gate == [True], "the batch's other rows were not recorded before the kill"
    return h, request_id, seconds


def test_a_worker_killed_by_its_timeout_mid_batch(job_store: StoreUnderTest) -> None:
    """The batch's nine other rows, recorded as their own images finished, stay recorded and
    are not fetched again; the batch comes back after its visibility timeout, and only the
    hung row is redone, by a new container (its image that was done is fetched again: the
    cache died with the first)."""
    h, request_id, seconds = kill_mid_batch(job_store, ThreadPool(20))
    h.assert_exact(request_id)
    assert h.queues["rows"].kills == 1
    counts = h.fetches.counts
    assert counts["https://img.test/7/a.jpg"] == 2 and counts["https://img.test/7/b.jpg"] == 2
    assert all(counts[url] == 1 for url in counts if "/7/" not in url)
    record("worker killed at its Timeout mid-batch", h, request_id, seconds, sweeper=False)


def test_a_worker_killed_mid_batch_on_the_workers_warm_pool(job_store: StoreUnderTest) -> None:
    """As above, on the worker's own pool (IMAGE_WORKERS threads, one idle from an earlier
    batch) when the batch's images are all handed over before that thread wakes: each piece
    of work handed over wakes or starts a thread of its own (a lost wakeup had left rows 8 to
    10 queued behind the hung image, lost with the killed invocation)."""
    pool = BurstPool(SETTINGS.image_workers, burst=2 * 10)
    h, request_id, _ = kill_mid_batch(job_store, pool, patience=3)
    h.assert_exact(request_id)


def test_a_worker_batch_out_of_time_continues_in_new_messages(job_store: StoreUnderTest) -> None:
    """The first batch's hosts take 6 s a fetch, and row 7's second image always answers 503.
    The budget (the Timeout, margin kept) starts no attempt it cannot finish: 14 fetches
    fit; row 7 continues in a new message keeping its first image and its attempt spent,
    rows 8 to 10 (nothing started) come back. No invocation reaches its Timeout and no
    image is fetched more than FETCH_ATTEMPTS times."""
    h = Harness.build(job_store)
    h.fetches.seconds = {f"https://img.test/{n}/{x}.jpg": 6.0 for n in range(1, 11) for x in "ab"}
    failing = "https://img.test/7/b.jpg"
    h.world.fetcher.responses[failing] = ImageFailure(
        ImageErrorCode.HTTP_ERROR, "HTTP 503", retryable=True
    )
    request_id = h.submit()
    seconds = h.run(request_id, sweeper=False)
    h.assert_exact(request_id, failed_images=1)
    rows = h.queues["rows"]
    assert rows.kills == 0 and rows.longest <= TIMEOUT["rows"]
    (continuation,) = [m.body for m in h.world.rows_queue.history if "keep" in m.body]
    assert continuation["serialNumber"] == 7 and continuation["attempts"] == [0, 1]
    assert h.fetches.counts[failing] == SETTINGS.fetch_attempts
    assert max(h.fetches.counts.values()) == SETTINGS.fetch_attempts
    record("worker batch out of budget (6 s a fetch)", h, request_id, seconds, sweeper=False)


class MongoOutage(Proxy):
    """MongoDB unreachable for OUTAGE s of the simulated clock, from the `on_call`-th call of
    any of the store's `methods` (counted together) on. Inside the window every call of the
    store, by any function, waits for a server as long as MongoJobStore's client does
    (serverSelectionTimeoutMS) and raises ServerSelectionTimeoutError."""

    def __init__(self, store: object, clock: FixedClock, *methods: str, on_call: int = 1) -> None:
        self._clock = clock
        self._methods = methods
        self._on_call = on_call
        self._calls = 0
        self.began: datetime | None = None
        self.refused: list[str] = []
        super().__init__(store)

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name in self._methods:
            self._calls += 1
            if self._calls == self._on_call:
                self.began = self._clock.now()
        if self.began is not None and self._clock.now() < self.began + OUTAGE:
            self.refused.append(name)
            self._clock.advance(SERVER_SELECTION.total_seconds())
            raise ServerSelectionTimeoutError(
                "127.0.0.1:27017: [Errno 111] Connection refused, Timeout: 5.0s"
            )
        return super()._call(name, *args, **kwargs)


OUTAGE = timedelta(seconds=30)
SERVER_SELECTION = timedelta(seconds=5)  # MongoJobStore.from_uri: serverSelectionTimeoutMS


@pytest.mark.parametrize(
    ("during", "methods", "on_call", "sweeper"),
    [
        # two chunks stored and sent; the ingest raises and its claim holds until its lease ends
        ("the ingest (storing rows)", ("insert_rows",), 3, True),
        # the first batch's images are stored; its rows cannot be recorded
        ("a worker batch (recording)", RECORDING, 1, False),
        # the output CSV is written; the terminal status cannot be
        ("finalization", ("finish_job",), 1, False),
    ],
)
def test_mongodb_unreachable_for_30_s(
    job_store: StoreUnderTest, during: str, methods: tuple[str, ...], on_call: int, sweeper: bool
) -> None:
    h = Harness.build(job_store)
    outage = MongoOutage(h.world.store, h.world.clock, *methods, on_call=on_call)
    h.world.deps.store = outage
    request_id = h.submit()
    seconds = h.run(request_id, sweeper=sweeper)
    h.assert_exact(request_id)
    assert outage.refused and outage.refused[0] in methods
    assert max(h.fetches.counts.values()) == 1  # nothing fetched again: the images were stored
    assert h.repairs <= {"ingests"}  # at most the ingest whose claim outlived its failure
    record(f"MongoDB unreachable 30 s: {during}", h, request_id, seconds, sweeper)


def slow_down() -> ClientError:
    """What S3Objects raises for a PUT once boto3's own retries (standard mode, 5 attempts,
    bootstrap.py) all met 503 SlowDown."""
    return ClientError(
        {
            "Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."},
            "ResponseMetadata": {
                "HTTPStatusCode": 503,
                "RequestId": "S3SLOWDOWN",
                "HostId": "",
                "HTTPHeaders": {},
                "RetryAttempts": 4,
            },
        },
        "PutObject",
    )


def test_s3_answering_503_slow_down_to_some_puts(job_store: StoreUnderTest) -> None:
    """Two images (of rows 3 and 8) and the output CSV are refused twice each: their rows and
    the finalization come back and succeed the third time. An image whose output could not
    be stored is fetched again (only successes are kept), never beyond the receives."""
    h = Harness.build(job_store)
    refusals = Counter({"/3/0.jpg": 2, "/8/1.jpg": 2, "/output.csv": 2})
    put = h.world.outputs.put_bytes

    def put_bytes(key: str, data: bytes, content_type: str, cache_control: str = "") -> None:
        for ending, left in refusals.items():
            if key.endswith(ending) and left:
                refusals[ending] -= 1
                raise slow_down()
        put(key, data, content_type, cache_control)

    h.world.outputs.put_bytes = put_bytes  # type: ignore[method-assign]
    request_id = h.submit()
    seconds = h.run(request_id, sweeper=False)
    h.assert_exact(request_id)
    assert not +refusals  # every refusal was met
    counts = h.fetches.counts
    assert counts["https://img.test/3/a.jpg"] == counts["https://img.test/8/b.jpg"] == 3
    assert sum(counts.values()) == 2 * ROWS + 4
    record("S3 503 SlowDown: 2 image PUTs and the CSV, twice each", h, request_id, seconds, False)


def test_sqs_failing_part_of_a_send_message_batch_in_the_fan_out(
    job_store: StoreUnderTest,
) -> None:
    """SqsTaskQueue re-sends what SQS refused in a SendMessageBatch three times, then raises
    TransientError: part of that batch went out. Here the fan-out's second batch (rows 5 to
    8): two of its messages are sent, then the ingest fails; its claim holds until its lease
    ends, and the sweeper resumes it from the fan-out's mark (rows sent again are skipped as
    recorded)."""
    h = Harness.build(job_store)
    send = h.world.rows_queue.send_batch
    calls = [0]

    def send_part(bodies: Sequence[Mapping[str, Any]], delay_seconds: int = 0) -> None:
        calls[0] += 1
        if calls[0] != 2:
            send(bodies, delay_seconds)
            return
        send(bodies[:2], delay_seconds)
        raise TransientError(f"SQS refused {len(bodies) - 2} message(s) on RowsQueue")

    h.world.rows_queue.send_batch = send_part  # type: ignore[method-assign]
    request_id = h.submit()
    seconds = h.run(request_id)
    h.assert_exact(request_id)
    assert [m.body["serialNumber"] for m in h.world.rows_queue.history[4:6]] == [5, 6]
    assert h.repairs <= {"ingests"}  # the ingest resumed; no row message was lost
    assert max(h.fetches.counts.values()) == 1
    record("SQS refuses 2 of a fan-out SendMessageBatch", h, request_id, seconds, sweeper=True)


def _within(seconds: float, condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()
