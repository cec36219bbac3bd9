"""Memory budgeted like time: an image is decoded only once its estimated memory fits beside
the images in flight; one that never could fails alone with `too_large_to_encode`. Races are
forced with events (the budget tells when a reservation starts waiting), never timed."""

from __future__ import annotations

import io
import threading
from dataclasses import replace
from typing import Any

import pytest
from chalicelib import image_memory, imaging
from chalicelib.adapters import memory_budget
from chalicelib.adapters.fair_pool import FairThreadPool
from chalicelib.adapters.memory_budget import MIB, MemoryBudget, resident_bytes
from chalicelib.config import Settings
from chalicelib.domain.budget import Budget, OutOfTime
from chalicelib.domain.models import ImageErrorCode, RowStatus
from chalicelib.domain.output_options import JPEG_QUALITY, OutputFormat, parse_options
from chalicelib.errors import ImageFailure
from chalicelib.imaging import CompressOptions, Planned
from chalicelib.services import one_image, rows_batch
from chalicelib.services.row_messages import RowTask
from PIL import Image

from tests.fakes import FakeWorld, make_world
from tests.unit.test_pipeline_services import HEADER, submit


def jpeg_of(width: int, height: int, orientation: int = 1) -> bytes:
    out = io.BytesIO()
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    Image.new("RGB", (width, height), (90, 120, 150)).save(out, "JPEG", quality=80, exif=exif)
    return out.getvalue()


def planned_of(data: bytes, options: CompressOptions) -> Planned:
    seen: list[Planned] = []

    def admit(planned: Planned) -> Planned:
        seen.append(planned)
        return planned

    imaging.compress(data, options, admit=admit)
    [planned] = seen
    return planned


# -- what imaging tells before decoding ------------------------------------------------------


def test_the_header_tells_the_decoded_and_output_sizes_before_any_pixel() -> None:
    data = jpeg_of(1600, 1200)
    full = planned_of(data, CompressOptions(format=OutputFormat.AVIF))
    assert full.decoded == full.output == (1600, 1200)
    assert full.format is OutputFormat.AVIF and full.input_bytes == len(data)
    # a 400 px box: the JPEG is decoded at 2/8 (shrink on load), output at the box
    boxed = planned_of(data, CompressOptions(max_width=400, max_height=400))
    assert boxed.decoded == (400, 300) and boxed.output == (400, 300)
    # turned a quarter by its EXIF orientation: the box binds the oriented image
    turned = planned_of(jpeg_of(1600, 900, orientation=6), CompressOptions(max_height=800))
    assert turned.decoded == (800, 450) and turned.output == (450, 800)


def test_admit_is_called_before_the_pixels_are_decoded() -> None:
    whole = jpeg_of(640, 480)
    truncated = whole[: whole.index(b"\xff\xda") + 20]  # the header whole, no pixels
    seen: list[Planned] = []

    def admit(planned: Planned) -> Planned:
        seen.append(planned)
        return planned

    with pytest.raises(ImageFailure) as failed:
        imaging.compress(truncated, CompressOptions(), admit=admit)
    assert failed.value.code == ImageErrorCode.DECODE_FAILED
    assert [p.decoded for p in seen] == [(640, 480)]


@pytest.mark.parametrize(
    "raised",
    [ImageFailure(ImageErrorCode.TOO_LARGE_TO_ENCODE, "no"), OutOfTime("no memory in time")],
)
def test_what_admit_raises_comes_out_of_compress_as_it_is(raised: Exception) -> None:
    def admit(_: Planned) -> Planned:
        raise raised

    with pytest.raises(type(raised)) as failed:
        imaging.compress(jpeg_of(64, 48), CompressOptions(), admit=admit)
    assert failed.value is raised


def test_the_estimate_grows_with_pixels_and_avif_costs_the_most() -> None:
    def planned(size: tuple[int, int], fmt: OutputFormat) -> Planned:
        return Planned("JPEG", "RGB", size, size, fmt, 1000)

    small, large = (1000, 1000), (8000, 6000)
    for fmt in OutputFormat:
        assert image_memory.estimate(planned(large, fmt)) > image_memory.estimate(
            planned(small, fmt)
        )
    at_48mp = {fmt: image_memory.estimate(planned(large, fmt)) for fmt in OutputFormat}
    assert at_48mp[OutputFormat.JPEG] < at_48mp[OutputFormat.WEBP] < at_48mp[OutputFormat.AVIF]
    # measured 1,485 MiB above rest for a 50 MP AVIF (docs/performance.md): at least that
    fifty = Planned("JPEG", "RGB", (8640, 5760), (8640, 5760), OutputFormat.AVIF, 10 * MIB)
    assert image_memory.estimate(fifty) > 1485 * MIB


