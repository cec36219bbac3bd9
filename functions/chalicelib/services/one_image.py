"""One image's work, on a pool thread: download (retrying what may pass), decode and encode
in the job's format and box, store, remember for reuse. The only part of the worker that
imports imaging (Pillow, simplejpeg, numpy); the worker's handler imports it at init.

An image starts (each fetch attempt does) only while the invocation's time holds the whole
attempt and the largest image's decode and encode (`time_for_an_attempt`); otherwise it is
`Deferred` to a later invocation, with the attempts it spent. Its pixels are decoded only
once its memory, estimated from its header, fits beside the images in flight
(`memory_for`): it waits for it as it waits for a thread, fails with `too_large_to_encode`
when it never could fit, and is `Deferred` when the wait would leave too little time."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from chalicelib import image_memory, observability
from chalicelib.config import Settings
from chalicelib.domain.budget import Budget, OutOfTime
from chalicelib.domain.models import ImageErrorCode, ImageResult, output_key
from chalicelib.domain.output_options import OutputOptions
from chalicelib.domain.retention import output_cache_control
from chalicelib.domain.reuse import ReusableOutput
from chalicelib.errors import ImageFailure
from chalicelib.imaging import Admit, CompressOptions, Planned, compress, work_allowance
from chalicelib.services import reuse
from chalicelib.services.deps import Dependencies
from chalicelib.services.job_url_cache import job_url_cache
from chalicelib.services.row_messages import RowTask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deferred:
    """An image not finished for want of time: it resumes in a later invocation, with the
    fetch attempts it already spent counted."""

    attempts: int


def time_for_an_attempt(
    settings: Settings, budget: Budget, output_format: str, wait: float = 0.0
) -> bool:
    """Whether an image may start a fetch attempt `wait` seconds from now: only when the
    attempt's whole deadline (DOWNLOAD_DEADLINE) and the decode and encode of the largest
    image accepted (MAX_IMAGE_PIXELS, into `output_format`) fit in what `budget` has left.
    When not, time is short: the image starts no more in this invocation."""
    needed = settings.download_deadline + work_allowance(settings.max_image_pixels, output_format)
    return budget.fits(wait + needed)


def fetch_with_retries(
    deps: Dependencies,
    url: str,
    budget: Budget | None = None,
    spent: int = 0,
    output_format: str = "jpeg",
) -> bytes:
    """Download, retrying transient failures (connect and read timeouts, 5xx, 408, 429,
    dropped connections: the host may answer next time) with exponential backoff and full
    jitter, up to `fetch_attempts`; permanent ones (404 and other 4xx, an address the guard
    refuses, not an image, a body still trickling at the deadline) at once, since asking
    again would get the same. Which is which is the failure's `retryable`: set by
    `image_download._check_status` for an HTTP status, by `guarded_http.request_failure` for
    a connection that failed or timed out.

    No attempt starts unless `time_for_an_attempt` says so: then `NoTimeLeft` says how many
    attempts were spent (`spent` counts those of earlier invocations), and the image resumes
    in a later one."""
    budget = budget or Budget.unlimited()
    settings = deps.settings
    attempt = spent
    while True:
        if not time_for_an_attempt(settings, budget, output_format):
            raise NoTimeLeft(attempt)
        attempt += 1
        try:
            return deps.fetcher.fetch(url)
        except ImageFailure as failure:
            if not failure.retryable or attempt >= settings.fetch_attempts:
                raise
            delay = random.uniform(0, settings.fetch_backoff * 2 ** (attempt - 1))
            if not time_for_an_attempt(settings, budget, output_format, wait=delay):
                raise NoTimeLeft(attempt) from failure
            log.info("fetch %s: %s; retry %d in %.2fs", url, failure.message, attempt, delay)
            deps.sleep(delay)


class NoTimeLeft(Exception):
    """The budget cannot hold another attempt; `attempts` were spent on the image so far."""

    def __init__(self, attempts: int) -> None:
        super().__init__(f"no time left for a fetch attempt after {attempts}")
        self.attempts = attempts


def process_image(  # noqa: PLR0917 - a partial's arguments, in one place
    deps: Dependencies,
    task: RowTask,
    url: str,
    index: int,
    budget: Budget,
    remembered: reuse.Pending,
) -> ImageResult | Deferred:
    """Fetch, compress and store one image. Expected failures become a result with a code; an image
    that cannot start in time is Deferred; a storage failure raises, so the row is retried."""
    settings = deps.settings
    options = compress_options(settings, task.options)
    data = b""
    key = output_key(task.request_id, task.serial, index, task.options.format.extension)
    where: str | None = None
    try:
        with observability.phase("download"):
            data = fetch_with_retries(deps, url, budget, task.attempts_spent(index), options.format)
        with observability.phase("records"):
            where = reuse.address(deps, task.tenant, options, data)
            copied = reuse.reuse(deps, task.tenant, where, key, remembered)
        if copied is not None:  # made before for this tenant: copied, not compressed again
            found = ImageResult(
                url,
                output_key=key,
                bytes_in=len(data),
                bytes_out=copied.bytes_out,
                quality=copied.quality,  # `auto`'s: the copy reports what its source reached
                score=copied.score,
            )
            job_url_cache(deps).put((task.request_id, url), found)
            return found
        with observability.phase("compress"), memory_for(deps, budget) as admit:
            compressed = compress(data, options, budget.remaining, admit=admit)
    except NoTimeLeft as short:
        return Deferred(short.attempts)
    except OutOfTime:  # no memory came free in time: downloaded again in a later invocation
        return Deferred(task.attempts_spent(index))
    except ImageFailure as failure:
        return ImageResult(
            url, error_code=failure.code, error_message=failure.message, bytes_in=len(data)
        )
    except Exception as exc:  # a bug or an unforeseen decoder error must not stall the job
        code = ImageErrorCode.DECODE_FAILED if data else ImageErrorCode.FETCH_FAILED
        log.exception("unexpected error on %s", url)
        return ImageResult(url, error_code=code, error_message=str(exc)[:300], bytes_in=len(data))
    cache_control = output_cache_control(settings)
    with observability.phase("storage"):
        deps.outputs.put_bytes(key, compressed.data, compressed.content_type, cache_control)
    searched = options.target_score is not None  # `auto`: the quality chosen and its score
    made = ReusableOutput(
        key,
        len(compressed.data),
        compressed.quality if searched else None,
        compressed.score if searched else None,
    )
    # An `auto` output made without a score (time ran short before the search measured
    # anything: the format's default quality) is not what the target asks for: a later job
    # makes it again rather than copy it.
    if not searched or made.score is not None:
        with observability.phase("records"):
            reuse.remember(task.tenant, where, made, remembered)
    result = ImageResult(
        url,
        output_key=key,
        bytes_in=len(data),
        bytes_out=made.bytes_out,
        quality=made.quality,
        score=made.score,
    )
    job_url_cache(deps).put((task.request_id, url), result)
    return result


@contextmanager
def memory_for(deps: Dependencies, budget: Budget) -> Iterator[Admit]:
    """imaging's `admit` hook for one image: it takes the image's estimated memory
    (`image_memory.estimate`, from its header) from `deps.memory`, waiting while the images
    in flight hold too much, but no longer than leaves time for its decode and encode; what
    it took is given back when the block ends (the image encoded, or failed). An `auto`
    image whose search could never fit, but whose plain encode could, is made at its
    format's default quality, unscored, rather than fail `too_large_to_encode`."""
    taken: list[int] = []

    def admit(planned: Planned) -> Planned:
        nbytes = image_memory.estimate(planned)
        if planned.searched and not deps.memory.could_hold(nbytes):
            plain = replace(planned, searched=False)
            plain_bytes = image_memory.estimate(plain)
            if deps.memory.could_hold(plain_bytes):
                log.info(
                    "%dx%d: auto's search would not fit in the worker's memory; made at the "
                    "format's default quality",
                    *planned.output,
                )
                planned, nbytes = plain, plain_bytes
        pixels = max(planned.decoded[0] * planned.decoded[1], planned.output[0] * planned.output[1])
        spare = budget.remaining() - work_allowance(pixels, planned.format)
        deps.memory.take(nbytes, timeout=max(0.0, spare) if math.isfinite(spare) else None)
        taken.append(nbytes)
        return planned

    try:
        yield admit
    finally:
        for nbytes in taken:
            deps.memory.give_back(nbytes)


def compress_options(settings: Settings, options: OutputOptions) -> CompressOptions:
    """What the compressor is asked for: the job's options over the settings (JPEG's quality
    is OUTPUT_QUALITY unless the job names one; a job that names none is `auto` when
    OUTPUT_QUALITY is). For `auto`, the target score, and the format's default quality as
    the search's fallback."""
    return CompressOptions(
        quality=options.quality_or(settings.output_quality),
        target_score=options.target_or(settings.output_target_score),
        max_pixels=settings.max_image_pixels,
        optimize=settings.output_optimize,
        format=options.format,
        max_width=options.max_width,
        max_height=options.max_height,
    )
