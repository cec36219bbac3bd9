"""benchmarks.photos, the arithmetic of benchmarks.jpegli and the search of
benchmarks.auto_quality (no apt, no photographs, no encoder)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks import auto_quality, jpegli, photos


def test_the_corpus_names_30_photographs_or_more_each_once_with_its_licence() -> None:
    assert len(photos.PHOTOS) >= 30
    assert len({p.name for p in photos.PHOTOS}) == len(photos.PHOTOS)
    assert {p.package for p in photos.PHOTOS} <= set(photos.PACKAGES)
    assert all(p.licence and p.author and len(p.sha256) == 16 for p in photos.PHOTOS)


@pytest.mark.parametrize(
    ("size", "limit"), [((4000, 3000), 3_000_000), ((1365, 1074), 1_000_000), ((800, 600), 10**6)]
)
def test_fitting_keeps_the_aspect_and_never_enlarges(size: tuple[int, int], limit: int) -> None:
    width, height = photos.fitted_size(size, limit)
    assert width * height <= limit
    assert width <= size[0]
    assert height <= size[1]
    assert math.isclose(width / height, size[0] / size[1], rel_tol=0.01)
    if size[0] * size[1] <= limit:
        assert (width, height) == size


def test_without_apt_the_photographs_are_reported_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(photos.shutil, "which", lambda _name: None)
    monkeypatch.setattr(photos, "_fresh", lambda path, photo: False)  # nothing installed
    with pytest.raises(photos.PhotosMissing, match="no apt-get"):
        photos.build(tmp_path)


def point(quality: int, size: int, score: float) -> jpegli.Point:
    return jpegli.Point("p", "turbo", quality, size, score, 0.01, 1.0)


def test_bytes_at_a_score_are_interpolated_between_the_qualities_around_it() -> None:
    curve = [point(50, 1000, 60.0), point(70, 4000, 80.0), point(30, 500, 40.0)]
    assert jpegli.bytes_at(curve, 70.0) == pytest.approx(2000.0)  # halfway in log bytes
    assert jpegli.bytes_at(curve, 60.0) == pytest.approx(1000.0)
    assert jpegli.bytes_at(curve, 85.0) is None


def linear_photo(offset: float) -> Callable[[int], auto_quality.Try]:
    """A photo whose score rises by 0.5 a quality step (and bytes by 2%)."""

    def attempt(quality: int) -> auto_quality.Try:
        return auto_quality.Try(quality, round(1000 * 1.02**quality), offset + 0.5 * quality)

    return attempt


@pytest.mark.parametrize("offset", [20.0, 25.0, 35.0, 45.0, 55.0])
def test_the_search_lands_within_the_window_in_few_encodes(offset: float) -> None:
    chosen, encodes = auto_quality.search(linear_photo(offset), 70.0)
    assert 70.0 <= chosen.score <= 74.0
    assert encodes <= 3


def test_a_first_guess_in_the_window_is_one_encode() -> None:
    chosen, encodes = auto_quality.search(linear_photo(70.0 - 0.5 * auto_quality.FIRST_GUESS), 70)
    assert (chosen.quality, encodes) == (auto_quality.FIRST_GUESS, 1)


def test_an_unreachable_target_gives_the_highest_quality_tried() -> None:
    chosen, encodes = auto_quality.search(linear_photo(0.0), 70.0)  # 50 at quality 100
    assert chosen.quality == 100
    assert chosen.score < 70.0
    assert encodes <= auto_quality.MAX_ENCODES
