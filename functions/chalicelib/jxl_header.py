"""What a JPEG XL file's header says (its size, orientation and whether it is an animation),
read from its first bytes without decoding anything.

The JPEG XL plugin decodes every pixel while Pillow opens the file, so the pixel cap cannot
wait for `Image.open` as it does for the other formats: `imaging` asks this module first.
The fields are the codestream's SizeHeader and the start of its ImageMetadata (ISO/IEC
18181-1, as libjxl's `headers.cc` and `image_metadata.cc` read them), found in a bare
codestream or inside the ISO BMFF container's `jxlc` box or `jxlp` boxes (18181-2).
"""

from __future__ import annotations

from dataclasses import dataclass

CODESTREAM_SIGNATURE = b"\xff\x0a"
CONTAINER_SIGNATURE = b"\x00\x00\x00\x0cJXL \r\n\x87\x0a"

# SizeHeader's fixed aspect ratios (numerator, denominator), by its 3-bit `ratio` field
_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}
# The header fits in far fewer bytes than this; a container's parts are joined up to it
_ENOUGH = 64

# U32 distributions: (bits, offset) per 2-bit selector; a value of 0 bits is the offset
_SIZE = ((9, 1), (13, 1), (18, 1), (30, 1))
_PREVIEW_DIV8 = ((0, 16), (0, 32), (5, 1), (9, 33))
_PREVIEW = ((6, 1), (8, 65), (10, 321), (12, 1345))


class NotJxl(ValueError):
    """The bytes are not a JPEG XL file, or its header is cut short or damaged."""


@dataclass(frozen=True)
class JxlHeader:
    width: int  # as stored: an orientation of 5-8 swaps it with the height on display
    height: int
    orientation: int  # 1-8, as EXIF's
    animated: bool


def is_jxl(data: bytes) -> bool:
    """Whether `data` starts like a JPEG XL file, as loosely as the plugin's opener checks
    (`JXL` at bytes 4-7 is enough for it): nothing the plugin would decode skips the header."""
    return data.startswith(CODESTREAM_SIGNATURE) or data[4:7] == b"JXL"


def read_header(data: bytes) -> JxlHeader:
    """The header of the JPEG XL file `data`; `NotJxl` when there is none to read."""
    reader = _Bits(_codestream_start(data))
    if reader.bits(16) != 0x0AFF:  # 0xFF 0x0A, read least significant bit first
        raise NotJxl("no JPEG XL codestream signature")
    width, height = _size(reader)
    orientation, animated = 1, False
    all_default = reader.bits(1)
    if not all_default and reader.bits(1):  # extra_fields
        orientation = reader.bits(3) + 1
        if reader.bits(1):  # have_intrinsic_size
            _size(reader)
        if reader.bits(1):  # have_preview
            _preview_size(reader)
        animated = bool(reader.bits(1))
    return JxlHeader(width, height, orientation, animated)


def _codestream_start(data: bytes) -> bytes:
    """The codestream's first bytes: the file itself, or its container's codestream boxes."""
    if data.startswith(CODESTREAM_SIGNATURE):
        return data[:_ENOUGH]
    if not data.startswith(CONTAINER_SIGNATURE):
        raise NotJxl("no JPEG XL signature")
    found = b""
    position = len(CONTAINER_SIGNATURE)
    while position + 8 <= len(data) and len(found) < _ENOUGH:
        size = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        header = 8
        if size == 1:  # a 64-bit size follows the type
            if position + 16 > len(data):
                break
            size, header = int.from_bytes(data[position + 8 : position + 16], "big"), 16
        elif size == 0:  # the last box runs to the end of the file
            size = len(data) - position
        if size < header:
            raise NotJxl(f"a box of {size} bytes at {position}")
        payload = data[position + header : position + size]
        if kind == b"jxlc":
            found += payload
        elif kind == b"jxlp":  # a part of the codestream after a 4-byte index
            found += payload[4:]
        position += size
    if not found:
        raise NotJxl("no codestream box in the JPEG XL container")
    return found[:_ENOUGH]


def _size(reader: _Bits) -> tuple[int, int]:
    small = reader.bits(1)
    height = (reader.bits(5) + 1) * 8 if small else reader.u32(_SIZE)
    ratio = reader.bits(3)
    if ratio:
        numerator, denominator = _RATIOS[ratio]
        width = height * numerator // denominator
    else:
        width = (reader.bits(5) + 1) * 8 if small else reader.u32(_SIZE)
    return width, height


def _preview_size(reader: _Bits) -> None:
    div8 = reader.bits(1)
    reader.u32(_PREVIEW_DIV8 if div8 else _PREVIEW)
    if reader.bits(3) == 0:
        reader.u32(_PREVIEW_DIV8 if div8 else _PREVIEW)


class _Bits:
    """Bits of `data`, least significant first within each byte (as JPEG XL packs them)."""

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "little")
        self._available = 8 * len(data)
        self._position = 0

    def bits(self, count: int) -> int:
        if self._position + count > self._available:
            raise NotJxl("the JPEG XL header is cut short")
        value = (self._value >> self._position) & ((1 << count) - 1)
        self._position += count
        return value

    def u32(self, distributions: tuple[tuple[int, int], ...]) -> int:
        count, offset = distributions[self.bits(2)]
        return self.bits(count) + offset if count else offset
