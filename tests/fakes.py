"""In-memory fakes of every port, for the unit tier. Tests assert on their state."""

from __future__ import annotations

import copy
import io
import itertools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import IO, Any, overload

from chalicelib.config import Settings
from chalicelib.domain.models import (
    MAX_WEBHOOK_HISTORY,
    ImageResult,
    Job,
    JobStatus,
    Progress,
    RowOutcome,
    RowStatus,
    StoredRow,
    WebhookAttempt,
    WebhookInfo,
    WebhookState,
    action_allowed,
    capped_errors,
    claim_is_free,
    counted_rows,
)
from chalicelib.domain.reuse import ReusableOutput, new_reuse_key
from chalicelib.domain.tenancy import ApiKeyRecord, Tenant
from chalicelib.domain.timefmt import iso
from chalicelib.errors import ImageFailure, JobGone, NotFound
from chalicelib.ports import Admission, DeliveryResult, JobStore, ObjectInfo, PresignedPost
from chalicelib.services.deps import Dependencies

PUBLIC_BASE_URL = "https://cdn.test"  # the fakes' CDN in front of the outputs bucket


class FakeObjectStore:
    def __init__(self, bucket: str) -> None:
        self._bucket = bucket
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.cache_control: dict[str, str] = {}  # key -> its Cache-Control, when one was given
        self.written: list[str] = []  # every key stored, in order (a rewrite shows twice)
        self.copied: list[tuple[str, str]] = []
        self.fail_puts = 0

    @property
    def bucket(self) -> str:
        return self._bucket

    def put_bytes(self, key: str, data: bytes, content_type: str, cache_control: str = "") -> None:
        if self.fail_puts:
            self.fail_puts -= 1
            raise ConnectionError("storage is down")
        self.objects[key] = (bytes(data), content_type)
        if cache_control:
            self.cache_control[key] = cache_control
        else:
            self.cache_control.pop(key, None)
        self.written.append(key)

    def put_file(self, key: str, fileobj: IO[bytes], content_type: str) -> None:
        self.put_bytes(key, fileobj.read(), content_type)

    def open(self, key: str) -> IO[bytes]:
        if key not in self.objects:
            raise NotFound(key)
        return io.BytesIO(self.objects[key][0])

    def copy(self, source_key: str, key: str) -> bool:
        if source_key not in self.objects:
            return False
        self.objects[key] = self.objects[source_key]
        self.written.append(key)
        self.copied.append((source_key, key))
        return True

    def head(self, key: str) -> ObjectInfo | None:
        if key not in self.objects:
            return None
        return ObjectInfo(key, len(self.objects[key][0]), f"etag-{hash(self.objects[key][0])}")

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    def delete_prefix(self, prefix: str, limit: int | None = None) -> int:
        doomed = sorted(key for key in self.objects if key.startswith(prefix))
        for key in doomed[:limit]:
            del self.objects[key]
        return len(doomed[:limit])

    def presigned_get(self, key: str, expires_in: int) -> str:
        return f"https://{self._bucket}.s3.test/{key}?X-Amz-Expires={expires_in}"

    def presigned_post(self, key: str, max_bytes: int, expires_in: int) -> PresignedPost:
        return PresignedPost(
            f"https://{self._bucket}.s3.test/",
            {"key": key, "max": str(max_bytes), "expires": str(expires_in)},
        )

    def ping(self) -> None:
        return None


@dataclass
class SentMessage:
    body: dict[str, Any]
    delay_seconds: int


