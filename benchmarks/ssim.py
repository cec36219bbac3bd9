"""SSIM (Wang, Bovik, Sheikh and Simoncelli, 2004) on the luma channel, with numpy.

The usual settings: an 11-tap Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03, 8-bit
range; luma is BT.601's (what JPEG, WebP and AVIF encode as Y); the mean of the SSIM map over
the positions where the whole window fits. Images are compared at the same size, after any
transparency is flattened on white (what the pipeline does).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

WINDOW = 11
SIGMA = 1.5
C1 = (0.01 * 255) ** 2
C2 = (0.03 * 255) ** 2
_BAND = 512  # rows of the SSIM map computed at once: the memory stays a few bands


def luma(image: Image.Image) -> np.ndarray:
    """BT.601 luma of `image` (transparency flattened on white), as float64."""
    if image.mode in {"RGBA", "LA", "PA", "P", "RGBa", "La"}:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    plane: np.ndarray = np.dot(pixels, np.array([0.299, 0.587, 0.114]))
    return plane


def _window() -> np.ndarray:
    taps = np.arange(WINDOW, dtype=np.float64) - WINDOW // 2
    weights = np.exp(-(taps**2) / (2 * SIGMA**2))
    weights /= weights.sum()
    return weights


def _blur(plane: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The separable Gaussian over the positions where the window fits ("valid")."""
    n = len(weights)
    rows, cols = plane.shape
    down = sum(weights[i] * plane[i : rows - n + 1 + i, :] for i in range(n))
    assert isinstance(down, np.ndarray)
    across = sum(weights[i] * down[:, i : cols - n + 1 + i] for i in range(n))
    assert isinstance(across, np.ndarray)
    return across


def ssim_planes(x: np.ndarray, y: np.ndarray) -> float:
    """Mean SSIM of two luma planes of the same shape (at least WINDOW on each side)."""
    if x.shape != y.shape:
        raise ValueError(f"planes differ in shape: {x.shape} and {y.shape}")
    rows, cols = x.shape
    if rows < WINDOW or cols < WINDOW:
        raise ValueError(f"planes must be at least {WINDOW} pixels on each side")
    weights = _window().astype(np.float32)
    total, count = 0.0, 0
    for start in range(0, rows - WINDOW + 1, _BAND):
        stop = min(start + _BAND + WINDOW - 1, rows)
        # float32 around mid-grey: twice as fast as float64, and the squares (at most 128^2)
        # keep the variances to a few thousandths, far below C2 (58.5)
        a = (x[start:stop] - 128).astype(np.float32)
        b = (y[start:stop] - 128).astype(np.float32)
        mean_a, mean_b = _blur(a, weights), _blur(b, weights)
        var_a = _blur(a * a, weights) - mean_a * mean_a
        var_b = _blur(b * b, weights) - mean_b * mean_b
        cov = _blur(a * b, weights) - mean_a * mean_b
        # the means are shifted by -128 each: shift them back for the luminance term
        mean_a += 128
        mean_b += 128
        index = ((2 * mean_a * mean_b + C1) * (2 * cov + C2)) / (
            (mean_a * mean_a + mean_b * mean_b + C1) * (var_a + var_b + C2)
        )
        total += float(index.sum(dtype=np.float64))
        count += index.size
    return total / count


def ssim(a: Image.Image, b: Image.Image) -> float:
    """Mean luma SSIM of two images of the same size."""
    if a.size != b.size:
        raise ValueError(f"images differ in size: {a.size} and {b.size}")
    return ssim_planes(luma(a), luma(b))
