"""WebP and AVIF against sharp, a bound of 1200 px against Pillow and sharp, peak memory.

    python -m benchmarks.formats [--quick] [--rounds N] [--no-sharp] [--cache .bench-cache]

Three parts, each engine on two cores (a pool of two spawned processes for Python, one node
process with several images in flight for sharp, as in `benchmarks.compressor`), rounds in
a rotated order, a ratio being the median of the ratios within each round:

1. Encoding at full size, on the corpus's 1 and 3 MP JPEGs and its PNGs: our `compress` to
   WebP and AVIF at their defaults against sharp at the quality that gives the same bytes
   over those images (found by bisection; sharp's default effort, and for AVIF also the
   effort of our speed, `9 - AVIF_SPEED`, with our 4:2:0 chroma); and the bytes at equal
   quality: sharp's defaults (`.webp()` quality 80, `.avif()` quality 50 with 4:4:4 chroma,
   effort 4) give a mean luma SSIM against the source (`benchmarks.ssim`); our quality with
   the same SSIM is found by bisection and our bytes there interpolated.
2. A 1200 x 1200 box on the corpus's largest photos (12 MP): our path (shrink on load in the
   JPEG decoder, `reduce()`, LANCZOS) against the baseline, Pillow's `open` + full decode +
   LANCZOS `resize` to fit, and against sharp's `.resize({fit: 'inside'})`, all to pixels
   (`.raw()`), then with a JPEG q50 encode after each (ours and the baseline with the same
   encoder). The SSIM of our pixels against the baseline's says what the speed costs.
3. Peak memory per image of each path: a fresh process per path and image, a warm-up on a
   small image, the peak reset (Linux's clear_refs), one run; the peak resident set above the
   resting one.

Without node and npm (or with --no-sharp) the sharp rows and targets are left out, with a
line saying so. `--dct-factors` only prints what libjpeg-turbo's decode of the largest photos
costs at each DCT scale M/8 (why shrink on load uses 1/2, 1/4 and 1/8 only).
"""

from __future__ import annotations

import argparse
import io
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks import _format_workers as workers
from benchmarks import corpus
from benchmarks._format_workers import Job
from benchmarks._sharp import SHARP_VERSION, Op, Sharp, SharpUnavailable, install
from benchmarks._workers import FUNCTIONS_DIR
from benchmarks.compressor import paired_ratio

if str(FUNCTIONS_DIR) not in sys.path:
    sys.path.insert(0, str(FUNCTIONS_DIR))

ENCODE_GROUPS = ("1MP", "3MP", "PNG")
PARTS = ("encode", "resize", "memory")
BOX = 1200
MIN_ROUNDS = 5
# sharp's documented defaults (effort 4 for both; AVIF's chroma 4:4:4)
SHARP_DEFAULTS: dict[str, dict[str, Any]] = {"webp": {"quality": 80}, "avif": {"quality": 50}}
TARGETS = {"encode": 1.0, "baseline": 2.0, "sharp-resize": 1.0, "ssim": 0.98}


# -- arithmetic (pure, unit-tested) ----------------------------------------------------------


def calibrate(bytes_at: Callable[[int], int], target: int, low: int = 1, high: int = 100) -> int:
    """The quality whose output bytes are closest to `target`, by bisection (bytes grow with
    quality); the end of the range when `target` is outside it."""
    seen: dict[int, int] = {}

    def at(quality: int) -> int:
        if quality not in seen:
            seen[quality] = bytes_at(quality)
        return seen[quality]

    if at(low) >= target:
        return low
    if at(high) <= target:
        return high
    while high - low > 1:
        middle = (low + high) // 2
        if at(middle) < target:
            low = middle
        else:
            high = middle
    return min((low, high), key=lambda q: abs(at(q) - target))


@dataclass(frozen=True)
class EqualSsim:
    quality: float  # interpolated
    size: float  # bytes, interpolated
    ssim: float  # the target