class FakeQueue:
    def __init__(self) -> None:
        self.sent: list[SentMessage] = []
        self.history: list[SentMessage] = []  # every message ever sent, drained or not
        self._lock = threading.Lock()

    def send_batch(self, bodies: Sequence[Mapping[str, Any]], delay_seconds: int = 0) -> None:
        assert len(bodies) <= 10, "SQS batches hold at most ten messages"
        assert 0 <= delay_seconds <= 900, "SQS delays a message by 0 to 900 seconds"
        with self._lock:
            batch = [SentMessage(copy.deepcopy(dict(b)), delay_seconds) for b in bodies]
            self.sent.extend(batch)
            self.history.extend(batch)

    def drain(self) -> list[SentMessage]:
        with self._lock:
            out, self.sent = self.sent, []
        return out

    def ping(self) -> None:
        return None


class InMemoryJobStore:
    """Behaves like MongoJobStore: tests/contract runs the same tests against both. The rules
    (which job may be claimed, is being cancelled, is stalled, ...) are the domain's, asked
    here of the job in memory and built into MongoJobStore's filters.

    Like MongoJobStore, a claim or a terminal status is a read, then a compare-and-set: between
    the two, outside the lock, it calls `before_write`, where a test holds the callers of a
    race until all have read (tests/support/stores.py)."""

    def __init__(self, default_tenant: str = "default") -> None:
        self.jobs: dict[str, Job] = {}
        self.rows: dict[str, dict[int, StoredRow]] = {}
        self.actions: dict[tuple[str, str], datetime] = {}
        self.default_tenant = default_tenant
        self._lock = threading.RLock()
        self.before_write: Callable[[], None] = _nothing

    def close(self) -> None:
        return None

    def create_job(self, job: Job) -> bool:
        with self._lock:
            if job.request_id in self.jobs:
                return False
            owner = job.tenant or self.default_tenant
            if job.idempotency_key and self.find_by_idempotency_key(owner, job.idempotency_key):
                return False
            self.jobs[job.request_id] = copy.deepcopy(job)
            return True

    def _owned(self, job: Job) -> Job:
        found = copy.deepcopy(job)
        found.tenant = found.tenant or self.default_tenant
        return found

    def get_job(self, request_id: str, tenant: str | None = None) -> Job | None:
        with self._lock:
            job = self.jobs.get(request_id)
            found = self._owned(job) if job else None
            return found if found is None or tenant in (None, found.tenant) else None

    def find_by_idempotency_key(self, tenant: str, key: str) -> Job | None:
        if not key:
            return None
        with self._lock:
            for job in self.jobs.values():
                mine = (job.tenant or self.default_tenant) == tenant
                if mine and job.idempotency_key == key:
                    return self._owned(job)
            return None

    def list_jobs(
        self,
        tenant: str,
        *,
        status: JobStatus | None = None,
        limit: int = 50,
        after: tuple[str, str] | None = None,
    ) -> list[Job]:
        with self._lock:
            mine = [
                self._owned(job)
                for job in self.jobs.values()
                if (job.tenant or self.default_tenant) == tenant
                and (status is None or job.status == status)
            ]
        mine.sort(key=lambda job: (job.created_at, job.request_id), reverse=True)
        if after is not None:
            mine = [job for job in mine if (job.created_at, job.request_id) < after]
        return mine[:limit]

    def job_versions(
        self,
        tenant: str,
        *,
        status: JobStatus | None = None,
        limit: int = 50,
        after: tuple[str, str] | None = None,
    ) -> list[tuple[str, str, int]]:
        page = self.list_jobs(tenant, status=status, limit=limit, after=after)
        return [(job.request_id, job.created_at, job.version) for job in page]

    def claim_action(
        self, request_id: str, action: str, now: datetime, interval: timedelta
    ) -> datetime | None:
        slot = (request_id, action)
        with self._lock:
            if request_id not in self.jobs:
                return now + interval
            seen = self.actions.get(slot)
            if seen is not None and not action_allowed(iso(seen), now, interval):
                return seen + interval
        self.before_write()
        with self._lock:
            last = self.actions.get(slot)
            if last != seen:  # someone took it since the read
                assert last is not None
                return last + interval
            self.actions[slot] = now
            return None

    def claim_ingest(self, request_id: str, now: datetime, lease: timedelta) -> bool:
        with self._lock:
            job = self.jobs.get(request_id)
            if job is None or not job.may_ingest:
                return False
            seen = job.ingest_claimed_at
            if not claim_is_free(seen, now, lease):
                return False
        self.before_write()
        with self._lock:
            job = self.jobs[request_id]
            if job.ingest_claimed_at != seen or not job.may_ingest:
                return False  # someone claimed (or finished) since the read
            job.ingest_claimed_at = job.updated_at = iso(now)
            job.version += 1
            return True

    def insert_rows(self, request_id: str, chunk: int, rows: Sequence[StoredRow]) -> None:
        with self._lock:
            target = self.rows.setdefault(request_id, {})
            for row in rows:
                target.setdefault(row.position, row)

    def start_processing(self, request_id: str, progress: Progress, now: datetime) -> bool:
        with self._lock:
            job = self.jobs[request_id]
            if job.status != JobStatus.PENDING:
                return False
            job.progress = replace(
                job.progress,
                total_products=progress.total_products,
                total_images=progress.total_images,
            )
            job.status = JobStatus.PROCESSING
            job.rows_written = False
            job.updated_at = iso(now)
            job.version += 1
            return True

    def record_fanout(self, request_id: str, sent: int, done: bool, now: datetime) -> None:
        with self._lock:
            job = self.jobs.get(request_id)
            if job is None:
                raise JobGone(request_id)
            job.fanout_sent = max(job.fanout_sent, sent)
            job.fanout_done = done
            job.rows_written = job.rows_written or done
            job.updated_at = iso(now)
            job.version += 1

    def record_row(
        self, request_id: str, position: int, results: Sequence[ImageResult], now: datetime
    ) -> Progress | None:
        with self._lock:
            row = self.rows.get(request_id, {}).get(position)
            if row is None or request_id not in self.jobs:
                raise JobGone(request_id)
            if row.status != RowStatus.PENDING:
                return None
            outcome = RowOutcome.of(results)
            self.rows[request_id][position] = row.recorded_as(outcome)
            job = self.jobs[request_id]
            job.progress = job.progress.plus(outcome.counted())
            job.updated_at = iso(now)
            job.version += 1
            return job.progress

    def claim_finalization(self, request_id: str, now: datetime, lease: timedelta) -> bool:
        with self._lock:
            job = self.jobs.get(request_id)
            if job is None or not job.ready_to_finalize:
                return False
            seen = job.finalize_claimed_at
            if not claim_is_free(seen, now, lease):
                return False
        self.before_write()
        with self._lock:
            job = self.jobs[request_id]
            if job.finalize_claimed_at != seen or not job.ready_to_finalize:
                return False  # someone claimed (or finished) since the read
            job.finalize_claimed_at = iso(now)
            return True

    def iter_rows(self, request_id: str) -> Iterator[StoredRow]:
        with self._lock:
            rows = sorted(self.rows.get(request_id, {}).values(), key=lambda r: r.position)
        yield from rows

    def list_rows(self, request_id: str, start: int, limit: int) -> list[StoredRow]:
        return list(itertools.islice(self.iter_rows(request_id), start, start + limit))

    def recount(self, request_id: str, now: datetime) -> Progress | None:
        with self._lock:
            job = self.jobs.get(request_id)
            if job is None:
                return None
            counted = counted_rows(self.rows.get(request_id, {}).values())
            progress = replace(
                counted,
                total_products=job.progress.total_products,
                total_images=job.progress.total_images,
            )
            job.progress = progress
            job.updated_at = iso(now)
            job.version += 1
            return progress

    def finish_job(
        self,
        request_id: str,
        status: JobStatus,
        now: datetime,
        *,
        output_csv_key: str = "",
        errors: Sequence[Mapping[str, object]] = (),
        webhook_url: str = "",
        webhook_id: str = "",
    ) -> bool:
        with self._lock:
            job = self.jobs.get(request_id)
            if job is None or job.status.terminal:
                return False
        self.before_write()
        with self._lock:
            job = self.jobs[request_id]
            if job.status.terminal:
                return False  # someone finished it since the read
            job.status = status
            job.updated_at = iso(now)
            job.output_csv_key = output_csv_key
            job.errors = capped_errors(errors)
            job.webhook = WebhookInfo.at_end(webhook_url, webhook_id, now)
            job.version += 1
            return True

    def schedule_webhook(self, request_id: str, due: datetime) -> None:
        with self._lock:
            self.jobs[request_id].webhook.next_attempt_at = iso(due)
            self.jobs[request_id].version += 1

    def record_webhook_attempt(
        self,
        request_id: str,
        attempt: WebhookAttempt,
        state: WebhookState,
        next_attempt_at: datetime | None,
    ) -> None:
        with self._lock:
            hook = self.jobs[request_id].webhook
            hook.attempts += 1
            hook.last_status_code = attempt.status_code
            hook.state = state
            hook.next_attempt_at = iso(next_attempt_at) if next_attempt_at else ""
            hook.history = [*hook.history, attempt][-MAX_WEBHOOK_HISTORY:]
            self.jobs[request_id].version += 1

    def redeliver_webhook(self, request_id: str, webhook_id: str, now: datetime) -> bool:
        with self._lock:
            job = self.jobs.get(request_id)
            if job is None or not job.webhook_redeliverable:
                return False
            job.webhook.state = WebhookState.PENDING
            job.webhook.webhook_id = webhook_id
            job.webhook.next_attempt_at = iso(now)
            job.version += 1
            return True

    def reopen_failed(self, request_id: str, generation: int, now: datetime) -> bool:
        with self._lock:
            job = self.jobs.get(request_id)
            if job is None or not job.retriable_as(generation):
                return False
            job.status = JobStatus.PROCESSING
            job.generation = generation
            job.updated_at = iso(now)
            job.fanout_sent, job.fanout_done = 0, False
            job.errors = []
            job.webhook.state = WebhookState.NONE
            job.webhook.next_attempt_at = ""
            job.finalize_claimed_at = job.ingest_claimed_at = job.cancel_requested_at = ""
            job.version += 1
            return True

    def reset_failed_rows(self, request_id: str, now: datetime) -> Iterator[StoredRow]:
        for row in self.iter_rows(request_id):
            if row.status != RowStatus.FAILED:
                continue
            with self._lock:
                current = self.rows[request_id][row.position]
                if current.status != RowStatus.FAILED:
                    continue
                self.rows[request_id][row.position] = replace(current, status=RowStatus.PENDING)
                job = self.jobs[request_id]
                job.progress = job.progress.plus(current.counted(), -1)
                job.updated_at = iso(now)
                job.version += 1
            yield replace(current, status=RowStatus.PENDING)

    def request_cancel(self, request_id: str, now: datetime) -> bool:
        with self._lock:
            job = self.jobs.get(request_id)
            if job is None or job.status.terminal:
                return False
            job.cancel_requested_at = job.updated_at = iso(now)
            job.version += 1
            return True

    def cancel_rows(
        self, request_id: str, now: datetime, positions: Sequence[int] | None = None
    ) -> None:
        with self._lock:
            rows = self.rows.get(request_id, {})
            wanted = rows.keys() if positions is None else set(positions) & rows.keys()
            changed = False
            for position in wanted:
                if rows[position].status == RowStatus.PENDING:
                    rows[position] = replace(rows[position], status=RowStatus.CANCELLED)
                    changed = True
            if changed and request_id in self.jobs:
                self.jobs[request_id].version += 1

    def cancelled_jobs(self, request_ids: Sequence[str]) -> set[str]:
        return self.jobs_stopped_or_gone(request_ids)[0]

    def jobs_stopped_or_gone(self, request_ids: Sequence[str]) -> tuple[set[str], set[str]]:
        with self._lock:
            cancelled = {
                request_id
                for request_id in request_ids
                if (job := self.jobs.get(request_id)) is not None and job.cancelled_or_cancelling
            }
            return cancelled, {r for r in request_ids if r not in self.jobs}

    def delete_rows(self, request_id: str) -> None:
        with self._lock:
            self.rows.pop(request_id, None)

    def delete_job(self, request_id: str) -> bool:
        with self._lock:
            self.rows.pop(request_id, None)
            self.actions = {k: v for k, v in self.actions.items() if k[0] != request_id}
            return self.jobs.pop(request_id, None) is not None

    def find_stalled(self, before: datetime, limit: int) -> list[Job]:
        with self._lock:
            found = [copy.deepcopy(job) for job in self.jobs.values() if job.stalled(before)]
        return found[:limit]

    def find_webhooks_due(self, before: datetime, limit: int) -> list[Job]:
        with self._lock:
            found = [copy.deepcopy(job) for job in self.jobs.values() if job.webhook_due(before)]
        return found[:limit]

    def ping(self) -> None:
        return None


