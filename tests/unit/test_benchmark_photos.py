"""benchmarks.photos and the arithmetic of benchmarks.jpegli and benchmarks.auto_quality (no
apt, no photographs, no encoder)."""

from __future__ import annotations

import math
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


def result(auto: float, fixed: list[float]) -> auto_quality.Result:
    chosen = auto_quality.Try(60, 1000, auto)
    tries = tuple(
        auto_quality.Try(q, 100 * q, score)
        for q, score in zip(auto_quality.FIXED, fixed, strict=True)
    )
    return auto_quality.Result("p", "jpeg", chosen, auto, 2, 0.1, 0.01, tries)


def test_the_rival_is_the_lowest_fixed_quality_with_auto_s_worst_tenth() -> None:
    n = len(auto_quality.FIXED)
    # ten photographs: auto scores 70 to 73.6; fixed quality i scores 60 + 2 i on nine of
    # them and 10 points less on the tenth, so its worst tenth is 50 + 2 i
    results = [
        result(70.0 + 0.4 * k, [60.0 + 2 * i - (10 if k == 0 else 0) for i in range(n)])
        for k in range(10)
    ]
    assert auto_quality.tenth([r.chosen.score for r in results]) == 70.0
    best = auto_quality.rival(results)
    assert best == 10  # 50 + 2 * 10 = 70
    lines = auto_quality.report(results, 70.0)
    assert "10/10 within -2/+4" in lines[0]
    assert f"auto against q{auto_quality.FIXED[10]}" in lines[-1]


def test_no_rival_when_no_fixed_quality_matches_auto_s_worst_tenth() -> None:
    n = len(auto_quality.FIXED)
    assert auto_quality.rival([result(90.0, [50.0] * n)]) is None


def paired(auto: tuple[int, float], sharp: tuple[int, float]) -> auto_quality.Result:
    return auto_quality.Result(
        "p",
        "webp",
        auto_quality.Try(60, auto[0], auto[1]),
        auto[1],
        2,
        0.1,
        0.01,
        (),
        auto_quality.Try(80, sharp[0], sharp[1]),
    )


def test_sharp_s_defaults_beside_auto_median_ratio_worst_tenth_and_the_share_above() -> None:
    # ten photographs: sharp scores 60 to 78 (2 apart), auto 70 to 70.9; auto's bytes over
    # sharp's 0.5 to 1.4, so the median ratio is (0.9 + 1.0) / 2
    results = [paired((100 * (5 + k), 70.0 + 0.1 * k), (1000, 60.0 + 2 * k)) for k in range(10)]
    sharp_line, auto_line = auto_quality.sharp_report(results, 70.0, sharp_cpu=0.5)
    assert "median 69.0, worst tenth 60.0" in sharp_line  # median of 60..78: (68 + 70) / 2
    assert "5/10 at or above 70" in sharp_line
    assert "CPU ms per image 50" in sharp_line
    assert "median 70.5, worst tenth 70.0" in auto_line
    assert "auto/sharp bytes median 0.950 (total 0.950)" in auto_line


def test_no_sharp_lines_without_sharp_outputs() -> None:
    assert auto_quality.sharp_report([result(70.0, [50.0] * len(auto_quality.FIXED))], 70, 0) == []
