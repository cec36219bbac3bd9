"""`quality: "auto"` on the real photographs: the worker's own search (`imaging.compress` with
a `target_score`, hence `chalicelib.quality_search`) against fixed qualities, per format.

    python -m benchmarks.auto_quality [--workers 1] [--target 70] [--max-pixels 1000000]
                                      [--formats jpeg,webp,avif] [--sharp [--no-fixed]]
    python -m benchmarks.auto_quality --tiles [--workers 1]

Each photograph (fitted to `--max-pixels`, a PNG: `photos.fitted`) goes through the
pipeline's compressor with `auto` (CPU time of the whole call, and the encodes the search
made) and at fixed qualities (`FIXED`); every output is decoded and scored with
`chalicelib.perceptual` against the source at full size (never sampled). Per format: the share
of photographs whose `auto` output lands within -2/+4 of the target, encodes per image, CPU ms
per image (auto, and the fixed default's for scale), and the honest comparison: the fixed
quality whose worst-tenth score (10th percentile over the photographs) is at least auto's,
and auto's bytes over it (median over photographs of the per-photograph ratio, and totals).
The median score per fixed quality is the format's curve (`quality_search.CURVES`, where the
search takes its first guess: `--calibrate` prints it in that form).

`--tiles`: the sampled metric `auto` uses on a pair over `imaging.SCORE_MAX_PIXELS`
(`perceptual.tiles`, at the sizes of `TILE_VARIANTS`) against the whole image's score, on
the photographs at their own size (1.3 to 20 MP): JPEG and WebP at low to high qualities.

`--sharp`: sharp (`benchmarks._sharp`, one node process) encodes the same fitted PNGs at its
defaults per format (`.jpeg()` q80 mozjpeg off, `.webp()` q80, `.avif()` q50), scored against
the same source at full size; per format: sharp's and auto's median and worst-tenth scores, how
many of sharp's land above the target, and auto's bytes over sharp's (median of the
per-photograph ratio). `--no-fixed` skips the fixed qualities (auto and sharp only).
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
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from benchmarks import photos
from benchmarks._parent import die_with_parent
from benchmarks._sharp import SHARP_VERSION, Op, Sharp, SharpUnavailable, install
from benchmarks._workers import FUNCTIONS_DIR
from benchmarks.corpus import DEFAULT_CACHE

FIXED = (20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 95, 100)
FORMATS = ("jpeg", "webp", "avif")
# sharp's default quality per format (`.jpeg()`, `.webp()`, `.avif()` with no options): labels
# only, sharp is called with no options at all
SHARP_DEFAULTS = {"jpeg": 80, "webp": 80, "avif": 50}
TILE_CASES = (("jpeg", 45), ("jpeg", 65), ("jpeg", 85), ("webp", 50), ("webp", 80))
# (max_pixels, tile side) of `perceptual.tiles` measured by `--tiles`
TILE_VARIANTS = ((2_000_000, 256), (2_000_000, 512), (4_000_000, 512), (4_000_000, 1024))


@dataclass(frozen=True)
class Try:
    quality: int
    size: int
    score: float


@dataclass(frozen=True)
class Result:
    photo: str
    format: str
    chosen: Try  # auto's output, scored again here at full size
    reported: float | None  # the score the compressor reported
    encodes: int
    seconds: float  # CPU time of the auto compress (decode, fit, tries, the answer)
    fixed_seconds: float  # CPU time of one compress at the format's default quality
    fixed: tuple[Try, ...]
    sharp: Try | None = None  # sharp's defaults on the same fitted source, scored the same way


def _setup() -> None:
    die_with_parent()
    if str(FUNCTIONS_DIR) not in sys.path:
        sys.path.insert(0, str(FUNCTIONS_DIR))


def measure_photo(
    path: str,
    name: str,
    fmt: str,
    target: float,
    *,
    sharp: bytes | None = None,
    with_fixed: bool = True,
) -> Result:
    _setup()
    import numpy as np  # noqa: PLC0415
    from chalicelib import imaging, perceptual, quality_search  # noqa: PLC0415
    from chalicelib.domain.output_options import (  # noqa: PLC0415
        DEFAULT_QUALITY,
        JPEG_QUALITY,
        OutputFormat,
    )
    from PIL import Image  # noqa: PLC0415

    data = Path(path).read_bytes()
    with Image.open(io.BytesIO(data)) as opened:
        source = np.asarray(opened.convert("RGB"))
    output_format = OutputFormat(fmt)
    default = DEFAULT_QUALITY.get(output_format, JPEG_QUALITY)

    def scored(quality: int, output: bytes) -> Try:
        with Image.open(io.BytesIO(output)) as decoded:
            copy = np.asarray(decoded.convert("RGB"))
        return Try(quality, len(output), perceptual.ssimulacra2(source, copy))

    found: list[quality_search.Found] = []
    search = quality_search.search

    def recorded(*args: object, **kwargs: object) -> quality_search.Found:
        answer = search(*args, **kwargs)  # type: ignore[arg-type]
        found.append(answer)
        return answer

    quality_search.search = recorded
    try:
        options = imaging.CompressOptions(
            format=output_format, quality=default, target_score=target
        )
        started = time.process_time()
        auto = imaging.compress(data, options)
        seconds = time.process_time() - started
    finally:
        quality_search.search = search
    started = time.process_time()
    imaging.compress(data, imaging.CompressOptions(format=output_format, quality=default))
    fixed_seconds = time.process_time() - started
    fixed = tuple(
        scored(
            q, imaging.compress(data, imaging.CompressOptions(format=output_format, quality=q)).data
        )
        for q in (FIXED if with_fixed else ())
    )
    chosen = scored(auto.quality, auto.data)
    sharp_try = scored(SHARP_DEFAULTS[fmt], sharp) if sharp is not None else None
    return Result(
        name, fmt, chosen, auto.score, len(found[0].tries), seconds, fixed_seconds, fixed, sharp_try
    )


def tenth(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.1 * len(ordered)) - 1)]


def rival(results: list[Result]) -> int | None:
    """The index in FIXED of the lowest fixed quality whose worst tenth is at least auto's."""
    auto_tenth = tenth([r.chosen.score for r in results])
    for i in range(len(FIXED)):
        if tenth([r.fixed[i].score for r in results]) >= auto_tenth:
            return i
    return None


