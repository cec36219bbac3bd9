"""The worker: each row's images fetched, compressed, stored and recorded exactly once."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from chalicelib.domain.models import ImageErrorCode, ImageResult, output_key
from chalicelib.errors import ImageFailure, InvalidRequest
from chalicelib.imaging import CompressOptions, compress_to_jpeg
from chalicelib.services.deps import Dependencies

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowTask:
    request_id: str
    position: int
    serial: int
    urls: tuple[str, ...]

    @classmethod
    def from_message(cls, body: Mapping[str, Any]) -> RowTask:
        try:
            urls = body["inputImageUrls"]
            if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
                raise TypeError("inputImageUrls must be a list of strings")
            return cls(
                request_id=str(body["requestId"]),
                position=int(body["position"]),
                serial=int(body["serialNumber"]),
                urls=tuple(urls),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidRequest(f"malformed row message: {exc}") from exc


def process_rows(deps: Dependencies, tasks: Sequence[RowTask]) -> list[BaseException | None]:
    """Process a batch; every image of every row runs on the shared pool at once.
    Returns, per task, None on success or the error that should make it be redelivered."""
    pending: list[dict[str, Future[ImageResult]]] = []
    for task in tasks:
        first_index: dict[str, int] = {}
        for index, url in enumerate(task.urls):
            first_index.setdefault(url, index)
        pending.append(
            {
                url: deps.image_pool.submit(_one_image, deps, task, url, index)
                for url, index in first_index.items()
            }
        )
    outcomes: list[BaseException | None] = []
    for task, futures in zip(tasks, pending, strict=True):
        try:
            by_url = {url: future.result() for url, future in futures.items()}
            record_results(deps, task, [by_url[url] for url in task.urls])
            outcomes.append(None)
        except Exception as exc:
            log.exception(
                "row %s of job %s failed; it will be retried", task.serial, task.request_id
            )
            outcomes.append(exc)
    return outcomes


def record_results(deps: Dependencies, task: RowTask, results: list[ImageResult]) -> None:
    progress = deps.store.record_row(task.request_id, task.position, results, deps.clock.now())
    if progress is None:
        log.info("row %s of job %s was already recorded", task.serial, task.request_id)
        return
    if progress.processed_products >= progress.total_products:
        request_finalization(deps, task.request_id)


def request_finalization(deps: Dependencies, request_id: str) -> bool:
    """Send the finalize message once, whoever calls, however many race."""
    if not deps.store.claim_finalization(request_id, deps.clock.now()):
        return False
    deps.finalize_queue.send_batch([{"requestId": request_id}])
    return True


def _one_image(deps: Dependencies, task: RowTask, url: str, index: int) -> ImageResult:
    """Fetch and compress one image. Expected failures become a result with a code;
    a storage failure raises, so the row is retried."""
    settings = deps.settings
    data = b""
    try:
        data = deps.fetcher.fetch(url)
        compressed = compress_to_jpeg(
            data,
            CompressOptions(quality=settings.output_quality, max_pixels=settings.max_image_pixels),
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
    return ImageResult(url, output_key=key, bytes_in=len(data), bytes_out=len(compressed.data))
