"""Peak memory of one image, by output format and megapixels, against the worker's model.

    python -m benchmarks.memory [--sizes 1,3,12,25,50] [--formats jpeg,webp,avif]
                                [--inputs jpeg,png] [--box 1200] [--cache .bench-cache]

Each measurement runs in a fresh process (`--child`): it imports the worker's imaging, warms
the output format's encoder up on a small image, reads its resident set (`VmRSS`), resets
its peak (Linux's `/proc/self/clear_refs`), reads the input file and runs the worker's own
`imaging.compress` on it, then reads its peak (`VmHWM`): what the image cost above the
process at rest, input bytes included, C allocations (decoders, encoders) and Python's
alike. Neither `tracemalloc` (Python's allocations only) nor `ru_maxrss` (a spawned child
starts with its parent's) would do.

The inputs are photo-like images made once into `<cache>/memory/` (a `benchmarks.corpus`
photo at a sixteenth of the area, enlarged, with sensor-like grain for the JPEGs; PNGs stay
smooth, as a large PNG within the download cap is): JPEG quality 90 and PNG, of 1, 3, 12, 25
and 50 megapixels. With `--box N` each image is also made to fit N x N (the decode side's
cost: a JPEG decoded smaller, a PNG decoded whole).

Every row is set beside the worker's estimate for it (`chalicelib.image_memory.estimate`,
from the header before decoding: what the worker reserves); the verdict is PASS when the
estimate covers every measurement, and the figures of the model are chosen from these runs
(docs/performance.md, "Memory per image").
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks import corpus
from benchmarks._workers import FUNCTIONS_DIR

ROOT = Path(__file__).resolve().parent.parent
# Megapixels -> width x height (3:2 from 25 MP up, as a camera's)
SIZES: dict[int, tuple[int, int]] = {
    1: (1152, 864),
    3: (2048, 1536),
    12: (4000, 3000),
    25: (6120, 4080),
    50: (8640, 5760),
}
FORMATS = ("jpeg", "webp", "avif")
INPUTS = ("jpeg", "png")
MIB = 1024 * 1024


@dataclass(frozen=True)
class Measured:
    """One image's run in a fresh process."""

    output_format: str
    input_path: str
    box: int | None
    rest: int  # VmRSS before, bytes
    peak: int  # VmHWM after, bytes (reset before the image)
    estimate: int  # the worker's model, bytes
    decoded: int  # pixels decoded
    output: int  # pixels encoded
    input_bytes: int
    seconds: float

    @property
    def extra(self) -> int:
        return max(0, self.peak - self.rest)


# -- inputs ----------------------------------------------------------------------------------


