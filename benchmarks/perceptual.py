"""The fast SSIMULACRA2 (`chalicelib.perceptual`) and its candidates against the reference.

    python -m benchmarks.perceptual [--workers 2] [--cache .bench-cache] [--reference-only]

The reference is the `ssimulacra2` package from PyPI (0.3.0, a Python port of libjxl's
tool; Debian's libjxl-tools 0.7 has no `ssimulacra2`), installed on demand into the cache
(`benchmarks._extras`): about 1.3 CPU seconds per MP here, so its scores are kept in
`<cache>/perceptual/reference.jsonl` and computed once per file.

The cases: every photograph of `benchmarks.photos` fitted to 1 MP, compressed by Pillow as
JPEG at quality 35, 55, 75 and 90 and as WebP (method 4) at 50 and 80; and the first
`THREE_MP_PHOTOS` photographs fitted to 3 MP at JPEG 55 and 75 and WebP 80 (the size the
issue times). For each candidate: the mean and largest absolute difference from the
reference over the cases, and its CPU time per 3 MP (the mean over the 3 MP cases, scaled).
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import photos
from benchmarks._parent import die_with_parent
from benchmarks._workers import FUNCTIONS_DIR
from benchmarks.corpus import DEFAULT_CACHE

SMALL = 1_000_000
LARGE = 3_000_000
SMALL_SETTINGS = (
    ("jpeg", 35),
    ("jpeg", 55),
    ("jpeg", 75),
    ("jpeg", 90),
    ("webp", 50),
    ("webp", 80),
)
LARGE_SETTINGS = (("jpeg", 55), ("jpeg", 75), ("webp", 80))
THREE_MP_PHOTOS = 10


@dataclass(frozen=True)
class Case:
    """One source and one compressed copy of it, both files in the cache."""

    photo: str
    max_pixels: int
    format: str
    quality: int
    source: Path
    distorted: Path

    @property
    def key(self) -> str:
        return f"{self.photo}@{self.max_pixels}:{self.format}{self.quality}"


def encode(image: Image.Image, fmt: str, quality: int) -> bytes:
    out = io.BytesIO()
    if fmt == "jpeg":
        image.save(out, "JPEG", quality=quality)
    else:
        image.save(out, "WEBP", quality=quality, method=4)
    return out.getvalue()


def cases(items: Sequence[photos.Item], cache: Path) -> list[Case]:
    """Make (once) the compressed copies; every case in a fixed order."""
    folder = cache / "perceptual"
    folder.mkdir(parents=True, exist_ok=True)
    out: list[Case] = []
    plan: list[tuple[photos.Item, int, tuple[tuple[str, int], ...]]]
    plan = [(item, SMALL, SMALL_SETTINGS) for item in items]
    plan += [(item, LARGE, LARGE_SETTINGS) for item in items[:THREE_MP_PHOTOS]]
    for item, max_pixels, settings in plan:
        source = photos.fitted(item, max_pixels)
        image: Image.Image | None = None
        for fmt, quality in settings:
            ext = "jpg" if fmt == "jpeg" else "webp"
            path = folder / f"{item.photo.name}-{max_pixels}-q{quality}.{ext}"
            if not path.exists():
                if image is None:
                    image = Image.open(source).convert("RGB")
                path.write_bytes(encode(image, fmt, quality))
            out.append(Case(item.photo.name, max_pixels, fmt, quality, source, path))
    return out


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# -- the reference, in worker processes ------------------------------------------------------


def _init(cache: str) -> None:
    die_with_parent()
    if str(FUNCTIONS_DIR) not in sys.path:
        sys.path.insert(0, str(FUNCTIONS_DIR))
    from benchmarks._extras import require  # noqa: PLC0415

    require("ssimulacra2", Path(cache))


def _reference(case: Case) -> tuple[str, float, float]:
    from ssimulacra2.ssimulacra2 import (  # type: ignore[import-not-found]  # noqa: PLC0415
        compute_ssimulacra2,
    )

    started = time.process_time()
    score = float(compute_ssimulacra2(str(case.source), str(case.distorted)))
    return case.key, score, time.process_time() - started


def reference_scores(
    todo: Sequence[Case], cache: Path, workers: int, log: bool = True
) -> dict[str, float]:
    """The reference's score of every case (computed once, kept in reference.jsonl)."""
    record = cache / "perceptual" / "reference.jsonl"
    known: dict[str, float] = {}
    if record.exists():
        for line in record.read_text().splitlines():
            entry = json.loads(line)
            known[entry["key"]] = entry["score"]
    missing = [c for c in todo if c.key not in known]
    if missing:
        context = multiprocessing.get_context("spawn")
        with (
            ProcessPoolExecutor(
                workers, mp_context=context, initializer=_init, initargs=(str(cache),)
            ) as pool,
            record.open("a") as out,
        ):
            for key, score, seconds in pool.map(_reference, missing):
                known[key] = score
                out.write(json.dumps({"key": key, "score": score, "cpu": seconds}) + "\n")
                out.flush()
                if log:
                    print(f"reference {key}: {score:.3f} ({seconds:.1f} s)", file=sys.stderr)
    return known


