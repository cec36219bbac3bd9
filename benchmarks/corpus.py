"""A fixed, deterministic corpus of photo-like images for the benchmarks.

    python -m benchmarks.corpus [--cache .bench-cache]

Every image is made from a fixed seed: smooth colour gradients, soft shapes, mid-frequency
texture and fine sensor-like noise, so that JPEG codecs do the work a product photo asks of
them (flat colours would compress in no time and flatter every codec). JPEGs of 1, 3 and
12 megapixels are saved at quality 90 (4:2:0, like a camera), PNGs at 1 and 3 megapixels
(one with an alpha channel). Files are written once into `<cache>/corpus/` and reused; a file
whose bytes do not hash as the generator says is made again.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DEFAULT_CACHE = Path(".bench-cache")


@dataclass(frozen=True)
class Spec:
    """One corpus image: how to make it."""

    name: str
    width: int
    height: int
    seed: int
    fmt: str  # "JPEG" or "PNG"
    alpha: bool = False

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    @property
    def filename(self) -> str:
        return f"{self.name}.{'jpg' if self.fmt == 'JPEG' else 'png'}"

    @property
    def group(self) -> str:
        """The size class a report groups this image under."""
        if self.fmt == "PNG":
            return "PNG"
        return f"{round(self.megapixels):d}MP"


@dataclass(frozen=True)
class Item:
    """One generated corpus file."""

    spec: Spec
    path: Path

    def read(self) -> bytes:
        return self.path.read_bytes()


SPECS: tuple[Spec, ...] = (
    Spec("jpeg-1mp-a", 1152, 864, 101, "JPEG"),
    Spec("jpeg-1mp-b", 864, 1152, 102, "JPEG"),
    Spec("jpeg-1mp-c", 1200, 834, 103, "JPEG"),
    Spec("jpeg-1mp-d", 1000, 1000, 104, "JPEG"),
    Spec("jpeg-3mp-a", 2048, 1536, 301, "JPEG"),
    Spec("jpeg-3mp-b", 1536, 2048, 302, "JPEG"),
    Spec("jpeg-12mp-a", 4000, 3000, 1201, "JPEG"),
    Spec("jpeg-12mp-b", 3000, 4000, 1202, "JPEG"),
    Spec("png-1mp-rgb", 1152, 864, 501, "PNG"),
    Spec("png-1mp-rgba", 1000, 1000, 502, "PNG", alpha=True),
    Spec("png-3mp-rgb", 2048, 1536, 503, "PNG"),
)

GROUPS: tuple[str, ...] = ("1MP", "3MP", "12MP", "PNG")


def _smooth_field(
    rng: np.random.Generator, width: int, height: int, cells: int, amplitude: float
) -> np.ndarray:
    """Random colours on a coarse grid, upsampled bicubically: smooth gradients."""
    gw = max(2, cells)
    gh = max(2, round(cells * height / width))
    coarse = rng.uniform(-amplitude, amplitude, size=(gh, gw, 3)).astype(np.float32)
    bands = [
        Image.fromarray(coarse[:, :, c], mode="F").resize((width, height), Image.Resampling.BICUBIC)
        for c in range(3)
    ]
    return np.stack([np.asarray(b, dtype=np.float32) for b in bands], axis=2)


def _shapes(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Soft-edged ellipses, boxes and polygons, drawn at half size and upsampled."""
    hw, hh = max(1, width // 2), max(1, height // 2)
    layer = Image.new("RGBA", (hw, hh), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for _ in range(36):
        kind = int(rng.integers(0, 3))
        x0, y0 = int(rng.integers(0, hw)), int(rng.integers(0, hh))
        size = int(rng.integers(max(2, hw // 20), max(3, hw // 3)))
        red, green, blue = (int(v) for v in rng.integers(0, 256, size=3))
        colour = (red, green, blue, int(rng.integers(90, 230)))
        box = (x0 - size // 2, y0 - size // 3, x0 + size // 2, y0 + size // 3)
        if kind == 0:
            draw.ellipse(box, fill=colour)
        elif kind == 1:
            draw.rectangle(box, fill=colour)
        else:
            points = [
                (int(x0 + rng.integers(-size, size)), int(y0 + rng.integers(-size, size)))
                for _ in range(5)
            ]
            draw.polygon(points, fill=colour)
    return layer.resize((width, height), Image.Resampling.BICUBIC)


def photo_like(width: int, height: int, seed: int, alpha: bool = False) -> Image.Image:
    """A deterministic photo-like RGB (or RGBA) image of `width` x `height`."""
    rng = np.random.default_rng(seed)
    base = 128.0 + _smooth_field(rng, width, height, 4, 90.0)
    base += _smooth_field(rng, width, height, 48, 18.0)
    shapes = _shapes(rng, width, height)
    shape_px = np.asarray(shapes, dtype=np.float32)
    weight = shape_px[:, :, 3:4] / 255.0
    pixels = base * (1.0 - weight) + shape_px[:, :, :3] * weight
    # Fine grain: luminance-correlated noise, like a sensor at a middling ISO.
    grain = rng.standard_normal(size=(height, width, 1), dtype=np.float32) * 5.0
    chroma = rng.standard_normal(size=(height, width, 3), dtype=np.float32) * 2.0
    pixels += grain + chroma
    rgb = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")
    if not alpha:
        return rgb
    # A cut-out: opaque subject in an ellipse, soft edge, transparent around it.
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).ellipse(
        (width // 8, height // 10, width - width // 8, height - height // 10), fill=255
    )
    mask = mask.resize((max(1, width // 8), max(1, height // 8)), Image.Resampling.BILINEAR)
    mask = mask.resize((width, height), Image.Resampling.BICUBIC)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(mask)
    return rgba


def encode(spec: Spec) -> bytes:
    """The file bytes of `spec` (deterministic for a given Pillow / zlib / libjpeg build)."""
    image = photo_like(spec.width, spec.height, spec.seed, spec.alpha)
    out = io.BytesIO()
    if spec.fmt == "JPEG":
        image.save(out, "JPEG", quality=90, subsampling="4:2:0")
    else:
        image.save(out, "PNG", compress_level=6)
    return out.getvalue()


def build(
    cache: Path = DEFAULT_CACHE, specs: Sequence[Spec] = SPECS, log: bool = False
) -> list[Item]:
    """Make (or reuse) every corpus file under `cache/corpus/`; return them in `specs` order."""
    folder = cache / "corpus"
    folder.mkdir(parents=True, exist_ok=True)
    items: list[Item] = []
    for spec in specs:
        path = folder / spec.filename
        stamp = path.with_suffix(path.suffix + ".sha256")
        fresh = (
            path.exists()
            and stamp.exists()
            and hashlib.sha256(path.read_bytes()).hexdigest() == stamp.read_text().strip()
        )
        if not fresh:
            if log:
                print(f"making {path} ({spec.width}x{spec.height})", file=sys.stderr)
            data = encode(spec)
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
            stamp.write_text(hashlib.sha256(data).hexdigest() + "\n")
        items.append(Item(spec, path))
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    for item in build(args.cache, log=True):
        size = item.path.stat().st_size
        print(f"{item.path}  {item.spec.width}x{item.spec.height}  {size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
