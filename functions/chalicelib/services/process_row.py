"""The worker: each row's images fetched, compressed, stored and recorded exactly once."""

from __future__ import annotations

import contextvars
import logging
import random
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from chalicelib import observability
from chalicelib.domain.models import ImageErrorCode, ImageResult, Progress, output_key
from chalicelib.errors import ImageFailure, InvalidRequest
from chalicelib.imaging import CompressOptions, compress_to_jpeg
from chalicelib.services.deps import Dependencies

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kept:
    """An image of a retried row that succeeded before: its output is reused, not redone."""

    key: str
    bytes_in: int = 0
    bytes_out: int = 0


@dataclass(frozen=True)
class RowTask:
    request_id: str
    position: int
    serial: int
    urls: tuple[str, ...]
    keep: tuple[Kept, ...] = ()

    def kept(self, index: int) -> Kept | None:
        if index < len(self.keep) and self.keep[index].key:
            return self.keep[index]
        return None

    @classmethod
    def from_message(cls, body: Mapping[str, Any]) -> RowTask:
        try:
            urls = body["inputImageUrls"]
            if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
                raise TypeError("inputImageUrls must be a list of strings")
            keep = tuple(
                Kept(str(k.get("key", "")), int(k.get("bytesIn", 0)), int(k.get("bytesOut", 0)))
                for k in body.get("keep", [])
            )
            return cls(
                request_id=str(body["requestId"]),
                position=int(body["position"]),
                serial=int(body["serialNumber"]),
                urls=tuple(urls),
                keep=keep,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidRequest(f"malformed row message: {exc}") from exc


def process_rows(deps: Dependencies, tasks: Sequence[RowTask]) -> list[BaseException | None]:
    """Process a batch; every image of every row runs on the shared pool at once.
    Returns, per task, None on success or the error that should make it be redelivered."""
    pending: list[dict[str, Future[ImageResult]]] = []
    in_batch: dict[tuple[str, str], Future[ImageResult]] = {}
    reuse = reuse_cache(deps)
    for task in tasks:
        first_index: dict[str, int] = {}
        for index, url in enumerate(task.urls):
            if task.kept(index) is None:
                first_index.setdefault(url, index)
        futures: dict[str, Future[ImageResult]] = {}
        for url, index in first_index.items():
            # The same URL anywhere in the job is fetched and compressed once: within the
            # batch the rows share one future; later rows reuse the stored output.
            job_url = (task.request_id, url)
            reused = reuse.get(job_url)
            if reused is not None:
                futures[url] = _resolved(reused)
                continue
            if job_url not in in_batch:
                # each image runs in the caller's context: its log lines keep the requestId
                in_batch[job_url] = deps.image_pool.submit(
                    contextvars.copy_context().run, _one_image, deps, task, url, index
                )
            futures[url] = in_batch[job_url]
        pending.append(futures)
    outcomes: list[BaseException | None] = [None] * len(tasks)
    done: list[tuple[int, RowTask, list[ImageResult]]] = []
    for n, (task, futures) in enumerate(zip(tasks, pending, strict=True)):
        try:
            by_url = {url: future.result() for url, future in futures.items()}
            results = [
                _kept_result(url, kept) if (kept := task.kept(i)) else by_url[url]
                for i, url in enumerate(task.urls)
            ]
            done.append((n, task, results))
        except Exception as exc:
            _log_retry(task)
            outcomes[n] = exc
    for n, error in record_batch(deps, done):
        outcomes[n] = error
    return outcomes


class ReuseCache:
    """Outputs already stored in this container, by (job, URL): a URL repeated anywhere in
    a job is downloaded and compressed once per container (each Lambda instance keeps its
    own, as each of the emulator's worker processes does). Only successes are kept, after their
    output is stored; the oldest entries go first beyond `limit`."""

    def __init__(self, limit: int = 20_000) -> None:
        self._limit = limit
        self._items: OrderedDict[tuple[str, str], ImageResult] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def get(self, job_url: tuple[str, str]) -> ImageResult | None:
        with self._lock:
            found = self._items.get(job_url)
            if found is not None:
                self._items.move_to_end(job_url)
                self.hits += 1
            return found

    def put(self, job_url: tuple[str, str], result: ImageResult) -> None:
        with self._lock:
            self._items[job_url] = result
            self._items.move_to_end(job_url)
            while len(self._items) > self._limit:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = 0


_REUSE: weakref.WeakKeyDictionary[object, ReuseCache] = weakref.WeakKeyDictionary()
_REUSE_LOCK = threading.Lock()


def reuse_cache(deps: Dependencies) -> ReuseCache:
    """The reuse cache of the output store these dependencies write to (one per container;
    tests get one per fake world)."""
    with _REUSE_LOCK:
        cache = _REUSE.get(deps.outputs)
        if cache is None:
            cache = _REUSE[deps.outputs] = ReuseCache()
        return cache


def _resolved(result: ImageResult) -> Future[ImageResult]:
    future: Future[ImageResult] = Future()
    future.set_result(result)
    return future


@runtime_checkable
class BatchRecorder(Protocol):
    """A store that records several rows of one job in few operations (MongoJobStore)."""

    def record_rows(
        self,
        request_id: str,
        rows: Sequence[tuple[int, Sequence[ImageResult]]],
        now: datetime,
    ) -> list[Progress | None]: ...


def record_batch(
    deps: Dependencies, done: Sequence[tuple[int, RowTask, list[ImageResult]]]
) -> list[tuple[int, BaseException | None]]:
    """Record the finished rows of a batch: per job, in one call when the store can (each
    row still counted once), else row by row. Returns (index, error or None) per row."""
    outcomes: list[tuple[int, BaseException | None]] = []
    by_job: dict[str, list[tuple[int, RowTask, list[ImageResult]]]] = {}
    for item in done:
        by_job.setdefault(item[1].request_id, []).append(item)
    store = deps.store
    for request_id, items in by_job.items():
        if isinstance(store, BatchRecorder) and len(items) > 1:
            try:
                progress = store.record_rows(
                    request_id, [(t.position, r) for _, t, r in items], deps.clock.now()
                )
            except Exception:
                log.exception("job %s: batch record failed; recording row by row", request_id)
            else:
                for (n, task, results), counted in zip(items, progress, strict=True):
                    outcomes.append((n, None))
                    if counted is not None:
                        observability.record_images(results)
                    else:
                        log.info("row %s of job %s was already recorded", task.serial, request_id)
                _finalize_if_done(deps, request_id, [p for p in progress if p is not None])
                continue
        for n, task, results in items:
            try:
                record_results(deps, task, results)
                outcomes.append((n, None))
            except Exception as exc:
                _log_retry(task)
                outcomes.append((n, exc))
    return outcomes


def _finalize_if_done(deps: Dependencies, request_id: str, counted: Sequence[Progress]) -> None:
    """Ask for finalization when the rows just counted finished the job; when nothing was
    counted (all redelivered) ask whenever the job is complete, as `record_results` does."""
    if counted:
        progress = max(counted, key=lambda p: p.processed_products)
    else:
        job = deps.store.get_job(request_id)
        if job is None or job.status.terminal:
            return
        progress = job.progress
    if progress.processed_products >= progress.total_products:
        request_finalization(deps, request_id)


def _log_retry(task: RowTask) -> None:
    log.exception("row %s of job %s failed; it will be retried", task.serial, task.request_id)


def record_results(deps: Dependencies, task: RowTask, results: list[ImageResult]) -> None:
    progress = deps.store.record_row(task.request_id, task.position, results, deps.clock.now())
    if progress is not None:  # counted once: a redelivered row records nothing
        observability.record_images(results)
    else:
        # A redelivery: the first delivery may have died between recording the last row
        # and asking for finalization, so ask again (the claim keeps it to one).
        log.info("row %s of job %s was already recorded", task.serial, task.request_id)
    _finalize_if_done(deps, task.request_id, [progress] if progress is not None else [])


def request_finalization(deps: Dependencies, request_id: str) -> bool:
    """Send the finalize message once, whoever calls, however many race (again only when
    the claimant died: its claim outlived the lease)."""
    lease = timedelta(seconds=deps.settings.finalize_lease)
    if not deps.store.claim_finalization(request_id, deps.clock.now(), lease):
        return False
    deps.finalize_queue.send_batch([{"requestId": request_id}])
    return True


def _kept_result(url: str, kept: Kept) -> ImageResult:
    return ImageResult(url, output_key=kept.key, bytes_in=kept.bytes_in, bytes_out=kept.bytes_out)


def fetch_with_retries(deps: Dependencies, url: str) -> bytes:
    """Download, retrying transient failures (timeouts, 5xx, 429, dropped connections) with
    exponential backoff and full jitter; permanent ones (404, blocked, not an image) at once."""
    attempts = deps.settings.fetch_attempts
    for attempt in range(1, attempts + 1):
        try:
            return deps.fetcher.fetch(url)
        except ImageFailure as failure:
            if not failure.retryable or attempt == attempts:
                raise
            delay = random.uniform(0, deps.settings.fetch_backoff * 2 ** (attempt - 1))
            log.info("fetch %s: %s; retry %d in %.2fs", url, failure.message, attempt, delay)
            deps.sleep(delay)
    raise AssertionError("unreachable")


def _one_image(deps: Dependencies, task: RowTask, url: str, index: int) -> ImageResult:
    """Fetch and compress one image. Expected failures become a result with a code;
    a storage failure raises, so the row is retried."""
    settings = deps.settings
    data = b""
    try:
        data = fetch_with_retries(deps, url)
        compressed = compress_to_jpeg(
            data,
            CompressOptions(
                quality=settings.output_quality,
                max_pixels=settings.max_image_pixels,
                optimize=settings.output_optimize,
            ),
        )
    except ImageFailure as failure:
        return ImageResult(
            url, error_code=failure.code, error_message=failure.message, bytes_in=len(data)
        )
    except Exception as exc:  # a bug or an unforeseen decoder error must not stall the job
        code = ImageErrorCode.DECODE_FAILED if data else ImageErrorCode.FETCH_FAILED
        log.exception("unexpected error on %s", url)
        return ImageResult(url, error_code=code, error_message=str(exc)[:300], bytes_in=len(data))
    key = output_key(task.request_id, task.serial, index)
    deps.outputs.put_bytes(key, compressed.data, "image/jpeg")
    result = ImageResult(url, output_key=key, bytes_in=len(data), bytes_out=len(compressed.data))
    reuse_cache(deps).put((task.request_id, url), result)
    return result