# -- the candidates, in a worker process with one BLAS thread --------------------------------

Metric = Callable[[np.ndarray, np.ndarray], float]


def candidates() -> dict[str, Metric]:
    if str(FUNCTIONS_DIR) not in sys.path:
        sys.path.insert(0, str(FUNCTIONS_DIR))
    from chalicelib import perceptual  # noqa: PLC0415

    return perceptual.CANDIDATES


def _measure_named(name: str, todo: Sequence[Case], reference: dict[str, float]) -> Accuracy:
    die_with_parent()
    return measure(name, candidates()[name], todo, reference)


@dataclass(frozen=True)
class Accuracy:
    name: str
    mean_abs: float
    max_abs: float
    worst: str
    ms_per_3mp: float


def measure(
    name: str, metric: Metric, todo: Sequence[Case], reference: dict[str, float]
) -> Accuracy:
    diffs: list[tuple[float, str]] = []
    per_mp: list[float] = []
    for case in todo:
        a, b = rgb(case.source), rgb(case.distorted)
        started = time.process_time()
        score = metric(a, b)
        seconds = time.process_time() - started
        if case.max_pixels == LARGE:
            per_mp.append(seconds / (a.shape[0] * a.shape[1] / 1e6))
        diffs.append((abs(score - reference[case.key]), case.key))
    worst = max(diffs)
    return Accuracy(
        name,
        statistics.fmean(d for d, _ in diffs),
        worst[0],
        worst[1],
        3000 * statistics.fmean(per_mp) if per_mp else float("nan"),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reference-only", action="store_true")
    args = parser.parse_args(argv)
    try:
        items = photos.build(args.cache, log=True)
    except photos.PhotosMissing as exc:
        print(f"SKIP benchmarks.perceptual: the photographs are missing: {exc}")
        return 0
    todo = cases(items, args.cache)
    reference = reference_scores(todo, args.cache, args.workers)
    if args.reference_only:
        return 0
    print(
        f"python -m benchmarks.perceptual: {len(todo)} cases, {len(items)} photographs; "
        "score differences from the reference (ssimulacra2 0.3.0)"
    )
    print(f"{'candidate':30}{'mean |d|':>9}{'max |d|':>9}{'CPU ms/3MP':>12}  worst case")
    # one BLAS thread (the blur's matrix products), as on the worker's one vCPU; each
    # candidate in its own process (CPU time, so the others running beside it do not count)
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    context = multiprocessing.get_context("spawn")
    names = list(candidates())
    with ProcessPoolExecutor(len(names), mp_context=context) as pool:
        futures = [pool.submit(_measure_named, name, todo, reference) for name in names]
        for future in futures:
            acc = future.result()
            print(
                f"{acc.name:30}{acc.mean_abs:9.3f}{acc.max_abs:9.3f}{acc.ms_per_3mp:12.0f}"
                f"  {acc.worst}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