def at_equal_ssim(
    measure: Callable[[int], tuple[int, float]], target: float, low: int = 1, high: int = 100
) -> EqualSsim | None:
    """Where an encoder reaches a mean SSIM of `target`: bisection on quality for the two
    qualities around it, then quality and bytes interpolated linearly in SSIM. `measure`
    gives (bytes, SSIM) at a quality; None when even `high` stays below the target."""
    seen: dict[int, tuple[int, float]] = {}

    def at(quality: int) -> tuple[int, float]:
        if quality not in seen:
            seen[quality] = measure(quality)
        return seen[quality]

    if at(high)[1] < target:
        return None
    if at(low)[1] >= target:
        return EqualSsim(low, at(low)[0], target)
    while high - low > 1:
        middle = (low + high) // 2
        if at(middle)[1] < target:
            low = middle
        else:
            high = middle
    (size_low, ssim_low), (size_high, ssim_high) = at(low), at(high)
    t = (target - ssim_low) / (ssim_high - ssim_low) if ssim_high > ssim_low else 1.0
    return EqualSsim(low + t * (high - low), size_low + t * (size_high - size_low), target)


def verdict(label: str, value: float, floor: float) -> str:
    mark = "PASS" if value >= floor else "FAIL"
    return f"{label:62} {value:6.3f} >= {floor:.2f}  {mark}"


# -- engines ---------------------------------------------------------------------------------


