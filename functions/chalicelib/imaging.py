"""Every Pillow call of the pipeline: untrusted bytes in, a plain sRGB JPEG, WebP or AVIF out.

The steps, in order: identify the format (from an allow-list), refuse too many pixels from
the header alone, decode the first frame or a HEIF's primary image (a JPEG that must fit a
smaller box is decoded smaller: shrink on load), apply the EXIF orientation (unless the
decoder has turned the pixels already, as HEIF's and JPEG XL's do), fit the job's box (a
box reduce, then LANCZOS to the exact size), bring any colour profile to sRGB, flatten
transparency on white, and encode in the job's format with no metadata. Every expected
failure is an `ImageFailure` carrying one of the contract's codes.
"""

from __future__ import annotations

import io
import logging
import math
import os
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import pi_heif  # type: ignore[import-untyped]
from PIL import Image, ImageFile, ImageOps, JpegImagePlugin, UnidentifiedImageError
from pillow_jxl import JpegXLImagePlugin

from chalicelib import heif_header, jxl_header, nclx_profile
from chalicelib.domain.budget import OutOfTime
from chalicelib.domain.models import ImageErrorCode
from chalicelib.domain.output_options import JPEG_QUALITY, MAX_IMAGE_PIXELS, OutputFormat
from chalicelib.errors import ImageFailure

# The metric's matrix products (perceptual.py) on one BLAS thread per process: the worker runs
# images side by side on its own threads, and OpenBLAS's threads, busy-waiting, made the
# products 10-20 times slower on a shared 2-core machine (docs/performance.md). OpenBLAS
# reads this once, when numpy first loads: here, in the worker (Lambda's worker has one vCPU
# anyway). A value already set is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np

from chalicelib import perceptual, quality_search

try:  # LittleCMS is optional in Pillow builds; without it profiles are ignored.
    from PIL import ImageCms
except ImportError:  # pragma: no cover - depends on the Pillow build
    ImageCms = None  # type: ignore[assignment]

try:  # libjpeg-turbo's one-call API; without it every JPEG goes through Pillow's decoder.
    import simplejpeg  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - depends on the installed wheels
    simplejpeg = None

log = logging.getLogger(__name__)

WHITE = (255, 255, 255)

# HEIC/HEIF (libheif; HEVC decoded by libde265, pi-heif being pillow-heif's decode-only
# build) and JPEG XL (libjxl) join Pillow's openers, decoding the primary image alone (no
# thumbnails, depth or auxiliary images) on one thread: the worker's pool runs images side by
# side. Licences and patents: docs/security.md.
pi_heif.register_heif_opener(
    thumbnails=False, depth_images=False, aux_images=False, decode_threads=1
)
JpegXLImagePlugin.DECODE_THREADS = 0  # libjxl on the calling thread alone

# Raster formats a product image may come in. The rest of Pillow's openers (EPS runs
# Ghostscript, and several guess from a few loose header bytes) are never tried. AVIF comes
# before HEIF: both are ISO BMFF files, and a HEIC whose brand AVIF's opener accepts (`mif1`)
# is refused by it and opened by HEIF's.
_WANTED_FORMATS = (
    "JPEG", "PNG", "GIF", "WEBP", "AVIF", "HEIF", "JXL", "BMP", "DIB", "TIFF", "ICO", "PPM"
)  # fmt: skip
Image.init()
FORMATS: tuple[str, ...] = tuple(f for f in _WANTED_FORMATS if f in Image.OPEN)