def report(results: list[Result], target: float) -> list[str]:
    within = sum(target - 2 <= r.chosen.score <= target + 4 for r in results)
    reached = sum(r.chosen.score >= target for r in results)
    auto_tenth = tenth([r.chosen.score for r in results])
    fmt = results[0].format
    auto_cpu = statistics.fmean(r.seconds for r in results)
    fixed_cpu = statistics.fmean(r.fixed_seconds for r in results)
    lines = [
        f"{fmt} auto at {target:g}: {within}/{len(results)} within -2/+4 "
        f"({100 * within / len(results):.0f}%), {reached} at or above the target; "
        f"{statistics.fmean(r.encodes for r in results):.2f} encodes per image (most "
        f"{max(r.encodes for r in results)}); CPU ms per image {1000 * auto_cpu:.0f} "
        f"(fixed default: {1000 * fixed_cpu:.0f}); "
        f"scores median {statistics.median(r.chosen.score for r in results):.1f}, worst tenth "
        f"{auto_tenth:.1f}; qualities {min(r.chosen.quality for r in results)}-"
        f"{max(r.chosen.quality for r in results)}",
    ]
    if not results[0].fixed:
        return lines
    lines += [
        f"{'fixed q':>8}{'worst tenth':>13}{'median':>8}{'bytes':>12}{'auto/fixed median':>19}",
    ]
    best = rival(results)
    for i, q in enumerate(FIXED):
        scores = [r.fixed[i].score for r in results]
        total = sum(r.fixed[i].size for r in results)
        ratio = statistics.median(r.chosen.size / r.fixed[i].size for r in results)
        mark = "  <- the same worst tenth" if i == best else ""
        lines.append(
            f"{q:8d}{tenth(scores):13.1f}{statistics.median(scores):8.1f}{total:12,}"
            f"{ratio:19.3f}{mark}"
        )
    lines.append(f"{'auto':>8}{auto_tenth:13.1f}{'':8}{sum(r.chosen.size for r in results):12,}")
    if best is not None:
        ratio = statistics.median(r.chosen.size / r.fixed[best].size for r in results)
        lines.append(
            f"auto against q{FIXED[best]} (the same worst tenth): {100 * (1 - ratio):.1f}% "
            f"smaller in median"
        )
    return lines


