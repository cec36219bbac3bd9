"""HEIC/HEIF and JPEG XL in (issue 27, item 4): decoded like every other format, into a JPEG
of the oriented size, turned once (by the decoder where the format says so, never again by
EXIF), in sRGB, a HEIF's primary image, the pixel cap read from the header before any pixel
is decoded, and damaged files `decode_failed`.

The HEIC files are written here by pillow-heif (a test-only dependency: the worker bundles
the decode-only pi-heif); the JPEG XL ones by the JPEG XL plugin, or kept in `jxl_files/`
where only libjxl's `cjxl` could write them (its README says how)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pillow_heif
import pytest
from chalicelib import heif_header, jxl_header, nclx_profile
from chalicelib.domain.models import ImageErrorCode
from chalicelib.errors import ImageFailure
from chalicelib.imaging import Compressed, CompressOptions, compress_to_jpeg
from PIL import Image, ImageOps
from pillow_jxl import JpegXLImagePlugin

from tests.unit.test_imaging import close_to, decode, encode, photo

JXL_FILES = Path(__file__).resolve().parent / "jxl_files"
RED, BLUE, GREEN, WHITE = (255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 255, 255)
# (60, 180, 90) in Display P3 is about (0, 183, 78) in sRGB (the standard P3-D65 to sRGB
# matrix on linear light, sRGB's transfer function both ways); left unconverted it stays put
P3_SOURCE, P3_IN_SRGB = (60, 180, 90), (0, 183, 78)


# -- helpers ---------------------------------------------------------------------------------


def halves() -> Image.Image:
    """64x32: the left half red, the right half blue (where it ends up shows the turn)."""
    image = Image.new("RGB", (64, 32), RED)
    image.paste(BLUE, (32, 0, 64, 32))
    return image


def exif_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def heic(image: Image.Image, **params: object) -> bytes:
    out = io.BytesIO()
    pillow_heif.from_pillow(image).save(out, quality=90, **params)
    return out.getvalue()


def jxl(image: Image.Image, **params: object) -> bytes:
    return encode(image, "JXL", **params)


def failure(data: bytes, options: CompressOptions | None = None) -> ImageFailure:
    with pytest.raises(ImageFailure) as caught:
        compress_to_jpeg(data, options or CompressOptions())
    return caught.value


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size
    pairs = zip(a.convert("RGB").tobytes(), b.convert("RGB").tobytes(), strict=True)
    return sum(abs(x - y) for x, y in pairs) / (3 * a.width * a.height)


def seen_as(orientation: int) -> Image.Image:
    """`halves()` as a viewer shows it under that EXIF orientation (Pillow's reading)."""
    stored = halves()
    stored.info["exif"] = exif_with_orientation(orientation)
    return ImageOps.exif_transpose(stored)


def assert_turned_like(result: Compressed, expected: Image.Image) -> None:
    """The output has `expected`'s size and, at the middle of each quarter, its colour."""
    output = decode(result)
    assert output.size == expected.size, (output.size, expected.size)
    width, height = output.size
    for x in (width // 4, 3 * width // 4):
        for y in (height // 4, 3 * height // 4):
            wanted = expected.getpixel((x, y))
            assert isinstance(wanted, tuple)
            assert close_to(output.getpixel((x, y)), wanted, 40), (x, y, output.getpixel((x, y)))


def display_p3_icc() -> bytes:
    """An ICC v2 display profile with Display P3's primaries (D50-adapted, as Apple's) and
    sRGB's transfer curve: what iPhones tag their HEICs with (packed by the module the nclx
    path uses; LittleCMS, which reads it, is the judge)."""
    columns = (
        (0.515102, 0.241196, -0.001053),
        (0.291965, 0.692236, 0.041883),
        (0.157153, 0.066574, 0.784378),
    )
    srgb = (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)  # as a parametric curve
    return nclx_profile.display_profile(
        "Display P3 (test)", columns, nclx_profile.parametric_curve(srgb)
    )


def jxl_header_bytes(width: int, height: int, *, animated: bool = False) -> bytes:
    """A bare JPEG XL codestream's first bytes claiming `width` x `height` (each written as a
    30-bit size), written bit by bit as 18181-1 packs them (least significant bit first)."""
    fields = [(0x0AFF, 16), (0, 1), (3, 2), (height - 1, 30), (0, 3), (3, 2), (width - 1, 30)]
    if animated:  # ImageMetadata: not all default, extra fields, orientation 1, no
        # intrinsic size, no preview, an animation
        fields += [(0, 1), (1, 1), (0, 3), (0, 1), (0, 1), (1, 1)]
    else:
        fields += [(1, 1)]  # ImageMetadata all default
    value, position = 0, 0
    for field, count in fields:
        value |= field << position
        position += count
    return value.to_bytes((position + 7) // 8, "little")


# -- HEIC/HEIF ---------------------------------------------------------------------------------


def test_a_heic_photo_becomes_a_jpeg_of_its_size() -> None:
    source = photo((320, 240))
    result = compress_to_jpeg(heic(source), CompressOptions())
    assert result.source_format == "HEIF" and result.content_type == "image/jpeg"
    output = decode(result)
    assert output.format == "JPEG" and output.size == (320, 240)
    assert mean_difference(output, source) < 8


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_heic_is_turned_by_its_transforms_once_not_again_by_exif(orientation: int) -> None:
    """As an iPhone writes it: the turn in an `irot` box and in EXIF. libheif applies the
    box; the EXIF orientation is not applied on top (that would turn it twice)."""
    data = heic(halves(), exif=exif_with_orientation(orientation))
    assert b"irot" in data
    stored = pillow_heif.open_heif(io.BytesIO(data)).info["exif"]
    exif = Image.Exif()
    exif.load(stored.removeprefix(b"Exif\0\0"))
    assert exif[0x0112] == orientation  # the file says it twice
    assert_turned_like(compress_to_jpeg(data, CompressOptions()), seen_as(orientation))


def test_a_turned_heic_fits_the_box_as_it_is_seen() -> None:
    data = heic(halves(), exif=exif_with_orientation(6))  # seen 32 wide, 64 high
    result = compress_to_jpeg(data, CompressOptions(max_width=16))
    assert (result.width, result.height) == (16, 32)


def test_a_heif_s_primary_image_is_decoded_not_its_first() -> None:
    first = Image.new("RGB", (40, 20), GREEN)
    primary = Image.new("RGB", (24, 48), BLUE)
    container = pillow_heif.from_pillow(first)
    container.add_from_pillow(primary)
    out = io.BytesIO()
    container.save(out, quality=90, primary_index=1)
    assert pillow_heif.open_heif(io.BytesIO(out.getvalue())).primary_index == 1
    output = decode(compress_to_jpeg(out.getvalue(), CompressOptions()))
    assert output.size == (24, 48) and close_to(output.getpixel((12, 24)), BLUE)


def test_a_display_p3_heic_comes_out_in_srgb() -> None:
    data = heic(Image.new("RGB", (32, 32), P3_SOURCE), icc_profile=display_p3_icc(), chroma=444)
    assert pillow_heif.open_heif(io.BytesIO(data)).info.get("icc_profile")
    output = decode(compress_to_jpeg(data, CompressOptions(quality=95)))
    assert close_to(output.getpixel((16, 16)), P3_IN_SRGB, 8), output.getpixel((16, 16))


def nclx_heic(primaries: int, transfer: int) -> bytes:
    """A flat P3_SOURCE HEIC whose colours are named by `nclx` code points, no ICC profile."""
    data = heic(
        Image.new("RGB", (32, 32), P3_SOURCE),
        chroma=444,
        color_primaries=primaries,
        transfer_characteristics=transfer,
        matrix_coefficients=6,
        full_range_flag=1,
    )
    info = pillow_heif.open_heif(io.BytesIO(data)).info
    assert "icc_profile" not in info and info["nclx_profile"]["color_primaries"] == primaries
    return data


@pytest.mark.parametrize(
    ("primaries", "transfer", "expected"),
    [
        (12, 13, P3_IN_SRGB),  # Display P3 by code points, as some Android phones write it
        (1, 13, P3_SOURCE),  # BT.709 primaries, sRGB's transfer: sRGB already, kept
        (2, 2, P3_SOURCE),  # unspecified: taken as sRGB
        (12, 16, P3_SOURCE),  # PQ (HDR): no display profile says it; left as decoded
    ],
)
def test_a_heic_named_by_nclx_comes_out_in_srgb(
    primaries: int, transfer: int, expected: tuple[int, int, int]
) -> None:
    output = decode(compress_to_jpeg(nclx_heic(primaries, transfer), CompressOptions(quality=95)))
    assert close_to(output.getpixel((16, 16)), expected, 8), output.getpixel((16, 16))


def test_the_nclx_profile_puts_p3_primaries_where_apple_s_display_p3_has_them() -> None:
    """The profile built for primaries 12 carries the D50-adapted primaries of Apple's
    Display P3 profile (to the 4th decimal), and an sRGB curve for transfer 13."""
    nclx = Image.open(io.BytesIO(nclx_heic(12, 13))).info["nclx_profile"]
    icc = nclx_profile.icc_for_nclx(nclx)
    assert icc is not None
    count = struct.unpack(">I", icc[128:132])[0]
    tags = {}
    for n in range(count):
        signature, offset, size = struct.unpack(">4sII", icc[132 + 12 * n : 144 + 12 * n])
        tags[signature] = icc[offset : offset + size]

    def xyz(tag: bytes) -> tuple[float, ...]:
        return tuple(v / 65536 for v in struct.unpack(">3i", tags[tag][8:20]))

    apple = {
        b"rXYZ": (0.515102, 0.241196, -0.001053),
        b"gXYZ": (0.291965, 0.692236, 0.041883),
        b"bXYZ": (0.157153, 0.066574, 0.784378),
    }
    for tag, wanted in apple.items():
        assert all(abs(a - b) < 1e-3 for a, b in zip(xyz(tag), wanted, strict=True)), tag
    assert tags[b"rTRC"].startswith(b"para")


def zeroed_pixels(data: bytes) -> bytes:
    """The HEIC with its coded pixels (the `mdat` box's content) all zeros: the header
    intact, nothing left that decodes."""
    at = data.index(b"mdat") - 4
    size = int.from_bytes(data[at : at + 4], "big")
    return data[: at + 8] + bytes(size - 8) + data[at + size :]


def test_a_heic_over_the_pixel_cap_is_refused_from_its_header_before_decoding() -> None:
    data = zeroed_pixels(heic(photo((320, 240))))
    # its pixels cannot be decoded: refusing it as too many pixels shows nothing was decoded
    assert failure(data).code is ImageErrorCode.DECODE_FAILED
    refused = failure(data, CompressOptions(max_pixels=320 * 240 - 1))
    assert refused.code is ImageErrorCode.TOO_MANY_PIXELS and "320x240" in str(refused)


def test_a_heic_at_the_pixel_cap_is_decoded() -> None:
    result = compress_to_jpeg(heic(photo((320, 240))), CompressOptions(max_pixels=320 * 240))
    assert (result.width, result.height) == (320, 240)


def test_a_heic_cropped_from_a_larger_stored_image_is_refused_before_decoding() -> None:
    """The size Pillow's opener reports is the clean aperture's crop; libheif decodes the
    whole stored image (`ispe`) first. Stored at 9000x9000 and shown at 64x48: refused."""
    data = heic(Image.new("RGB", (64, 48), RED))  # coded 64x64, cropped by `clap` to 64x48
    at = data.index(b"ispe") + 8  # after the box's header and its version and flags
    assert struct.unpack(">II", data[at : at + 8]) == (64, 64)
    huge = data[:at] + struct.pack(">II", 9000, 9000) + data[at + 8 :]
    with Image.open(io.BytesIO(huge)) as opened:
        assert opened.size == (64, 48)  # what a cap on the reported size would see
    assert heif_header.stored_pixels(huge) == 81_000_000
    refused = failure(huge)
    assert refused.code is ImageErrorCode.TOO_MANY_PIXELS and "81000000" in str(refused)


def heif_boxes(kind: bytes, item_data: bytes, ispe: tuple[int, int]) -> bytes:
    """A HEIF's boxes whose primary item (1) is of type `kind`, its data in `idat`, with an
    `ispe` of `ispe` (no coded pixels: enough for the box reader)."""

    def box(name: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", 8 + len(payload)) + name + payload

    def full(name: bytes, version: int, payload: bytes) -> bytes:
        return box(name, bytes([version, 0, 0, 0]) + payload)

    infe = full(b"infe", 2, struct.pack(">HH", 1, 0) + kind + b"\0")
    extent = struct.pack(">HHH", 1, 1, 0) + struct.pack(">HII", 1, 0, len(item_data))
    properties = box(b"ipco", full(b"ispe", 0, struct.pack(">II", *ispe)))
    meta = full(
        b"meta",
        0,
        full(b"pitm", 0, struct.pack(">H", 1))
        + full(b"iinf", 0, struct.pack(">H", 1) + infe)
        + full(b"iloc", 1, bytes([0x44, 0x00]) + struct.pack(">H", 1) + extent)
        + box(b"idat", item_data)
        + box(b"iprp", properties + full(b"ipma", 0, struct.pack(">IHBB", 1, 1, 1, 0x81))),
    )
    return box(b"ftyp", b"heic\0\0\0\0mif1heic") + meta


@pytest.mark.parametrize(
    ("kind", "item_data", "canvas"),
    [
        (b"grid", bytes([0, 0, 1, 1]) + struct.pack(">HH", 4032, 3024), 4032 * 3024),
        (b"grid", bytes([0, 1, 63, 63]) + struct.pack(">II", 32768, 32768), 32768 * 32768),
        (b"iovl", bytes([0, 0]) + bytes(8) + struct.pack(">HH", 20000, 10000), 200_000_000),
    ],
)
def test_a_grid_s_or_an_overlay_s_canvas_is_what_libheif_decodes(
    kind: bytes, item_data: bytes, canvas: int
) -> None:
    """A grid of tiles or an overlay is decoded into a canvas its own data declares, which its
    `ispe` may understate."""
    assert heif_header.stored_pixels(heif_boxes(kind, item_data, (64, 64))) == canvas


@pytest.mark.parametrize("cut", ["half", "header", "pixels zeroed"])
def test_a_damaged_heic_is_decode_failed(cut: str) -> None:
    data = heic(photo((64, 48)))
    damaged = {
        "half": data[: len(data) // 2],
        "header": data[:40],  # the ftyp box and the start of meta
        "pixels zeroed": zeroed_pixels(data),
    }[cut]
    assert failure(damaged).code is ImageErrorCode.DECODE_FAILED


def test_a_heic_branded_mif1_is_opened_by_heif_after_avif_refuses_it() -> None:
    """AVIF's opener accepts the generic `mif1` brand and comes first; it refuses the HEVC
    inside, and HEIF's opener decodes it."""
    data = heic(halves()).replace(b"ftypheic", b"ftypmif1", 1)
    result = compress_to_jpeg(data, CompressOptions())
    assert result.source_format == "HEIF" and (result.width, result.height) == (64, 32)


def test_a_video_s_iso_file_is_not_an_image() -> None:
    mp4 = b"\0\0\0\x18ftypisom\0\0\0\0isomiso2" + bytes(64)
    assert failure(mp4).code is ImageErrorCode.NOT_AN_IMAGE


@pytest.mark.parametrize("encoder", ["heic", "jxl"])
def test_transparency_is_flattened_on_white(encoder: str) -> None:
    image = Image.new("RGBA", (32, 32), (255, 0, 0, 0))  # clear red: white once flattened
    image.paste((0, 0, 255, 255), (0, 0, 16, 32))
    data = heic(image) if encoder == "heic" else jxl(image, lossless=True)
    output = decode(compress_to_jpeg(data, CompressOptions()))
    assert close_to(output.getpixel((8, 16)), BLUE) and close_to(output.getpixel((24, 16)), WHITE)


# -- JPEG XL -----------------------------------------------------------------------------------


def test_a_jxl_photo_becomes_a_jpeg_of_its_size() -> None:
    source = photo((320, 240))
    result = compress_to_jpeg(jxl(source, quality=90), CompressOptions())
    assert result.source_format == "JXL"
    output = decode(result)
    assert output.format == "JPEG" and output.size == (320, 240)
    assert mean_difference(output, source) < 8


def test_a_jxl_in_a_container_is_read_and_decoded() -> None:
    data = jxl(photo((100, 75)), lossless=True, use_container=True)
    assert data.startswith(jxl_header.CONTAINER_SIGNATURE)
    assert jxl_header.read_header(data) == jxl_header.JxlHeader(100, 75, 1, False)
    result = compress_to_jpeg(data, CompressOptions())
    assert (result.width, result.height) == (100, 75)


def test_a_jxl_is_turned_by_its_codestream_orientation_once() -> None:
    data = (JXL_FILES / "orientation6.jxl").read_bytes()
    assert jxl_header.read_header(data).orientation == 6
    assert_turned_like(compress_to_jpeg(data, CompressOptions()), seen_as(6))


def test_a_jxl_s_exif_orientation_is_not_applied() -> None:
    """JPEG XL's codestream orientation prevails (18181-2, as libjxl decodes): a file whose
    codestream says 1 and whose Exif box says 6 is shown as stored."""
    data = jxl(halves(), lossless=True, exif=exif_with_orientation(6))
    assert jxl_header.read_header(data).orientation == 1
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.getexif()[0x0112] == 6  # the plugin hands the EXIF over
    assert_turned_like(compress_to_jpeg(data, CompressOptions()), halves())


def test_a_jxl_that_rebuilds_a_jpeg_is_turned_by_that_jpeg_s_exif() -> None:
    """libjxl gives back the JPEG bit for bit, its pixels as stored: its EXIF turns it, as
    for any JPEG."""
    data = (JXL_FILES / "jpeg_orientation6.jxl").read_bytes()
    with Image.open(io.BytesIO(data)) as opened:
        assert getattr(opened, "jpeg", False) and opened.size == (64, 32)
    assert_turned_like(compress_to_jpeg(data, CompressOptions()), seen_as(6))


def test_a_display_p3_jxl_comes_out_in_srgb() -> None:
    data = (JXL_FILES / "display_p3.jxl").read_bytes()
    with Image.open(io.BytesIO(data)) as opened:
        assert close_to(opened.getpixel((8, 8)), P3_SOURCE, 2)  # stored in P3, profile beside
    output = decode(compress_to_jpeg(data, CompressOptions(quality=95)))
    assert close_to(output.getpixel((8, 8)), P3_IN_SRGB, 8), output.getpixel((8, 8))


class DecoderCalls:
    """The JPEG XL plugin's decoder, counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = JpegXLImagePlugin.Decoder

        def counted(*args: object, **kwargs: object) -> object:
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(JpegXLImagePlugin, "Decoder", counted)


def test_a_jxl_over_the_pixel_cap_is_refused_from_its_header_before_the_plugin_decodes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoder = DecoderCalls(monkeypatch)
    huge = jxl_header_bytes(60_000, 60_000) + bytes(4096)  # 3.6 GP claimed, nothing behind
    refused = failure(huge)
    assert refused.code is ImageErrorCode.TOO_MANY_PIXELS and "60000x60000" in str(refused)
    real = jxl(photo((320, 240)), quality=90)
    assert failure(real, CompressOptions(max_pixels=320 * 240 - 1)).code is (
        ImageErrorCode.TOO_MANY_PIXELS
    )
    assert decoder.calls == 0
    compress_to_jpeg(real, CompressOptions(max_pixels=320 * 240))
    assert decoder.calls == 1  # the count sees a decode when there is one


def test_an_animated_jxl_is_refused_as_decode_failed() -> None:
    """The plugin's libjxl decodes every frame into one buffer and leaves the last (blue
    here), not the first (red): the contract's first frame cannot be had, so it is refused."""
    data = (JXL_FILES / "animated.jxl").read_bytes()
    assert jxl_header.read_header(data).animated
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        assert close_to(opened.getpixel((15, 10)), BLUE, 2)  # why: revisit if this changes
    refused = failure(data)
    assert refused.code is ImageErrorCode.DECODE_FAILED and "animated" in str(refused)
    animated = jxl_header_bytes(40, 30, animated=True)
    assert jxl_header.read_header(animated) == jxl_header.JxlHeader(40, 30, 1, True)


@pytest.mark.parametrize("cut", ["half", "signature only", "header cut", "garbage body"])
def test_a_damaged_jxl_is_decode_failed(cut: str) -> None:
    data = jxl(photo((64, 48)), quality=90)
    damaged = {
        "half": data[: len(data) // 2],
        "signature only": jxl_header.CODESTREAM_SIGNATURE,
        "header cut": jxl_header_bytes(640, 480)[:5],
        "garbage body": jxl_header_bytes(640, 480) + bytes(range(256)) * 4,
    }[cut]
    assert failure(damaged).code is ImageErrorCode.DECODE_FAILED


def test_what_the_plugin_would_open_never_skips_the_header_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The plugin's opener takes `JXL` at bytes 4-7 for a container; without the container's
    whole signature the header check refuses it before the plugin is handed anything."""
    decoder = DecoderCalls(monkeypatch)
    loose = b"\0\0\0\x0cJXL \0\0\0\0" + bytes(range(256))
    assert JpegXLImagePlugin._accept(loose)
    assert failure(loose).code is ImageErrorCode.DECODE_FAILED
    assert decoder.calls == 0


@pytest.mark.parametrize(
    "size", [(1, 1), (8, 8), (256, 256), (257, 100), (200, 150), (150, 200), (192, 108), (9, 7)]
)
def test_the_jxl_header_gives_the_size_the_decoder_gives(size: tuple[int, int]) -> None:
    """Sizes coded each way the SizeHeader allows: multiples of 8 up to 256 (small), the
    fixed ratios (1:1, 4:3, 16:9...), and any other."""
    data = jxl(Image.new("RGB", size, RED), lossless=True, effort=1)
    header = jxl_header.read_header(data)
    with Image.open(io.BytesIO(data)) as opened:
        assert (header.width, header.height) == opened.size == size


def test_the_jxl_header_reads_30_bit_sizes() -> None:
    header = jxl_header.read_header(jxl_header_bytes(123_456, 7_890))
    assert (header.width, header.height) == (123_456, 7_890)
