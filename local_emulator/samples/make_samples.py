"""Deterministic sample "photos" for the demo and the tests, drawn with Pillow alone.

Run `python -m local_emulator.samples.make_samples` to regenerate the shipped files in
`local_emulator/samples/` (`images/` and `products.csv`). The pictures are seeded, so a run
draws the same pixels every time; the encoded bytes can still differ between Pillow/libjpeg
builds, which is why the tests compare sizes and decodability, not bytes.

The inputs are saved at high quality (JPEG 92-94, WebP 92) so that the pipeline's quality-50
output is visibly smaller, as it would be for real product photos.
"""

from __future__ import annotations

import functools
import math
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageOps

SEED = 20240601
ORIENTATION_TAG = 0x0112
PLACEHOLDER = "{IMAGES_BASE}"
HERE = Path(__file__).resolve().parent

RGB = tuple[int, int, int]
Size = tuple[int, int]


@dataclass(frozen=True)
class Sample:
    """One shipped image: `size` is what the file's header says, `oriented_size` what a viewer
    shows (and what the pipeline outputs) once the EXIF orientation is applied."""

    name: str
    format: str
    mode: str
    size: Size
    oriented_size: Size
    frames: int = 1


SAMPLES: tuple[Sample, ...] = (
    Sample("hills-portrait.jpg", "JPEG", "RGB", (1600, 1200), (1200, 1600)),
    Sample("mug.jpg", "JPEG", "RGB", (1200, 800), (1200, 800)),
    Sample("lamp-cutout.png", "PNG", "RGBA", (800, 800), (800, 800)),
    Sample("meadow.webp", "WEBP", "RGB", (640, 480), (640, 480)),
    Sample("sunrise.gif", "GIF", "P", (240, 180), (240, 180), frames=3),
    Sample("catalogue-cmyk.jpg", "JPEG", "CMYK", (1024, 768), (1024, 768)),
)

PRODUCTS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "Ceramic Mug", ("mug.jpg", "lamp-cutout.png")),
    (2, "Hillside Poster", ("hills-portrait.jpg", "meadow.webp", "sunrise.gif")),
    (3, "Printed Catalogue", ("catalogue-cmyk.jpg",)),
    (4, "Desk Lamp", ("lamp-cutout.png",)),
    (5, "Morning Bundle", ("sunrise.gif", "mug.jpg", "catalogue-cmyk.jpg", "meadow.webp")),
)


# -- building blocks ---------------------------------------------------------------------