def _nothing() -> None:
    return None


class FakeFetcher:
    """Serves bytes by URL; a URL mapped to an ImageFailure raises it."""

    def __init__(self, responses: Mapping[str, bytes | ImageFailure] | None = None) -> None:
        self.responses: dict[str, bytes | ImageFailure] = dict(responses or {})
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def fetch(self, url: str) -> bytes:
        with self._lock:
            self.calls.append(url)
        answer = self.responses.get(url)
        if answer is None:
            from chalicelib.domain.models import ImageErrorCode

            raise ImageFailure(ImageErrorCode.HTTP_ERROR, "HTTP 404")
        if isinstance(answer, ImageFailure):
            raise answer
        return answer


@dataclass
class FakeWebhookSender:
    """Answers each POST with the next of `answers`: a status code, None (a timeout) or a
    whole DeliveryResult (a Retry-After with it); 200 once they run out."""

    answers: list[int | DeliveryResult | None] = field(default_factory=list)
    posts: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    answered: list[int | None] = field(default_factory=list)

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> DeliveryResult:
        self.posts.append((url, body, dict(headers)))
        answer = self.answers.pop(0) if self.answers else 200
        result = answer if isinstance(answer, DeliveryResult) else DeliveryResult(answer)
        if result.status_code is None and not result.error:
            result = DeliveryResult(None, "timeout: timed out", timed_out=True)
        self.answered.append(result.status_code)
        return result


