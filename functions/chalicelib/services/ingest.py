"""Storage-triggered: a CSV under incoming/ becomes a job, validated and fanned out by row."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote_plus

from chalicelib import observability
from chalicelib.domain.budget import Budget, OutOfTime
from chalicelib.domain.csv_input import ValidationReport, iter_rows, validate_csv
from chalicelib.domain.models import (
    CsvProblem,
    Job,
    JobStatus,
    Progress,
    RowStatus,
    StoredRow,
    new_job,
)
from chalicelib.domain.tenancy import is_tenant_name
from chalicelib.errors import JobGone
from chalicelib.services.cancel import settle_after_ingest
from chalicelib.services.deps import Dependencies
from chalicelib.services.finalize import fail_job
from chalicelib.services.job_events import publish_job_event
from chalicelib.services.row_messages import Kept, RowTask
from chalicelib.services.upload import csv_limits

log = logging.getLogger(__name__)

INCOMING_PREFIX = "incoming/"
_JOB_KEY = re.compile(
    r"^incoming/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.csv$"
)
FANOUT_MARK = 500  # rows between two records of the fan-out's progress
MESSAGE_BATCH = 10  # row messages per send (SQS's batch limit)
_KEY_NAMESPACE = uuid.UUID("6f1c3c8e-2f0b-4d7e-9a51-3c0f4b6f7a10")
HANDOVER = "resumeIngest"  # the ingest queue's message that continues a run out of time
# A CSV at most this large is ingested where its storage event is taken (a few chunks:
# milliseconds); a larger one goes through its tenant's message group from the start.
INLINE_BYTES = 8 * 1024
# A handover takes the claim at once, even one made this very millisecond: its holder sent
# the handover as the last thing it did.
HANDOVER_LEASE = timedelta(milliseconds=-1)


@dataclass(frozen=True)
class ObjectCreated:
    bucket: str
    key: str
    size: int
    etag: str


def parse_storage_message(body: str) -> list[ObjectCreated]:
    """The S3 notification carried by one SQS message. Test events yield nothing."""
    payload: Any = json.loads(body)
    if not isinstance(payload, dict) or payload.get("Event") == "s3:TestEvent":
        return []
    created = []
    for record in payload.get("Records", []):
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        s3 = record.get("s3", {})
        obj = s3.get("object", {})
        created.append(
            ObjectCreated(
                bucket=str(s3.get("bucket", {}).get("name", "")),
                key=unquote_plus(str(obj.get("key", ""))),
                size=int(obj.get("size", 0) or 0),
                etag=str(obj.get("eTag", obj.get("etag", ""))).strip('"'),
            )
        )
    return created


def job_id_for_key(key: str, etag: str) -> str:
    """`incoming/<uuid>.csv` is job <uuid>; any other key gets an id fixed by key and content."""
    match = _JOB_KEY.match(key)
    if match:
        return match.group(1)
    return str(uuid.uuid5(_KEY_NAMESPACE, f"{key}\x00{etag}"))


def tenant_for_key(deps: Dependencies, key: str) -> str | None:
    """The owner of a drop nobody asked for (Storage events in the contract):
    `incoming/<tenant>/...` is that tenant's when it names one; with a single tenant (or
    none yet: the default tenant) every drop is its own. With several, a drop whose tenant
    is not explicit (directly under `incoming/`, `incoming/BETA/`, `incoming/2024/`) is the
    default tenant's under UNOWNED_DROPS=default, and nobody's (None: held) under `hold`."""
    head, sep, _rest = key.removeprefix(INCOMING_PREFIX).partition("/")
    if sep and is_tenant_name(head) and deps.tenants.get_tenant(head) is not None:
        return head
    tenants = deps.tenants.list_tenants()
    if len(tenants) == 1:
        return tenants[0].name
    if not tenants or deps.settings.unowned_drops == "default":
        return deps.settings.default_tenant
    return None


def handle_object_created(
    deps: Dependencies, event: ObjectCreated, budget: Budget | None = None
) -> str | None:
    """Ingest one stored CSV. Returns the job id, or None when the object is not a job (or
    is held: its tenant is not explicit). A repeated event finds the job claimed, or its
    fan-out done, and starts nothing new."""
    if not event.key.startswith(INCOMING_PREFIX) or event.key.endswith("/"):
        return None
    request_id = job_id_for_key(event.key, event.etag)
    job = deps.store.get_job(request_id)
    if job is None:
        tenant = tenant_for_key(deps, event.key)
        if tenant is None:
            observability.record_drop_held()
            log.info(
                "drop %s held: it names no tenant and there are several (UNOWNED_DROPS=hold); "
                "no job is made, the object stays until the upload retention deletes it",
                event.key,
                extra={"heldKey": event.key},
            )
            return None
        job = new_job(
            request_id,
            deps.clock.now(),
            source="bucket",
            tenant=tenant,
            chunk_size=deps.settings.rows_per_chunk,
            key=event.key,
        )
        deps.store.create_job(job)
    if event.size <= INLINE_BYTES:
        resume_ingest(deps, request_id, budget)
    else:
        queue_ingest(deps, job)
    return request_id


def queue_ingest(deps: Dependencies, job: Job) -> bool:
    """Claim the job's ingest and hand it at once to the ingest queue, in its tenant's message
    group: S3's events carry no group, so work done where they are taken would be first in,
    first out between tenants. A repeated event finds the claim taken and queues nothing."""
    lease = timedelta(seconds=deps.settings.ingest_lease)
    if not deps.store.claim_ingest(job.request_id, deps.clock.now(), lease):
        _unless_gone(deps, job.request_id)
        log.info("job %s: ingest claimed, done or terminal; nothing to queue", job.request_id)
        return False
    hand_over(deps, job)
    return True


def hand_over(deps: Dependencies, job: Job) -> None:
    """The message that continues the job's ingest in a new invocation. It carries the tenant,
    its message group on a fair queue (bootstrap.TENANT_GROUP): while one tenant's CSVs are
    being ingested slice by slice, another tenant's next slice is delivered first."""
    deps.ingest_queue.send_batch([{HANDOVER: job.request_id, "tenant": job.tenant}])