def sharp_report(results: list[Result], target: float, sharp_cpu: float) -> list[str]:
    """sharp's defaults beside auto on the same photographs (those with a sharp output):
    scores (median, worst tenth), how many of sharp's reach the target, and auto's bytes over
    sharp's (median of the per-photograph ratio, and totals); `sharp_cpu` is node's CPU
    seconds for all of them."""
    pairs = [(r.chosen, r.sharp) for r in results if r.sharp is not None]
    if not pairs:
        return []
    fmt = results[0].format
    auto_scores = [a.score for a, _ in pairs]
    sharp_scores = [s.score for _, s in pairs]
    above = sum(s >= target for s in sharp_scores)
    ratio = statistics.median(a.size / s.size for a, s in pairs)
    auto_total = sum(a.size for a, _ in pairs)
    sharp_total = sum(s.size for _, s in pairs)
    return [
        f"{fmt} sharp {SHARP_VERSION} defaults (q{SHARP_DEFAULTS[fmt]}): scores median "
        f"{statistics.median(sharp_scores):.1f}, worst tenth {tenth(sharp_scores):.1f} "
        f"(range {min(sharp_scores):.1f}-{max(sharp_scores):.1f}), {above}/{len(pairs)} at or "
        f"above {target:g}; CPU ms per image {1000 * sharp_cpu / len(pairs):.0f}; "
        f"bytes {sharp_total:,}",
        f"{fmt} auto at {target:g}: scores median {statistics.median(auto_scores):.1f}, worst "
        f"tenth {tenth(auto_scores):.1f}; bytes {auto_total:,}; auto/sharp bytes median "
        f"{ratio:.3f} (total {auto_total / sharp_total:.3f})",
    ]


def sharp_outputs(
    cache: Path, paths: list[str], formats: list[str]
) -> tuple[dict[str, list[bytes]], dict[str, float], str]:
    """sharp's outputs at its defaults per format for each of `paths` (one image at a time),
    node's CPU seconds per format, and the versions."""
    folder = install(cache)
    sharp = Sharp(folder, paths, 1)
    try:
        outputs: dict[str, list[bytes]] = {}
        cpu: dict[str, float] = {}
        for fmt in formats:
            run = sharp.run(list(range(len(paths))), keep=True, op=Op(fmt))
            outputs[fmt], cpu[fmt] = run.outputs, run.cpu
        versions = sharp.info.get("versions", {})
        return outputs, cpu, f"sharp {versions.get('sharp')}, libvips {versions.get('vips')}"
    finally:
        sharp.close()


def curve(results: list[Result]) -> str:
    """The median score per fixed quality, as `quality_search.CURVES` holds it."""
    points = ", ".join(
        f"({q}, {statistics.median(r.fixed[i].score for r in results):.1f})"
        for i, q in enumerate(FIXED)
    )
    return f'    "{results[0].format}": ({points}),'


@dataclass(frozen=True)
class TileCase:
    photo: str
    pixels: int
    case: str
    variant: tuple[int, int]  # (max_pixels, side) of perceptual.tiles
    whole: float
    sampled: float
    whole_seconds: float
    sampled_seconds: float


def measure_tiles(path: str, name: str) -> list[TileCase]:
    _setup()
    import numpy as np  # noqa: PLC0415
    from chalicelib import imaging, perceptual  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    with Image.open(path) as opened:
        image = opened.convert("RGB")
    source = np.asarray(image)
    cases = []
    for fmt, quality in TILE_CASES:
        out = io.BytesIO()
        if fmt == "jpeg":
            image.save(out, "JPEG", quality=quality, optimize=True)
        else:
            image.save(out, "WEBP", quality=quality, method=imaging.WEBP_METHOD)
        with Image.open(io.BytesIO(out.getvalue())) as decoded:
            copy = np.asarray(decoded.convert("RGB"))
        started = time.process_time()
        whole = perceptual.ssimulacra2(source, copy)
        whole_seconds = time.process_time() - started
        for limit, side in TILE_VARIANTS:
            started = time.process_time()
            sampled = perceptual.ssimulacra2(
                perceptual.tiles(source, limit, side), perceptual.tiles(copy, limit, side)
            )
            sampled_seconds = time.process_time() - started
            cases.append(
                TileCase(
                    name,
                    source.shape[0] * source.shape[1],
                    f"{fmt}{quality}",
                    (limit, side),
                    whole,
                    sampled,
                    whole_seconds,
                    sampled_seconds,
                )
            )
    return cases