# Signatures of the formats above: bytes that start like one of them but that Pillow cannot
# open are a damaged image (`decode_failed`), not something else (`not_an_image`).
_SIGNATURES = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
    b"BM",
    jxl_header.CODESTREAM_SIGNATURE,
    jxl_header.CONTAINER_SIGNATURE,
)
# ISO BMFF brands (bytes 8-12, after `ftyp`) of HEIF and AVIF images and sequences
_ISOBMFF_IMAGE_BRANDS = frozenset(
    {b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
    | {b"mif1", b"msf1"}
)

# Truncated data must fail, never come out padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


# What one image may cost to decode and encode, in seconds per megapixel of the largest image
# accepted, by output format: the worst input of the benchmark corpus at full size (the
# format's slowest quality), with the same room for Lambda's slower arm64 vCPU as JPEG's
# (measured: see docs/performance.md). The worker keeps this much of its invocation's time
# back for every image it starts.
SECONDS_PER_MEGAPIXEL = {"jpeg": 0.08, "webp": 0.32, "avif": 0.28}

# The encoders' settings besides quality (measured: docs/performance.md, "Output formats").
WEBP_METHOD = 4  # libwebp's effort, 0-6 (its default and sharp's); 6 made more bytes
AVIF_SPEED = 9  # libaom's speed, 0 (slowest) - 10 (10 encodes as 9 does); 6-8 are too slow
# One encoder thread per image: the worker's pool runs images side by side, and Pillow
# releases the GIL while libaom encodes.
AVIF_THREADS = 1
WEBP_MAX_SIDE = 16_383  # WebP cannot hold more pixels on a side: larger outputs fit this box

# Shrink on load (as sharp and libvips do): a JPEG is decoded at the smallest of these scales,
# in eighths of its size (DCT scaling), that still covers the box: 1/8, 2/8, 3/8 and 4/8
# decode in less time than 4/8 or about as much, while 5/8 to 7/8 cost as much as a full
# decode or more. Then `reduce()` by an integer factor while the image stays at least
# REDUCING_GAP times the box, and LANCZOS to the exact size (measured: docs/performance.md,
# "Output formats").
DCT_SCALES = (1, 2, 3, 4)
REDUCING_GAP = 2.0


def work_allowance(max_pixels: int, output_format: str = "jpeg") -> float:
    """Seconds to keep back for decoding and encoding an image of at most `max_pixels`
    into `output_format` (a full-size output: the worst case for any box)."""
    return SECONDS_PER_MEGAPIXEL[str(output_format)] * max_pixels / 1_000_000


@dataclass(frozen=True)
class CompressOptions:
    quality: int = JPEG_QUALITY
    max_pixels: int = MAX_IMAGE_PIXELS
    # Optimised Huffman tables: the same pixels in fewer bytes (sharp's default, so the output
    # matches the service we replace byte for byte in size), for more time (measured: see
    # docs/performance.md). JPEG only.
    optimize: bool = True
    format: OutputFormat = OutputFormat.JPEG
    # The box the output fits in (aspect kept, never enlarged); None: no bound that way.
    max_width: int | None = None
    max_height: int | None = None
    # `quality: "auto"`: None encodes at `quality`; a number (SSIMULACRA2, 30-95) asks for the
    # smallest output scoring at least that against the fitted source (quality_search.py),
    # `quality` then being the fallback when time runs short (the format's default).
    target_score: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be between 1 and 100, got {self.quality}")
        if self.target_score is not None and not 0 < self.target_score <= 100:
            raise ValueError(f"target_score must be in (0, 100], got {self.target_score}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be positive, got {self.max_pixels}")
        for name in ("max_width", "max_height"):
            bound = getattr(self, name)
            if bound is not None and bound < 1:
                raise ValueError(f"{name} must be positive, got {bound}")
        object.__setattr__(self, "format", OutputFormat(self.format))

    def box(self) -> tuple[int | None, int | None]:
        """The bounds that apply: the job's, within the format's own limit."""
        width, height = self.max_width, self.max_height
        if self.format is OutputFormat.WEBP:
            width = min(width or WEBP_MAX_SIDE, WEBP_MAX_SIDE)
            height = min(height or WEBP_MAX_SIDE, WEBP_MAX_SIDE)
        return width, height


@dataclass(frozen=True)
class Compressed:
    data: bytes
    width: int
    height: int
    source_format: str
    content_type: str = "image/jpeg"
    extension: str = "jpg"
    # The quality the output was encoded at (a fixed job's own; `auto`'s choice).
    quality: int = JPEG_QUALITY
    # The SSIMULACRA2 score the output reached against the fitted source: `auto` only.
    score: float | None = None


def fit_inside(
    width: int, height: int, max_width: int | None, max_height: int | None
) -> tuple[int, int]:
    """The size of `width` x `height` fitted inside the box, its aspect kept (the side that
    binds gets the bound exactly, the other is rounded), never enlarged."""
    scale_w = max_width / width if max_width is not None else math.inf
    scale_h = max_height / height if max_height is not None else math.inf
    if min(scale_w, scale_h) >= 1:
        return width, height
    if scale_w <= scale_h:
        assert max_width is not None
        return max_width, max(1, (2 * height * max_width + width) // (2 * width))
    assert max_height is not None
    return max(1, (2 * width * max_height + height) // (2 * height)), max_height


# What turns the fitted sRGB pixels into the output's bytes (the format's encoder).
Encoder = Callable[[Image.Image, CompressOptions], bytes]


@dataclass(frozen=True)
class Planned:
    """What an image is about to cost, known from its header before any pixel is decoded:
    the size its pixels are decoded at (a JPEG that must fit a smaller box is decoded
    smaller), the output's size (without a box: as stored, the EXIF orientation not yet
    applied) and format, the input's bytes, and whether `auto`'s search runs (it holds the
    fitted pixels, each try decoded, and the metric's planes beside them)."""

    source_format: str
    mode: str
    decoded: tuple[int, int]
    output: tuple[int, int]
    format: OutputFormat
    input_bytes: int
    searched: bool = False


# Called with an image's `Planned` cost once its header is read, before its pixels are
# decoded: it may wait (for memory), or stop the image by raising `ImageFailure` (a code) or
# `OutOfTime` (the image is handed back), both of which `compress` raises as they are. It
# returns the plan to follow: the one given, or, for `auto`, the same without the search
# (`searched=False`: the fallback quality, unscored) when only that fits.
Admit = Callable[[Planned], Planned]


def compress_to_jpeg(data: bytes, options: CompressOptions) -> Compressed:
    """`compress` into a JPEG, whatever format `options` names."""
    if options.format is not OutputFormat.JPEG:
        options = replace(options, format=OutputFormat.JPEG)
    return compress(data, options)


def compress(
    data: bytes,
    options: CompressOptions,
    time_left: Callable[[], float] | None = None,
    *,
    admit: Admit | None = None,
) -> Compressed:
    """Decode `data` (any supported raster format) and re-encode it as `options` say: their
    format and quality (or, with a `target_score`, the quality found per image), fitted
    inside their box.

    `time_left` (seconds; the invocation's `Budget.remaining`, None: no limit) bounds an
    `auto` search: no encode starts that the time left cannot hold. `admit`, when given, is
    called between the header and the pixels (see `Admit`).

    Raises `ImageFailure` with `not_an_image`, `too_many_pixels` or `decode_failed`.
    """
    if options.target_score is None:
        return _guarded(data, options, _encode, admit)
    found: list[quality_search.Found] = []

    def encode(image: Image.Image, chosen: CompressOptions) -> bytes:
        if chosen.target_score is None:  # admitted without the search: the fallback, unscored
            found.append(quality_search.Found(chosen.quality, None, ()))
            return _encode(image, chosen)
        output, answer = _encode_auto(image, chosen, time_left)
        found.append(answer)
        return output

    compressed = _guarded(data, options, encode, admit)
    return replace(compressed, quality=found[0].quality, score=found[0].score)


def fitted_pixels(data: bytes, options: CompressOptions, keep: bool = True) -> Compressed:
    """The sRGB pixels `compress` would encode, as raw RGB bytes (none unless `keep`), for
    the benchmarks and the tests that compare resizing paths."""

    def raw(image: Image.Image, _: CompressOptions) -> bytes:
        if not keep:
            return b""
        if image.mode == "RGB":
            return image.tobytes()
        with image.convert("RGB") as rgb:
            return rgb.tobytes()

    found = _guarded(data, options, raw)
    return replace(found, content_type="application/octet-stream", extension="rgb")


def _guarded(
    data: bytes, options: CompressOptions, encode: Encoder, admit: Admit | None = None
) -> Compressed:
    """Run the pipeline with every expected failure an `ImageFailure`."""
    if not data:
        raise ImageFailure(ImageErrorCode.NOT_AN_IMAGE, "the response body is empty")
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    # Our own limit is checked from the header below; Pillow's warning (at its global
    # MAX_IMAGE_PIXELS) becomes an error too, unless we were told to allow more than that.
    pillow_limit = Image.MAX_IMAGE_PIXELS
    above_pillow = bool(pillow_limit) and options.max_pixels > (pillow_limit or 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if above_pillow else "error", Image.DecompressionBombWarning)
        try:
            return _compress(data, options, encode, admit)
        except (ImageFailure, OutOfTime):
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageFailure(ImageErrorCode.TOO_MANY_PIXELS, str(exc)) from exc
        except Exception as exc:  # untrusted input: any decoder error is a damaged image
            raise ImageFailure(
                ImageErrorCode.DECODE_FAILED, f"cannot decode the image: {_describe(exc)}"
            ) from exc


def _compress(
    data: bytes, options: CompressOptions, encode: Encoder, admit: Admit | None = None
) -> Compressed:
    if jxl_header.is_jxl(data):
        _check_jxl_header(data, options.max_pixels)
    try:
        source = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError as exc:
        if _has_image_signature(data):
            raise ImageFailure(
                ImageErrorCode.DECODE_FAILED, "the image header is damaged or unsupported"
            ) from exc
        raise ImageFailure(
            ImageErrorCode.NOT_AN_IMAGE, "the content is not a supported image format"
        ) from exc
    with source:
        source_format = source.format or ""
        width, height = source.size
        if width < 1 or height < 1:
            raise ImageFailure(ImageErrorCode.DECODE_FAILED, f"invalid size {width}x{height}")
        if width * height > options.max_pixels:
            raise ImageFailure(
                ImageErrorCode.TOO_MANY_PIXELS,
                f"{width}x{height} is {width * height} pixels, "
                f"more than the limit of {options.max_pixels}",
            )
        if source.format == "HEIF":
            _check_heif_stored_size(data, options.max_pixels)
        size, eighths = _plan_fit(source, options)
        if admit is not None:
            planned = _planned(source, options, size, eighths, len(data))
            followed = admit(planned)
            if planned.searched and not followed.searched:
                options = replace(options, target_score=None)
        pixels = _decode_turbo(source, data, eighths)
        if pixels is None:
            if source.format != "HEIF":  # HEIF's opener starts at the primary image, not 0
                source.seek(0)  # the first frame of an animation (n_frames would scan the file)
            if eighths < 8 and source.format in _DCT_FORMATS:
                # Pillow's decoder scales too, by 1/2, 1/4 or 1/8 only: the largest that
                # still gives at least this size
                source.draft(None, _scaled(source.size, eighths))
            source.load()
            _apply_orientation(source)
            pixels = source
        rgb = _to_srgb(pixels, size)
        try:
            if rgb is not pixels:
                pixels.close()  # the decoded pixels are not needed while encoding
            rgb.info.clear()  # JPEG save copies a comment (and more) from `info`: strip it
            fmt = options.format
            data = encode(rgb, options)
            return Compressed(
                data,
                rgb.width,
                rgb.height,
                source_format,
                fmt.content_type,
                fmt.extension,
                quality=options.quality,
            )
        finally:
            if rgb is not pixels:
                rgb.close()
            if pixels is not source:
                pixels.close()


def _has_image_signature(data: bytes) -> bool:
    """Whether `data` starts like one of the formats above (then a file Pillow cannot open is
    damaged, not something else)."""
    if data.startswith(_SIGNATURES):
        return True
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return True
    return data[4:8] == b"ftyp" and data[8:12] in _ISOBMFF_IMAGE_BRANDS


def _check_jxl_header(data: bytes, max_pixels: int) -> None:
    """Refuse a JPEG XL file from its header: its plugin decodes every pixel while Pillow
    opens it, so the pixel cap cannot wait for `Image.open`. An animation is refused too:
    libjxl decodes every frame into one buffer, leaving the last, not the first."""
    try:
        header = jxl_header.read_header(data)
    except jxl_header.NotJxl as exc:
        raise ImageFailure(
            ImageErrorCode.DECODE_FAILED, f"the JPEG XL header is damaged: {exc}"
        ) from exc
    width, height = header.width, header.height
    if width * height > max_pixels:
        raise ImageFailure(
            ImageErrorCode.TOO_MANY_PIXELS,
            f"{width}x{height} is {width * height} pixels, more than the limit of {max_pixels}",
        )
    if header.animated:
        raise ImageFailure(
            ImageErrorCode.DECODE_FAILED,
            "an animated JPEG XL: its first frame cannot be decoded alone",
        )


def _check_heif_stored_size(data: bytes, max_pixels: int) -> None:
    """Refuse a HEIF whose primary image is stored larger than the cap, though its shown size
    (cropped by its clean aperture) is not: libheif decodes the whole stored image first. A
    layout the box reader cannot follow is left to libheif and its own limits."""
    try:
        stored = heif_header.stored_pixels(data)
    except (heif_header.NotHeif, IndexError) as exc:
        log.debug("HEIF boxes not read, the shown size stands: %s", exc)
        return
    if stored > max_pixels:
        raise ImageFailure(
            ImageErrorCode.TOO_MANY_PIXELS,
            f"stored at {stored} pixels (before its crop), more than the limit of {max_pixels}",
        )


# EXIF orientations that turn the image a quarter (its width becomes its height)
_QUARTER_TURNS = frozenset({5, 6, 7, 8})
# Formats whose decoder scales the DCT (a camera's MPO is JPEGs, its first decoded here)
_DCT_FORMATS = frozenset({"JPEG", "MPO"})


def _plan_fit(
    source: ImageFile.ImageFile, options: CompressOptions
) -> tuple[tuple[int, int] | None, int]:
    """The output size (None: the image's own) and the scale, in eighths, to decode a JPEG
    at (8: its full size): the box applies to the oriented image, the decoder to the stored
    one."""
    box = options.box()
    if box == (None, None):
        return None, 8
    turned = _orientation(source) in _QUARTER_TURNS
    width, height = source.size
    oriented = (height, width) if turned else (width, height)
    size = fit_inside(*oriented, *box)
    if size == oriented:
        return None, 8
    stored = (size[1], size[0]) if turned else size
    if source.format in _DCT_FORMATS:
        for eighths in DCT_SCALES:
            scaled = _scaled(source.size, eighths)
            if scaled[0] >= stored[0] and scaled[1] >= stored[1]:
                return size, eighths
    return size, 8


def _planned(
    source: ImageFile.ImageFile,
    options: CompressOptions,
    size: tuple[int, int] | None,
    eighths: int,
    input_bytes: int,
) -> Planned:
    """The `Planned` cost of `source`, decoded at `eighths`/8 and output at `size` (None:
    its own; as stored, since a PNG's EXIF orientation is only read with its pixels)."""
    # Pillow's own decoder scales by halves only: the larger one when it decodes instead
    eighths = 1 << (eighths - 1).bit_length()
    decoded = _scaled(source.size, eighths) if eighths < 8 else source.size
    output = source.size if size is None else size
    return Planned(
        source.format or "",
        source.mode,
        decoded,
        output,
        options.format,
        input_bytes,
        searched=options.target_score is not None,
    )


def _scaled(size: tuple[int, int], eighths: int) -> tuple[int, int]:
    """A JPEG's size decoded at `eighths`/8 (libjpeg rounds each side up)."""
    return -(-size[0] * eighths // 8), -(-size[1] * eighths // 8)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 when absent or unreadable, as `_apply_orientation` reads it,
    or when the decoder turns the pixels itself)."""
    if _oriented_by_decoder(image):
        return 1
    try:
        value = image.getexif().get(0x0112, 1)
    except (SyntaxError, ValueError, TypeError, KeyError, IndexError, OSError):
        return 1
    return value if isinstance(value, int) else 1


def _decode_turbo(source: ImageFile.ImageFile, data: bytes, eighths: int = 8) -> Image.Image | None:
    """A colour JPEG decoded by libjpeg-turbo's one-call API (simplejpeg), or None for
    anything else or anything it will not decode cleanly (Pillow then decides). With
    `eighths` < 8 the decoder scales the DCT, giving an image of `eighths`/8 of the size
    (each side rounded up) in less time: the one JPEG decode path, whatever the box.

    The same library Pillow links, with Pillow's settings (accurate DCT, fancy upsampling),
    so the pixels are identical; but it decodes the whole buffer in one call without the GIL
    and straight into 4-byte pixels, which Pillow then reads in place (`frombuffer`, no
    copy): faster than Pillow's decode, with the same output bytes (measured: see
    docs/performance.md). The metadata that orientation and colour depend on is carried over,
    and the orientation applied as on Pillow's path.
    """
    if simplejpeg is None or source.format != "JPEG" or source.mode != "RGB":
        return None
    if not _rgbx_encoding_checked.is_set():
        _check_rgbx_encoding()
    expected = _scaled(source.size, eighths)
    scaled: dict[str, int | bool] = {}
    if eighths < 8:
        # Scaled: the chroma's simple upsampling (a fraction of the decode's time; the
        # resample to the box smooths it, measured) instead of a larger chroma DCT.
        scaled = {"min_width": expected[0], "min_height": expected[1], "fastupsample": True}
    try:
        array = simplejpeg.decode_jpeg(
            data, "RGBX", **{"fastdct": False, "fastupsample": False, **scaled}
        )
    except ValueError:  # strict: even a recoverable warning; Pillow's decoder judges those
        return None
    height, width = int(array.shape[0]), int(array.shape[1])
    if (width, height) != expected:
        return None
    image = Image.frombuffer("RGBX", (width, height), array, "raw", "RGBX", 0, 1)
    for key in ("exif", "xmp", "icc_profile"):
        if key in source.info:
            image.info[key] = source.info[key]
    _apply_orientation(image)
    return image


_rgbx_encoding_checked = threading.Event()
_rgbx_encoding_lock = threading.Lock()


def _check_rgbx_encoding() -> None:
    """Let libjpeg-turbo read 4-byte pixels as they are (its RGBX input, which Pillow uses
    when the raw mode is "RGBX") instead of Pillow repacking every line to 3 bytes first.

    Pillow's JPEG plugin names the raw mode per image mode in `RAWMODE`; "RGBX" images are
    repacked by default. The switch is made once per process and kept only if a probe image
    encodes to exactly the bytes of the repacking path (a libjpeg without the extension would
    read the pixels as CMYK). The same output, and a faster encode (measured: see
    docs/performance.md).
    """
    with _rgbx_encoding_lock:
        if _rgbx_encoding_checked.is_set():
            return
        probe = Image.frombytes("RGBX", (16, 8), bytes(range(256)) * 2)

        def encode() -> bytes:
            out = io.BytesIO()
            probe.save(out, "JPEG", quality=75)
            return out.getvalue()

        previous = JpegImagePlugin.RAWMODE.get("RGBX")
        try:
            repacked = encode()
            JpegImagePlugin.RAWMODE["RGBX"] = "RGBX"
            same = encode() == repacked
        except Exception:  # any trouble: keep Pillow's default
            same = False
        if not same and previous is None:
            JpegImagePlugin.RAWMODE.pop("RGBX", None)
        elif not same and previous is not None:
            JpegImagePlugin.RAWMODE["RGBX"] = previous
        log.debug("JPEG encoder reads RGBX in place: %s", same)
        _rgbx_encoding_checked.set()


def _encode(image: Image.Image, options: CompressOptions) -> bytes:
    if options.format is OutputFormat.JPEG:
        return _encode_jpeg(image, options)
    buffer = io.BytesIO()
    if options.format is OutputFormat.WEBP:
        image.save(buffer, "WEBP", quality=options.quality, method=WEBP_METHOD)
    else:
        image.save(
            buffer, "AVIF", quality=options.quality, speed=AVIF_SPEED, max_threads=AVIF_THREADS
        )
    return buffer.getvalue()


# A try's expected cost beyond the encode, per megapixel (the metric, about 0.26 CPU s per MP
# measured on x86 at full size, and the candidate's decode), with room for Lambda's slower
# arm64 vCPU. The metric runs on the whole image: a sampled pair (`perceptual.tiles`) missed
# the bar by up to 6 points (docs/performance.md, "quality: auto"). Its memory, about 72 MB
# per MP at peak, comes on top of the encode's.
SCORE_SECONDS_PER_MEGAPIXEL = 0.5


def _encode_auto(
    image: Image.Image, options: CompressOptions, time_left: Callable[[], float] | None
) -> tuple[bytes, quality_search.Found]:
    """The smallest encoding of `image` in the options' format whose SSIMULACRA2 against
    `image` (the fitted sRGB pixels, as they are about to be encoded) reaches the options'
    target (quality_search.py finds it; each try encodes, decodes and scores). An image too
    small for the metric (under 8 pixels on a side) is encoded at the fallback quality."""
    assert options.target_score is not None
    if image.width < 8 or image.height < 8:
        return _encode(image, options), quality_search.Found(options.quality, None, ())
    source = np.asarray(image)[..., :3]  # RGBX: its RGB
    outputs: dict[int, bytes] = {}

    def attempt(quality: int) -> tuple[int, float]:
        output = outputs[quality] = _encode(image, replace(options, quality=quality))
        return len(output), perceptual.ssimulacra2(source, _decoded(output))

    pixels = image.width * image.height
    encode_seconds = work_allowance(pixels, str(options.format))
    found = quality_search.search(
        attempt,
        options.target_score,
        curve=quality_search.CURVES[str(options.format)],
        fallback=options.quality,
        time_left=time_left,
        first_cost=encode_seconds + SCORE_SECONDS_PER_MEGAPIXEL * pixels / 1_000_000,
    )
    output = outputs.get(found.quality)
    if output is None:  # the fallback, never tried
        output = _encode(image, replace(options, quality=found.quality))
    return output, found


def _decoded(data: bytes) -> np.ndarray:
    """An output of `_encode` decoded to 8-bit RGB (height, width, 3), as a viewer sees it."""
    if simplejpeg is not None and data.startswith(b"\xff\xd8"):
        pixels: np.ndarray = simplejpeg.decode_jpeg(data, "RGB", fastdct=False, fastupsample=False)
        return pixels
    with Image.open(io.BytesIO(data)) as opened:
        return np.asarray(opened.convert("RGB"))


def _encode_jpeg(image: Image.Image, options: CompressOptions) -> bytes:
    """Encode into an anonymous in-memory file rather than a BytesIO: Pillow releases the GIL
    while libjpeg writes to a real file descriptor, so the threads of a worker encode in
    parallel (measured: see docs/performance.md).

    Each thread keeps its file and writes over it from the start: creating, mapping and
    closing one per image costs a noticeable part of a small image's encode (measured: see
    docs/performance.md). What is read back is exactly what this save wrote (up to the file
    offset), never an older, longer output.
    """
    if not hasattr(os, "memfd_create"):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=options.quality, optimize=options.optimize)
        return buffer.getvalue()
    out: io.FileIO | None = getattr(_spool, "file", None)
    if out is None:
        out = _spool.file = io.FileIO(os.memfd_create("jpeg", os.MFD_CLOEXEC), "w+")
    out.seek(0)
    image.save(out, "JPEG", quality=options.quality, optimize=options.optimize)
    return os.pread(out.fileno(), out.tell(), 0)


_spool = threading.local()  # each thread's output file (`_encode_jpeg`)


def _oriented_by_decoder(image: Image.Image) -> bool:
    """Whether the decoder has turned the pixels already, so that the EXIF orientation (which
    cameras write as well) must not turn them again: libheif applies HEIF's irot/imir
    transforms, libjxl a JPEG XL codestream's orientation, each prevailing over EXIF by its
    standard. A JPEG XL that rebuilds a JPEG bit for bit gives that JPEG's pixels as stored,
    to turn by its EXIF as any JPEG."""
    if image.format == "HEIF":
        return True
    return image.format == "JXL" and not getattr(image, "jpeg", False)


def _apply_orientation(image: Image.Image) -> None:
    """Turn the pixels as the EXIF orientation says, unless the decoder has (see
    `_oriented_by_decoder`). Unreadable EXIF is left alone."""
    if _oriented_by_decoder(image):
        return
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except (SyntaxError, ValueError, TypeError, KeyError, IndexError, OSError) as exc:
        log.debug("ignoring unreadable EXIF orientation: %s", exc)


def _to_srgb(image: Image.Image, size: tuple[int, int] | None = None) -> Image.Image:
    """An RGB image (a new object, or `image` itself) with transparency flattened on white,
    resized to `size` when given (fewer pixels to convert: the box first)."""
    work = _normalise_mode(image)
    if size is not None and work.size != size:
        if work.mode == "RGBX":  # Pillow resamples 3 bands in less time than 4 (measured)
            work = _replace(work, work.convert("RGB"), image)
        # LANCZOS to the exact size, after a box `reduce()` while the image is at least
        # REDUCING_GAP times the size (Pillow premultiplies alpha while resampling)
        resized = work.resize(size, Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)
        work = _replace(work, resized, image)
    icc = image.info.get("icc_profile") or _nclx_icc(image)
    if isinstance(icc, bytes) and icc:
        work = _from_profile(work, icc)
    if work.mode == "RGBA":
        flat = Image.new("RGB", work.size, WHITE)
        flat.paste(work, mask=work.getchannel("A"))
        return flat
    if work.mode not in {"RGB", "RGBX"}:  # the JPEG encoder reads RGBX as RGB
        return work.convert("RGB")
    return work


def _nclx_icc(image: Image.Image) -> bytes | None:
    """A profile for a HEIF's `nclx` colour description (H.273 code points, when it carries
    no ICC profile), or None when that says sRGB or nothing a profile can say."""
    nclx = image.info.get("nclx_profile")
    return nclx_profile.icc_for_nclx(nclx) if isinstance(nclx, Mapping) else None


def _replace(old: Image.Image, new: Image.Image, keep: Image.Image) -> Image.Image:
    """`new`, after freeing `old` unless it is `keep` (the caller's image)."""
    if old is not keep:
        old.close()
    return new


def _normalise_mode(image: Image.Image) -> Image.Image:
    """Bring any Pillow mode down to RGB, RGBA, L or CMYK (the ones profiles apply to)."""
    mode = image.mode
    if mode.startswith("I;16"):
        return image.convert("I").point(lambda v: v * (1 / 257)).convert("L")
    if mode in {"I", "F"}:
        return _scale_to_l(image)
    if mode == "1":
        return image.convert("L")
    if mode in {"P", "PA"}:
        has_alpha = mode == "PA" or "transparency" in image.info
        return image.convert("RGBA" if has_alpha else "RGB")
    if mode in {"LA", "RGBa"}:
        return image.convert("RGBA")
    if mode in {"L", "RGB"} and "transparency" in image.info:
        return image.convert("RGBA")
    if mode in {"RGB", "RGBX", "RGBA", "L", "CMYK"}:  # RGBX: RGB in 4-byte pixels
        return image
    return image.convert("RGB")


def _scale_to_l(image: Image.Image) -> Image.Image:
    """32-bit integer or float samples to 8 bits: 0-255 kept, 16-bit or 0-1 ranges scaled."""
    low, high = image.getextrema()
    assert isinstance(low, (int, float)) and isinstance(high, (int, float))
    if low >= 0 and high <= 255 and not (image.mode == "F" and high <= 1):
        return image.convert("L")
    if low >= 0 and image.mode == "F" and high <= 1:
        scale, offset = 255.0, 0.0
    elif low >= 0 and high <= 65535:
        scale, offset = 1 / 257, 0.0
    else:
        scale = 255.0 / (high - low) if high > low else 0.0
        offset = -low * scale
    return image.point(lambda v: v * scale + offset).convert("L")


def _from_profile(image: Image.Image, icc: bytes) -> Image.Image:
    """Convert from an embedded colour profile to sRGB; any trouble keeps the image as is."""
    if ImageCms is None:
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        core = source.profile
        if "srgb" in (core.profile_description or "").lower():
            return image
        space = core.xcolor_space.strip()
        expected = {"RGB": "RGB", "RGBX": "RGB", "RGBA": "RGB", "L": "GRAY", "CMYK": "CMYK"}.get(
            image.mode
        )
        if space != expected:
            return image
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        out_mode = "RGBA" if image.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(image, source, srgb, outputMode=out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        log.debug("ignoring unusable ICC profile: %s", exc)
        return image
    return converted if converted is not None else image


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