class InProcess(Executor):
    """The pool's interface without processes (the unit test's tiny run)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


@contextmanager
def python_pool(paths: Sequence[str], processes: int) -> Iterator[Executor]:
    if processes <= 0:
        workers.init(tuple(paths))
        yield InProcess()
        return
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        processes, mp_context=context, initializer=workers.init, initargs=(tuple(paths),)
    )
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def timed(pool: Executor, job: Job, indices: Sequence[int]) -> tuple[float, list[int], float]:
    """(wall seconds, output sizes, CPU seconds of the work itself)."""
    started = time.perf_counter()
    answers = list(pool.map(partial(workers.task, job), indices))
    return time.perf_counter() - started, [a[0] for a in answers], sum(a[5] for a in answers)


@dataclass
class Engine:
    """One timed contender: ours (a job on the pool) or sharp (an op)."""

    key: str
    label: str
    job: Job | None = None
    op: Op | None = None
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # CPU seconds per round, every thread
    size: int = 0

    def run(self, pool: Executor, sharp: Sharp | None, indices: Sequence[int]) -> None:
        if self.job is not None:
            seconds, sizes, cpu = timed(pool, self.job, indices)
        else:
            assert sharp is not None and self.op is not None
            done = sharp.run(list(indices), op=self.op)
            seconds, sizes, cpu = done.seconds, done.sizes, done.cpu
        self.times.append(seconds)
        self.cpu.append(cpu)
        self.size = sum(sizes)


@dataclass
class Bench:
    """What every part runs with."""

    pool: Executor
    sharp: Sharp | None
    items: Sequence[corpus.Item]
    count: int  # rounds
    say: Callable[[str], None]

    def rounds(self, engines: Sequence[Engine], indices: Sequence[int], title: str) -> None:
        for engine in engines:  # warm-up: first allocations, lazy imports, libvips' start
            engine.run(self.pool, self.sharp, indices[:2])
            engine.times.clear()
            engine.cpu.clear()
        for r in range(self.count):
            started = time.perf_counter()
            shift = r % len(engines)
            for engine in [*engines[shift:], *engines[:shift]]:
                engine.run(self.pool, self.sharp, indices)
            self.say(f"{title} round {r + 1}/{self.count}: {time.perf_counter() - started:.1f}s")

    def megapixels(self, indices: Sequence[int]) -> float:
        return sum(self.items[i].spec.megapixels for i in indices)


# -- the parts ---------------------------------------------------------------------------------


@dataclass
class Findings:
    lines: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    sharp_quality: dict[str, int] = field(default_factory=dict)  # equal bytes, default effort


def encode_part(bench: Bench, indices: Sequence[int], groups: Sequence[str]) -> Findings:
    found = Findings()
    found.lines += [
        "",
        f"1. encoding at full size: {len(indices)} images, {bench.megapixels(indices):.1f} MP "
        f"({', '.join(groups)}), two cores each, {bench.count} rounds",
    ]
    for fmt in ("webp", "avif"):
        encode_format(bench, fmt, indices, found)
    return found


def encode_format(bench: Bench, fmt: str, indices: Sequence[int], found: Findings) -> None:
    from chalicelib import imaging  # noqa: PLC0415
    from chalicelib.domain.output_options import (  # noqa: PLC0415
        JPEG_QUALITY,
        OutputFormat,
        OutputOptions,
    )

    quality = OutputOptions(OutputFormat(fmt)).quality_or(JPEG_QUALITY)
    effort = imaging.WEBP_METHOD if fmt == "webp" else imaging.AVIF_SPEED
    ours = Job("compress", fmt)
    label = f"ours q{quality}, " + (
        f"method {effort}" if fmt == "webp" else f"speed {effort}, 4:2:0"
    )
    engines = [Engine("ours", label, job=ours)]
    once = sorted(set(indices))  # what the bytes are compared on (rounds repeat the files)
    if bench.sharp is not None:
        _, sizes, _ = timed(bench.pool, ours, once)
        variants: list[tuple[str, dict[str, Any]]] = [("sharp", {})]
        if fmt == "avif" and 0 <= 9 - effort <= 9:  # libvips: aom's speed = 9 - effort
            variants.append(("sharp-ours", {"effort": 9 - effort, "chromaSubsampling": "4:2:0"}))
        for key, extra in variants:
            options = {"quality": sharp_equal_bytes(bench.sharp, fmt, extra, once, sum(sizes))}
            options.update(extra)
            if key == "sharp":
                found.sharp_quality[fmt] = options["quality"]
            shown = ", ".join(f"{k}: {v!r}" for k, v in options.items())
            bench.say(f"{fmt}: sharp {shown} gives our bytes")
            engines.append(
                Engine(key, f"sharp .{fmt}({{{shown}}})", op=Op(fmt, options, flatten=True))
            )
    bench.rounds(engines, indices, fmt)
    megapixels = bench.megapixels(indices)
    found.lines.append(f"{'':6}{'engine':52}{'bytes':>12}{'MP/s':>8}{'ours/it':>9}")
    base = engines[0]
    for engine in engines:
        speed = megapixels / statistics.median(engine.times)
        ratio = paired_ratio(base.times, engine.times)
        found.lines.append(
            f"{fmt:6}{engine.label[:52]:52}{engine.size:12,}{speed:8.1f}{ratio:9.3f}"
        )
    for engine in engines[1:]:
        what = "sharp's default effort" if engine.key == "sharp" else "sharp at our speed"
        line = verdict(
            f"{fmt}: ours vs {what}, equal bytes",
            paired_ratio(base.times, engine.times),
            TARGETS["encode"],
        )
        line += f"  (bytes {base.size / engine.size:.3f})"
        if engine.key == "sharp":
            found.targets.append(line)
        else:  # shown, not a target
            found.lines.append("  " + line.replace("PASS", "info").replace("FAIL", "info"))
    if bench.sharp is not None:
        shown, ratio_line = equal_ssim(bench.pool, bench.sharp, fmt, once, bench.say)
        found.lines.append(shown)
        found.targets.append(ratio_line)


def sharp_equal_bytes(
    sharp: Sharp, fmt: str, extra: dict[str, Any], indices: Sequence[int], target: int
) -> int:
    """sharp's quality (with the `extra` options) whose bytes over `indices` are closest to
    `target`."""

    def bytes_at(quality: int) -> int:
        op = Op(fmt, {"quality": quality, **extra}, flatten=True)
        return sum(sharp.run(list(indices), op=op).sizes)

    return calibrate(bytes_at, target)


def equal_ssim(
    pool: Executor, sharp: Sharp, fmt: str, indices: Sequence[int], say: Callable[[str], None]
) -> tuple[str, str]:
    """(what was found, the RATIO line) of our bytes at the SSIM of sharp's defaults."""
    op = Op(fmt, dict(SHARP_DEFAULTS[fmt]), flatten=True)
    outputs = sharp.run(list(indices), op=op, keep=True).outputs
    scores = list(pool.map(workers.score_encoded, indices, outputs))
    target = statistics.fmean(scores)
    sharp_bytes = sum(len(o) for o in outputs)

    def measure(quality: int) -> tuple[int, float]:
        answers = list(pool.map(partial(workers.score, Job("compress", fmt, quality)), indices))
        return sum(a[0] for a in answers), statistics.fmean(a[1] for a in answers)

    say(f"{fmt}: sharp's defaults give SSIM {target:.4f}; finding our quality for it")
    found = at_equal_ssim(measure, target)
    head = f"{fmt}: sharp's defaults {sharp_bytes:,} bytes at SSIM {target:.4f}; "
    if found is None:
        return f"  {head}ours never reaches that SSIM", f"RATIO {fmt} bytes at equal SSIM: n/a"
    return (
        f"  {head}ours {found.size:,.0f} bytes at quality {found.quality:.1f}",
        f"RATIO {fmt} bytes at the SSIM of sharp's defaults, ours/sharp = "
        f"{found.size / sharp_bytes:.3f} (no target; fewer is better)",
    )