def resume_ingest(deps: Dependencies, request_id: str, budget: Budget | None = None) -> bool:
    """Run (or take over) the job's ingest when nobody holds a live claim on it."""
    lease = timedelta(seconds=deps.settings.ingest_lease)
    if not deps.store.claim_ingest(request_id, deps.clock.now(), lease):
        _unless_gone(deps, request_id)
        log.info("job %s: ingest claimed, done or terminal; nothing to start", request_id)
        return False
    _run_claimed(deps, request_id, budget or Budget.unlimited())
    return True


def take_over_ingest(deps: Dependencies, request_id: str, budget: Budget | None = None) -> bool:
    """Continue the ingest that a run out of time handed over (its claim is taken at once)."""
    if not deps.store.claim_ingest(request_id, deps.clock.now(), HANDOVER_LEASE):
        _unless_gone(deps, request_id)
        if _store_rest_of_cancelled(deps, request_id, budget or Budget.unlimited()):
            return True
        log.info("job %s: handover found the ingest done or terminal", request_id)
        return False
    _run_claimed(deps, request_id, budget or Budget.unlimited())
    return True


def _store_rest_of_cancelled(deps: Dependencies, request_id: str, budget: Budget) -> bool:
    """A job cancelled between two slices of its ingest: the next slice cannot claim the
    ended job, so the rows not stored yet are stored here, none sent, and the cancel is
    carried out again, so that every product is in the status and the output CSV,
    `cancelled` (a job cancelled during one ingest run gets the same from that run's end).
    Out of time, it hands over again. False when the job is not such a job."""
    job = deps.store.get_job(request_id)
    if job is None or job.status != JobStatus.CANCELLED or job.rows_written:
        return False
    info = deps.uploads.head(job.input_key)
    if info is None or info.size > deps.settings.max_csv_bytes:
        return False
    with deps.uploads.open(job.input_key) as stream:
        report = validate_csv(stream, csv_limits(deps))
    if not report.ok:
        return False
    time_left = IngestSlice(budget)

    def store(chunk: int, rows: list[StoredRow]) -> None:
        time_left.check()
        deps.store.insert_rows(request_id, chunk, rows)

    try:
        _write_rows(deps, job, report, store, job.fanout_sent // job.chunk_size)
    except OutOfTime:
        hand_over(deps, job)
        return True
    deps.store.record_fanout(request_id, report.total_rows, True, deps.clock.now())
    settle_after_ingest(deps, request_id)
    return True


def _unless_gone(deps: Dependencies, request_id: str) -> None:
    """After a claim refused: JobGone when that is because the job no longer exists (a
    retry or a handover queued before its deletion), so that the message is counted so."""
    if deps.store.get_job(request_id) is None:
        raise JobGone(request_id)


def _run_claimed(deps: Dependencies, request_id: str, budget: Budget) -> None:
    """The claimant's run: one slice (IngestSlice). Out of time or at the slice's end, it
    hands the rest to a new invocation through the ingest queue (a fresh message: being slow
    is not a failure), having recorded how far the fan-out got; should that send fail, the
    message is retried and the lease expires."""
    job = deps.store.get_job(request_id)
    if job is None:
        return
    try:
        ingest_job(deps, job, IngestSlice(budget, deps.settings.ingest_slice_seconds))
    except OutOfTime:
        log.info("job %s: the ingest's slice ended; handed over to a new invocation", request_id)
        hand_over(deps, job)
        return
    settle_after_ingest(deps, request_id)


class IngestSlice:
    """An ingest run's time: its invocation's budget, and its slice. Once the run has sent
    rows, it sends for `seconds`, or for READ_RATIO times as long as it took to get there
    (reading the CSV again, up to the mark) when that is longer, then hands over (OutOfTime):
    one large CSV holds one of the ingest function's few slots for a slice at a time, not
    for its whole fan-out, and reading it again takes at most 1 / (1 + READ_RATIO) of each
    run (what the slices cost in all, hops included: docs/performance.md). The slice starts
    at the first rows sent, so every run sends some."""

    READ_RATIO = 4.0

    def __init__(self, budget: Budget, seconds: float = float("inf")) -> None:
        self.budget = budget
        self._seconds = seconds
        self._started = budget.clock()
        self._ends: float | None = None

    def sending(self) -> None:
        """Rows are about to go out: the slice runs from the first time."""
        if self._ends is None:
            now = self.budget.clock()
            self._ends = now + max(self._seconds, self.READ_RATIO * (now - self._started))

    @property
    def expired(self) -> bool:
        if self.budget.expired:
            return True
        return self._ends is not None and self.budget.clock() >= self._ends

    def check(self) -> None:
        self.budget.check()
        if self.expired:
            raise OutOfTime("the ingest's slice is over")


def _slice_of(budget: Budget | IngestSlice | None) -> IngestSlice:
    if isinstance(budget, IngestSlice):
        return budget
    return IngestSlice(budget or Budget.unlimited())


def ingest_job(deps: Dependencies, job: Job, budget: Budget | IngestSlice | None = None) -> None:
    """Validate the CSV (streamed) and record the totals; then store its rows chunk by chunk,
    sending each chunk's messages as soon as it is stored, so the workers start while the
    rest is written. Each step is repeatable, so a run that died or handed over is finished
    by the next claimant: it reads the CSV again and stores and sends from the fan-out's
    mark (the chunks before it are stored and sent), or, the rows all stored, fans out every
    pending row from there. Raises OutOfTime, the fan-out's mark recorded, when `budget`
    (or its slice) runs out."""
    time_left = _slice_of(budget)
    if job.status == JobStatus.PENDING:
        report = _accept(deps, job)
        if report is not None:
            _store_and_send(deps, job, report, time_left, 0)
        return
    current = deps.store.get_job(job.request_id) or job
    if not current.rows_written:  # a run before this one stopped while storing its rows
        report = _validated(deps, current)
        if report is None:
            return
        first_chunk = current.fanout_sent // current.chunk_size
        _store_and_send(deps, current, report, time_left, first_chunk)
        return
    fan_out(deps, current, time_left)


def _store_and_send(
    deps: Dependencies, job: Job, report: ValidationReport, time_left: IngestSlice, first: int
) -> None:
    sender = _ChunkSender(deps, job, report.total_rows, time_left, first)
    _write_rows(deps, job, report, sender.send, first)
    sender.finish()


def _validated(deps: Dependencies, job: Job) -> ValidationReport | None:
    """The CSV's validation report, or None when the job failed (the problems recorded)."""
    key = job.input_key
    info = deps.uploads.head(key)
    if info is None:
        fail_job(deps, job, [CsvProblem(1, None, f"the uploaded object {key} is gone")])
        return None
    if info.size > deps.settings.max_csv_bytes:
        problem = CsvProblem(
            1, None, f"the CSV is {info.size} bytes; the limit is {deps.settings.max_csv_bytes}"
        )
        fail_job(deps, job, [problem])
        return None
    with deps.uploads.open(key) as stream:
        report = validate_csv(stream, csv_limits(deps))
    if not report.ok:
        fail_job(deps, job, report.problems)
        return None
    return report


def _accept(deps: Dependencies, job: Job) -> ValidationReport | None:
    report = _validated(deps, job)
    if report is None:
        return None
    progress = Progress(total_products=report.total_rows, total_images=report.total_images)
    # Totals are recorded before the first message, so no worker can finish the job early.
    if deps.store.start_processing(job.request_id, progress, deps.clock.now()):
        accepted = deps.store.get_job(job.request_id)
        if accepted is not None:
            publish_job_event(deps, accepted, "job.accepted")
    return report


class _ChunkSender:
    """The fan-out while the rows are stored: each chunk stored, its rows go out at once, ten
    per batch. The fan-out's mark moves over the chunks stored and sent without a gap (every
    chunk, for a file in serial order), so a run that takes over sends only from there."""

    def __init__(
        self, deps: Dependencies, job: Job, total: int, time_left: IngestSlice, first: int = 0
    ) -> None:
        self._deps = deps
        self._job = job
        self._total = total
        self._budget = time_left
        self._next_chunk = first  # the first chunk not yet sent (those before: sent earlier)
        self._sent_chunks: set[int] = set()  # sent, beyond _next_chunk
        self._marked = min(total, first * job.chunk_size)

    def send(self, chunk: int, rows: list[StoredRow]) -> None:
        """Store the chunk and send its rows; out of time, neither (the mark recorded)."""
        if self._budget.expired:
            sent = min(self._total, self._next_chunk * self._job.chunk_size)
            if sent > self._marked:
                self._deps.store.record_fanout(self._job.request_id, sent, False, self._now())
            self._budget.check()
        self._budget.sending()
        self._deps.store.insert_rows(self._job.request_id, chunk, rows)
        for start in range(0, len(rows), MESSAGE_BATCH):
            self._deps.rows_queue.send_batch(
                [row_message(self._job, row) for row in rows[start : start + MESSAGE_BATCH]]
            )
        self._sent_chunks.add(chunk)
        while self._next_chunk in self._sent_chunks:
            self._sent_chunks.remove(self._next_chunk)
            self._next_chunk += 1
        sent = min(self._total, self._next_chunk * self._job.chunk_size)
        if sent - self._marked >= FANOUT_MARK and sent < self._total:
            self._deps.store.record_fanout(self._job.request_id, sent, False, self._now())
            self._marked = sent

    def finish(self) -> None:
        self._deps.store.record_fanout(self._job.request_id, self._total, True, self._now())

    def _now(self) -> datetime:
        return self._deps.clock.now()


def fan_out(deps: Dependencies, job: Job, budget: Budget | IngestSlice | None = None) -> None:
    """One message per pending row, in position order, from where the last run got to (the
    rows read a page at a time from there). Progress is remembered every FANOUT_MARK rows,
    and where it stopped when `budget` (or its slice) runs out (OutOfTime); a re-sent message
    changes nothing. A retry's failed rows are reset by its first run only: a later one would
    reset rows that failed again meanwhile, behind its mark, where nothing sends them."""
    time_left = _slice_of(budget)
    if job.generation > 0 and job.fanout_sent == 0:
        for _ in deps.store.reset_failed_rows(job.request_id, deps.clock.now()):
            pass
    sent = job.fanout_sent
    batch: list[dict[str, object]] = []
    for row in _rows_from(deps, job.request_id, job.fanout_sent):
        if row.position < job.fanout_sent or row.status != RowStatus.PENDING:
            continue
        if not batch and time_left.expired:
            if row.position > sent:
                deps.store.record_fanout(job.request_id, row.position, False, deps.clock.now())
            time_left.check()
        time_left.sending()
        batch.append(row_message(job, row))
        if len(batch) == MESSAGE_BATCH:
            deps.rows_queue.send_batch(batch)
            batch = []
            if row.position + 1 - sent >= FANOUT_MARK:
                sent = row.position + 1
                deps.store.record_fanout(job.request_id, sent, False, deps.clock.now())
    if batch:
        deps.rows_queue.send_batch(batch)
    deps.store.record_fanout(job.request_id, job.progress.total_products, True, deps.clock.now())


def _rows_from(deps: Dependencies, request_id: str, start: int) -> Iterator[StoredRow]:
    """The job's rows from position `start` on, a page of FANOUT_MARK at a time: a run that
    continues a large fan-out reads only what is left of it."""
    while True:
        page = deps.store.list_rows(request_id, start, FANOUT_MARK)
        yield from page
        if len(page) < FANOUT_MARK:
            return
        start = page[-1].position + 1


def row_message(job: Job, row: StoredRow) -> dict[str, object]:
    keep: tuple[Kept, ...] = ()
    if any(row.output_keys):  # a retry: the images that succeeded are kept, not redone
        n = len(row.urls)
        keep = tuple(
            Kept(key, bi, bo, quality=q, score=sc)
            for key, bi, bo, q, sc in zip(
                row.output_keys,
                row.bytes_in or [0] * n,
                row.bytes_out or [0] * n,
                row.qualities or [None] * n,  # `auto`'s choices, kept with their outputs
                row.scores or [None] * n,
                strict=False,
            )
        )
    task = RowTask(
        job.request_id,
        row.position,
        row.serial,
        row.urls,
        keep,
        (),
        job.generation,
        options=job.options,
        tenant=job.tenant,
    )
    return task.to_message()


def _write_rows(
    deps: Dependencies,
    job: Job,
    report: ValidationReport,
    on_full: Callable[[int, list[StoredRow]], None],
    first_chunk: int = 0,
) -> None:
    """Each chunk goes to `on_full` (which stores and sends it) as soon as it is full (a
    sorted file keeps one chunk in memory); the chunks before `first_chunk` (stored and sent
    by an earlier run) are skipped."""
    size = job.chunk_size
    total = report.total_rows
    key = job.input_key
    pending: dict[int, list[StoredRow | None]] = {}
    filled: dict[int, int] = {}
    with deps.uploads.open(key) as stream:
        for row in iter_rows(stream, csv_limits(deps)):
            position = report.position_of(row.serial)
            chunk, index = divmod(position, size)
            if chunk < first_chunk:
                continue
            expected = min(size, total - chunk * size)
            slots = pending.setdefault(chunk, [None] * expected)
            slots[index] = StoredRow(position, row.serial, row.name, row.urls)
            filled[chunk] = filled.get(chunk, 0) + 1
            if filled[chunk] == expected:
                del pending[chunk], filled[chunk]
                on_full(chunk, [r for r in slots if r])
    if pending:  # only reachable if the file changed between the passes
        raise RuntimeError(f"{key} changed while it was being ingested")