class InMemoryWebhookOrigins:
    """Behaves like MongoWebhookOrigins: origin -> (slow until, busy until)."""

    def __init__(self) -> None:
        self.origins: dict[str, tuple[datetime, datetime | None]] = {}
        self._lock = threading.Lock()

    def admit(self, origin: str, now: datetime, hold: timedelta) -> Admission | None:
        with self._lock:
            found = self.origins.get(origin)
            if found is None:
                return Admission(origin)
            slow_until, busy_until = found
            if slow_until <= now:
                return Admission(origin, known=True)
            if busy_until is not None and busy_until > now:
                return None
            self.origins[origin] = (slow_until, now + hold)
            return Admission(origin, slot=True, known=True)

    def settle(
        self,
        admission: Admission,
        now: datetime,
        *,
        answered: bool,
        timed_out: bool,
        cooldown: timedelta,
    ) -> None:
        with self._lock:
            found = self.origins.get(admission.origin)
            busy = found[1] if found else None
            if admission.slot:
                busy = now
            if timed_out:
                self.origins[admission.origin] = (now + cooldown, busy)
            elif answered and admission.known:
                self.origins.pop(admission.origin, None)
            elif found is not None:
                self.origins[admission.origin] = (found[0], busy)


class InMemoryTenantStore:
    """Behaves like MongoTenantStore (tests/contract runs the same tests against both)."""

    def __init__(self) -> None:
        self.tenants: dict[str, Tenant] = {}
        self.keys: dict[str, ApiKeyRecord] = {}
        self.key_reads = 0
        self._lock = threading.Lock()

    def put_tenant(self, tenant: Tenant) -> None:
        with self._lock:
            self.tenants[tenant.name] = tenant

    def get_tenant(self, name: str) -> Tenant | None:
        with self._lock:
            return self.tenants.get(name)

    def list_tenants(self) -> list[Tenant]:
        with self._lock:
            return sorted(self.tenants.values(), key=lambda t: t.name)

    def add_api_key(self, record: ApiKeyRecord) -> None:
        with self._lock:
            found = self.keys.get(record.key_id)
            if found is not None and found.active:
                raise ValueError(f"key id {record.key_id} is taken")
            self.keys[record.key_id] = record

    def find_api_key(self, key_id: str) -> ApiKeyRecord | None:
        with self._lock:
            self.key_reads += 1
            return self.keys.get(key_id)

    def list_api_keys(self, tenant: str | None = None) -> list[ApiKeyRecord]:
        with self._lock:
            found = [k for k in self.keys.values() if tenant is None or k.tenant == tenant]
        return sorted(found, key=lambda k: (k.tenant, k.created_at, k.key_id))

    def revoke_api_key(self, key_id: str, now: datetime) -> bool:
        with self._lock:
            found = self.keys.get(key_id)
            if found is None or not found.active:
                return False
            self.keys[key_id] = replace(found, revoked_at=iso(now))
            return True