def large_photo(width: int, height: int, seed: int, grain: bool) -> Image.Image:
    """A photo-like RGB image: `corpus.photo_like` at a sixteenth of the area, enlarged
    (BICUBIC), with luminance grain added band by band (a 50 MP image in float would take
    gigabytes)."""
    small = corpus.photo_like(max(64, width // 4), max(48, height // 4), seed)
    with small:
        image = small.resize((width, height), Image.Resampling.BICUBIC)
    if not grain:
        return image
    with image:
        pixels = np.array(image, dtype=np.uint8)
    rng = np.random.default_rng(seed)
    band = 256
    for top in range(0, height, band):
        rows = pixels[top : top + band]
        noise = rng.normal(0.0, 4.0, size=(rows.shape[0], width, 1)).astype(np.int16)
        rows[...] = np.clip(rows.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def input_file(cache: Path, kind: str, megapixels: int) -> Path:
    """The `kind` ("jpeg" or "png") input of `megapixels`, made once under `cache/memory/`."""
    width, height = SIZES[megapixels]
    folder = cache / "memory"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}-{megapixels}mp.{'jpg' if kind == 'jpeg' else 'png'}"
    if path.exists():
        return path
    print(f"making {path} ({width}x{height})", file=sys.stderr, flush=True)
    image = large_photo(width, height, 9000 + megapixels, grain=kind == "jpeg")
    out = io.BytesIO()
    with image:
        if kind == "jpeg":
            image.save(out, "JPEG", quality=90, subsampling="4:2:0")
        else:
            image.save(out, "PNG", compress_level=6)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(out.getvalue())
    tmp.replace(path)
    return path


# -- one measurement (in the child) -----------------------------------------------------------


def _status(field: str) -> int:
    from chalicelib.adapters.memory_budget import status_bytes  # noqa: PLC0415

    found = status_bytes(field)
    if found is None:
        raise RuntimeError(f"no {field} in /proc/self/status")
    return found


def _reset_peak() -> None:
    """VmHWM back to VmRSS (Linux 4.0+: writing 5 to clear_refs)."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
        refs.write("5")


def child(output_format: str, path: Path, box: int | None) -> dict[str, Any]:
    """Run in a fresh process: the image's cost above the process at rest."""
    if str(FUNCTIONS_DIR) not in sys.path:
        sys.path.insert(0, str(FUNCTIONS_DIR))
    from chalicelib import image_memory, imaging  # noqa: PLC0415
    from chalicelib.domain.output_options import OutputFormat, OutputOptions  # noqa: PLC0415

    fmt = OutputFormat(output_format)
    options = imaging.CompressOptions(
        quality=OutputOptions(format=fmt).quality_or(50),
        format=fmt,
        max_width=box,
        max_height=box,
    )
    warm = io.BytesIO()
    corpus.photo_like(64, 48, 1).save(warm, "JPEG", quality=90)
    imaging.compress(warm.getvalue(), options)
    planned: list[imaging.Planned] = []
    rest = _status("VmRSS")
    _reset_peak()
    data = path.read_bytes()
    started = time.perf_counter()

    def admit(plan: imaging.Planned) -> imaging.Planned:
        planned.append(plan)
        return plan

    imaging.compress(data, options, admit=admit)
    seconds = time.perf_counter() - started
    peak = _status("VmHWM")
    [plan] = planned
    return {
        "rest": rest,
        "peak": peak,
        "estimate": image_memory.estimate(plan),
        "decoded": plan.decoded[0] * plan.decoded[1],
        "output": plan.output[0] * plan.output[1],
        "input_bytes": plan.input_bytes,
        "seconds": seconds,
    }


def measure(output_format: str, path: Path, box: int | None) -> Measured:
    """`child` in a fresh interpreter."""
    command = [sys.executable, "-m", "benchmarks.memory", "--child", output_format, str(path)]
    if box is not None:
        command += ["--box", str(box)]
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        command, cwd=ROOT, capture_output=True, text=True, check=True
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return Measured(output_format, str(path), box, **found)


# -- the report ------------------------------------------------------------------------------


def report(rows: Sequence[Measured]) -> list[str]:
    lines = [
        f"  {'format':7}{'input':17}{'box':>6}{'MP':>6}{'MP out':>8}{'in MiB':>7}"
        f"{'MiB more':>9}{'peak MiB':>9}{'model MiB':>10}{'model/it':>9}{'s':>7}"
    ]
    for row in rows:
        lines.append(
            f"  {row.output_format:7}{Path(row.input_path).name:17}{row.box or '-':>6}"
            f"{row.decoded / 1e6:6.1f}{row.output / 1e6:8.1f}{row.input_bytes / MIB:7.1f}"
            f"{row.extra / MIB:9.0f}{row.peak / MIB:9.0f}{row.estimate / MIB:10.0f}"
            f"{row.estimate / max(1, row.extra):9.2f}{row.seconds:7.2f}"
        )
    return lines


def fitted(rows: Sequence[Measured]) -> list[str]:
    """Per output format, the least-squares bytes per output pixel and constant of the
    full-size rows (what the model's figures are chosen above)."""
    lines = []
    for fmt in FORMATS:
        full = [r for r in rows if r.output_format == fmt and r.box is None]
        if len(full) < 2:
            continue
        x = np.array([r.output for r in full], dtype=float)
        y = np.array([r.extra - r.input_bytes for r in full], dtype=float)
        slope, constant = np.polyfit(x, y, 1)
        worst = max(y / x)
        lines.append(
            f"  {fmt}: {slope:.1f} bytes per pixel + {round(constant / MIB)} MiB "
            f"(least squares, input bytes apart); worst {worst:.1f} bytes per pixel"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--inputs", default=",".join(INPUTS))
    parser.add_argument("--box", type=int, default=None, help="also fit each image in N x N")
    parser.add_argument("--cache", type=Path, default=corpus.DEFAULT_CACHE)
    parser.add_argument("--child", nargs=2, metavar=("FORMAT", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        found = child(args.child[0], Path(args.child[1]), args.box)
        print(json.dumps(found), flush=True)
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    formats = [f for f in args.formats.split(",") if f]
    kinds = [k for k in args.inputs.split(",") if k]
    boxes: list[int | None] = [None] if args.box is None else [None, args.box]
    print(
        f"peak memory per image, a fresh process each ({os.cpu_count()} cores, load "
        f"{os.getloadavg()[0]:.1f}): MiB more = VmHWM after the image - VmRSS at rest, "
        "input bytes included; model = the worker's estimate from the header"
    )
    rows: list[Measured] = []
    print(report(rows)[0], flush=True)
    for kind in kinds:
        for megapixels in sizes:
            path = input_file(args.cache, kind, megapixels)
            for fmt in formats:
                for box in boxes:
                    rows.append(measure(fmt, path, box))
                    print(report(rows[-1:])[-1], flush=True)
    print()
    print("\n".join(fitted(rows)))
    short = [r for r in rows if r.estimate < r.extra]
    verdict = "PASS" if not short else "FAIL"
    worst = min(r.estimate / max(1, r.extra) for r in rows)
    print("\ntargets")
    print(f"  the model covers every image (lowest model/measured {worst:.2f})  {verdict}")
    return 0 if not short else 1


if __name__ == "__main__":
    sys.exit(main())