def resize_part(bench: Bench, indices: Sequence[int], box: int) -> Findings:
    pool, sharp = bench.pool, bench.sharp
    found = Findings()
    megapixels = bench.megapixels(indices)
    found.lines += [
        "",
        f"2. a {box} x {box} box on the largest photos: {len(indices)} images, "
        f"{megapixels:.0f} MP in, two cores each, {bench.count} rounds",
    ]
    ours_job, baseline_job = Job("pixels", box=box), Job("baseline", box=box)
    engines = [
        Engine("ours", "ours: shrink on load, reduce, LANCZOS (pixels)", ours_job),
        Engine("baseline", "baseline: Pillow open, full decode, LANCZOS (pixels)", baseline_job),
    ]
    jpeg_engines = [
        Engine("ours", "ours + JPEG q50", Job("compress", box=box)),
        Engine("baseline", "baseline + the same JPEG q50", Job("baseline-jpeg", box=box)),
    ]
    if sharp is not None:
        engines.append(Engine("sharp", "sharp .resize(inside).raw()", op=Op("raw", box=(box, box))))
        jpeg_engines.append(
            Engine(
                "sharp",
                "sharp .resize(inside).jpeg({quality: 50})",
                op=Op("jpeg", {"quality": 50}, box=(box, box)),
            )
        )
    found.problems += check_sizes(pool, sharp, bench.items, indices, box)
    bench.rounds(engines, indices, "resize")
    bench.rounds(jpeg_engines, indices, "resize+jpeg")
    # Wall time on two cores, and CPU time per image: on Lambda the worker has one vCPU
    # (1769 MB), where images per second are one over the CPU seconds each costs, whatever
    # threads an engine would spread one image over on a machine with spare cores.
    found.lines.append(f"{'':54}{'MP/s in':>9}{'ours/it':>9}{'CPU ms':>9}{'ours/it':>9}")
    for group in (engines, jpeg_engines):
        base = group[0]
        for engine in group:
            speed = megapixels / statistics.median(engine.times)
            ratio = paired_ratio(base.times, engine.times) if engine is not base else 1.0
            cpu_ms = 1000 * statistics.median(engine.cpu) / len(indices)
            cpu_ratio = paired_ratio(base.cpu, engine.cpu) if engine is not base else 1.0
            found.lines.append(
                f"  {engine.label[:52]:52}{speed:9.1f}{ratio:9.3f}{cpu_ms:9.1f}{cpu_ratio:9.3f}"
            )
    ours, baseline = engines[0], engines[1]
    found.targets.append(
        verdict(
            f"{box} px box, 12 MP: ours vs baseline (Pillow full decode + LANCZOS)",
            paired_ratio(ours.times, baseline.times),
            TARGETS["baseline"],
        )
    )
    if sharp is not None:
        found.targets.append(
            verdict(
                f"{box} px box, 12 MP: ours vs sharp's resize, two cores",
                paired_ratio(ours.times, engines[2].times),
                TARGETS["sharp-resize"],
            )
        )
        found.targets.append(
            verdict(
                f"{box} px box, 12 MP: ours vs sharp's resize, per CPU second",
                paired_ratio(ours.cpu, engines[2].cpu),
                TARGETS["sharp-resize"],
            )
        )
    ours_ssim = min(pool.map(partial(workers.compare, ours_job, baseline_job), indices))
    found.targets.append(
        verdict(
            f"{box} px box: SSIM of ours against the baseline (worst image)",
            ours_ssim,
            TARGETS["ssim"],
        )
    )
    if sharp is not None:
        raw = sharp.run(list(indices), op=Op("raw", box=(box, box)), keep=True)
        scores = [
            float(pool.submit(workers.compare_raw, baseline_job, i, data, *dims).result())
            for i, data, dims in zip(indices, raw.outputs, raw.dims, strict=True)
        ]
        found.lines.append(f"  SSIM of sharp's resize against the baseline: {min(scores):.4f}")
    return found


