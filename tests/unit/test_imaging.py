"""Behaviour of `chalicelib.imaging`: bytes of any kind in, an RGB JPEG or a coded failure out."""

from __future__ import annotations

import csv
import io
import json
import struct
import threading
import zlib
from pathlib import Path

import pytest
from chalicelib import imaging
from chalicelib.domain.models import ImageErrorCode
from chalicelib.errors import ImageFailure
from chalicelib.imaging import FORMATS, Compressed, CompressOptions, compress_to_jpeg
from PIL import Image, ImageCms, ImageFile, JpegImagePlugin

from local_emulator.samples import make_samples
from local_emulator.samples.make_samples import SAMPLES, generate

OPTIONS = CompressOptions()
RED = (220, 30, 30)
WHITE = (255, 255, 255)
SAMPLES_DIR = Path(make_samples.__file__).resolve().parent


# -- helpers ---------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def decode(result: Compressed) -> Image.Image:
    image = Image.open(io.BytesIO(result.data))
    image.load()
    return image


def close_to(pixel: object, expected: tuple[int, ...], tolerance: int = 24) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(int(a) - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


def failure(data: bytes, options: CompressOptions = OPTIONS) -> ImageErrorCode:
    with pytest.raises(ImageFailure) as caught:
        compress_to_jpeg(data, options)
    return caught.value.code


def photo(size: tuple[int, int] = (320, 240), seed: int = 7) -> Image.Image:
    import random

    return make_samples.landscape(random.Random(seed), size)


def truncated_png(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming `width` x `height`, then an IDAT chunk that
    announces 100 kB of pixel data but is cut off after a few bytes (a broken download)."""
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF)
    pixels = zlib.compress(b"\0" * 4096)[:16]
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr) - 4)
        + ihdr
        + crc
        + struct.pack(">I", 100_000)
        + b"IDAT"
        + pixels
    )


def swapped_primaries_icc() -> bytes:
    """A minimal ICC v2 RGB display profile whose red and green primaries are swapped.

    Pixels tagged with it that hold pure red really mean sRGB green, so a correct conversion
    to sRGB turns them green; ignoring the profile would leave them red.
    """

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + b"\0" * 4 + s15(x) + s15(y) + s15(z)

    text = b"Swapped primaries test\0"
    desc = (
        b"desc"
        + b"\0" * 4
        + struct.pack(">I", len(text))
        + text
        + b"\0" * 8  # unicode language and count
        + b"\0" * 3  # scriptcode code and count
        + b"\0" * 67
    )
    gamma = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, 0x0233) + b"\0\0"  # gamma 2.2
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.3851, 0.7169, 0.0971)),  # sRGB's green primary (D50)
        (b"gXYZ", xyz(0.4361, 0.2225, 0.0139)),  # sRGB's red primary (D50)
        (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
        (b"rTRC", gamma),
        (b"gTRC", gamma),
        (b"bTRC", gamma),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, data in tags:
        padded = data + b"\0" * (-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += padded
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + b"\0" * 4
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + b"\0" * 12
        + b"acsp"
        + b"\0" * 24
        + struct.pack(">I", 0)
        + s15(0.9642)
        + s15(1.0)
        + s15(0.8249)
        + b"\0" * 48
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


# -- output ------------------------------------------------------------------------------------


def test_output_is_an_rgb_jpeg_of_the_same_size() -> None:
    result = compress_to_jpeg(encode(photo(), "PNG"), OPTIONS)
    image = decode(result)
    assert image.format == "JPEG"
    assert image.mode == "RGB"
    assert image.size == (320, 240) == (result.width, result.height)
    assert result.source_format == "PNG"


def test_output_is_smaller_than_a_quality_95_input() -> None:
    source = encode(photo((640, 480)), "JPEG", quality=95)
    result = compress_to_jpeg(source, OPTIONS)
    assert len(result.data) < len(source) * 0.7
    assert result.source_format == "JPEG"


def test_quality_option_is_used() -> None:
    source = encode(photo(), "PNG")
    low = compress_to_jpeg(source, CompressOptions(quality=20))
    high = compress_to_jpeg(source, CompressOptions(quality=90))
    assert len(low.data) < len(high.data)


def test_metadata_is_stripped() -> None:
    exif = Image.Exif()
    exif[0x010F] = "Camera Maker"  # Make
    exif[0x0112] = 1
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = encode(
        photo(), "JPEG", quality=95, exif=exif, icc_profile=srgb, comment=b"secret comment"
    )
    assert Image.open(io.BytesIO(source)).info.get("exif")  # the input does carry them
    result = compress_to_jpeg(source, OPTIONS)
    info = decode(result).info
    assert "exif" not in info
    assert "icc_profile" not in info
    assert "comment" not in info
    assert b"Exif\0" not in result.data
    assert b"secret comment" not in result.data
    assert b"Camera Maker" not in result.data


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_gives_the_oriented_size(orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    source = encode(Image.new("RGB", (40, 20), RED), "JPEG", quality=95, exif=exif)
    result = compress_to_jpeg(source, OPTIONS)
    expected = (20, 40) if orientation >= 5 else (40, 20)
    assert (result.width, result.height) == expected
    assert decode(result).size == expected


def test_exif_orientation_turns_the_pixels() -> None:
    stored = Image.new("RGB", (80, 40), WHITE)
    stored.paste(RED, (0, 0, 40, 40))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # view rotated 90 degrees clockwise: the left half ends up on top
    result = compress_to_jpeg(encode(stored, "PNG", exif=exif), OPTIONS)
    image = decode(result)
    assert image.size == (40, 80)
    assert close_to(image.getpixel((20, 10)), RED)
    assert close_to(image.getpixel((20, 70)), WHITE)


# -- modes -------------------------------------------------------------------------------------


def test_rgba_is_flattened_on_white() -> None:
    image = Image.new("RGBA", (32, 16), (0, 0, 0, 0))  # fully transparent black
    image.paste((*RED, 255), (16, 0, 32, 16))
    result = decode(compress_to_jpeg(encode(image, "PNG"), OPTIONS))
    assert result.mode == "RGB"
    assert close_to(result.getpixel((4, 8)), WHITE, 8)
    assert close_to(result.getpixel((28, 8)), RED)


def test_half_transparent_pixels_blend_with_white() -> None:
    image = Image.new("RGBA", (16, 16), (0, 0, 0, 128))
    pixel = decode(compress_to_jpeg(encode(image, "PNG"), OPTIONS)).getpixel((8, 8))
    assert close_to(pixel, (127, 127, 127), 10)


def test_palette_with_transparency() -> None:
    image = Image.new("P", (32, 16), 0)
    image.putpalette([0, 0, 0, *RED] + [0] * (3 * 254))
    image.paste(1, (16, 0, 32, 16))
    source = encode(image, "PNG", transparency=0)
    assert Image.open(io.BytesIO(source)).mode == "P"
    result = decode(compress_to_jpeg(source, OPTIONS))
    assert close_to(result.getpixel((4, 8)), WHITE, 8)
    assert close_to(result.getpixel((28, 8)), RED)


def test_palette_without_transparency() -> None:
    image = photo().quantize(colors=32)
    result = decode(compress_to_jpeg(encode(image, "PNG"), OPTIONS))
    assert result.mode == "RGB" and result.size == (320, 240)


def test_greyscale_with_alpha() -> None:
    image = Image.new("LA", (32, 16), (0, 0))  # transparent black
    image.paste((0, 255), (16, 0, 32, 16))  # opaque black
    source = encode(image, "PNG")
    assert Image.open(io.BytesIO(source)).mode == "LA"
    result = decode(compress_to_jpeg(source, OPTIONS))
    assert result.mode == "RGB"
    assert close_to(result.getpixel((4, 8)), WHITE, 8)
    assert close_to(result.getpixel((28, 8)), (0, 0, 0), 8)


def test_greyscale_and_bilevel() -> None:
    for image in (Image.new("L", (16, 16), 100), Image.new("1", (16, 16), 1)):
        result = decode(compress_to_jpeg(encode(image, "PNG"), OPTIONS))
        assert result.mode == "RGB"
    assert close_to(result.getpixel((8, 8)), WHITE, 4)


def test_cmyk_jpeg() -> None:
    image = Image.new("CMYK", (48, 32), (0, 255, 255, 0))  # red ink
    source = encode(image, "JPEG", quality=95)
    assert Image.open(io.BytesIO(source)).mode == "CMYK"
    result = decode(compress_to_jpeg(source, OPTIONS))
    assert result.mode == "RGB" and result.size == (48, 32)
    assert close_to(result.getpixel((24, 16)), (255, 0, 0), 40)


@pytest.mark.parametrize(("value", "expected"), [(65535, 255), (32896, 128), (0, 0)])
def test_sixteen_bit_greyscale_png(value: int, expected: int) -> None:
    source = encode(Image.new("I;16", (16, 16), value), "PNG")
    assert Image.open(io.BytesIO(source)).mode.startswith("I")
    result = decode(compress_to_jpeg(source, OPTIONS))
    assert result.mode == "RGB"
    assert close_to(result.getpixel((8, 8)), (expected,) * 3, 4)


def test_sixteen_bit_tiff_and_float() -> None:
    tiff = encode(Image.new("I;16", (16, 16), 65535), "TIFF")
    assert close_to(decode(compress_to_jpeg(tiff, OPTIONS)).getpixel((8, 8)), WHITE, 4)
    floats = encode(Image.new("F", (16, 16), 0.5), "TIFF")
    assert close_to(decode(compress_to_jpeg(floats, OPTIONS)).getpixel((8, 8)), (128,) * 3, 4)


def test_animated_gif_keeps_the_first_frame() -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (30, 20), colour) for colour in colours]
    source = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert getattr(Image.open(io.BytesIO(source)), "n_frames", 1) == 3
    result = compress_to_jpeg(source, OPTIONS)
    assert result.source_format == "GIF" and (result.width, result.height) == (30, 20)
    assert close_to(decode(result).getpixel((15, 10)), (255, 0, 0), 30)


def test_animated_webp_keeps_the_first_frame() -> None:
    frames = [Image.new("RGB", (30, 20), c) for c in [(0, 0, 255), (255, 0, 0)]]
    source = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    result = decode(compress_to_jpeg(source, OPTIONS))
    assert close_to(result.getpixel((15, 10)), (0, 0, 255), 30)


def test_non_srgb_profile_is_converted_to_srgb() -> None:
    source = encode(
        Image.new("RGB", (16, 16), (255, 0, 0)), "PNG", icc_profile=swapped_primaries_icc()
    )
    assert Image.open(io.BytesIO(source)).info.get("icc_profile")
    result = decode(compress_to_jpeg(source, OPTIONS))
    red, green, blue = result.getpixel((8, 8))  # type: ignore[misc]
    assert green > 200 and red < 60 and blue < 60


def test_unusable_profile_falls_back_to_plain_conversion() -> None:
    source = encode(Image.new("RGB", (16, 16), RED), "PNG", icc_profile=b"not an icc profile")
    assert close_to(decode(compress_to_jpeg(source, OPTIONS)).getpixel((8, 8)), RED)


def test_srgb_profile_keeps_the_colours() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = encode(Image.new("RGB", (16, 16), RED), "JPEG", quality=95, icc_profile=srgb)
    assert close_to(decode(compress_to_jpeg(source, OPTIONS)).getpixel((8, 8)), RED)


# -- failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"<!doctype html><html><body>Not found</body></html>",
        json.dumps({"error": "not found"}).encode(),
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b'<rect width="10" height="10"/></svg>',
        b"just some text, nothing else\n" * 20,
        bytes(range(256)) * 4,
    ],
    ids=["empty", "html", "json", "svg", "text", "binary"],
)
def test_not_an_image(data: bytes) -> None:
    assert failure(data) == ImageErrorCode.NOT_AN_IMAGE


def test_formats_outside_the_allow_list_are_not_images() -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    assert failure(eps) == ImageErrorCode.NOT_AN_IMAGE


def test_too_many_pixels_with_a_small_limit() -> None:
    source = encode(Image.new("RGB", (20, 20), RED), "PNG")
    assert failure(source, CompressOptions(max_pixels=399)) == ImageErrorCode.TOO_MANY_PIXELS
    assert compress_to_jpeg(source, CompressOptions(max_pixels=400)).width == 20


@pytest.mark.parametrize(
    "size",
    [
        (8_000, 8_000),  # above our 50 MP limit, below Pillow's warning
        (9_500, 9_500),  # above Pillow's DecompressionBombWarning threshold
        (30_000, 30_000),  # above Pillow's DecompressionBombError threshold
    ],
)
def test_too_many_pixels_is_decided_from_the_header(size: tuple[int, int]) -> None:
    # No pixel data at all: decoding would fail, so the answer must come from the header.
    assert failure(truncated_png(*size)) == ImageErrorCode.TOO_MANY_PIXELS


def test_truncated_png_within_the_limit_fails_to_decode() -> None:
    assert failure(truncated_png(100, 100)) == ImageErrorCode.DECODE_FAILED


def test_limit_above_pillows_warning_threshold_is_honoured() -> None:
    big = CompressOptions(max_pixels=100_000_000)
    # 9500 x 9500 is within our limit: Pillow's warning must not turn it into too_many_pixels.
    assert failure(truncated_png(9_500, 9_500), big) == ImageErrorCode.DECODE_FAILED


def test_truncated_jpeg_fails_to_decode() -> None:
    source = encode(photo(), "JPEG", quality=95)
    assert failure(source[: len(source) // 2]) == ImageErrorCode.DECODE_FAILED


def test_truncated_progressive_jpeg_and_png_fail_to_decode() -> None:
    progressive = encode(photo(), "JPEG", quality=95, progressive=True)
    assert failure(progressive[: len(progressive) // 2]) == ImageErrorCode.DECODE_FAILED
    png = encode(photo(), "PNG")
    assert failure(png[: len(png) // 2]) == ImageErrorCode.DECODE_FAILED


def test_damaged_header_of_a_known_format_fails_to_decode() -> None:
    assert failure(b"\xff\xd8\xff\xe0" + b"\0" * 40) == ImageErrorCode.DECODE_FAILED
    assert failure(b"\x89PNG\r\n\x1a\n" + b"garbage" * 5) == ImageErrorCode.DECODE_FAILED


def test_truncated_images_are_refused_even_if_someone_allowed_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    source = encode(photo(), "JPEG", quality=95)
    assert failure(source[: len(source) // 2]) == ImageErrorCode.DECODE_FAILED
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_failure_carries_a_message() -> None:
    with pytest.raises(ImageFailure) as caught:
        compress_to_jpeg(b"<html></html>", OPTIONS)
    assert caught.value.message
    assert not caught.value.retryable


@pytest.mark.parametrize("kwargs", [{"quality": 0}, {"quality": 101}, {"max_pixels": 0}])
def test_options_are_validated(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        CompressOptions(**kwargs)


# -- shipped samples ---------------------------------------------------------------------------


def check_sample(path: Path, sample: make_samples.Sample) -> None:
    with Image.open(path) as image:
        assert image.format == sample.format
        assert image.mode == sample.mode
        assert image.size == sample.size
        assert getattr(image, "n_frames", 1) == sample.frames
        image.load()


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.name)
def test_shipped_sample_exists_and_compresses(sample: make_samples.Sample) -> None:
    path = SAMPLES_DIR / "images" / sample.name
    check_sample(path, sample)
    data = path.read_bytes()
    result = compress_to_jpeg(data, OPTIONS)
    assert (result.width, result.height) == sample.oriented_size
    assert len(result.data) < len(data)


def test_shipped_samples_stay_small() -> None:
    total = sum((SAMPLES_DIR / "images" / s.name).stat().st_size for s in SAMPLES)
    assert total < 1_500_000


def test_shipped_csv_references_the_samples() -> None:
    text = (SAMPLES_DIR / "products.csv").read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["S. No.", "Product Name", "Input Image Urls"]
    names = {s.name for s in SAMPLES}
    assert len(rows) >= 5
    assert any("," in row[2] for row in rows[1:])
    for row in rows[1:]:
        for url in row[2].split(","):
            assert url.startswith("{IMAGES_BASE}/")
            assert url.removeprefix("{IMAGES_BASE}/") in names
    assert text == make_samples.products_csv()


def test_generate_reproduces_the_samples(tmp_path: Path) -> None:
    paths = generate(tmp_path / "first")
    assert len(paths) == len(SAMPLES) + 1
    assert paths[-1] == tmp_path / "first" / "products.csv"
    for path, sample in zip(paths, SAMPLES, strict=False):
        assert path == tmp_path / "first" / "images" / sample.name
        check_sample(path, sample)
    # Seeded: a second run draws the same pictures.
    again = generate(tmp_path / "second")
    for first, second in zip(paths[:-1], again[:-1], strict=True):
        with Image.open(first) as a, Image.open(second) as b:
            assert a.tobytes() == b.tobytes()
    assert paths[-1].read_bytes() == again[-1].read_bytes()


def ycck_jpeg(cmyk: tuple[int, int, int, int]) -> bytes:
    """A flat YCCK JPEG (Adobe transform 2) whose decoded CMYK is `cmyk`.

    Pillow writes CMYK only (transform 0), so the samples handed to it are already the YCCK
    ones: YCbCr of the ink values taken as RGB, K as stored; Adobe files store every sample
    inverted. Then the transform byte of the APP14 segment is set to 2.
    """
    c, m, y, k = cmyk
    luma = 0.299 * c + 0.587 * m + 0.114 * y
    blue = 128 - 0.168736 * c - 0.331264 * m + 0.5 * y
    red = 128 + 0.5 * c - 0.418688 * m - 0.081312 * y
    stored = (round(luma), round(blue), round(red), 255 - k)
    pixel = (255 - stored[0], 255 - stored[1], 255 - stored[2], 255 - stored[3])
    data = bytearray(encode(Image.new("CMYK", (24, 16), pixel), "JPEG", quality=100))
    adobe = data.find(b"Adobe")
    assert adobe > 0 and data[adobe + 11] == 0
    data[adobe + 11] = 2
    return bytes(data)


@pytest.mark.parametrize(
    ("cmyk", "rgb"),
    [
        ((0, 255, 255, 0), (255, 0, 0)),
        ((255, 0, 0, 0), (0, 255, 255)),
        ((0, 0, 255, 0), (255, 255, 0)),
        ((0, 0, 0, 255), (0, 0, 0)),
        ((0, 0, 0, 0), (255, 255, 255)),
    ],
)
def test_ycck_jpeg(cmyk: tuple[int, int, int, int], rgb: tuple[int, int, int]) -> None:
    source = ycck_jpeg(cmyk)
    opened = Image.open(io.BytesIO(source))
    assert opened.mode == "CMYK" and opened.info.get("adobe_transform") == 2
    result = decode(compress_to_jpeg(source, OPTIONS))
    assert result.mode == "RGB" and result.size == (24, 16)
    assert close_to(result.getpixel((12, 8)), rgb, 12)


def test_mpo_keeps_the_first_picture() -> None:
    first = Image.new("RGB", (30, 20), (255, 0, 0))
    second = Image.new("RGB", (30, 20), (0, 0, 255))
    out = io.BytesIO()
    first.save(out, "MPO", save_all=True, append_images=[second])
    compressed = compress_to_jpeg(out.getvalue(), OPTIONS)
    assert compressed.source_format == "MPO"
    result = decode(compressed)
    assert result.size == (30, 20) and close_to(result.getpixel((15, 10)), (255, 0, 0), 12)


def test_the_security_doc_lists_the_formats_decoded() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "security.md"
    section = doc.read_text(encoding="utf-8").split("## Hostile input", 1)[1].split("\n## ", 1)[0]
    for name in (*FORMATS, "MPO"):
        assert f"`{name}`" in section, name


def test_optimised_huffman_tables_shrink_the_file_without_changing_a_pixel() -> None:
    source = io.BytesIO()
    photo((640, 480)).save(source, "JPEG", quality=95)
    plain = compress_to_jpeg(source.getvalue(), CompressOptions(optimize=False))
    optimised = compress_to_jpeg(source.getvalue(), CompressOptions())
    assert len(optimised.data) < 0.95 * len(plain.data)
    with Image.open(io.BytesIO(plain.data)) as a, Image.open(io.BytesIO(optimised.data)) as b:
        assert a.tobytes() == b.tobytes()


# -- libjpeg-turbo's one-call decode -----------------------------------------------------------


def _pillow_only(monkeypatch: pytest.MonkeyPatch, data: bytes, options: CompressOptions) -> bytes:
    """What the compressor writes when every JPEG goes through Pillow's own decoder."""
    with monkeypatch.context() as patch:
        patch.setattr(imaging, "simplejpeg", None)
        return compress_to_jpeg(data, options).data


def _jpeg_sources() -> dict[str, bytes]:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6
    big = photo((640, 480), seed=3)
    return {
        "baseline": encode(big, "JPEG", quality=90),
        "progressive": encode(big, "JPEG", quality=90, progressive=True),
        "odd size 4:4:4": encode(photo((333, 127)), "JPEG", quality=90, subsampling=0),
        "orientation 6": encode(big, "JPEG", quality=90, exif=exif),
        "sRGB profile": encode(big, "JPEG", quality=90, icc_profile=srgb),
        "other profile": encode(big, "JPEG", quality=90, icc_profile=swapped_primaries_icc()),
    }


@pytest.mark.skipif(imaging.simplejpeg is None, reason="simplejpeg is not installed")
@pytest.mark.parametrize("name", list(_jpeg_sources()))
@pytest.mark.parametrize("optimize", [True, False])
def test_turbo_decode_writes_the_bytes_pillows_decoder_would(
    name: str, optimize: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _jpeg_sources()[name]
    options = CompressOptions(optimize=optimize)
    calls: list[int] = []
    real = imaging.simplejpeg.decode_jpeg

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(imaging.simplejpeg, "decode_jpeg", counted)
    fast = compress_to_jpeg(source, options)
    assert calls == [1]  # the fast path ran
    assert fast.data == _pillow_only(monkeypatch, source, options)
    assert fast.source_format == "JPEG"


@pytest.mark.skipif(imaging.simplejpeg is None, reason="simplejpeg is not installed")
def test_jpeg_with_a_recoverable_flaw_is_left_to_pillows_decoder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """libjpeg warns about junk between markers; its one-call API refuses such a file in
    strict mode, and Pillow's decoder, which decodes it, decides instead."""
    clean = encode(photo((160, 120)), "JPEG", quality=90)
    sos = clean.index(b"\xff\xda")
    flawed = clean[:sos] + b"\x00\x00\x00" + clean[sos:]  # extraneous bytes before a marker
    with pytest.raises(ValueError):
        imaging.simplejpeg.decode_jpeg(flawed, "RGBX")
    result = compress_to_jpeg(flawed, OPTIONS)
    assert (result.width, result.height) == (160, 120)
    assert result.data == _pillow_only(monkeypatch, flawed, OPTIONS)


def test_greyscale_and_cmyk_jpegs_take_pillows_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError("the one-call decoder is only for colour JPEGs")

    if imaging.simplejpeg is not None:
        monkeypatch.setattr(imaging.simplejpeg, "decode_jpeg", refuse)
    for mode in ("L", "CMYK"):
        result = compress_to_jpeg(encode(Image.new(mode, (24, 16)), "JPEG"), OPTIONS)
        assert (result.width, result.height) == (24, 16)


@pytest.mark.skipif(imaging.simplejpeg is None, reason="simplejpeg is not installed")
def test_jpeg_encoder_reads_rgbx_pixels_in_place_on_this_build() -> None:
    compress_to_jpeg(encode(photo((64, 48)), "JPEG"), OPTIONS)
    assert imaging._rgbx_encoding_checked.is_set()
    assert JpegImagePlugin.RAWMODE["RGBX"] == "RGBX"


def test_rgbx_encoding_is_kept_off_when_the_probe_writes_other_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A libjpeg without the RGBX extension would read the pixels as CMYK: other bytes."""
    monkeypatch.setattr(imaging, "_rgbx_encoding_checked", threading.Event())
    monkeypatch.setitem(JpegImagePlugin.RAWMODE, "RGBX", "RGB")
    real_save = Image.SAVE["JPEG"]

    def other_bytes_in_place(im: Image.Image, fp: io.BytesIO, filename: str | bytes) -> None:
        real_save(im, fp, filename)
        if JpegImagePlugin.RAWMODE["RGBX"] == "RGBX":
            fp.write(b"not the same")

    monkeypatch.setitem(Image.SAVE, "JPEG", other_bytes_in_place)
    imaging._check_rgbx_encoding()
    assert imaging._rgbx_encoding_checked.is_set()
    assert JpegImagePlugin.RAWMODE["RGBX"] == "RGB"


def test_each_output_is_exactly_its_own_bytes_when_the_thread_reuses_its_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A thread writes every output over its previous one: a small image after a large one
    must not come back with the large one's tail."""
    large = encode(photo((800, 600), seed=1), "PNG")
    small = encode(photo((40, 30), seed=2), "PNG")
    first = compress_to_jpeg(large, OPTIONS).data
    second = compress_to_jpeg(small, OPTIONS).data
    assert len(second) < len(first)
    with monkeypatch.context() as patch:
        patch.delattr(imaging.os, "memfd_create", raising=False)
        assert compress_to_jpeg(small, OPTIONS).data == second
        assert compress_to_jpeg(large, OPTIONS).data == first
    assert second.endswith(b"\xff\xd9") and second.count(b"\xff\xd9") == 1