class InMemoryReuseIndex:
    """Behaves like MongoReuseIndex (a shared contract suite runs both)."""

    def __init__(self, tenants: InMemoryTenantStore) -> None:
        self.entries: dict[tuple[str, str], ReusableOutput] = {}
        self.keys: dict[str, str] = {}
        self._tenants = tenants
        self._lock = threading.Lock()

    def find(self, tenant: str, address: str) -> ReusableOutput | None:
        with self._lock:
            return self.entries.get((tenant, address))

    def remember(self, tenant: str, address: str, output: ReusableOutput) -> None:
        with self._lock:
            self.entries[(tenant, address)] = output

    def remember_all(self, entries: Sequence[tuple[str, str, ReusableOutput]]) -> None:
        with self._lock:
            for tenant, address, output in entries:
                self.entries[(tenant, address)] = output

    def reuse_key(self, tenant: str) -> str | None:
        if self._tenants.get_tenant(tenant) is None:
            return None
        with self._lock:
            return self.keys.setdefault(tenant, new_reuse_key())


class FakeSecrets:
    """Secrets Manager as a dict: a SecretSource and a SecretWriter."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self.values: dict[str, str] = dict(values or {})
        self.reads: list[str] = []

    def get(self, secret_id: str) -> str | None:
        self.reads.append(secret_id)
        return self.values.get(secret_id)

    def read(self, secret_id: str) -> str | None:
        return self.values.get(secret_id)

    def put(self, secret_id: str, value: str) -> None:
        self.values[secret_id] = value


class FakeUsageKeys:
    def __init__(self) -> None:
        self.created: list[str] = []

    def create(self, tenant: str) -> str:
        self.created.append(tenant)
        return f"usage-{tenant}-{len(self.created)}"


@dataclass
class FakeCdn:
    """The CDN: remembers each invalidation asked for; `refuse` makes the next ones fail."""

    invalidated: list[list[str]] = field(default_factory=list)
    refuse: int = 0

    def invalidate(self, paths: Sequence[str]) -> None:
        if self.refuse:
            self.refuse -= 1
            raise ConnectionError("the CDN refused the invalidation")
        self.invalidated.append(list(paths))


@dataclass
class FakeEvents:
    published: list[tuple[str, dict[str, object]]] = field(default_factory=list)

    def publish(self, detail_type: str, detail: Mapping[str, object]) -> None:
        self.published.append((detail_type, dict(detail)))

    def types(self) -> list[str]:
        return [t for t, _ in self.published]


class FixedClock:
    def __init__(self, start: datetime | None = None) -> None:
        # Near the real now: receivers verifying Standard Webhooks refuse old timestamps.
        self.moment = start or datetime.now(UTC).replace(microsecond=0)

    def now(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


class InlineExecutor(Executor):
    """Runs submitted work at once, in the caller's thread: deterministic unit tests."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future

    def run(self, key: str, work: Callable[[], Any], *, tenant: str = "") -> Future[Any]:
        """`WorkPool`: the work at once, whatever its key."""
        return self.submit(work)