def check_sizes(
    pool: Executor,
    sharp: Sharp | None,
    items: Sequence[corpus.Item],
    indices: Sequence[int],
    box: int,
) -> list[str]:
    """Every path fits each image in the box the same way."""
    problems = []
    for kind in ("pixels", "baseline", "compress"):
        answers = list(pool.map(partial(workers.task, Job(kind, box=box)), indices))
        for index, answer in zip(indices, answers, strict=True):
            spec = items[index].spec
            expected = workers.fit(spec.width, spec.height, box)
            if (answer[1], answer[2]) != expected:
                problems.append(f"{kind}: {spec.name} came out {answer[1:3]}, not {expected}")
    if sharp is not None:
        done = sharp.run(list(indices), op=Op("raw", box=(box, box)))
        for index, dims in zip(indices, done.dims, strict=True):
            spec = items[index].spec
            expected = workers.fit(spec.width, spec.height, box)
            if dims != expected:
                problems.append(f"sharp: {spec.name} came out {dims}, not {expected}")
    return problems


def memory_part(
    sharp_folder: Path | None,
    photo: corpus.Item,
    encoded: corpus.Item,
    box: int,
    sharp_quality: dict[str, int],
) -> Findings:
    """Peak memory per image, each path in a fresh process."""
    found = Findings()
    warmup = _small_jpeg()
    paths: list[tuple[str, corpus.Item, Job | None, Op | None]] = [
        ("baseline, box", photo, Job("baseline", box=box), None),
        ("ours, box (pixels)", photo, Job("pixels", box=box), None),
        ("sharp, box (raw)", photo, None, Op("raw", box=(box, box))),
        ("ours, box + JPEG q50", photo, Job("compress", box=box), None),
        ("sharp, box + JPEG q50", photo, None, Op("jpeg", {"quality": 50}, box=(box, box))),
        ("ours, full size JPEG q50", photo, Job("compress"), None),
        ("sharp, full size JPEG q50", photo, None, Op("jpeg", {"quality": 50})),
        ("ours, WebP default", encoded, Job("compress", "webp"), None),
        ("sharp, WebP equal bytes", encoded, None,
         Op("webp", {"quality": sharp_quality.get("webp", 80)}, flatten=True)),
        ("ours, AVIF default", encoded, Job("compress", "avif"), None),
        ("sharp, AVIF equal bytes", encoded, None,
         Op("avif", {"quality": sharp_quality.get("avif", 50)}, flatten=True)),
    ]  # fmt: skip
    found.lines += [
        "",
        f"3. peak memory per image (a fresh process per path; MB above its resting RSS, and "
        f"its peak RSS): {photo.spec.name} ({photo.spec.megapixels:.0f} MP) and "
        f"{encoded.spec.name} ({encoded.spec.megapixels:.0f} MP)",
        f"  {'path':34}{'image':14}{'MB more':>8}{'peak MB':>8}",
    ]
    context = multiprocessing.get_context("spawn")
    for label, item, job, op in paths:
        if job is not None:
            with ProcessPoolExecutor(1, mp_context=context) as one:
                extra, high = one.submit(workers.peak, job, str(item.path), warmup).result()
        elif sharp_folder is not None and op is not None:
            extra, high = sharp_peak(sharp_folder, item, op)
        else:
            continue
        found.lines.append(f"  {label:34}{item.spec.name:14}{extra / 1e6:8.0f}{high / 1e6:8.0f}")
    return found