def _smooth_noise(rng: random.Random, size: Size, cells: int, octaves: int = 3) -> Image.Image:
    """Value noise in "L": random coarse grids upscaled smoothly and summed, centred on 128."""
    width, height = size
    total = Image.new("L", size, 128)
    amplitude = 1.0
    for octave in range(octaves):
        grid = cells * (2**octave)
        gw = max(2, grid * width // max(width, height))
        gh = max(2, grid * height // max(width, height))
        coarse = Image.frombytes("L", (gw, gh), rng.randbytes(gw * gh))
        layer = coarse.resize(size, Image.Resampling.BICUBIC)
        # Centre on 128 and weaken the finer octaves.
        layer = layer.point(lambda v, a=amplitude: round(128 + (v - 128) * a))
        total = ImageChops.add(total, layer, scale=1.0, offset=-128)
        amplitude *= 0.5
    return total


def _scaled(texture: Image.Image, strength: int) -> Image.Image:
    return texture.point(lambda v: 128 + (v - 128) * strength // 128)


def _grain(rng: random.Random, size: Size, strength: int) -> Image.Image:
    """Fine sensor-like grain in "L" centred on 128 (+-`strength`), drawn at half size."""
    half = (max(1, size[0] // 2), max(1, size[1] // 2))
    raw = Image.frombytes("L", half, rng.randbytes(half[0] * half[1]))
    return _scaled(raw, strength).resize(size, Image.Resampling.BILINEAR)


def _vertical_gradient(size: Size, top: RGB, bottom: RGB, mid: RGB | None = None) -> Image.Image:
    ramp = Image.linear_gradient("L").resize(size, Image.Resampling.BILINEAR)
    if mid is None:
        return ImageOps.colorize(ramp, black=top, white=bottom)
    return ImageOps.colorize(ramp, black=top, white=bottom, mid=mid)


def _horizontal_gradient(size: Size, left: RGB, right: RGB, mid: RGB) -> Image.Image:
    ramp = (
        Image.linear_gradient("L")
        .rotate(90, expand=True)
        .transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    )
    ramp = ramp.resize(size, Image.Resampling.BILINEAR)
    return ImageOps.colorize(ramp, black=left, white=right, mid=mid)


def _modulate(image: Image.Image, texture: Image.Image, strength: int) -> Image.Image:
    """Brighten or darken `image` by a texture centred on 128, scaled to +-`strength`."""
    scaled = _scaled(texture, strength).convert(image.mode)
    return ImageChops.add(image, scaled, scale=1.0, offset=-128)


def _soft_mask(
    size: Size, draw_shape: Callable[[ImageDraw.ImageDraw], object], blur: float
) -> Image.Image:
    mask = Image.new("L", size, 0)
    draw_shape(ImageDraw.Draw(mask))
    return mask.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else mask


def _fill_polygon(points: list[tuple[int, int]], draw: ImageDraw.ImageDraw) -> None:
    draw.polygon(points, fill=255)


def _ridge(rng: random.Random, width: int, base: float, amp: float) -> list[tuple[int, int]]:
    """A hill line: a few random sines plus jitter."""
    waves = [(rng.uniform(0.5, 3.0), rng.uniform(0, math.tau), rng.uniform(0.3, 1.0))]
    waves += [(rng.uniform(3.0, 9.0), rng.uniform(0, math.tau), rng.uniform(0.05, 0.2))]
    points = []
    for x in range(0, width + 8, 8):
        t = x / width
        y = base + amp * sum(w * math.sin(f * math.tau * t + p) for f, p, w in waves)
        points.append((x, round(y)))
    return points


# -- scenes --------------------------------------------------------------------------------


def landscape(
    rng: random.Random, size: Size, sun: tuple[float, float] = (0.7, 0.22)
) -> Image.Image:
    """Sky, a soft sun, three ranges of hills fading with distance, and a textured meadow."""
    width, height = size
    image = _vertical_gradient(size, (58, 112, 188), (236, 222, 200), mid=(142, 184, 226))
    clouds = _smooth_noise(rng, size, cells=4, octaves=3).point(lambda v: max(0, v - 140) * 4)
    image = Image.composite(Image.new("RGB", size, (250, 250, 252)), image, clouds)
    sx, sy, r = sun[0] * width, sun[1] * height, 0.06 * min(size)
    glow = _soft_mask(size, lambda d: d.ellipse((sx - r, sy - r, sx + r, sy + r), fill=255), r)
    image = Image.composite(Image.new("RGB", size, (255, 244, 214)), image, glow)
    ranges = (
        (0.55, 0.06, (118, 146, 160), (150, 170, 176)),
        (0.66, 0.07, (78, 120, 86), (110, 146, 104)),
        (0.78, 0.06, (58, 104, 52), (122, 150, 70)),
    )
    for base, amp, top, bottom in ranges:
        ridge = _ridge(rng, width, base * height, amp * height)
        polygon = [*ridge, (width, height), (0, height)]
        mask = _soft_mask(size, functools.partial(_fill_polygon, polygon), 1.5)
        fill = _vertical_gradient(size, top, bottom)
        fill = _modulate(fill, _smooth_noise(rng, size, cells=24, octaves=2), 28)
        image = Image.composite(fill, image, mask)
    return _modulate(image, _grain(rng, size, strength=10), 128)


def product_on_table(rng: random.Random, size: Size, body: RGB) -> Image.Image:
    """A studio shot: warm wall, wooden table, a mug with cylindrical shading and a shadow."""
    width, height = size
    horizon = round(height * 0.62)
    image = _vertical_gradient(size, (226, 214, 196), (196, 180, 160))
    wood = _vertical_gradient((width, height - horizon), (150, 104, 66), (112, 74, 44))
    streaks = _smooth_noise(rng, (width // 16, height - horizon), cells=40, octaves=2)
    wood = _modulate(wood, streaks.resize(wood.size, Image.Resampling.BICUBIC), 50)
    image.paste(wood, (0, horizon))
    cx, cy = width * 0.5, horizon + (height - horizon) * 0.35
    bw, bh = width * 0.18, height * 0.42
    left, right, top, bottom = cx - bw / 2, cx + bw / 2, cy - bh, cy
    shadow = _soft_mask(
        size,
        lambda d: d.ellipse((left - bw * 0.1, bottom - 18, right + bw * 0.6, bottom + 26), 255),
        18,
    )
    image = Image.composite(
        Image.new("RGB", size, (60, 40, 26)), image, shadow.point(lambda v: v * 3 // 5)
    )
    span = round(right - left)
    dark: RGB = (max(0, body[0] - 90), max(0, body[1] - 90), max(0, body[2] - 90))
    edge: RGB = (max(0, body[0] - 60), max(0, body[1] - 60), max(0, body[2] - 60))
    light: RGB = (min(255, body[0] + 40), min(255, body[1] + 40), min(255, body[2] + 40))
    shaded = Image.new("RGB", size)
    shaded.paste(_horizontal_gradient((span, height), dark, edge, light), (round(left), 0))
    body_mask = _soft_mask(
        size,
        lambda d: d.rounded_rectangle((left, top, right, bottom), radius=bw * 0.12, fill=255),
        1,
    )
    image = Image.composite(shaded, image, body_mask)
    handle = _soft_mask(
        size,
        lambda d: d.ellipse(
            (right - bw * 0.15, top + bh * 0.2, right + bw * 0.35, top + bh * 0.7),
            outline=255,
            width=max(4, round(bw * 0.09)),
        ),
        1,
    )
    handle_colour: RGB = (max(0, body[0] - 50), max(0, body[1] - 50), max(0, body[2] - 50))
    image = Image.composite(Image.new("RGB", size, handle_colour), image, handle)
    rim = _soft_mask(
        size, lambda d: d.ellipse((left, top - bh * 0.04, right, top + bh * 0.04), fill=255), 1
    )
    image = Image.composite(Image.new("RGB", size, (64, 44, 30)), image, rim)
    return _modulate(image, _grain(rng, size, strength=8), 128)


def lamp_cutout(rng: random.Random, size: Size) -> Image.Image:
    """A desk lamp on a transparent background with a semi-transparent shadow (RGBA)."""
    width, height = size
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    shadow = _soft_mask(
        size,
        lambda d: d.ellipse((width * 0.22, height * 0.86, width * 0.78, height * 0.94), 255),
        14,
    )
    image.paste((20, 20, 20, 255), mask=shadow.point(lambda v: v // 2))
    brass = _horizontal_gradient(size, (110, 80, 30), (150, 110, 40), (236, 200, 120))
    brass = _modulate(brass, _smooth_noise(rng, size, cells=30, octaves=2), 30)

    def draw_lamp(d: ImageDraw.ImageDraw) -> None:
        d.ellipse((width * 0.3, height * 0.82, width * 0.7, height * 0.9), fill=255)
        arm = (width * 0.5, height * 0.86, width * 0.42, height * 0.5, width * 0.6, height * 0.3)
        d.line(arm, fill=255, width=round(width * 0.03), joint="curve")
        shade = [
            (width * 0.5, height * 0.18),
            (width * 0.72, height * 0.12),
            (width * 0.84, height * 0.36),
            (width * 0.62, height * 0.42),
        ]
        d.polygon(shade, fill=255)

    parts = _soft_mask(size, draw_lamp, 1.2)
    image.paste(brass.convert("RGBA"), mask=parts)
    bulb = _soft_mask(
        size,
        lambda d: d.ellipse((width * 0.66, height * 0.36, width * 0.78, height * 0.48), 255),
        10,
    )
    image.paste((255, 240, 190, 255), mask=bulb.point(lambda v: v * 4 // 5))
    return image


def sunrise_frames(rng: random.Random, size: Size, count: int) -> list[Image.Image]:
    """A tiny animation: the same hills while the sun rises."""
    base_state = rng.getstate()
    frames = []
    for index in range(count):
        rng.setstate(base_state)  # same hills and clouds in every frame
        sun = (0.3 + 0.1 * index, 0.45 - 0.12 * index)
        frame = landscape(rng, size, sun=sun)
        frames.append(frame.quantize(colors=64, method=Image.Quantize.MEDIANCUT))
    return frames


# -- files ---------------------------------------------------------------------------------


def _by_name(name: str) -> Sample:
    return next(s for s in SAMPLES if s.name == name)


def _orientation_exif(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = value
    return exif


def generate(out_dir: Path) -> list[Path]:
    """Write every sample image into `out_dir/images/` and `out_dir/products.csv`.

    Returns the written paths, images first (in `SAMPLES` order) then the CSV.
    """
    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def target(name: str) -> Path:
        path = images / name
        written.append(path)
        return path

    # A phone held upright: the sensor stores landscape pixels, EXIF orientation 6 says
    # "rotate 90 degrees clockwise to view", so the picture is portrait once oriented.
    spec = _by_name("hills-portrait.jpg")
    portrait = landscape(random.Random(SEED + 1), spec.oriented_size, sun=(0.68, 0.16))
    stored = portrait.transpose(Image.Transpose.ROTATE_90)
    assert stored.size == spec.size
    stored.save(target(spec.name), "JPEG", quality=92, exif=_orientation_exif(6))

    spec = _by_name("mug.jpg")
    mug = product_on_table(random.Random(SEED + 2), spec.size, body=(40, 96, 150))
    mug.save(target(spec.name), "JPEG", quality=93, progressive=True)

    spec = _by_name("lamp-cutout.png")
    lamp_cutout(random.Random(SEED + 3), spec.size).save(target(spec.name), "PNG", optimize=True)

    spec = _by_name("meadow.webp")
    meadow = landscape(random.Random(SEED + 4), spec.size, sun=(0.25, 0.2))
    meadow.save(target(spec.name), "WEBP", quality=92, method=4)

    spec = _by_name("sunrise.gif")
    frames = sunrise_frames(random.Random(SEED + 5), spec.size, spec.frames)
    frames[0].save(
        target(spec.name), "GIF", save_all=True, append_images=frames[1:], duration=400, loop=0
    )

    spec = _by_name("catalogue-cmyk.jpg")
    catalogue = product_on_table(random.Random(SEED + 6), spec.size, body=(176, 58, 44))
    catalogue.convert("CMYK").save(target(spec.name), "JPEG", quality=92)

    csv_path = out_dir / "products.csv"
    csv_path.write_text(products_csv(), encoding="utf-8", newline="")
    written.append(csv_path)
    return written


def products_csv() -> str:
    """The demo's input CSV (contract format); URLs start with the `{IMAGES_BASE}` placeholder."""
    lines = ["S. No.,Product Name,Input Image Urls"]
    for serial, name, files in PRODUCTS:
        urls = ",".join(f"{PLACEHOLDER}/{file}" for file in files)
        lines.append(f'{serial},{name},"{urls}"' if len(files) > 1 else f"{serial},{name},{urls}")
    return "\n".join(lines) + "\n"


def main() -> int:
    paths = generate(HERE)
    for path in paths:
        print(f"{path.stat().st_size:>9,}  {path.relative_to(HERE.parent.parent)}")
    print(f"{sum(p.stat().st_size for p in paths):>9,}  total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
