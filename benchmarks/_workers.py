"""Code that runs inside the benchmark's worker processes (spawned, so imports stay clean).

Each pool is started with one `Setup`: which engine, which corpus files to hold in memory and,
for our compressor, the variant to apply at start-up. A task is the index of one corpus file;
its answer is the output size and dimensions, so nothing large crosses the process boundary.
"""

from __future__ import annotations

import io
import os
import resource
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, JpegImagePlugin

from benchmarks._parent import die_with_parent

FUNCTIONS_DIR = Path(__file__).resolve().parent.parent / "functions"


@dataclass(frozen=True)
class Variant:
    """Our compressor with different process start-up or `save()` arguments.

    `save` entries are merged into the arguments of every JPEG save of the process (the
    pipeline's own `rgb.save(..., quality=..., optimize=...)` included), so the real
    `compress_to_jpeg` runs unchanged except for what is being measured.
    """

    key: str
    label: str
    blocks_max: int | None = None
    save: dict[str, Any] = field(default_factory=dict)
    decodermaxblock: int | None = None


@dataclass(frozen=True)
class Setup:
    engine: str  # "ours" or "simplejpeg"
    paths: tuple[str, ...]
    quality: int = 50
    variant: Variant | None = None


_DATA: list[bytes] = []
_RUN: Any = None


def _install_variant(variant: Variant) -> None:
    if variant.blocks_max is not None:
        Image.core.set_blocks_max(variant.blocks_max)  # type: ignore[attr-defined]
    if variant.decodermaxblock is not None:
        JpegImagePlugin.JpegImageFile.decodermaxblock = variant.decodermaxblock
    if variant.save:
        original = Image.SAVE["JPEG"]
        overrides = dict(variant.save)

        def save(im: Image.Image, fp: Any, filename: str | bytes) -> None:
            im.encoderinfo = {**im.encoderinfo, **overrides}
            original(im, fp, filename)

        Image.register_save("JPEG", save)


def init(setup: Setup) -> None:
    """Pool initializer: load the corpus into memory and prepare the engine."""
    global _RUN  # noqa: PLW0603 - one engine per worker process
    die_with_parent()
    if str(FUNCTIONS_DIR) not in sys.path:
        sys.path.insert(0, str(FUNCTIONS_DIR))
    _DATA[:] = [Path(p).read_bytes() for p in setup.paths]
    if setup.engine == "ours":
        from chalicelib.imaging import CompressOptions, compress_to_jpeg  # noqa: PLC0415

        if setup.variant is not None:
            _install_variant(setup.variant)
        options = CompressOptions(quality=setup.quality)

        def ours(data: bytes) -> tuple[bytes, int, int]:
            result = compress_to_jpeg(data, options)
            return result.data, result.width, result.height

        _RUN = ours
    elif setup.engine == "simplejpeg":
        import simplejpeg  # type: ignore[import-untyped]  # noqa: PLC0415

        quality = setup.quality

        def turbo(data: bytes) -> tuple[bytes, int, int]:
            # Pillow's settings: accurate (islow) DCT both ways, fancy upsampling, 4:2:0.
            pixels = simplejpeg.decode_jpeg(data, "RGB", fastdct=False, fastupsample=False)
            out = simplejpeg.encode_jpeg(
                pixels, quality=quality, colorspace="RGB", colorsubsampling="420", fastdct=False
            )
            return out, int(pixels.shape[1]), int(pixels.shape[0])

        _RUN = turbo
    else:
        raise ValueError(f"unknown engine {setup.engine!r}")


def task(index: int) -> tuple[int, int, int, int, int]:
    """Compress corpus file `index`.

    Answers (output bytes, width, height, worker pid, worker peak RSS in bytes so far).
    """
    out, width, height = _RUN(_DATA[index])
    pid, rss = peak_rss()
    return len(out), width, height, pid, rss


def task_tagged(work: tuple[int, str]) -> int:
    """Compress corpus file `index` with `tag` in its bytes (`benchmarks._distinct`), as the
    pipeline's image host serves it; answers the output's size."""
    from benchmarks._distinct import tagged  # noqa: PLC0415

    index, tag = work
    out, _, _ = _RUN(tagged(_DATA[index], tag))
    return len(out)


def output(index: int) -> bytes:
    """The compressed bytes of corpus file `index` (for the correctness checks)."""
    out, _, _ = _RUN(_DATA[index])
    data: bytes = out
    return data


def peak_rss() -> tuple[int, int]:
    """(pid, peak resident set size in bytes) of this worker process."""
    return os.getpid(), own_peak_rss()


def own_peak_rss() -> int:
    """Peak resident set size in bytes of this process's own memory.

    `getrusage`'s `ru_maxrss` survives `exec`: a spawned child starts with its parent's peak
    (measured: see docs/performance.md). Linux's `VmHWM` belongs to the process's address
    space, which `exec` replaces; `ru_maxrss` is the fallback.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def decoded(data: bytes) -> bytes:
    """The RGB pixels of a JPEG (decoded by Pillow), to compare outputs pixel for pixel."""
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB").tobytes()