def sharp_peak(folder: Path, item: corpus.Item, op: Op) -> tuple[int, int]:
    small = folder / "warmup.jpg"
    small.write_bytes(_small_jpeg())
    sharp = Sharp(folder, [str(small), str(item.path.resolve())], 1)
    try:
        sharp.run([0], op=op)
        resting, _ = sharp.resident(reset=True)
        sharp.run([1], op=op)
        _, high = sharp.resident()
    finally:
        sharp.close()
    return max(0, high - resting), high


def _small_jpeg() -> bytes:
    out = io.BytesIO()
    corpus.photo_like(64, 48, 1).save(out, "JPEG", quality=90)
    return out.getvalue()


# -- the run ---------------------------------------------------------------------------------


def run(
    items: Sequence[corpus.Item],
    *,
    processes: int,
    count: int,
    repeats: int,
    sharp_folder: Path | None,
    inflight: int,
    box: int,
    parts: Sequence[str],
    say: Callable[[str], None],
    encode_groups: Sequence[str] = ENCODE_GROUPS,
) -> Findings:
    """The `parts` asked for (of PARTS), their lines and targets."""
    encode_set = [i for i, item in enumerate(items) if item.spec.group in encode_groups]
    largest = max(item.spec.megapixels for item in items)
    photos = [i for i, item in enumerate(items) if item.spec.megapixels >= largest * 0.99]
    paths = [str(item.path.resolve()) for item in items]
    result = Findings()
    sharp: Sharp | None = None
    try:
        if sharp_folder is not None:
            sharp = Sharp(sharp_folder, paths, inflight)
        with python_pool(paths, processes) as pool:
            bench = Bench(pool, sharp, items, count, say)
            encoded = Findings()
            if "encode" in parts:
                encoded = encode_part(bench, encode_set * repeats, encode_groups)
            # twice the files per batch: a 12 MP batch is short, and timing it longer steadies it
            resized = resize_part(bench, photos * 2 * repeats, box) if "resize" in parts else None
    finally:
        if sharp is not None:
            sharp.close()
    for part in (encoded, resized):
        if part is not None:
            result.lines += part.lines
            result.targets += part.targets
            result.problems += part.problems
    if "memory" in parts:
        qualities = encoded.sharp_quality
        jpegs = [items[i] for i in encode_set if items[i].spec.fmt == "JPEG"]
        sample = max(jpegs, key=lambda item: item.spec.megapixels) if jpegs else items[0]
        memo = memory_part(sharp_folder, items[photos[0]], sample, box, qualities)
        result.lines += memo.lines
    return result


