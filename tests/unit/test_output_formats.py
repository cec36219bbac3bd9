"""Output formats and boxes: WebP and AVIF outputs, a box fitted with the aspect kept, after
the EXIF orientation and never enlarging, shrink on load as good as a full decode, and the
default JPEG unchanged to the byte."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import pytest
from chalicelib import imaging
from chalicelib.config import Settings
from chalicelib.domain.budget import margin_for
from chalicelib.domain.output_options import OutputFormat
from chalicelib.imaging import (
    CompressOptions,
    compress,
    compress_to_jpeg,
    fit_inside,
    fitted_pixels,
    work_allowance,
)
from PIL import Image, ImageCms, ImageOps, JpegImagePlugin

from benchmarks import corpus
from benchmarks.ssim import ssim
from infra.cfn_yaml import load_template

ROOT = Path(__file__).resolve().parents[2]
FORMATS = list(OutputFormat)
PIL_NAMES = {OutputFormat.JPEG: "JPEG", OutputFormat.WEBP: "WEBP", OutputFormat.AVIF: "AVIF"}
RED = (230, 20, 20)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


@functools.cache
def photo(width: int = 1600, height: int = 1200, seed: int = 5) -> Image.Image:
    """A photo-like picture (gradients, shapes, grain) with a red block in its top-left
    corner, to see where the corner went."""
    image = corpus.photo_like(width, height, seed)
    image.paste(RED, (0, 0, width // 4, height // 4))
    return image


@functools.cache
def photo_jpeg(width: int = 1600, height: int = 1200, orientation: int = 1) -> bytes:
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    return encode(photo(width, height), "JPEG", quality=90, exif=exif)


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def baseline(data: bytes, box: tuple[int | None, int | None]) -> Image.Image:
    """What the issue measures against: Pillow's open, a full decode, the orientation, and a
    LANCZOS resize to fit."""
    with Image.open(io.BytesIO(data)) as source:
        source.load()
        oriented = ImageOps.exif_transpose(source).convert("RGB")
    return oriented.resize(fit_inside(*oriented.size, *box), Image.Resampling.LANCZOS)


def pixels(found: imaging.Compressed) -> Image.Image:
    return Image.frombytes("RGB", (found.width, found.height), found.data)


# -- formats -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_is_encoded_as_itself_at_the_images_size(fmt: OutputFormat) -> None:
    found = compress(photo_jpeg(320, 240), CompressOptions(format=fmt))
    assert (found.content_type, found.extension) == (fmt.content_type, fmt.extension)
    with opened(found.data) as image:
        assert image.format == PIL_NAMES[fmt]
        assert image.size == (320, 240) == (found.width, found.height)
        assert image.mode == "RGB"
    assert ssim(opened(found.data), photo(320, 240)) > 0.6  # the same picture


@pytest.mark.parametrize("fmt", [OutputFormat.WEBP, OutputFormat.AVIF])
def test_quality_changes_the_bytes(fmt: OutputFormat) -> None:
    source = photo_jpeg(320, 240)
    low = compress(source, CompressOptions(format=fmt, quality=30))
    high = compress(source, CompressOptions(format=fmt, quality=80))
    assert len(low.data) < 0.8 * len(high.data)
    assert ssim(opened(low.data), photo(320, 240)) < ssim(opened(high.data), photo(320, 240))
    assert (low.quality, high.quality) == (30, 80)  # a fixed job reports its own quality
    assert low.score is None and high.score is None  # and no score: only `auto` measures


@pytest.mark.parametrize("fmt", [OutputFormat.WEBP, OutputFormat.AVIF])
def test_webp_and_avif_carry_no_metadata(fmt: OutputFormat) -> None:
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"  # Make
    exif[0x0112] = 1
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = encode(photo(240, 160), "JPEG", quality=90, exif=exif, icc_profile=srgb)
    with opened(compress(source, CompressOptions(format=fmt)).data) as image:
        assert not image.info.get("exif")
        assert not image.info.get("icc_profile")
        assert not image.info.get("xmp")
        assert not image.getexif()


@pytest.mark.parametrize("fmt", [OutputFormat.WEBP, OutputFormat.AVIF])
def test_webp_and_avif_flatten_transparency_on_white(fmt: OutputFormat) -> None:
    image = Image.new("RGBA", (64, 48), (0, 0, 0, 0))
    image.paste((200, 20, 20, 255), (0, 0, 32, 48))
    with opened(compress(encode(image, "PNG"), CompressOptions(format=fmt)).data) as out:
        assert out.mode == "RGB"
        assert out.getpixel((56, 24)) == pytest.approx((255, 255, 255), abs=12)


def test_a_webp_output_fits_webps_largest_side() -> None:
    wide = encode(Image.new("RGB", (17_000, 20), (90, 120, 150)), "PNG")
    found = compress(wide, CompressOptions(format=OutputFormat.WEBP))
    assert (found.width, found.height) == (16_383, 19)
    with opened(found.data) as image:
        assert image.size == (16_383, 19)


# -- the box -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "box", "expected"),
    [
        ((1600, 1200), (300, None), (300, 225)),
        ((1600, 1200), (None, 300), (400, 300)),
        ((1600, 1200), (300, 300), (300, 225)),
        ((1200, 1600), (300, 300), (225, 300)),
        ((1600, 1200), (300, 1000), (300, 225)),
        ((1600, 1200), (1000, 300), (400, 300)),
        ((1001, 1000), (500, None), (500, 500)),  # 499.5 rounds up
        ((1000, 10), (100, 100), (100, 1)),
        ((10_000, 3), (100, None), (100, 1)),  # never less than a pixel
        ((200, 150), (1000, 1000), (200, 150)),  # never enlarged
        ((200, 150), (200, 150), (200, 150)),
        ((200, 150), (None, None), (200, 150)),
    ],
)
def test_fit_inside(
    size: tuple[int, int], box: tuple[int | None, int | None], expected: tuple[int, int]
) -> None:
    assert fit_inside(*size, *box) == expected


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("box", "expected"),
    [((300, None), (300, 225)), ((None, 300), (400, 300)), ((300, 300), (300, 225))],
)
def test_the_output_fits_the_box_with_its_aspect_kept(
    fmt: OutputFormat, box: tuple[int | None, int | None], expected: tuple[int, int]
) -> None:
    options = CompressOptions(format=fmt, max_width=box[0], max_height=box[1])
    found = compress(photo_jpeg(), options)
    assert (found.width, found.height) == expected
    with opened(found.data) as image:
        assert image.size == expected
        assert image.format == PIL_NAMES[fmt]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("box", [(1000, 1000), (1000, None), (None, 151)])
def test_a_small_image_in_a_large_box_is_not_enlarged(
    fmt: OutputFormat, box: tuple[int | None, int | None]
) -> None:
    source = photo_jpeg(200, 150)
    options = CompressOptions(format=fmt, max_width=box[0], max_height=box[1])
    found = compress(source, options)
    assert (found.width, found.height) == (200, 150)
    # not resampled at all: the same bytes as without a box
    assert found.data == compress(source, CompressOptions(format=fmt)).data


@pytest.mark.parametrize("orientation", [6, 8, 5, 7])
def test_the_box_applies_to_the_oriented_image(orientation: int) -> None:
    """Stored 1600 x 1200 turned a quarter by its EXIF: a 1200 x 1600 portrait, fitted
    inside 300 wide as a portrait."""
    found = compress(photo_jpeg(orientation=orientation), CompressOptions(max_width=300))
    assert (found.width, found.height) == (300, 400)
    expected = baseline(photo_jpeg(orientation=orientation), (300, None))
    assert ssim(opened(found.data), expected) > 0.9  # turned the same way as Pillow turns it


def test_a_turned_photo_keeps_its_corner_where_the_orientation_puts_it() -> None:
    found = compress(photo_jpeg(orientation=6), CompressOptions(max_width=300))
    with opened(found.data) as image:  # 90 degrees clockwise: the top-left block is top-right
        assert image.getpixel((300 - 20, 20)) == pytest.approx(RED, abs=40)
        assert image.getpixel((20, 20)) != pytest.approx(RED, abs=40)


def test_a_png_with_an_orientation_is_fitted_after_turning() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    source = encode(photo(400, 300), "PNG", exif=exif)
    found = compress(source, CompressOptions(format=OutputFormat.WEBP, max_height=200))
    assert (found.width, found.height) == (150, 200)


# -- shrink on load ----------------------------------------------------------------------------


@pytest.mark.skipif(imaging.simplejpeg is None, reason="simplejpeg is not installed")
@pytest.mark.parametrize(
    ("box", "eighths"), [(150, 1), (300, 2), (500, 3), (700, 4), (1000, 8), (1599, 8)]
)
def test_a_jpeg_for_a_small_box_is_decoded_small(
    box: int, eighths: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decoder scales the DCT to the smallest of 1/8, 2/8, 3/8 and 4/8 that keeps the
    image at least as large as the box (5/8 to 7/8 cost about a full decode: never): one
    decode, in the same one-call path as full size."""
    calls: list[tuple[int, int]] = []
    real = imaging.simplejpeg.decode_jpeg

    def spied(*args: object, **kwargs: object) -> object:
        array = real(*args, **kwargs)
        calls.append((int(array.shape[1]), int(array.shape[0])))
        return array

    monkeypatch.setattr(imaging.simplejpeg, "decode_jpeg", spied)
    found = compress(photo_jpeg(), CompressOptions(max_width=box, max_height=box))
    assert calls == [(1600 * eighths // 8, 1200 * eighths // 8)]
    assert (found.width, found.height) == fit_inside(1600, 1200, box, box)


@pytest.mark.parametrize("box", [150, 300, 500, 700, 1200])
@pytest.mark.parametrize("turbo", [True, False])
def test_shrink_on_load_is_as_good_as_a_full_decode(
    box: int, turbo: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against the baseline (a full decode and one LANCZOS resize), both decoders: libjpeg-
    turbo's one-call API and Pillow's (its draft mode)."""
    if not turbo:
        monkeypatch.setattr(imaging, "simplejpeg", None)
    source = photo_jpeg()
    found = fitted_pixels(source, CompressOptions(max_width=box, max_height=box))
    expected = baseline(source, (box, box))
    assert (found.width, found.height) == expected.size
    assert ssim(pixels(found), expected) >= 0.98


def test_a_greyscale_jpeg_is_shrunk_by_pillows_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    drafts: list[tuple[int, int]] = []
    real = JpegImagePlugin.JpegImageFile.draft

    def draft(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: object) -> object:
        result = real(self, mode, size)  # type: ignore[arg-type]
        drafts.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", draft)
    source = encode(photo().convert("L"), "JPEG", quality=90)
    found = fitted_pixels(source, CompressOptions(max_width=300))
    assert drafts == [(400, 300)]
    assert (found.width, found.height) == (300, 225)
    assert ssim(pixels(found), baseline(source, (300, None))) >= 0.98


def test_a_cameras_mpo_is_shrunk_on_load_too(monkeypatch: pytest.MonkeyPatch) -> None:
    drafts: list[tuple[int, int]] = []
    real = JpegImagePlugin.JpegImageFile.draft

    def draft(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: object) -> object:
        result = real(self, mode, size)  # type: ignore[arg-type]
        drafts.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", draft)
    out = io.BytesIO()
    photo(800, 600).save(out, "MPO", save_all=True, append_images=[Image.new("RGB", (800, 600))])
    found = compress(out.getvalue(), CompressOptions(max_width=100))
    assert found.source_format == "MPO" and drafts == [(100, 75)]
    with opened(found.data) as image:  # the first picture
        assert image.size == (100, 75)
        assert image.getpixel((5, 5)) == pytest.approx(RED, abs=40)


# -- the defaults ------------------------------------------------------------------------------


def before(data: bytes) -> bytes:
    """The compressor's output before output options, with Pillow alone: oriented, RGB,
    JPEG at quality 50 with optimised Huffman tables."""
    with Image.open(io.BytesIO(data)) as source:
        source.load()
        rgb = ImageOps.exif_transpose(source).convert("RGB")
    rgb.info.clear()
    return encode(rgb, "JPEG", quality=50, optimize=True)


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(lambda: photo_jpeg(640, 480), id="jpeg"),
        pytest.param(lambda: photo_jpeg(640, 480, orientation=6), id="jpeg turned"),
        pytest.param(lambda: encode(photo(300, 200), "PNG"), id="png"),
    ],
)
def test_default_options_give_the_jpeg_of_before_byte_for_byte(source: object) -> None:
    assert callable(source)
    data = source()
    assert compress(data, CompressOptions()).data == before(data)
    assert compress_to_jpeg(data, CompressOptions()).data == before(data)


def test_compress_to_jpeg_makes_a_jpeg_whatever_the_format_named() -> None:
    found = compress_to_jpeg(photo_jpeg(64, 48), CompressOptions(format=OutputFormat.AVIF))
    assert found.content_type == "image/jpeg" and found.data.startswith(b"\xff\xd8")


@pytest.mark.parametrize("kwargs", [{"max_width": 0}, {"max_height": -3}])
def test_box_options_are_validated(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        CompressOptions(**kwargs)  # type: ignore[arg-type]


def test_a_format_may_be_named_by_its_string() -> None:
    assert CompressOptions(format="webp").format is OutputFormat.WEBP  # type: ignore[arg-type]


# -- the time kept back ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_formats_allowance_lets_the_largest_image_start_in_a_fresh_worker(
    fmt: OutputFormat,
) -> None:
    """Otherwise an image of MAX_IMAGE_PIXELS would never start: its row would be handed back
    until it went to the dead-letter queue."""
    template = load_template(ROOT / "template.yaml")
    timeout = float(template["Resources"]["WorkerFunction"]["Properties"]["Timeout"])
    settings = Settings()
    needed = settings.download_deadline + work_allowance(settings.max_image_pixels, fmt)
    assert needed <= timeout - margin_for(timeout)
