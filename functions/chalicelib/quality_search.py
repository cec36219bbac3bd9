"""`quality: "auto"`: per image, the lowest quality whose output scores at least a target on
SSIMULACRA2 against the source, found in few encodes.

A pure search over `attempt(quality) -> (size, score)` (imaging.py encodes, decodes and
scores; this module never touches pixels), so it is tested without images.

The search (`search`): a first guess from the format's median curve (`CURVES`: the score the
median photograph reaches at each quality, measured on the benchmark's real photographs,
`python -m benchmarks.auto_quality`), aiming `AIM` points above the target; from one try, a
step along the curve's local slope; once tries lie on both sides of the target, secant steps
between the nearest two. A try within [target, target + `SLACK`] ends it, as do `MAX_ENCODES`
tries (the worst case), two tries a quality apart around the target, or the quality's bound
(1 or 100). The answer is the smallest output that reaches the target; when none does, the
highest quality tried (a target the format cannot reach shows the score it did reach).

Time: no try starts unless `time_left()` holds `TIME_FACTOR` times the longest try so far
(the first: the caller's estimate). When time runs short, the answer is the smallest try so
far that reaches the target, else the caller's fallback quality (the format's default).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# What outputs of `auto` are reused by (services/reuse.py): the metric's implementation
# (chalicelib/perceptual.py, on the whole fitted image: imaging.py) and this search, with
# its curves. Bumped whenever either changes what quality an image gets.
AUTO_SEARCH_VERSION = "ssimulacra2-np1/search2"

MAX_ENCODES = 5  # the worst case per image
SLACK = 3.0  # a try scoring within [target, target + SLACK] is taken at once
AIM = 1.0  # guesses aim this far above the target (the curve is a median: half fall short)
MIN_SLOPE = 0.05  # score points per quality step never taken as flatter than this
TIME_FACTOR = 1.5  # a try starts only if the time left holds this many of the longest so far
LOWEST, HIGHEST = 1, 100

# The score the median photograph reaches at each quality, per format (37 photographs fitted
# to 1 MP, the pipeline's encoder settings; `python -m benchmarks.auto_quality --calibrate`;
# quality 1's, not measured, extends the slope below 20).
CURVES: dict[str, tuple[tuple[int, float], ...]] = {
    "jpeg": ((1, -5.0), (20, 30.3), (30, 47.9), (40, 58.1), (50, 65.6), (60, 69.4), (70, 74.8),
             (80, 80.3), (90, 86.8), (95, 90.2), (100, 93.8)),
    "webp": ((1, 20.0), (20, 43.8), (30, 52.3), (40, 58.8), (50, 63.2), (60, 66.9), (70, 69.5),
             (80, 74.7), (90, 82.8), (95, 87.3), (100, 89.5)),
    "avif": ((1, 0.0), (20, 40.6), (30, 52.1), (40, 62.8), (50, 71.7), (60, 77.3), (70, 81.7),
             (80, 85.3), (90, 88.3), (95, 90.0), (100, 92.7)),
}  # fmt: skip

# One try: the attempt's answer for a quality.
Attempt = Callable[[int], tuple[int, float]]


@dataclass(frozen=True)
class Try:
    quality: int
    size: int
    score: float


@dataclass(frozen=True)
class Found:
    """The search's answer: the quality to ship and the score it reached (None: the fallback
    quality, never tried), with every try made, in order."""

    quality: int
    score: float | None
    tries: tuple[Try, ...]
    short_of_time: bool = False


def first_guess(curve: Sequence[tuple[int, float]], score: float) -> int:
    """The quality at which `curve` reaches `score` (linear between its points; its ends
    beyond)."""
    for (q0, s0), (q1, s1) in itertools.pairwise(curve):
        if score <= s1:
            if s1 <= s0:
                return q1
            return _bounded(math.ceil(q0 + (score - s0) * (q1 - q0) / (s1 - s0)))
    return curve[-1][0]


def score_at(curve: Sequence[tuple[int, float]], quality: int) -> float:
    """The score of `curve` at `quality` (linear between its points)."""
    for (q0, s0), (q1, s1) in itertools.pairwise(curve):
        if quality <= q1:
            return s0 + (s1 - s0) * (quality - q0) / (q1 - q0)
    return curve[-1][1]


def slope_at(curve: Sequence[tuple[int, float]], quality: int) -> float:
    """Score points per quality step of `curve` around `quality`."""
    for (q0, s0), (q1, s1) in itertools.pairwise(curve):
        if quality <= q1:
            return max(MIN_SLOPE, (s1 - s0) / (q1 - q0))
    return MIN_SLOPE


def search(
    attempt: Attempt,
    target: float,
    *,
    curve: Sequence[tuple[int, float]],
    fallback: int,
    time_left: Callable[[], float] | None = None,
    first_cost: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
) -> Found:
    """The lowest quality whose output scores at least `target` (module docstring).
    `first_cost`: the seconds one try is expected to take before any is timed."""
    tries: list[Try] = []
    longest = first_cost
    short = False
    quality = first_guess(curve, target + AIM)
    while True:
        if time_left is not None and time_left() < TIME_FACTOR * longest:
            short = True
            break
        started = clock()
        size, score = attempt(quality)
        longest = max(longest, clock() - started)
        tries.append(Try(quality, size, score))
        if len(tries) >= MAX_ENCODES or target <= score <= target + SLACK:
            break
        following = _next_quality(tries, target, curve)
        if following is None:
            break
        quality = following
    return _answer(tries, target, fallback, short)


def _next_quality(
    tries: list[Try], target: float, curve: Sequence[tuple[int, float]]
) -> int | None:
    """The next quality to try, None when no try can do better."""
    below = [t for t in tries if t.score < target]
    above = [t for t in tries if t.score >= target]
    if below and above:
        low = max(below, key=lambda t: t.quality)
        high = min(above, key=lambda t: t.quality)
        if high.quality - low.quality <= 1:
            return None
        slope = max(MIN_SLOPE, (high.score - low.score) / (high.quality - low.quality))
        guess = low.quality + (target + AIM - low.score) / slope
        return min(high.quality - 1, max(low.quality + 1, round(guess)))
    side = sorted(below or above, key=lambda t: t.quality)
    # from the try nearest the target: up from the highest below, down from the lowest above
    start = side[-1] if below else side[0]
    if start.quality == (HIGHEST if below else LOWEST):
        return None  # at the bound: no higher (lower) quality to try
    slope = slope_at(curve, start.quality)
    if len(side) >= 2:  # this image's own slope, from its two tries nearest the target
        other = side[-2] if below else side[1]
        slope = max(MIN_SLOPE, (start.score - other.score) / (start.quality - other.quality))
    step = (target + AIM - start.score) / slope
    if below:
        return _bounded(start.quality + max(1, math.ceil(step)))
    return _bounded(start.quality + min(-1, math.floor(step)))


def _answer(tries: list[Try], target: float, fallback: int, short: bool) -> Found:
    reached = [t for t in tries if t.score >= target]
    if reached:
        best = min(reached, key=lambda t: (t.size, t.quality))
        return Found(best.quality, best.score, tuple(tries), short)
    if short:
        same = [t for t in tries if t.quality == fallback]
        return Found(fallback, same[0].score if same else None, tuple(tries), short)
    best = max(tries, key=lambda t: t.quality)
    return Found(best.quality, best.score, tuple(tries), short)


def _bounded(quality: int) -> int:
    return min(HIGHEST, max(LOWEST, quality))
