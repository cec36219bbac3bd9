"""chalicelib.quality_search: the `auto` search over synthetic attempt functions (no images):
it reaches the target with the lowest quality in few encodes, gives the highest quality tried
when the target is out of reach, and stops on time."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from chalicelib import quality_search as qs
from chalicelib.quality_search import CURVES, MAX_ENCODES, SLACK, Found, search

JPEG = CURVES["jpeg"]


class Counted:
    """An attempt function from `score(quality)`, sizes growing with quality, its calls
    counted."""

    def __init__(self, score: object) -> None:
        self.score = score
        self.calls: list[int] = []

    def __call__(self, quality: int) -> tuple[int, float]:
        self.calls.append(quality)
        return round(1000 * math.exp(quality / 25)), float(self.score(quality))  # type: ignore[operator]


def photo_like(offset: float, slope: float) -> Counted:
    """A monotone curve like a photograph's: the median curve, shifted and stretched."""
    return Counted(lambda q: qs.score_at(JPEG, q) * slope + offset)


def lowest_reaching(attempt: Counted, target: float) -> int:
    return next(q for q in range(1, 101) if attempt.score(q) >= target)  # type: ignore[operator]


@pytest.mark.parametrize("target", [30.0, 50.0, 70.0, 85.0])
def test_photo_like_curves_reach_the_target_with_the_lowest_quality_in_few_encodes(
    target: float,
) -> None:
    rng = random.Random(27)
    encodes = []
    good = reachable = 0
    for _ in range(200):
        attempt = photo_like(rng.uniform(-10, 10), rng.uniform(0.8, 1.2))
        found = search(attempt, target, curve=JPEG, fallback=50)
        assert len(attempt.calls) == len(set(attempt.calls)) <= MAX_ENCODES  # none twice
        assert [t.quality for t in found.tries] == attempt.calls
        encodes.append(len(attempt.calls))
        if attempt.score(100) < target:  # type: ignore[operator]
            assert (found.quality, found.score) == (100, attempt.score(100))  # type: ignore[operator]
            continue
        assert found.score is not None and found.score >= target
        # the lowest quality reaching it, or one within the slack above the target
        if found.quality == lowest_reaching(attempt, target) or found.score <= target + SLACK:
            good += 1
        reachable += 1
    assert statistics.fmean(encodes) <= 3.0
    assert good >= 0.95 * reachable


def test_the_answer_is_the_smallest_output_that_reaches_the_target() -> None:
    attempt = photo_like(0, 1.0)
    found = search(attempt, 70.0, curve=JPEG, fallback=50)
    reaching = [t for t in found.tries if t.score >= 70.0]
    assert found.quality == min(reaching, key=lambda t: t.size).quality


def test_a_flat_curve_below_the_target_gives_the_highest_quality_tried_and_its_score() -> None:
    attempt = Counted(lambda q: 40.0)
    found = search(attempt, 70.0, curve=JPEG, fallback=50)
    assert found.quality == max(attempt.calls) == 100
    assert found.score == 40.0
    assert len(attempt.calls) <= MAX_ENCODES


def test_a_flat_curve_above_the_target_goes_down_to_the_lowest_quality() -> None:
    attempt = Counted(lambda q: 90.0)
    found = search(attempt, 70.0, curve=JPEG, fallback=50)
    assert found.quality == 1 and found.score == 90.0
    assert len(attempt.calls) <= 3


def test_an_unreachable_target_gives_the_highest_quality_and_the_score_it_reached() -> None:
    attempt = Counted(lambda q: min(80.0, 0.9 * q))  # the format tops out at 80
    found = search(attempt, 95.0, curve=JPEG, fallback=50)
    assert found.quality == 100
    assert found.score == 80.0
    assert len(attempt.calls) <= MAX_ENCODES


@pytest.mark.parametrize("seed", range(50))
def test_the_worst_case_is_bounded_whatever_the_scores(seed: int) -> None:
    rng = random.Random(seed)
    attempt = Counted(lambda q: rng.uniform(0, 100))  # not even monotone
    found = search(attempt, rng.uniform(30, 95), curve=JPEG, fallback=50)
    assert 1 <= len(attempt.calls) <= MAX_ENCODES
    assert len(set(attempt.calls)) == len(attempt.calls)
    assert found.quality in attempt.calls


class Clock:
    """A clock each attempt moves on by `per_try` seconds."""

    def __init__(self, per_try: float) -> None:
        self.now = 0.0
        self.per_try = per_try

    def __call__(self) -> float:
        return self.now

    def timed(self, attempt: Counted) -> qs.Attempt:
        def run(quality: int) -> tuple[int, float]:
            self.now += self.per_try
            return attempt(quality)

        return run


def test_time_running_short_keeps_the_best_try_that_reaches_the_target() -> None:
    clock = Clock(per_try=1.0)
    # the first guess overshoots far (slack exceeded), so a second try would follow
    attempt = Counted(lambda q: min(100.0, q + 30.0))
    found = search(
        clock.timed(attempt),
        70.0,
        curve=JPEG,
        fallback=50,
        time_left=lambda: 2.0 - clock(),
        first_cost=1.0,
        clock=clock,
    )
    assert len(attempt.calls) == 1  # after one try of 1 s, 1 s left < 1.5 x 1 s
    assert found.short_of_time
    assert found.quality == attempt.calls[0] and found.score is not None and found.score >= 70


def test_time_running_short_before_the_target_gives_the_fallback_quality() -> None:
    clock = Clock(per_try=1.0)
    attempt = Counted(lambda q: 40 + q / 4)  # every try short of the target
    found = search(
        clock.timed(attempt),
        70.0,
        curve=JPEG,
        fallback=53,
        time_left=lambda: 3.0 - clock(),
        first_cost=0.5,
        clock=clock,
    )
    assert len(attempt.calls) == 2  # 3 s: 1.5 x 0.5 fits, then 1.5 x 1 s; then 1 s left
    assert found == Found(53, None, found.tries, short_of_time=True)
    assert 53 not in attempt.calls


def test_no_time_for_a_first_try_gives_the_fallback_without_trying() -> None:
    attempt = Counted(lambda q: 70.0)
    found = search(attempt, 70.0, curve=JPEG, fallback=49, time_left=lambda: 0.1, first_cost=1.0)
    assert attempt.calls == []
    assert found == Found(49, None, (), short_of_time=True)


def test_the_first_guess_follows_the_format_s_median_curve() -> None:
    for fmt, curve in CURVES.items():
        guesses = [qs.first_guess(curve, t) for t in (30, 50, 70, 90)]
        assert guesses == sorted(guesses), fmt
        assert all(1 <= g <= 100 for g in guesses)
    assert qs.first_guess(JPEG, 200.0) == 100