def refuse_nothing(url: str) -> str | None:
    return None if url.startswith(("http://", "https://")) else "only http(s) URLs are allowed"


@dataclass
class FakeWorld[S: JobStore = InMemoryJobStore]:
    deps: Dependencies
    store: S
    uploads: FakeObjectStore
    outputs: FakeObjectStore
    rows_queue: FakeQueue
    finalize_queue: FakeQueue
    webhook_queue: FakeQueue
    fetcher: FakeFetcher
    sender: FakeWebhookSender
    clock: FixedClock
    ingest_queue: FakeQueue
    events: FakeEvents
    sleeps: list[float]
    tenants: InMemoryTenantStore
    secrets: FakeSecrets
    cdn: FakeCdn


@overload
def make_world(
    settings: Settings | None = None, *, store: None = None, **overrides: Any
) -> FakeWorld[InMemoryJobStore]: ...


@overload
def make_world[S: JobStore](
    settings: Settings | None = None, *, store: S, **overrides: Any
) -> FakeWorld[S]: ...


def make_world(
    settings: Settings | None = None, *, store: JobStore | None = None, **overrides: Any
) -> FakeWorld[Any]:
    """Fakes for every port; the in-memory store unless `store` is given (a MongoJobStore)."""
    ids = (f"00000000-0000-4000-8000-{n:012d}" for n in itertools.count(1))
    store = store if store is not None else InMemoryJobStore()
    uploads, outputs = FakeObjectStore("uploads"), FakeObjectStore("outputs")
    rows_q, fin_q, hook_q, ingest_q = FakeQueue(), FakeQueue(), FakeQueue(), FakeQueue()
    events = FakeEvents()
    sleeps: list[float] = []
    fetcher, sender, clock = FakeFetcher(), FakeWebhookSender(), FixedClock()
    tenants, secrets = InMemoryTenantStore(), FakeSecrets()
    base = settings or Settings(webhook_secret="whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    if not base.public_base_url:  # as on every stack: outputs are read through its CDN
        base = replace(base, public_base_url=PUBLIC_BASE_URL)
    deps = Dependencies(
        settings=base,
        store=store,
        uploads=uploads,
        outputs=outputs,
        rows_queue=rows_q,
        finalize_queue=fin_q,
        webhook_queue=hook_q,
        fetcher=fetcher,
        webhook_sender=sender,
        check_webhook_url=refuse_nothing,
        clock=clock,
        new_id=lambda: next(ids),
        image_pool=InlineExecutor(),
        ingest_queue=ingest_q,
        events=events,
        sleep=sleeps.append,
        tenants=tenants,
        secrets=secrets,
        reuse=InMemoryReuseIndex(tenants),
        cdn=(cdn := FakeCdn()),
        webhook_origins=InMemoryWebhookOrigins(),
    )
    for name, value in overrides.items():
        setattr(deps, name, value)
    return FakeWorld(
        deps,
        store,
        uploads,
        outputs,
        rows_q,
        fin_q,
        hook_q,
        fetcher,
        sender,
        clock,
        ingest_q,
        events,
        sleeps,
        tenants,
        secrets,
        cdn,
    )
