"""A first design of issue 27's `quality: "auto"` search, over `chalicelib.perceptual`, on
the real photographs (not wired into the worker).

    python -m benchmarks.auto_quality [--workers 2] [--target 70] [--max-pixels 1000000]

The search (`search`): the smallest JPEG (Pillow, `optimize=True`, as the pipeline encodes)
whose SSIMULACRA2 against the source is at least the target. A first guess (`FIRST_GUESS`,
the quality that reaches the target on the median photograph), then a step along the
typical slope (`SLOPE` points per quality step), then secant steps between the two nearest
tries, at most `MAX_ENCODES`; a try within [target, target + `SLACK`] ends it. The answer is
the smallest try that reaches the target, else the highest quality tried.

The comparison: every photograph (fitted to `--max-pixels`) is also encoded at fixed
qualities 40-95; the fixed quality whose worst-tenth score (the 10th percentile over the
photographs) is at least `auto`'s worst tenth is the honest rival, and the table gives the
bytes of both (the median over photographs of auto's over the fixed quality's, and the
totals), the share of photographs within -2/+4 of the target, and the encodes per image.
"""

from __future__ import annotations

import argparse
import io
import math
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import photos
from benchmarks._parent import die_with_parent
from benchmarks._workers import FUNCTIONS_DIR
from benchmarks.corpus import DEFAULT_CACHE

FIRST_GUESS = 62  # JPEG quality reaching 70 on the median photograph (reference data: q55
# scores 66.6 and q75 76.9 on average at 1 MP)
SLOPE = 0.5  # score points per quality step around there
SLACK = 4.0
MAX_ENCODES = 4
FIXED = (40, 50, 60, 65, 70, 75, 80, 85, 90, 95)


@dataclass(frozen=True)
class Try:
    quality: int
    size: int
    score: float


def search(attempt: Callable[[int], Try], target: float) -> tuple[Try, int]:
    """The chosen try and the number of encodes made."""
    tries: list[Try] = []

    def run(quality: int) -> Try:
        quality = min(100, max(1, quality))
        for t in tries:
            if t.quality == quality:
                return t
        t = attempt(quality)
        tries.append(t)
        return t

    current = run(FIRST_GUESS)
    while len(tries) < MAX_ENCODES and not target <= current.score <= target + SLACK:
        below = [t for t in tries if t.score < target]
        above = [t for t in tries if t.score >= target]
        if below and above:
            low = max(below, key=lambda t: t.quality)
            high = min(above, key=lambda t: t.quality)
            if high.quality - low.quality <= 1:
                break
            # secant between the two tries around the target, aiming a point above it
            slope = (high.score - low.score) / (high.quality - low.quality)
            guess = low.quality + (target + 1 - low.score) / max(slope, 0.05)
            quality = min(high.quality - 1, max(low.quality + 1, round(guess)))
        else:
            step = (target + 1 - current.score) / SLOPE
            quality = current.quality + (math.ceil(step) if step > 0 else math.floor(step))
            quality = min(100, max(1, quality))
            if quality == current.quality:
                break
        before = len(tries)
        current = run(quality)
        if len(tries) == before:
            break
    reached = [t for t in tries if t.score >= target]
    chosen = min(reached, key=lambda t: t.size) if reached else max(tries, key=lambda t: t.quality)
    return chosen, len(tries)


@dataclass(frozen=True)
class Result:
    photo: str
    chosen: Try
    encodes: int
    fixed: tuple[Try, ...]
    seconds: float  # CPU time of the search (encodes and scores)


def measure_photo(path: str, name: str, target: float) -> Result:
    die_with_parent()
    if str(FUNCTIONS_DIR) not in sys.path:
        sys.path.insert(0, str(FUNCTIONS_DIR))
    from chalicelib.perceptual import ssimulacra2  # noqa: PLC0415

    with Image.open(path) as source:
        image = source.convert("RGB")
    pixels = np.asarray(image)

    def attempt(quality: int) -> Try:
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality, optimize=True)
        with Image.open(io.BytesIO(out.getvalue())) as decoded:
            copy = np.asarray(decoded.convert("RGB"))
        return Try(quality, len(out.getvalue()), ssimulacra2(pixels, copy))

    started = time.process_time()
    chosen, encodes = search(attempt, target)
    seconds = time.process_time() - started
    fixed = tuple(attempt(q) for q in FIXED)
    return Result(name, chosen, encodes, fixed, seconds)


def tenth(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.1 * len(ordered)) - 1)]


def report(results: list[Result], target: float) -> list[str]:
    within = sum(target - 2 <= r.chosen.score <= target + 4 for r in results)
    auto_tenth = tenth([r.chosen.score for r in results])
    lines = [
        f"auto at {target:g}: {within}/{len(results)} photographs within -2/+4 "
        f"({100 * within / len(results):.0f}%), {statistics.fmean(r.encodes for r in results):.2f} "
        f"encodes per image (most {max(r.encodes for r in results)}), "
        f"{1000 * statistics.fmean(r.seconds for r in results):.0f} CPU ms per image; "
        f"scores median {statistics.median(r.chosen.score for r in results):.1f}, "
        f"worst tenth {auto_tenth:.1f}; qualities chosen "
        f"{min(r.chosen.quality for r in results)}-{max(r.chosen.quality for r in results)}",
        f"{'fixed q':>8}{'worst tenth':>13}{'median':>8}{'bytes':>12}{'auto/fixed median':>19}",
    ]
    auto_total = sum(r.chosen.size for r in results)
    for i, q in enumerate(FIXED):
        scores = [r.fixed[i].score for r in results]
        total = sum(r.fixed[i].size for r in results)
        ratio = statistics.median(r.chosen.size / r.fixed[i].size for r in results)
        mark = "  <- the same worst tenth" if tenth(scores) >= auto_tenth else ""
        lines.append(
            f"{q:8d}{tenth(scores):13.1f}{statistics.median(scores):8.1f}{total:12,}"
            f"{ratio:19.3f}{mark}"
        )
    lines.append(f"{'auto':>8}{auto_tenth:13.1f}{'':8}{auto_total:12,}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--target", type=float, default=70.0)
    parser.add_argument("--max-pixels", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    try:
        items = photos.build(args.cache, log=True)
    except photos.PhotosMissing as exc:
        print(f"SKIP benchmarks.auto_quality: the photographs are missing: {exc}")
        return 0
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # the metric's products: one thread per process
    jobs = [(str(photos.fitted(i, args.max_pixels)), i.photo.name, args.target) for i in items]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        futures = [pool.submit(measure_photo, *job) for job in jobs]
        results = [f.result() for f in futures]
    print(
        f"python -m benchmarks.auto_quality: {len(items)} photographs fitted to "
        f"{args.max_pixels / 1e6:g} MP, JPEG"
    )
    print("\n".join(report(results, args.target)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
