"""Bytes and SSIM against encode time for WebP and AVIF settings, on the benchmark corpus.

    python -m benchmarks.format_defaults [--quick] [--workers 2] [--cache .bench-cache]

What the per-format defaults (`domain/output_options.py` DEFAULT_QUALITY, `imaging.py`
AVIF_SPEED and WEBP_METHOD) and the time kept back per image (`imaging.py`
SECONDS_PER_MEGAPIXEL) were chosen from (docs/performance.md, "Output formats"). Every
corpus image is compressed at full size by the real `chalicelib.imaging.compress` at each
setting: WebP quality 40-90 at method 4 and 6, AVIF quality 30-70 at speed 6-10, quality
100 of each (the slowest a job may ask for), and JPEG at quality 50 (today's default) as the
reference. For each: the output bytes, the luma SSIM of the output against the pixels the
pipeline encoded (`benchmarks.ssim`), and the CPU time of the whole call (decode, convert,
encode; one encoder thread, so CPU time is the time an idle core would take, whatever else
runs on the machine). Images run in parallel on `--workers` processes; all settings of one
image run in one process, one after the other.

The rule that picks the defaults (`choose`): the same quality as today's JPEG default, for
fewer bytes. For each format and effort (WebP method, AVIF speed), the quality whose mean SSIM
equals JPEG q50's is interpolated between the two measured qualities around it, and so are
the bytes there. AVIF's speed is the fastest whose bytes at that SSIM are within
`BYTES_SLACK` of the best speed's; WebP's method likewise; an effort whose time kept back
would not let the worker finish its largest images (`MAX_ALLOWANCE`) is left out. The time
kept back per megapixel is the worst image's CPU time per megapixel over every quality
measured at the chosen effort, times JPEG's margin (0.08 s kept for 0.063 s measured).
The interpolated quality is then checked: every whole quality around it is measured at the
chosen effort, and the default is the lowest whose mean SSIM reaches JPEG q50's (`refine`;
libavif moves its quantizer every other quality step). `--from-json` prints the tables and
the choice again from a run's measures (and measures the check again).
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from benchmarks import corpus
from benchmarks._parent import die_with_parent
from benchmarks._workers import FUNCTIONS_DIR

JPEG_MARGIN = 0.08 / 0.063  # JPEG's allowance over its worst measured input
BYTES_SLACK = 0.03  # an effort within 3% of the best bytes is as good
# The most a format may keep back per megapixel: after a download attempt (DOWNLOAD_DEADLINE,
# 30 s), the largest images accepted (MAX_IMAGE_PIXELS, 50 MP) at the slowest quality, as
# many at once as the worker runs (IMAGE_WORKERS, 4) on its one vCPU, must end within a fresh
# invocation (Timeout 120 s, less the 5 s wrap-up margin): else such images are handed back
# until their row goes to the dead-letter queue.
MAX_ALLOWANCE = (120 - 5 - 30) / 50 / 4


@dataclass(frozen=True)
class Setting:
    format: str  # jpeg | webp | avif
    quality: int
    effort: int = 0  # WebP method, AVIF speed; 0 for JPEG

    @property
    def label(self) -> str:
        if self.format == "webp":
            return f"webp q{self.quality} method {self.effort}"
        if self.format == "avif":
            return f"avif q{self.quality} speed {self.effort}"
        return f"jpeg q{self.quality}"


@dataclass(frozen=True)
class Measure:
    image: str
    megapixels: float
    setting: Setting
    size: int
    seconds: float  # CPU time of the whole compress call
    ssim: float


def settings(quick: bool = False) -> list[Setting]:
    step = 10 if quick else 5
    out = [Setting("jpeg", 50)]
    for method in (4, 6):
        out += [Setting("webp", q, method) for q in range(40, 91, step)]
        out.append(Setting("webp", 100, method))
    for speed in range(6, 11):
        out += [Setting("avif", q, speed) for q in range(30, 71, step)]
        out.append(Setting("avif", 100, speed))
    return out


# -- inside a worker process -----------------------------------------------------------------


def _init() -> None:
    die_with_parent()
    if str(FUNCTIONS_DIR) not in sys.path:
        sys.path.insert(0, str(FUNCTIONS_DIR))


def measure_image(
    path: str, name: str, wanted: Sequence[Setting], repeats: int = 1
) -> list[Measure]:
    """Every setting on one image: bytes, CPU seconds (best of `repeats`), SSIM."""
    from chalicelib import imaging  # noqa: PLC0415
    from chalicelib.domain.output_options import OutputFormat  # noqa: PLC0415

    from benchmarks.ssim import luma, ssim_planes  # noqa: PLC0415

    data = Path(path).read_bytes()
    base = imaging.CompressOptions()
    reference = imaging.fitted_pixels(data, base)
    size = (reference.width, reference.height)
    target = luma(Image.frombytes("RGB", size, reference.data))
    megapixels = size[0] * size[1] / 1e6
    out: list[Measure] = []
    for setting in wanted:
        if setting.format == "webp":
            imaging.WEBP_METHOD = setting.effort
        elif setting.format == "avif":
            imaging.AVIF_SPEED = setting.effort
        options = imaging.CompressOptions(
            quality=setting.quality, format=OutputFormat(setting.format)
        )
        best = float("inf")
        result = None
        for _ in range(max(1, repeats)):
            started = time.process_time()
            result = imaging.compress(data, options)
            best = min(best, time.process_time() - started)
        assert result is not None
        with Image.open(io.BytesIO(result.data)) as decoded:
            score = ssim_planes(target, luma(decoded))
        out.append(Measure(name, megapixels, setting, len(result.data), best, score))
    return out


# -- arithmetic (pure, unit-tested) ----------------------------------------------------------


@dataclass(frozen=True)
class Row:
    setting: Setting
    size: int  # bytes over the corpus
    ssim: float  # mean over the images
    ms_per_mp: float  # CPU ms per megapixel over the corpus
    worst_ms_per_mp: float  # the slowest image's
    worst_image: str


def summarise(measures: Iterable[Measure]) -> list[Row]:
    by_setting: dict[Setting, list[Measure]] = {}
    for m in measures:
        by_setting.setdefault(m.setting, []).append(m)
    rows = []
    for setting, group in by_setting.items():
        megapixels = sum(m.megapixels for m in group)
        worst = max(group, key=lambda m: m.seconds / m.megapixels)
        rows.append(
            Row(
                setting,
                sum(m.size for m in group),
                statistics.fmean(m.ssim for m in group),
                1000 * sum(m.seconds for m in group) / megapixels,
                1000 * worst.seconds / worst.megapixels,
                worst.image,
            )
        )
    return rows


@dataclass(frozen=True)
class AtSsim:
    """Where a format at one effort reaches an SSIM: the quality and bytes interpolated
    between the two measured qualities around it, and its time there."""

    format: str
    effort: int
    quality: float
    size: float
    ms_per_mp: float


def at_ssim(rows: Sequence[Row], fmt: str, effort: int, target: float) -> AtSsim | None:
    """Interpolate (linearly in SSIM) the quality, bytes and time at which `fmt` at `effort`
    reaches `target`; None when its measured qualities do not span it."""
    curve = sorted(
        (r for r in rows if r.setting.format == fmt and r.setting.effort == effort),
        key=lambda r: r.setting.quality,
    )
    for low, high in itertools.pairwise(curve):
        if low.ssim <= target <= high.ssim and high.ssim > low.ssim:
            t = (target - low.ssim) / (high.ssim - low.ssim)

            def lerp(a: float, b: float, t: float = t) -> float:
                return a + t * (b - a)

            return AtSsim(
                fmt,
                effort,
                lerp(low.setting.quality, high.setting.quality),
                lerp(low.size, high.size),
                lerp(low.ms_per_mp, high.ms_per_mp),
            )
    return None


@dataclass(frozen=True)
class Choice:
    format: str
    effort: int
    quality: int
    reference_ssim: float
    candidates: tuple[AtSsim, ...]
    seconds_per_megapixel: float  # the allowance: worst image at this effort, with margin
    worst_ms_per_mp: float
    worst_label: str


def choose(rows: Sequence[Row], fmt: str, efforts: Sequence[int]) -> Choice | None:
    """The format's default: among the efforts whose allowance fits MAX_ALLOWANCE, the
    fastest within BYTES_SLACK of the fewest bytes at JPEG q50's SSIM, and the quality that
    reaches that SSIM (rounded up)."""
    reference = next(r for r in rows if r.setting == Setting("jpeg", 50))
    found = [a for e in efforts if (a := at_ssim(rows, fmt, e, reference.ssim)) is not None]
    allowed = [a for a in found if allowance(rows, fmt, a.effort)[0] <= MAX_ALLOWANCE]
    if not allowed:
        return None
    fewest = min(a.size for a in allowed)
    good = [a for a in allowed if a.size <= fewest * (1 + BYTES_SLACK)]
    pick = min(good, key=lambda a: a.ms_per_mp)
    seconds, worst = allowance(rows, fmt, pick.effort)
    return Choice(
        fmt,
        pick.effort,
        int(-(-pick.quality // 1)),
        reference.ssim,
        tuple(found),
        seconds,
        worst.worst_ms_per_mp,
        f"{worst.setting.label}, {worst.worst_image}",
    )


def allowance(rows: Sequence[Row], fmt: str, effort: int) -> tuple[float, Row]:
    """Seconds per megapixel to keep back for `fmt` at `effort`: its slowest image at any
    quality measured, with JPEG's margin (rounded up to 0.01 s); and that row."""
    at_effort = [r for r in rows if r.setting.format == fmt and r.setting.effort == effort]
    worst = max(at_effort, key=lambda r: r.worst_ms_per_mp)
    return _round_up(worst.worst_ms_per_mp / 1000 * JPEG_MARGIN, 0.01), worst


