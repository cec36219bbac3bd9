"""Code that runs inside `benchmarks.formats`' worker processes (spawned: clean imports).

A `Job` names one way of turning a corpus file into an output: our compressor (`compress`),
the pixels it would encode (`pixels`), or the baseline of the resizing target (Pillow's
`open` + full decode + LANCZOS `resize` to fit: `baseline`, and `baseline-jpeg` with the
same JPEG encode as ours after it). A task is a job and the index of a corpus file.
"""

from __future__ import annotations

import io
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from benchmarks._parent import die_with_parent
from benchmarks._workers import FUNCTIONS_DIR, own_peak_rss

KINDS = ("compress", "pixels", "baseline", "baseline-jpeg")


@dataclass(frozen=True)
class Job:
    kind: str
    format: str = "jpeg"
    quality: int | None = None  # None: the format's default (DEFAULT_QUALITY, JPEG 50)
    box: int | None = None  # fit inside box x box
    effort: int | None = None  # WebP method or AVIF speed instead of the shipped one

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown job kind {self.kind!r}")


_DATA: list[bytes] = []
_REFERENCE: dict[int, Any] = {}  # index -> luma plane of the pixels we encode at full size


def init(paths: tuple[str, ...]) -> None:
    """Pool initializer: the corpus files in memory, our code importable."""
    die_with_parent()
    if str(FUNCTIONS_DIR) not in sys.path:
        sys.path.insert(0, str(FUNCTIONS_DIR))
    _DATA[:] = [Path(p).read_bytes() for p in paths]
    _REFERENCE.clear()


def fit(width: int, height: int, box: int) -> tuple[int, int]:
    from chalicelib.imaging import fit_inside  # noqa: PLC0415

    return fit_inside(width, height, box, box)


def run(job: Job, data: bytes, keep: bool = True) -> tuple[bytes, int, int]:
    """The job's output (raw RGB bytes for the pixel jobs; empty unless `keep`) and size."""
    from chalicelib import imaging  # noqa: PLC0415
    from chalicelib.domain.output_options import (  # noqa: PLC0415
        JPEG_QUALITY,
        OutputFormat,
        OutputOptions,
    )

    fmt = OutputFormat(job.format)
    if job.kind in {"baseline", "baseline-jpeg"}:
        assert job.box is not None
        with Image.open(io.BytesIO(data)) as source:
            source.load()
            resized = source.resize(fit(*source.size, job.box), Image.Resampling.LANCZOS)
        with resized:
            if job.kind == "baseline":
                return (resized.tobytes() if keep else b""), resized.width, resized.height
            out = io.BytesIO()
            resized.save(out, "JPEG", quality=job.quality or 50, optimize=True)
            return out.getvalue(), resized.width, resized.height
    if job.effort is not None:
        if fmt is OutputFormat.WEBP:
            imaging.WEBP_METHOD = job.effort
        elif fmt is OutputFormat.AVIF:
            imaging.AVIF_SPEED = job.effort
    options = imaging.CompressOptions(
        quality=job.quality or OutputOptions(fmt).quality_or(JPEG_QUALITY),
        format=fmt,
        max_width=job.box,
        max_height=job.box,
    )
    if job.kind == "pixels":
        found = imaging.fitted_pixels(data, options, keep=keep)
    else:
        found = imaging.compress(data, options)
    return found.data, found.width, found.height


def task(job: Job, index: int) -> tuple[int, int, int, int, int, float]:
    """Run `job` on corpus file `index`: (output bytes, width, height, pid, peak RSS, CPU
    seconds the process spent on it, all its threads)."""
    started = time.process_time()
    out, width, height = run(job, _DATA[index], keep=False)
    return len(out), width, height, os.getpid(), own_peak_rss(), time.process_time() - started


def output(job: Job, index: int) -> tuple[bytes, int, int]:
    return run(job, _DATA[index])


def _reference(index: int) -> Any:
    """Luma of the pixels our compressor encodes from file `index` at full size (the source
    as the pipeline sees it: oriented, sRGB, flattened on white)."""
    from chalicelib import imaging  # noqa: PLC0415

    from benchmarks.ssim import luma  # noqa: PLC0415

    if index not in _REFERENCE:
        found = imaging.fitted_pixels(_DATA[index], imaging.CompressOptions())
        size = (found.width, found.height)
        _REFERENCE[index] = luma(Image.frombytes("RGB", size, found.data))
    return _REFERENCE[index]


def score(job: Job, index: int) -> tuple[int, float]:
    """(output bytes, SSIM against the source) of a full-size encoding job."""
    data, _, _ = run(job, _DATA[index])
    return len(data), score_encoded(index, data)


def score_encoded(index: int, data: bytes) -> float:
    """SSIM of an encoded full-size output of file `index` (ours or sharp's) against the
    source."""
    from benchmarks.ssim import luma, ssim_planes  # noqa: PLC0415

    with Image.open(io.BytesIO(data)) as decoded:
        return ssim_planes(_reference(index), luma(decoded))


def compare(a: Job, b: Job, index: int) -> float:
    """SSIM between the pixels of two pixel jobs on file `index`."""
    pixels_a, width_a, height_a = run(a, _DATA[index])
    return compare_raw(b, index, pixels_a, width_a, height_a)


def compare_raw(job: Job, index: int, raw: bytes, width: int, height: int) -> float:
    """SSIM between raw RGB pixels (sharp's) and a pixel job's on file `index`."""
    from benchmarks.ssim import ssim  # noqa: PLC0415

    pixels, w, h = run(job, _DATA[index])
    channels = len(raw) // (width * height)
    mode = {3: "RGB", 4: "RGBA"}[channels]
    with (
        Image.frombytes(mode, (width, height), raw) as other,
        Image.frombytes("RGB", (w, h), pixels) as mine,
    ):
        return ssim(other, mine)


def peak(job: Job, path: str, warmup: bytes) -> tuple[int, int]:
    """In a fresh process: (peak RSS above the resting RSS, peak RSS) in bytes of one run of
    `job` on the file at `path`, after a warm-up run on `warmup` (imports, first
    allocations) and with the peak reset (Linux's clear_refs) just before."""
    init((path,))
    run(job, warmup)
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        pass
    resting = _resident()
    run(job, _DATA[0], keep=False)
    high = own_peak_rss()
    return max(0, high - resting), high


def _resident() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
