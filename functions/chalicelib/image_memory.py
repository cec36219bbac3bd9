"""What one image costs in memory, from its header: the worker reserves this much before it
decodes the pixels (`adapters/memory_budget.py`), so that the images in flight together fit
in the function's `MemorySize`.

Measured with `python -m benchmarks.memory` (a fresh process per image, its peak resident
set above rest, C allocations included: docs/performance.md, "Memory per image"), and chosen
above every measurement: the input's bytes, the decoded pixels (`DECODED_BYTES_PER_PIXEL`:
Pillow keeps 4 bytes a pixel, and a resize or a colour conversion holds a second copy), the
output's pixels in its format's encoder (`OUTPUT_BYTES_PER_PIXEL`: libaom's AVIF encoder
holds far more than libjpeg or libwebp), and a constant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chalicelib.domain.output_options import OutputFormat

if TYPE_CHECKING:
    from chalicelib.imaging import Planned

MIB = 1024 * 1024

# Measured above rest, per pixel, input bytes apart (benchmarks.memory, 1 to 50 MP, JPEG and
# PNG in): full size JPEG 7.0, WebP 10.1, AVIF 29.0; a box costs the decode side up to 11 a
# decoded pixel at 3 MP (5.3 at 12 MP). Chosen above: 8 a decoded pixel (its 4-byte pixels
# and one more copy: a resize, a mode or a colour profile), and per output pixel what each
# encoder holds beside them. The lowest estimate/measured: 1.10 (AVIF, 12-50 MP).
DECODED_BYTES_PER_PIXEL = 8
OUTPUT_BYTES_PER_PIXEL = {
    OutputFormat.JPEG: 3,
    OutputFormat.WEBP: 6,
    OutputFormat.AVIF: 26,
}
FIXED_BYTES = 16 * MIB  # measured: 7-32 MB for a 1 MP image, whatever the format
# `auto`'s search beside the encoder, per output pixel: the fitted pixels as an array, each
# try decoded, and SSIMULACRA2's planes at full size (measured: 247-264 MB above rest at
# 3 MP against 18-83 MB for the fixed quality, about 70 bytes a pixel: docs/performance.md)
SEARCH_BYTES_PER_PIXEL = 80


# Kept back beside the process at rest, besides the downloads in flight: the allocator's
# slack and the clients' buffers, which no image's estimate counts.
HEADROOM_BYTES = 64 * MIB


def budget_for_images(
    memory_mb: int, resting: int, image_workers: int, max_image_bytes: int
) -> int | None:
    """The bytes the images in flight may hold together in a function of `memory_mb` MB
    (Lambda's MB are MiB) whose process takes `resting` bytes at rest: what is left once the
    process, the downloads that `image_workers` threads may hold outside any reservation
    (`max_image_bytes` each: one downloading, or storing its output, while others encode)
    and the headroom are kept back. None (no bound) when `memory_mb` is not known."""
    if memory_mb <= 0:
        return None
    kept = resting + image_workers * max_image_bytes + HEADROOM_BYTES
    return max(0, memory_mb * MIB - kept)


def estimate(planned: Planned) -> int:
    """Bytes `planned` takes at its peak above the process at rest, input bytes included."""
    decoded = planned.decoded[0] * planned.decoded[1]
    output = planned.output[0] * planned.output[1]
    return (
        FIXED_BYTES
        + planned.input_bytes
        + DECODED_BYTES_PER_PIXEL * decoded
        + (OUTPUT_BYTES_PER_PIXEL[planned.format] + SEARCH_BYTES_PER_PIXEL * planned.searched)
        * output
    )
