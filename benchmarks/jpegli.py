"""jpegli (`pyjpegli`) against libjpeg-turbo (Pillow) at equal SSIMULACRA2, on real photographs.

    python -m benchmarks.jpegli [--workers 2] [--max-pixels 1000000] [--cache .bench-cache]

`pyjpegli` (0.3.2, BSD-3-Clause, wheels for x86_64 and aarch64 manylinux_2_28) is
installed on demand into the cache (`benchmarks._extras`), never into the venv nor the
worker's bundle. Every photograph of `benchmarks.photos`, fitted to `--max-pixels`, is
encoded at qualities 50-90 by: libjpeg-turbo as the pipeline ships it (Pillow,
`optimize=True`, 4:2:0), libjpeg-turbo progressive (`progressive=True`, what jpegli
writes), and jpegli (its defaults; the binding offers quality only). Each output is scored
with `chalicelib.perceptual.ssimulacra2` against the fitted pixels. For each photograph and
each target score (60, 70, 80), the bytes each encoder needs are interpolated (log bytes,
linear in score, between the two qualities around the target); the table gives the median
and mean of jpegli's bytes over turbo's, and each encoder's CPU time per megapixel (the mean
over the qualities; one thread).
"""

from __future__ import annotations

import argparse
import io
import itertools
import math
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import photos
from benchmarks._parent import die_with_parent
from benchmarks._workers import FUNCTIONS_DIR
from benchmarks.corpus import DEFAULT_CACHE

QUALITIES = (50, 60, 70, 80, 90)
TARGETS = (60.0, 70.0, 80.0)
ENCODERS = ("turbo", "turbo-progressive", "jpegli")


@dataclass(frozen=True)
class Point:
    photo: str
    encoder: str
    quality: int
    size: int
    score: float
    seconds: float  # CPU time of the encode
    megapixels: float


def _init(cache: str) -> None:
    die_with_parent()
    if str(FUNCTIONS_DIR) not in sys.path:
        sys.path.insert(0, str(FUNCTIONS_DIR))
    from benchmarks._extras import require  # noqa: PLC0415

    require("pyjpegli", Path(cache))


def _encode(encoder: str, image: Image.Image, pixels: np.ndarray, quality: int) -> bytes:
    if encoder == "jpegli":
        import pyjpegli  # type: ignore[import-not-found]  # noqa: PLC0415

        height, width = pixels.shape[:2]
        data: bytes = pyjpegli.encode(pixels, width, height, quality=quality)
        return data
    out = io.BytesIO()
    image.save(
        out, "JPEG", quality=quality, optimize=True, progressive=encoder == "turbo-progressive"
    )
    return out.getvalue()


def measure_photo(path: str, name: str) -> list[Point]:
    from chalicelib.perceptual import ssimulacra2  # noqa: PLC0415

    with Image.open(path) as source:
        image = source.convert("RGB")
    pixels = np.ascontiguousarray(np.asarray(image))
    megapixels = image.width * image.height / 1e6
    out = []
    for encoder, quality in itertools.product(ENCODERS, QUALITIES):
        started = time.process_time()
        data = _encode(encoder, image, pixels, quality)
        seconds = time.process_time() - started
        with Image.open(io.BytesIO(data)) as decoded:
            copy = np.asarray(decoded.convert("RGB"))
        score = ssimulacra2(pixels, copy)
        out.append(Point(name, encoder, quality, len(data), score, seconds, megapixels))
    return out


def bytes_at(points: list[Point], target: float) -> float | None:
    """The bytes at which one encoder's curve for one photo reaches `target` (log-linear
    between the two qualities around it); None when the qualities measured do not span it."""
    curve = sorted(points, key=lambda p: p.quality)
    for low, high in itertools.pairwise(curve):
        if low.score <= target <= high.score and high.score > low.score:
            t = (target - low.score) / (high.score - low.score)
            return math.exp(math.log(low.size) + t * (math.log(high.size) - math.log(low.size)))
    return None


def report(points: list[Point]) -> list[str]:
    by: dict[tuple[str, str], list[Point]] = {}
    for p in points:
        by.setdefault((p.photo, p.encoder), []).append(p)
    names = sorted({p.photo for p in points})
    lines = [
        f"{'target':>8}  {'encoder':20}{'median':>8}{'mean':>8}{'photos':>8}  (bytes / turbo's)"
    ]
    for target in TARGETS:
        for encoder in ENCODERS[1:]:
            ratios = []
            for name in names:
                base = bytes_at(by[(name, "turbo")], target)
                other = bytes_at(by[(name, encoder)], target)
                if base and other:
                    ratios.append(other / base)
            if ratios:
                lines.append(
                    f"{target:8.0f}  {encoder:20}{statistics.median(ratios):8.3f}"
                    f"{statistics.fmean(ratios):8.3f}{len(ratios):8d}"
                )
    lines.append("")
    lines.append(
        f"{'encoder':20}{'CPU ms/MP':>10}{'score at q50':>14}{'q90':>8}  (mean over photos)"
    )
    for encoder in ENCODERS:
        mine = [p for p in points if p.encoder == encoder]
        ms = 1000 * sum(p.seconds for p in mine) / sum(p.megapixels for p in mine)
        q50 = statistics.fmean(p.score for p in mine if p.quality == 50)
        q90 = statistics.fmean(p.score for p in mine if p.quality == 90)
        lines.append(f"{encoder:20}{ms:10.1f}{q50:14.1f}{q90:8.1f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-pixels", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    try:
        items = photos.build(args.cache, log=True)
    except photos.PhotosMissing as exc:
        print(f"SKIP benchmarks.jpegli: the photographs are missing: {exc}")
        return 0
    # one BLAS thread per process (the metric's blur): Lambda's worker has one vCPU
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    jobs = [(str(photos.fitted(i, args.max_pixels)), i.photo.name) for i in items]
    started = time.monotonic()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        args.workers, mp_context=context, initializer=_init, initargs=(str(args.cache),)
    ) as pool:
        futures = [pool.submit(measure_photo, *job) for job in jobs]
        points = [p for f in futures for p in f.result()]
    print(
        f"python -m benchmarks.jpegli: {len(items)} photographs fitted to "
        f"{args.max_pixels / 1e6:g} MP, {time.monotonic() - started:.0f} s"
    )
    print("\n".join(report(points)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