def refine(
    items: Sequence[corpus.Item], choice: Choice, workers: int, span: int = 7
) -> tuple[int, list[Row]]:
    """The lowest whole quality at the chosen effort whose mean SSIM reaches JPEG q50's,
    measured from just below the interpolated one (`choice.quality` when none in `span`
    does); and the rows measured."""
    start = max(1, choice.quality - 2)
    wanted = [Setting("jpeg", 50)]
    wanted += [Setting(choice.format, q, choice.effort) for q in range(start, start + span)]
    rows = summarise(run(items, wanted, workers))
    reached = [
        r.setting.quality
        for r in rows
        if r.setting.format == choice.format and r.ssim >= choice.reference_ssim
    ]
    return (min(reached) if reached else choice.quality), rows


def _round_up(value: float, step: float) -> float:
    return round(-(-value // step) * step, 10)


# -- the run ---------------------------------------------------------------------------------


def table(rows: Sequence[Row]) -> list[str]:
    reference = next(r for r in rows if r.setting == Setting("jpeg", 50))
    lines = [
        f"{'setting':24}{'bytes':>12}{'vs jpeg q50':>13}{'SSIM':>9}{'CPU ms/MP':>11}"
        f"{'worst':>9}  worst image"
    ]
    for r in rows:
        lines.append(
            f"{r.setting.label:24}{r.size:12,}{r.size / reference.size:13.3f}{r.ssim:9.4f}"
            f"{r.ms_per_mp:11.0f}{r.worst_ms_per_mp:9.0f}  {r.worst_image}"
        )
    return lines


def verdicts(rows: Sequence[Row]) -> list[str]:
    lines = []
    for fmt, efforts in (("webp", (4, 6)), ("avif", (6, 7, 8, 9, 10))):
        choice = choose(rows, fmt, efforts)
        if choice is None:
            lines.append(
                f"{fmt}: no effort reaches JPEG q50's SSIM within the time allowed: widen the sweep"
            )
            continue
        lines.append(f"{fmt} at JPEG q50's SSIM ({choice.reference_ssim:.4f}):")
        for a in choice.candidates:
            seconds, _ = allowance(rows, fmt, a.effort)
            lines.append(
                f"  effort {a.effort:2}: quality {a.quality:5.1f}, {a.size:12,.0f} bytes, "
                f"{a.ms_per_mp:6.0f} CPU ms/MP; allowance {seconds:.2f} s/MP"
                + ("" if seconds <= MAX_ALLOWANCE else f" > {MAX_ALLOWANCE:.2f}: too slow")
            )
        name = "method" if fmt == "webp" else "speed"
        lines.append(
            f"  chosen: {name} {choice.effort}, quality {choice.quality}; allowance "
            f"{choice.seconds_per_megapixel:.2f} s/MP (worst {choice.worst_ms_per_mp:.0f} "
            f"CPU ms/MP: {choice.worst_label})"
        )
    jpeg = [r for r in rows if r.setting.format == "jpeg"]
    if jpeg:
        worst = max(jpeg, key=lambda r: r.worst_ms_per_mp)
        lines.append(
            f"jpeg q50 worst {worst.worst_ms_per_mp:.0f} CPU ms/MP ({worst.worst_image}); "
            f"its allowance is 0.08 s/MP"
        )
    return lines


def run(
    items: Sequence[corpus.Item], wanted: Sequence[Setting], workers: int, repeats: int = 1
) -> list[Measure]:
    # the largest images first: the pool's last task is a short one
    order = sorted(items, key=lambda item: -item.spec.megapixels)
    jobs = [(str(i.path), i.spec.name, list(wanted), repeats) for i in order]
    if workers <= 0:  # in this process (the unit test)
        _init()
        return [m for job in jobs for m in measure_image(*job)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init) as pool:
        futures = [pool.submit(measure_image, *job) for job in jobs]
        return [m for f in futures for m in f.result()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cache", type=Path, default=corpus.DEFAULT_CACHE)
    parser.add_argument("--quick", action="store_true", help="qualities in steps of 10")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="best CPU time of N calls")
    parser.add_argument("--groups", default=",".join(corpus.GROUPS))
    parser.add_argument("--from-json", type=Path, help="a run's measures: no new measuring")
    args = parser.parse_args(argv)
    groups = set(args.groups.split(","))
    items = [i for i in corpus.build(args.cache, log=True) if i.spec.group in groups]
    if args.from_json is not None:
        rows = summarise(load(args.from_json))
        print("\n".join([*table(rows), "", *verdicts(rows)]))
    else:
        started = time.monotonic()
        measures = run(items, settings(args.quick), args.workers, args.repeats)
        rows = summarise(measures)
        megapixels = sum(i.spec.megapixels for i in items)
        print(
            f"python -m benchmarks.format_defaults: {len(items)} images, {megapixels:.0f} MP, "
            f"{time.monotonic() - started:.0f} s on {args.workers} processes"
        )
        print("\n".join([*table(rows), "", *verdicts(rows)]))
        record = [asdict(m) for m in measures]
        (args.cache / "format-defaults.json").write_text(json.dumps(record, indent=1))
    for fmt, efforts in (("webp", (4, 6)), ("avif", (6, 7, 8, 9, 10))):
        choice = choose(rows, fmt, efforts)
        if choice is None:
            continue
        quality, checked = refine(items, choice, args.workers)
        reference = choice.reference_ssim
        print(f"\n{fmt}: whole qualities around {choice.quality} (JPEG q50's SSIM {reference:.4f})")
        print("\n".join(table(checked)))
        print(f"{fmt} default: quality {quality}")
    return 0


def load(path: Path) -> list[Measure]:
    """Measures written by an earlier run (`.bench-cache/format-defaults.json`)."""
    raw: list[Mapping[str, object]] = json.loads(path.read_text())
    out = []
    for m in raw:
        setting = m["setting"]
        assert isinstance(setting, dict)
        out.append(
            Measure(
                str(m["image"]),
                float(str(m["megapixels"])),
                Setting(**setting),
                int(str(m["size"])),
                float(str(m["seconds"])),
                float(str(m["ssim"])),
            )
        )
    return out


if __name__ == "__main__":
    sys.exit(main())
