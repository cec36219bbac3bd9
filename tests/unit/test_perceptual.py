"""chalicelib.perceptual: SSIMULACRA2 in numpy, checked against the reference port's scores.

The reference values below were computed with the `ssimulacra2` package from PyPI (0.3.0,
the port of libjxl's tool that `benchmarks.perceptual` measures against) on the same
images: made here by arithmetic alone (no codec, no random generator), so they are the same
on every machine. The benchmark does the comparison on real photographs.
"""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from chalicelib import perceptual
from PIL import Image


def photo(height: int, width: int) -> np.ndarray:
    """A smooth colour field with edges and fine texture: 8-bit sRGB (height, width, 3)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    red = 128 + 90 * np.sin(x / 9.0) * np.cos(y / 13.0)
    green = 100 + 80 * np.cos((x + 2 * y) / 17.0) + 40 * ((x // 16 + y // 16) % 2)
    blue = 60 + 0.5 * x + 0.3 * y + 20 * np.sin(x * y / 50.0)
    texture = ((x * 7919 + y * 104729) % 23) - 11  # a fixed, noise-like pattern
    rgb = np.stack((red, green, blue), axis=-1) + texture[..., None]
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def blurred(rgb: np.ndarray) -> np.ndarray:
    """A 3x3 box blur (edges repeated): detail lost."""
    padded = np.pad(rgb.astype(np.float64), ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = rgb.shape[:2]
    total = sum(padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3))
    return np.clip(np.rint(total / 9.0), 0, 255).astype(np.uint8)


def posterised(rgb: np.ndarray) -> np.ndarray:
    """Values rounded to multiples of 24: banding, artifacts."""
    return np.clip(np.rint(rgb / 24.0) * 24, 0, 255).astype(np.uint8)


def speckled(rgb: np.ndarray) -> np.ndarray:
    """A fixed +-9 pattern added: noise."""
    h, w = rgb.shape[:2]
    y, x = np.mgrid[0:h, 0:w]
    pattern = ((x * 31 + y * 17 + (x * y) % 7) % 19) - 9
    return np.clip(rgb.astype(np.int64) + pattern[..., None], 0, 255).astype(np.uint8)


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "JPEG", quality=quality)
    with Image.open(io.BytesIO(out.getvalue())) as decoded:
        return np.asarray(decoded.convert("RGB"))


# (height, width, distortion) -> the reference's score (ssimulacra2 0.3.0); ours differ by
# at most 0.006 (float32)
REFERENCE = {
    (67, 93, "blurred"): -4.2141,
    (67, 93, "posterised"): 8.2170,
    (67, 93, "speckled"): 93.3259,
    (270, 301, "blurred"): 56.3489,
    (270, 301, "posterised"): 79.1390,
    (270, 301, "speckled"): 79.5094,
}
DISTORTIONS = {"blurred": blurred, "posterised": posterised, "speckled": speckled}


@pytest.mark.parametrize(("height", "width", "name"), sorted(REFERENCE))
def test_scores_agree_with_the_reference(height: int, width: int, name: str) -> None:
    source = photo(height, width)
    score = perceptual.ssimulacra2(source, DISTORTIONS[name](source))
    assert score == pytest.approx(REFERENCE[(height, width, name)], abs=0.02)


@pytest.mark.parametrize("shape", [(8, 8), (9, 33), (67, 93), (270, 301)])
def test_identical_images_score_100(shape: tuple[int, int]) -> None:
    source = photo(*shape)
    assert perceptual.ssimulacra2(source, source.copy()) == 100.0
    for name, metric in perceptual.CANDIDATES.items():
        if min(shape) >= 16 or name == "full":
            assert metric(source, source.copy()) == 100.0, name


def test_the_score_rises_with_jpeg_quality() -> None:
    source = blurred(photo(120, 160))  # softer: JPEG's range spans the scale
    scores = [perceptual.ssimulacra2(source, jpeg(source, q)) for q in (15, 35, 55, 75, 95)]
    assert all(low < high for low, high in itertools.pairwise(scores))
    assert scores[0] < 50
    assert scores[-1] > 75


def direct_blur(plane: np.ndarray) -> np.ndarray:
    """The port's Gaussian by its definition: 11 taps; beyond the top and bottom the plane
    mirrored (d c b a | a b c d), beyond the left and right zeros."""
    taps = perceptual._taps()
    h, w = plane.shape
    down = np.zeros((h, w))
    for y in range(h):
        for k in range(-5, 6):
            src = y + k
            while not 0 <= src < h:
                src = -src - 1 if src < 0 else 2 * h - src - 1
            down[y] += taps[k + 5] * plane[src]
    out = np.zeros((h, w))
    for x in range(w):
        for k in range(-5, 6):
            if 0 <= x + k < w:
                out[:, x] += taps[k + 5] * down[:, x + k]
    return out


@pytest.mark.parametrize("shape", [(3, 4), (8, 8), (33, 70), (65, 31)])
def test_the_blur_is_the_ports_gaussian_at_every_edge(shape: tuple[int, int]) -> None:
    h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    plane = ((x * 13 + y * 29) % 17 / 17.0).astype(np.float32)
    got = perceptual.blur(plane[None])[0]
    np.testing.assert_allclose(got, direct_blur(plane.astype(np.float64)), atol=1e-5)


def test_the_sampled_rows_estimate_stays_near_the_full_score() -> None:
    source = photo(320, 288)
    copy = jpeg(source, 50)
    full = perceptual.ssimulacra2(source, copy)
    assert perceptual.ssimulacra2(source, copy, every=2) == pytest.approx(full, abs=1.0)


def test_images_of_different_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        perceptual.ssimulacra2(photo(20, 30), photo(30, 20))
    with pytest.raises(ValueError, match="at least 8"):
        perceptual.ssimulacra2(photo(7, 30), photo(7, 30))


def test_tiles_leave_a_small_image_whole_and_cut_a_large_one_evenly() -> None:
    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)
    assert perceptual.tiles(small, 12_000) is small
    large = rng.integers(0, 256, (1000, 1500, 3), dtype=np.uint8)
    mosaic = perceptual.tiles(large, 400_000, side=100)
    assert mosaic.shape[0] * mosaic.shape[1] <= 400_000
    assert mosaic.shape[0] % 100 == 0 and mosaic.shape[1] % 100 == 0
    rows, cols = mosaic.shape[0] // 100, mosaic.shape[1] // 100
    assert rows * cols >= 36  # nearly 40 tiles of 10,000 pixels
    assert 1.2 <= cols / rows <= 1.8  # the image's aspect, 1.5
    # corners to corners: the first tile is the top-left, the last the bottom-right
    assert (mosaic[:100, :100] == large[:100, :100]).all()
    assert (mosaic[-100:, -100:] == large[-100:, -100:]).all()
    # the same cut from another image of that shape
    other = rng.integers(0, 256, large.shape, dtype=np.uint8)
    assert (perceptual.tiles(other, 400_000, side=100)[:100, -100:] == other[:100, -100:]).all()