def test_the_budget_is_memory_size_less_the_process_the_downloads_and_headroom() -> None:
    assert image_memory.budget_for_images(0, 100 * MIB, 4, 25 * MIB) is None
    budget = image_memory.budget_for_images(1769, 150 * MIB, 4, 25 * MIB)
    assert budget == (1769 - 150 - 100) * MIB - image_memory.HEADROOM_BYTES
    assert image_memory.budget_for_images(128, 150 * MIB, 4, 25 * MIB) == 0
    assert Settings.from_env({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1769"}).function_memory_mb == 1769
    assert Settings.from_env({}).function_memory_mb == 0
    assert (resident_bytes() or 0) > 10 * MIB  # this process's own, read from Linux


# -- the budget ------------------------------------------------------------------------------


def test_more_than_the_whole_budget_fails_at_once_with_its_code() -> None:
    budget = MemoryBudget(100)
    with pytest.raises(ImageFailure) as failed:
        budget.take(101)
    assert failed.value.code == ImageErrorCode.TOO_LARGE_TO_ENCODE
    assert budget.held == 0 and budget.waiting == 0
    with budget.reserve(100):
        assert budget.held == 100
    assert budget.held == 0


def test_a_wait_that_outlasts_its_time_is_out_of_time_and_leaves_no_trace() -> None:
    budget = MemoryBudget(100)
    budget.take(60)
    with pytest.raises(OutOfTime):
        budget.take(50, timeout=0)
    assert budget.held == 60 and budget.waiting == 0
    budget.give_back(60)
    budget.take(100, timeout=0)  # fits at once: no wait at all


def test_waiters_are_served_in_order_a_small_one_does_not_pass_a_large_one() -> None:
    waiting = threading.Semaphore(0)
    budget = MemoryBudget(100, on_wait=lambda _: waiting.release())
    budget.take(70)
    order: list[str] = []

    def take(name: str, nbytes: int) -> None:
        budget.take(nbytes, timeout=30)
        order.append(name)

    large = threading.Thread(target=take, args=("large", 90))
    large.start()
    assert waiting.acquire(timeout=30)  # the large one waits first
    small = threading.Thread(target=take, args=("small", 20))
    small.start()
    assert waiting.acquire(timeout=30)  # 20 would fit beside 70, but it queues behind 90
    assert order == [] and budget.waiting == 2
    budget.give_back(70)
    large.join(30)
    assert order == ["large"]  # 90 held: 20 does not fit beside it
    budget.give_back(90)
    small.join(30)
    assert order == ["large", "small"] and budget.peak == 90


def test_freed_memory_is_handed_back_before_an_image_starts_only_when_memory_is_tight() -> None:
    """Freed buffers stay resident in their thread's arena, counted by no reservation: when
    the resident set, what is held and what is asked for pass the ceiling, they are handed
    back before the image starts; otherwise nothing is spent on it."""
    resident = {"now": 50 * MIB}
    held_at_trim: list[int] = []
    budget: MemoryBudget

    def trim() -> bool:
        held_at_trim.append(budget.held)
        resident["now"] = 50 * MIB  # what the arenas kept is the system's again
        return True

    budget = MemoryBudget(100 * MIB, ceiling=150 * MIB, resident=lambda: resident["now"], trim=trim)
    with budget.reserve(60 * MIB):  # 50 + 0 + 60 <= 150: no trim
        resident["now"] = 110 * MIB
    assert held_at_trim == []
    resident["now"] = 100 * MIB  # the arenas kept 50 MiB of it
    with budget.reserve(60 * MIB):  # 100 + 0 + 60 > 150: handed back first
        pass
    assert held_at_trim == [0] and budget.trims == 1 and budget.held == 0


def test_handing_back_runs_on_this_glibc() -> None:
    assert memory_budget.release_freed_memory() is True


def test_unbounded_budget_never_waits() -> None:
    budget = MemoryBudget.unlimited()
    budget.take(10**15, timeout=0)
    assert budget.held == 0


# -- the worker ------------------------------------------------------------------------------

URL_A, URL_B, URL_HUGE = "https://a.test/a.jpg", "https://a.test/b.jpg", "https://a.test/huge.jpg"


def world_of(responses: dict[str, bytes], memory: MemoryBudget, threads: int) -> FakeWorld:
    world = make_world(Settings(webhook_secret="whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
    world.fetcher.responses = dict(responses)
    world.deps.memory = memory
    world.deps.image_pool = FairThreadPool(threads)
    return world


def tasks_of(world: FakeWorld, rows: str) -> tuple[str, list[RowTask]]:
    request_id = submit(world, HEADER + rows)
    return request_id, [RowTask.from_message(m.body) for m in world.rows_queue.drain()]


def estimate_of(data: bytes) -> int:
    return image_memory.estimate(planned_of(data, CompressOptions()))


def test_two_images_whose_sum_exceeds_the_budget_run_one_after_the_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = jpeg_of(200, 150), jpeg_of(150, 200)
    one = max(estimate_of(a), estimate_of(b))
    second_waits = threading.Event()
    memory = MemoryBudget(one * 3 // 2, on_wait=lambda _: second_waits.set())
    world = world_of({URL_A: a, URL_B: b}, memory, threads=2)
    events: list[tuple[str, int]] = []
    held_while_in: list[int] = []
    real = imaging.compress

    def compress(
        data: bytes, options: CompressOptions, time_left: Any = None, *, admit: Any = None
    ) -> Any:
        def admitted(planned: Planned) -> Planned:
            planned = admit(planned)
            events.append(("in", planned.decoded[0]))
            held_while_in.append(memory.held)
            if len(events) == 1:  # the first in holds its memory until the other waits
                assert second_waits.wait(30), "the second image was never made to wait"

        done = real(data, options, admit=admitted)
        events.append(("out", done.width))
        return done

    monkeypatch.setattr(one_image, "compress", compress)
    request_id, tasks = tasks_of(world, f"1,P1,{URL_A}\n2,P2,{URL_B}\n")
    assert rows_batch.process_rows(world.deps, tasks) == [None, None]
    first, second = events[0][1], events[2][1]
    assert events == [("in", first), ("out", first), ("in", second), ("out", second)]
    # each held its own estimate alone
    assert held_while_in == [
        estimate_of(a if first == 200 else b),
        estimate_of(b if first == 200 else a),
    ]
    assert memory.peak <= memory.capacity and memory.held == 0
    rows = list(world.store.iter_rows(request_id))
    assert [r.status for r in rows] == [RowStatus.COMPLETED] * 2


def test_an_image_that_can_never_fit_fails_alone_with_its_code() -> None:
    small, huge = jpeg_of(64, 48), jpeg_of(1600, 1200)
    memory = MemoryBudget((estimate_of(small) + estimate_of(huge)) // 2)
    world = world_of({URL_A: small, URL_HUGE: huge}, memory, threads=2)
    request_id, tasks = tasks_of(world, f'1,P1,"{URL_HUGE},{URL_A}"\n')
    assert rows_batch.process_rows(world.deps, tasks) == [None]
    [row] = list(world.store.iter_rows(request_id))
    assert row.status == RowStatus.FAILED
    [error] = row.errors
    assert error["url"] == URL_HUGE and error["code"] == ImageErrorCode.TOO_LARGE_TO_ENCODE
    assert "MiB" in error["message"]
    huge_key, small_key = row.output_keys
    assert not huge_key and small_key and world.outputs.objects.keys() == {small_key}
    assert memory.held == 0 and memory.peak == estimate_of(small)


def test_no_memory_in_time_hands_the_image_back_instead_of_failing_it() -> None:
    data = jpeg_of(64, 48)
    memory = MemoryBudget(estimate_of(data))
    memory.take(1)  # another image holds a byte for good: this one cannot fit in time
    world = world_of({URL_A: data}, memory, threads=1)
    _, tasks = tasks_of(world, f"1,P1,{URL_A}\n")
    budget = Budget.seconds(world.deps.settings.download_deadline + 5)
    outcomes = rows_batch.process_rows(world.deps, tasks, budget)
    assert isinstance(outcomes[0], OutOfTime)  # handed back: redelivered, not failed
    assert memory.held == 1 and memory.waiting == 0


def test_an_auto_image_whose_search_could_never_fit_is_made_at_the_default_quality() -> None:
    """`auto`'s search holds about 80 bytes more per output pixel (the metric's planes at
    full size): an image whose search could never fit, but whose plain encode could, is made
    at its format's default quality, unscored, rather than fail `too_large_to_encode`."""
    data = jpeg_of(400, 300)
    searched = image_memory.estimate(planned_of(data, CompressOptions(target_score=70.0)))
    plain = estimate_of(data)
    assert searched - plain == image_memory.SEARCH_BYTES_PER_PIXEL * 400 * 300
    memory = MemoryBudget((searched + plain) // 2)
    world = world_of({URL_A: data}, memory, threads=1)
    request_id, tasks = tasks_of(world, f"1,P1,{URL_A}\n")
    auto = [replace(task, options=parse_options({"quality": "auto"})) for task in tasks]
    assert rows_batch.process_rows(world.deps, auto) == [None]
    [row] = list(world.store.iter_rows(request_id))
    assert row.status == RowStatus.COMPLETED
    assert row.qualities == (JPEG_QUALITY,) and row.scores == (None,)
    assert memory.peak == plain and memory.held == 0
    # with room for the search, the same image is searched and scored
    roomy = world_of({URL_A: data}, MemoryBudget(searched), threads=1)
    request_id, tasks = tasks_of(roomy, f"1,P1,{URL_A}\n")
    auto = [replace(task, options=parse_options({"quality": "auto"})) for task in tasks]
    assert rows_batch.process_rows(roomy.deps, auto) == [None]
    [row] = list(roomy.store.iter_rows(request_id))
    assert row.scores[0] is not None and row.scores[0] >= 70.0
