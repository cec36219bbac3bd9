"""A URL repeated anywhere in a job is downloaded and compressed once."""

from __future__ import annotations

import pytest
from chalicelib.domain.models import ImageErrorCode, ImageResult, JobStatus
from chalicelib.errors import ImageFailure
from chalicelib.services.job_url_cache import JobUrlCache

from tests.fakes import make_world
from tests.unit.test_pipeline_services import HEADER, drain, jpeg, submit


def test_the_same_url_in_many_rows_is_fetched_once_and_counted_per_image() -> None:
    world = make_world()
    world.fetcher.responses = {"https://a.test/1.jpg": jpeg(), "https://a.test/2.jpg": jpeg()}
    lines = [f"{n},P{n},https://a.test/1.jpg" for n in range(1, 26)]  # three batches
    lines.append('26,Q,"https://a.test/2.jpg,https://a.test/1.jpg"')
    request_id = submit(world, HEADER + "\n".join(lines) + "\n")
    drain(world)
    assert sorted(world.fetcher.calls) == ["https://a.test/1.jpg", "https://a.test/2.jpg"]
    job = world.store.get_job(request_id)
    assert job is not None and job.status == JobStatus.COMPLETED
    assert job.progress.processed_images == 27 and job.progress.failed_images == 0
    rows = world.store.list_rows(request_id, 0, 26)
    first = rows[0].output_keys[0]
    assert first in world.outputs.objects
    assert all(r.output_keys[-1] == first for r in rows)  # one stored output, reused
    one_in, one_out = rows[0].bytes_in[0], rows[0].bytes_out[0]
    assert one_in > 0 and one_out > 0
    assert all((r.bytes_in[-1], r.bytes_out[-1]) == (one_in, one_out) for r in rows)
    assert job.progress.bytes_in == 26 * one_in + rows[25].bytes_in[0]


def test_another_job_with_the_same_url_fetches_it_again() -> None:
    world = make_world()
    world.fetcher.responses = {"https://a.test/1.jpg": jpeg()}
    first = submit(world, HEADER + "1,A,https://a.test/1.jpg\n")
    drain(world)
    second = submit(world, HEADER + "1,A,https://a.test/1.jpg\n")
    drain(world)
    assert world.fetcher.calls == ["https://a.test/1.jpg"] * 2
    keys = [world.store.list_rows(j, 0, 1)[0].output_keys[0] for j in (first, second)]
    assert keys[0] != keys[1] and all(k in world.outputs.objects for k in keys)


def test_a_failure_is_not_reused() -> None:
    world = make_world()
    world.fetcher.responses = {}  # every fetch fails (not found)
    request_id = submit(world, HEADER + "1,A,https://a.test/x.jpg\n2,B,https://a.test/x.jpg\n")
    drain(world)
    job = world.store.get_job(request_id)
    assert job is not None and job.progress.failed_images == 2


def test_the_cache_is_bounded() -> None:
    cache = JobUrlCache(limit=2)
    results = [ImageResult(f"u{i}", output_key=f"k{i}") for i in range(3)]
    for i, result in enumerate(results):
        cache.put(("job", f"u{i}"), result)
    assert cache.get(("job", "u0")) is None
    assert cache.get(("job", "u2")) == results[2]


@pytest.mark.parametrize(
    ("failure", "fetches"),
    [
        (ImageFailure(ImageErrorCode.HTTP_ERROR, "HTTP 404"), 1),
        (ImageFailure(ImageErrorCode.TIMEOUT, "timed out", retryable=True), 3),
    ],
    ids=["permanent", "transient"],
)
def test_a_failing_url_shared_by_rows_of_one_batch_is_fetched_as_one_image(
    failure: ImageFailure, fetches: int
) -> None:
    """Rows of one batch share one download per URL. A failure is not kept for later rows
    (those may fare better), so the test executor running each image at once cannot hide a
    batch that downloads the URL once per row."""
    world = make_world()
    url = "https://a.test/flaky.jpg"
    world.fetcher.responses = {url: failure}
    request_id = submit(world, HEADER + "".join(f"{n},P{n},{url}\n" for n in range(1, 5)))
    drain(world)  # the four rows in one batch
    assert world.fetcher.calls == [url] * fetches
    job = world.store.get_job(request_id)
    assert job is not None and job.status == JobStatus.FAILED
    assert job.progress.failed_images == 4
