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
from typing import IO, Any

from chalicelib.config import Settings
from chalicelib.domain.models import (
    ImageResult,
    Job,
    JobStatus,
    Progress,
    RowStatus,
    StoredRow,
    WebhookInfo,
    WebhookState,
)
from chalicelib.domain.timefmt import iso
from chalicelib.errors import ImageFailure, NotFound
from chalicelib.ports import HttpResult, ObjectInfo, PresignedPost
from chalicelib.services.deps import Dependencies


class FakeObjectStore:
    def __init__(self, bucket: str) -> None:
        self._bucket = bucket
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.fail_puts = 0

    @property
    def bucket(self) -> str:
        return self._bucket

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        if self.fail_puts:
            self.fail_puts -= 1
            raise ConnectionError("storage is down")
        self.objects[key] = (bytes(data), content_type)

    def put_file(self, key: str, fileobj: IO[bytes], content_type: str) -> None:
        self.put_bytes(key, fileobj.read(), content_type)

    def open(self, key: str) -> IO[bytes]:
        if key not in self.objects:
            raise NotFound(key)
        return io.BytesIO(self.objects[key][0])

    def head(self, key: str) -> ObjectInfo | None:
        if key not in self.objects:
            return None
        return ObjectInfo(key, len(self.objects[key][0]), f"etag-{hash(self.objects[key][0])}")

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
    """Behaves like MongoJobStore (the shared contract tests run against both)."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.rows: dict[str, dict[int, StoredRow]] = {}
        self.claims: dict[str, set[str]] = {}
        self._lock = threading.RLock()

    def create_job(self, job: Job) -> bool:
        with self._lock:
            if job.request_id in self.jobs:
                return False
            if job.idempotency_key and self.find_by_idempotency_key(job.idempotency_key):
                return False
            self.jobs[job.request_id] = copy.deepcopy(job)
            self.claims[job.request_id] = set()
            return True

    def get_job(self, request_id: str) -> Job | None:
        with self._lock:
            job = self.jobs.get(request_id)
            return copy.deepcopy(job) if job else None

    def find_by_idempotency_key(self, key: str) -> Job | None:
        with self._lock:
            for job in self.jobs.values():
                if job.idempotency_key == key:
                    return copy.deepcopy(job)
            return None

    def _claim(self, request_id: str, what: str) -> bool:
        claims = self.claims.setdefault(request_id, set())
        if what in claims:
            return False
        claims.add(what)
        return True

    def claim_ingest(self, request_id: str, now: datetime) -> bool:
        with self._lock:
            return self._claim(request_id, "ingest")

    def insert_rows(self, request_id: str, chunk: int, rows: Sequence[StoredRow]) -> None:
        with self._lock:
            target = self.rows.setdefault(request_id, {})
            for row in rows:
                target[row.position] = row

    def start_processing(self, request_id: str, progress: Progress, now: datetime) -> None:
        with self._lock:
            job = self.jobs[request_id]
            job.progress = progress
            job.status = JobStatus.PROCESSING
            job.updated_at = iso(now)

    def record_row(
        self, request_id: str, position: int, results: Sequence[ImageResult], now: datetime
    ) -> Progress | None:
        with self._lock:
            row = self.rows[request_id][position]
            if row.status != RowStatus.PENDING:
                return None
            failed = [r for r in results if not r.ok]
            self.rows[request_id][position] = replace(
                row,
                status=RowStatus.FAILED if failed else RowStatus.COMPLETED,
                output_keys=tuple(r.output_key for r in results),
                errors=tuple(
                    {"url": r.url, "code": str(r.error_code), "message": r.error_message}
                    for r in failed
                ),
            )
            job = self.jobs[request_id]
            p = job.progress
            job.progress = replace(
                p,
                processed_products=p.processed_products + 1,
                processed_images=p.processed_images + len(results),
                failed_images=p.failed_images + len(failed),
            )
            job.updated_at = iso(now)
            return job.progress

    def claim_finalization(self, request_id: str, now: datetime) -> bool:
        with self._lock:
            p = self.jobs[request_id].progress
            if p.processed_products < p.total_products:
                return False
            return self._claim(request_id, "finalize")

    def iter_rows(self, request_id: str) -> Iterator[StoredRow]:
        with self._lock:
            rows = sorted(self.rows.get(request_id, {}).values(), key=lambda r: r.position)
        yield from rows

    def list_rows(self, request_id: str, start: int, limit: int) -> list[StoredRow]:
        return list(itertools.islice(self.iter_rows(request_id), start, start + limit))

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
            job = self.jobs[request_id]
            if job.status.terminal:
                return False
            job.status = status
            job.updated_at = iso(now)
            job.output_csv_key = output_csv_key
            job.errors = [dict(e) for e in errors]
            job.webhook = WebhookInfo(
                state=WebhookState.PENDING if webhook_url else WebhookState.NONE,
                webhook_id=webhook_id,
                url=webhook_url,
            )
            return True

    def record_webhook_attempt(
        self, request_id: str, status_code: int | None, state: str, now: datetime
    ) -> None:
        with self._lock:
            hook = self.jobs[request_id].webhook
            hook.attempts += 1
            hook.last_status_code = status_code
            hook.state = WebhookState(state)

    def ping(self) -> None:
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
    answers: list[int | None] = field(default_factory=list)
    posts: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> HttpResult:
        self.posts.append((url, body, dict(headers)))
        code = self.answers.pop(0) if self.answers else 200
        return HttpResult(code, "" if code else "timed out")


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


def refuse_nothing(url: str) -> str | None:
    return None if url.startswith(("http://", "https://")) else "only http(s) URLs are allowed"


@dataclass
class FakeWorld:
    deps: Dependencies
    store: InMemoryJobStore
    uploads: FakeObjectStore
    outputs: FakeObjectStore
    rows_queue: FakeQueue
    finalize_queue: FakeQueue
    webhook_queue: FakeQueue
    fetcher: FakeFetcher
    sender: FakeWebhookSender
    clock: FixedClock


def make_world(settings: Settings | None = None, **overrides: Any) -> FakeWorld:
    ids = (f"00000000-0000-4000-8000-{n:012d}" for n in itertools.count(1))
    store = InMemoryJobStore()
    uploads, outputs = FakeObjectStore("uploads"), FakeObjectStore("outputs")
    rows_q, fin_q, hook_q = FakeQueue(), FakeQueue(), FakeQueue()
    fetcher, sender, clock = FakeFetcher(), FakeWebhookSender(), FixedClock()
    base = settings or Settings(webhook_secret="whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
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
    )
    for name, value in overrides.items():
        setattr(deps, name, value)
    return FakeWorld(deps, store, uploads, outputs, rows_q, fin_q, hook_q, fetcher, sender, clock)
