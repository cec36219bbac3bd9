"""Distinct bytes for every image of a benchmark round, at no cost to the compressor.

Content-addressed reuse (docs/architecture.md, "Work not done twice") copies an output made
before from the same bytes, so a round that repeats the corpus's files would mostly copy on the
pipeline's side while the bare compressor encodes every image. Each image of a round therefore
gets its own bytes: a tag put where decoders skip it, before the pixels (a JPEG comment segment
right after SOI; a PNG `tEXt` chunk right after IHDR). The pixels, and so the decode and the
encode, stay the same; the output drops the tag (metadata is stripped).

`insertion(head, tag)` is what to put at `offset(head)`: the image host sends the file's first
bytes, the tag, then the rest with `sendfile`; the bare compressor's workers build the same
bytes in memory (`tagged`).
"""

from __future__ import annotations

import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_AFTER_IHDR = len(PNG_SIGNATURE) + 4 + 4 + 13 + 4  # length, type, IHDR's 13 bytes, CRC
JPEG_SOI = b"\xff\xd8"
HEAD = PNG_AFTER_IHDR  # enough of a file's start to place a tag


def offset(head: bytes) -> int:
    """Where the tag goes in a file that starts with `head` (at least HEAD bytes)."""
    if head.startswith(JPEG_SOI):
        return len(JPEG_SOI)
    if head.startswith(PNG_SIGNATURE) and head[12:16] == b"IHDR":
        return PNG_AFTER_IHDR
    raise ValueError("neither a JPEG nor a PNG")


def insertion(head: bytes, tag: str) -> bytes:
    """The bytes that make a file starting with `head` distinct for `tag`."""
    text = f"bench {tag}".encode("ascii")
    if head.startswith(JPEG_SOI):
        return b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text  # COM
    offset(head)  # a PNG, or ValueError
    chunk = b"tEXt" + b"Comment\x00" + text
    return struct.pack(">I", len(chunk) - 4) + chunk + struct.pack(">I", zlib.crc32(chunk))


def tagged(data: bytes, tag: str) -> bytes:
    """`data` with the tag in place (what the image host serves for `?tag=<tag>`)."""
    if not tag:
        return data
    at = offset(data[:HEAD])
    return data[:at] + insertion(data[:HEAD], tag) + data[at:]