def tiles_report(cases: list[TileCase]) -> list[str]:
    lines = []
    for limit, side in TILE_VARIANTS:
        sampled = [c for c in cases if c.variant == (limit, side) and c.pixels > limit]
        if not sampled:
            continue
        diffs = [abs(c.sampled - c.whole) for c in sampled]
        worst = max(sampled, key=lambda c: abs(c.sampled - c.whole))
        mp = sum(c.pixels for c in sampled) / len(sampled) / 1e6
        lines.append(
            f"tiles of {side} up to {limit / 1e6:g} MP: {len(sampled)} cases "
            f"({len({c.photo for c in sampled})} photographs, {mp:.1f} MP on average): "
            f"|tiles - whole| mean {statistics.fmean(diffs):.2f}, max {max(diffs):.2f} "
            f"({worst.photo} {worst.case}: {worst.whole:.1f} whole, {worst.sampled:.1f} "
            f"tiles), signed mean {statistics.fmean(c.sampled - c.whole for c in sampled):+.2f}; "
            f"CPU s whole {statistics.fmean(c.whole_seconds for c in sampled):.2f}, tiles "
            f"{statistics.fmean(c.sampled_seconds for c in sampled):.2f}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--target", type=float, default=70.0)
    parser.add_argument("--max-pixels", type=int, default=1_000_000)
    parser.add_argument("--formats", default="jpeg,webp")
    parser.add_argument("--calibrate", action="store_true", help="print the median curves")
    parser.add_argument("--tiles", action="store_true", help="the sampled metric against whole")
    parser.add_argument("--sharp", action="store_true", help="sharp's defaults beside auto")
    parser.add_argument("--no-fixed", action="store_true", help="skip the fixed qualities")
    args = parser.parse_args(argv)
    try:
        items = photos.build(args.cache, log=True)
    except photos.PhotosMissing as exc:
        print(f"SKIP benchmarks.auto_quality: the photographs are missing: {exc}")
        return 0
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # the metric's products: one thread per process
    context = multiprocessing.get_context("spawn")
    started = time.monotonic()
    with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        if args.tiles:
            pending = [pool.submit(measure_tiles, str(i.path), i.photo.name) for i in items]
            cases = [c for f in pending for c in f.result()]
            print(
                f"python -m benchmarks.auto_quality --tiles: {len(items)} photographs at their "
                f"own size, {time.monotonic() - started:.0f} s"
            )
            print("\n".join(tiles_report(cases)))
            return 0
        formats = [f for f in args.formats.split(",") if f]
        paths = [str(photos.fitted(i, args.max_pixels).resolve()) for i in items]
        outputs: dict[str, list[bytes]] = {}
        sharp_cpu: dict[str, float] = {}
        if args.sharp:
            try:
                outputs, sharp_cpu, versions = sharp_outputs(args.cache, paths, formats)
                print(versions)
            except SharpUnavailable as exc:
                print(f"SKIP the sharp comparison: {exc}")
        futures = [
            pool.submit(
                measure_photo,
                path,
                i.photo.name,
                fmt,
                args.target,
                sharp=outputs[fmt][k] if fmt in outputs else None,
                with_fixed=not args.no_fixed,
            )
            for fmt in formats
            for k, (i, path) in enumerate(zip(items, paths, strict=True))
        ]
        results = [f.result() for f in futures]
    print(
        f"python -m benchmarks.auto_quality: {len(items)} photographs fitted to "
        f"{args.max_pixels / 1e6:g} MP, {time.monotonic() - started:.0f} s"
    )
    for fmt in formats:
        print("\n".join(report([r for r in results if r.format == fmt], args.target)))
        if fmt in outputs:
            ours = [r for r in results if r.format == fmt]
            print("\n".join(sharp_report(ours, args.target, sharp_cpu[fmt])))
    if args.calibrate and not args.no_fixed:
        print("CURVES (median score per quality):")
        for fmt in formats:
            print(curve([r for r in results if r.format == fmt]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