def dct_factors(items: Sequence[corpus.Item], repeats: int = 7) -> list[str]:
    """CPU time of simplejpeg's decode (our settings) at every DCT scale M/8, best of
    `repeats`, for the largest photos."""
    import simplejpeg  # type: ignore[import-untyped]  # noqa: PLC0415

    largest = max(item.spec.megapixels for item in items)
    lines = [f"{'photo':14}{'scale':>6}{'decoded':>12}{'CPU ms':>8}{'vs 8/8':>8}"]
    for item in items:
        if item.spec.megapixels < largest * 0.99 or item.spec.fmt != "JPEG":
            continue
        data = item.read()
        full = 0.0
        for m in range(8, 0, -1):
            width = -(-item.spec.width * m // 8)
            best = math.inf
            for _ in range(repeats):
                started = time.process_time()
                pixels = simplejpeg.decode_jpeg(
                    data, "RGBX", fastdct=False, fastupsample=False, min_width=width
                )
                best = min(best, time.process_time() - started)
            full = full or best
            size = f"{pixels.shape[1]}x{pixels.shape[0]}"
            lines.append(
                f"{item.spec.name:14}{f'{m}/8':>6}{size:>12}{best * 1000:8.1f}{best / full:8.2f}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cache", type=Path, default=corpus.DEFAULT_CACHE)
    parser.add_argument("--rounds", type=int, default=MIN_ROUNDS)
    parser.add_argument("--quick", action="store_true", help="each image once per batch")
    parser.add_argument("--workers", type=int, default=2, help="processes for Python")
    parser.add_argument("--inflight", type=int, default=4, help="sharp images in flight")
    parser.add_argument("--no-sharp", action="store_true", help="leave sharp out")
    parser.add_argument("--parts", default=",".join(PARTS), help="a subset of " + ",".join(PARTS))
    parser.add_argument("--box", type=int, default=BOX)
    parser.add_argument("--dct-factors", action="store_true", help="only the decode scales")
    args = parser.parse_args(argv)
    if args.rounds < MIN_ROUNDS:
        parser.error(f"--rounds must be at least {MIN_ROUNDS}")

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    items = corpus.build(args.cache, log=True)
    if args.dct_factors:
        print("\n".join(dct_factors(items)))
        return 0
    folder: Path | None = None
    note = "sharp: left out (--no-sharp)"
    if not args.no_sharp:
        try:
            folder = install(args.cache, SHARP_VERSION)
            note = f"sharp {SHARP_VERSION} on node, {args.inflight} images in flight, cache off"
        except SharpUnavailable as exc:
            note = f"sharp: unavailable ({exc}); its rows and targets are left out"
            say(note)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    try:
        findings = run(
            items,
            processes=args.workers,
            count=args.rounds,
            repeats=1 if args.quick else 2,
            sharp_folder=folder,
            inflight=args.inflight,
            box=args.box,
            parts=[p for p in args.parts.split(",") if p in PARTS],
            say=say,
        )
    except SharpUnavailable as exc:
        say(f"sharp failed ({exc}); run again with --no-sharp")
        return 1
    load_after = os.getloadavg()[0]
    print(_header(note, args.rounds, time.monotonic() - started))
    print("\n".join(findings.lines))
    print("\ntargets")
    print("\n".join(f"  {line}" for line in findings.targets))
    print(f"\nload average (1 min) before {load_before:.1f}, after {load_after:.1f}")
    if max(load_before, load_after) > (os.cpu_count() or 1) + 0.5:
        print("WARNING: the machine was busy with other work: rerun when idle")
    if findings.problems:
        print("CHECK FAILED:\n  " + "\n  ".join(findings.problems))
        return 1
    return 0


def _header(note: str, count: int, seconds: float) -> str:
    import PIL  # noqa: PLC0415
    from chalicelib import imaging  # noqa: PLC0415
    from chalicelib.domain.output_options import DEFAULT_QUALITY  # noqa: PLC0415
    from PIL import features  # noqa: PLC0415

    defaults = ", ".join(f"{f.value} q{q}" for f, q in DEFAULT_QUALITY.items())
    return "\n".join(
        [
            f"python -m benchmarks.formats: {platform.machine()} {os.cpu_count()} cpus, "
            f"Python {platform.python_version()}, {seconds:.0f} s",
            f"Pillow {PIL.__version__} (libwebp {features.version('webp')}, libavif "
            f"{features.version('avif')}, libjpeg-turbo {features.version('libjpeg_turbo')})",
            note,
            f"ours: {defaults}, WebP method {imaging.WEBP_METHOD}, AVIF speed "
            f"{imaging.AVIF_SPEED} ({imaging.AVIF_THREADS} thread); {count} rounds, "
            "engines in rotated order",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
