"""The reuse benchmark's report: medians per image, the speed-up of a re-submitted job, the
bytes it did not decode or encode, and its three targets' verdicts (the suite keeps them)."""

from __future__ import annotations

import pytest

from benchmarks import __main__ as suite
from benchmarks.reuse import SPEEDUP, Pass, Round, report

IMAGES = 10


def made(seconds: float) -> Pass:
    return Pass(seconds, IMAGES, encoded=IMAGES, copied=0, bytes_in=5_000_000, bytes_out=800_000)


def reused(seconds: float, copied: int = IMAGES) -> Pass:
    return Pass(seconds, IMAGES, IMAGES - copied, copied, bytes_in=5_000_000, bytes_out=800_000)


def targets(lines: list[str]) -> list[str]:
    return lines[lines.index("targets:") + 1 :]


def test_the_report_gives_medians_per_image_and_the_median_speedup() -> None:
    rounds = [
        Round(made(1.0), reused(0.1), made(1.0)),  # 10x
        Round(made(2.0), reused(0.4), made(1.9)),  # 5x
        Round(made(1.2), reused(0.1), made(1.3)),  # 12x
    ]
    lines = report(rounds)
    assert lines[0].startswith(f"a job of {IMAGES} images (5.0 MB in, 0.8 MB out), median of 3")
    first, same, other = lines[1], lines[2], lines[3]
    assert "120.0 ms/image" in first and "(10 encoded, 0 copied)" in first
    assert "10.0 ms/image" in same and "(0 encoded, 10 copied): 10.0x faster per image" in same
    assert "5.0 MB not decoded, 0.8 MB not encoded" in same
    assert "130.0 ms/image" in other and "(10 encoded, 0 copied)" in other
    assert [line.split()[-1] for line in targets(lines)] == ["PASS", "PASS", "PASS"]
    assert suite.verdicts(lines) == [line.strip() for line in targets(lines)]


def test_an_image_made_again_a_small_speedup_or_another_tenants_copy_fail() -> None:
    rounds = [
        Round(made(1.0), reused(0.1, copied=IMAGES - 1), made(1.0)),
        Round(made(1.0), reused(1.0 / (SPEEDUP - 0.5)), reused(1.0, copied=1)),
        Round(made(1.0), reused(1.0 / (SPEEDUP - 0.5)), made(1.0)),
    ]
    every, faster, other = targets(report(rounds))
    assert every.endswith("FAIL") and f"({IMAGES - 1}/{IMAGES} copied, 1 encoded)" in every
    assert faster.endswith("MISS") and f"1.5x faster than the first time >= {SPEEDUP}x" in faster
    assert other.endswith("FAIL") and f"(1/{IMAGES} copied)" in other


def test_no_rounds_no_report() -> None:
    with pytest.raises(ValueError):
        report([])
