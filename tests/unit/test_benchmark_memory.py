"""benchmarks.memory: its inputs are what they say, and one measurement in a fresh process
reports the image's peak above rest beside the worker's estimate for it."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from benchmarks import memory


def test_a_large_photo_has_its_size_and_the_grain_changes_it() -> None:
    smooth = memory.large_photo(320, 240, 7, grain=False)
    grained = memory.large_photo(320, 240, 7, grain=True)
    assert smooth.size == grained.size == (320, 240) and grained.mode == "RGB"
    assert smooth.tobytes() != grained.tobytes()
    assert memory.large_photo(320, 240, 7, grain=True).tobytes() == grained.tobytes()


def test_one_measurement_in_a_fresh_process_sets_the_peak_beside_the_estimate(
    tmp_path: Path,
) -> None:
    path = tmp_path / "photo.jpg"
    memory.large_photo(1024, 768, 3, grain=True).save(path, "JPEG", quality=90)
    found = memory.measure("avif", path, None)
    assert found.decoded == found.output == 1024 * 768
    assert found.input_bytes == path.stat().st_size
    assert found.peak > found.rest > 10 * memory.MIB  # a Python process with Pillow loaded
    assert found.extra > found.input_bytes  # the pixels and the encoder, beside the input
    assert found.estimate >= found.extra  # the model covers it
    boxed = memory.measure("jpeg", path, 256)
    assert boxed.output == 256 * 192 and boxed.decoded == 256 * 192  # shrink on load, 2/8
    lines = memory.report([found, boxed])
    assert lines[1].split()[:3] == ["avif", "photo.jpg", "-"]
    assert lines[2].split()[:3] == ["jpeg", "photo.jpg", "256"]


def test_input_files_are_made_once(tmp_path: Path) -> None:
    first = memory.input_file(tmp_path, "png", 1)
    stamp = first.stat().st_mtime_ns
    assert memory.input_file(tmp_path, "png", 1) == first and first.stat().st_mtime_ns == stamp
    with Image.open(first) as image:
        assert image.size == memory.SIZES[1] and image.format == "PNG"
