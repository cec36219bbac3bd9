"""`quality: "auto"` through imaging.compress: each output scores at least the target against
the fitted source (checked here by decoding it and scoring it again), a lower target makes
fewer bytes, a target out of reach gives the highest quality and the score it reached, and
no time left gives the fixed quality. Small photo-like images in every output format."""

from __future__ import annotations

import functools
import io

import numpy as np
import pytest
from chalicelib import perceptual, quality_search
from chalicelib.domain.output_options import OutputFormat
from chalicelib.imaging import CompressOptions, compress, fitted_pixels
from PIL import Image

from benchmarks import corpus

FORMATS = list(OutputFormat)


@functools.cache
def source_jpeg(width: int = 320, height: int = 240) -> bytes:
    out = io.BytesIO()
    corpus.photo_like(width, height, 11).save(out, "JPEG", quality=92)
    return out.getvalue()


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def fitted(data: bytes, options: CompressOptions) -> np.ndarray:
    found = fitted_pixels(data, options)
    return np.frombuffer(found.data, dtype=np.uint8).reshape(found.height, found.width, 3)


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_output_reaches_the_target_against_the_fitted_source(fmt: OutputFormat) -> None:
    options = CompressOptions(format=fmt, target_score=70.0, max_width=280)
    found = compress(source_jpeg(), options)
    assert found.score is not None and found.score >= 70.0
    assert (found.width, found.height) == (280, 210)
    # the score reported is the output's, decoded, against the pixels that were encoded
    again = perceptual.ssimulacra2(fitted(source_jpeg(), options), decoded(found.data))
    assert again == pytest.approx(found.score, abs=0.01)
    # and the output is the fixed encode at the quality chosen
    fixed = compress(
        source_jpeg(), CompressOptions(format=fmt, quality=found.quality, max_width=280)
    )
    assert found.data == fixed.data


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_lower_target_gives_fewer_bytes(fmt: OutputFormat) -> None:
    low = compress(source_jpeg(), CompressOptions(format=fmt, target_score=50.0))
    high = compress(source_jpeg(), CompressOptions(format=fmt, target_score=75.0))
    assert low.score is not None and high.score is not None
    assert 50.0 <= low.score < high.score and high.score >= 75.0
    assert low.quality < high.quality
    assert len(low.data) < len(high.data)


def test_a_target_out_of_reach_gives_the_highest_quality_and_the_score_reached() -> None:
    found = compress(source_jpeg(), CompressOptions(target_score=99.0))
    assert found.quality == 100
    assert found.score is not None and found.score < 99.0
    assert found.score == pytest.approx(
        perceptual.ssimulacra2(fitted(source_jpeg(), CompressOptions()), decoded(found.data)),
        abs=0.01,
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_time_left_gives_the_fallback_quality_unscored(fmt: OutputFormat) -> None:
    options = CompressOptions(format=fmt, quality=53, target_score=70.0)
    found = compress(source_jpeg(), options, time_left=lambda: 0.0)
    assert (found.quality, found.score) == (53, None)
    assert found.data == compress(source_jpeg(), CompressOptions(format=fmt, quality=53)).data


def test_an_image_too_small_to_score_gets_the_fallback_quality() -> None:
    out = io.BytesIO()
    Image.new("RGB", (6, 40), (10, 200, 30)).save(out, "PNG")
    found = compress(out.getvalue(), CompressOptions(quality=61, target_score=70.0))
    assert (found.width, found.height, found.quality, found.score) == (6, 40, 61, None)


def test_a_fixed_job_is_unchanged_by_auto() -> None:
    found = compress(source_jpeg(), CompressOptions(quality=50))
    assert (found.quality, found.score) == (50, None)


@pytest.mark.parametrize("target", [40.0, 80.0])
def test_time_running_out_after_one_try_keeps_it_only_if_it_reached_the_target(
    target: float,
) -> None:
    left = iter([1000.0])  # time for the first try, then none
    options = CompressOptions(quality=50, target_score=target)
    found = compress(source_jpeg(), options, time_left=lambda: next(left, 0.0))
    first = quality_search.first_guess(quality_search.CURVES["jpeg"], target + quality_search.AIM)
    fixed = compress(source_jpeg(), CompressOptions(quality=first))
    score = perceptual.ssimulacra2(fitted(source_jpeg(), options), decoded(fixed.data))
    if score >= target:  # 40: the first try reached it and is kept, with its score
        assert target == 40.0
        assert (found.quality, found.data) == (first, fixed.data)
        assert found.score == pytest.approx(score, abs=0.01)
    else:  # 80: short at the first guess; no time for more: the fixed quality
        assert target == 80.0
        assert (found.quality, found.score) == (50, None)
        assert found.data == compress(source_jpeg(), CompressOptions(quality=50)).data
