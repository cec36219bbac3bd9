"""SSIMULACRA2 (Cloudinary/libjxl's perceptual metric) in vectorised numpy: how much a viewer
would see between an image and its compressed copy, on a 0-100 scale (30 low quality, 50
medium, 70 high, 90 visually lossless; 100 identical).

The algorithm is libjxl's `tools/ssimulacra2.cc` as the Python port on PyPI (`ssimulacra2`
0.3.0, the reference `benchmarks.perceptual` measures this against) computes it: sRGB to
linear, linear to XYB (the opsin absorbance mix, a cube root, made positive), six scales
halved in linear RGB by 2x2 means; at each scale a Gaussian of sigma 1.5 (11 taps: zero
beyond the left and right edges, mirrored beyond the top and bottom, as the port pads its
planes, which it holds transposed) gives the local
means, variances and covariance, whence an SSIM-like error map and two edge maps (artifacts:
edges the copy has and the source has not; detail lost: the reverse), each summed as a mean
and a 4-norm; 108 weighted terms, then a cubic and a power give the score.

Differences from the port, all for speed: float32 arrays (sums in float64); the
sRGB-to-linear curve as a 256-entry table; the separable Gaussian as small dense matrix
products by blocks of rows and columns (BLAS does the arithmetic: the banded Toeplitz matrix
of the 11-tap filter, its edges folded in, applied a block at a time), all 15 planes of a
scale (three channels of two images, their squares and product) in one call; and each scale
made in bands of 64 rows, its error maps summed band by band, so the memory stays a few
bands (about 216 MB at peak for 3 MP, where whole planes took 686 MB) and in cache.

`CANDIDATES` lists the faster variants measured against the reference
(`python -m benchmarks.perceptual`); `tiles` samples a large pair (measured and not used:
`python -m benchmarks.auto_quality --tiles`). The worker's `quality: "auto"` scores each
candidate with `ssimulacra2` at full size (imaging.py, quality_search.py).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

NUM_SCALES = 6
C2 = 0.0009
SIGMA = 1.5
RADIUS = 5  # the port's: int(3.33 * 1.5 + 0.5) taps each side, and 5 rows of zero padding
BLOCK = 32  # rows (or columns) of output per matrix product
BAND_BLOCKS = 2  # blocks of rows whose error maps are made at once (measured: 2 is fastest)

# Opsin absorbance (libjxl opsin_params.h): rows mix linear R, G, B; then a bias and a cube root
_OPSIN = np.array(
    [
        [0.30, 1.0 - 0.078 - 0.30, 0.078],
        [0.23, 1.0 - 0.078 - 0.23, 0.078],
        [0.24342268924547819, 0.20476744424496821, 1.0 - 0.24342268924547819 - 0.20476744424496821],
    ],
    dtype=np.float32,
)
_BIAS = 0.0037930732552754493
_CBRT_BIAS = float(np.cbrt(_BIAS))

WEIGHTS = np.array(
    [
        0.0, 0.0007376606707406586, 0.0, 0.0, 0.0007793481682867309, 0.0, 0.0,
        0.0004371155730107379, 0.0, 1.1041726426657346, 0.00066284834129271,
        0.00015231632783718752, 0.0, 0.0016406437456599754, 0.0, 1.8422455520539298,
        11.441172603757666, 0.0, 0.0007989109436015163, 0.000176816438078653, 0.0,
        1.8787594979546387, 10.94906990605142, 0.0, 0.0007289346991508072,
        0.9677937080626833, 0.0, 0.00014003424285435884, 0.9981766977854967,
        0.00031949755934435053, 0.0004550992113792063, 0.0, 0.0, 0.0013648766163243398,
        0.0, 0.0, 0.0, 0.0, 0.0, 7.466890328078848, 0.0, 17.445833984131262,
        0.0006235601634041466, 0.0, 0.0, 6.683678146179332, 0.00037724407979611296,
        1.027889937768264, 225.20515300849274, 0.0, 0.0, 19.213238186143016,
        0.0011401524586618361, 0.001237755635509985, 176.39317598450694, 0.0, 0.0,
        24.43300999870476, 0.28520802612117757, 0.0004485436923833408, 0.0, 0.0, 0.0,
        34.77906344483772, 44.835625328877896, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        0.0008680556573291698, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0005313191874358747, 0.0,
        0.00016533814161379112, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0004179171803251336,
        0.0017290828234722833, 0.0, 0.0020827005846636437, 0.0, 0.0, 8.826982764996862,
        23.19243343998926, 0.0, 95.1080498811086, 0.9863978034400682, 0.9834382792465353,
        0.0012286405048278493, 171.2667255897307, 0.9807858872435379, 0.0, 0.0, 0.0,
        0.0005130064588990679, 0.0, 0.00010854057858411537,
    ]
)  # fmt: skip


def _srgb_table() -> np.ndarray:
    v = np.arange(256, dtype=np.float64) / 255.0
    linear = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    return linear.astype(np.float32)


_TO_LINEAR = _srgb_table()


def _taps() -> np.ndarray:
    x = np.arange(-RADIUS, RADIUS + 1, dtype=np.float64)
    w: np.ndarray = np.exp(-0.5 * x * x / (SIGMA * SIGMA))
    return w / float(w.sum())


@functools.lru_cache(maxsize=64)
def _blocks(n: int, mirrored: bool) -> tuple[tuple[int, int, int, int, np.ndarray], ...]:
    """The 11-tap Gaussian over `n` samples as a banded matrix cut in blocks of BLOCK output
    rows: (first, last output, first, last input, the dense block). Beyond the edges the
    signal is zero, or mirrored (d c b a | a b c d) when `mirrored`."""
    out = np.repeat(np.arange(n), 2 * RADIUS + 1)
    src = out + np.tile(np.arange(-RADIUS, RADIUS + 1), n)
    weight = np.tile(_taps(), n)
    if mirrored:
        while (src < 0).any() or (src >= n).any():  # half-sample symmetric (scipy "reflect")
            src = np.where(src < 0, -src - 1, src)
            src = np.where(src >= n, 2 * n - src - 1, src)
    else:
        inside = (src >= 0) & (src < n)
        out, src, weight = out[inside], src[inside], weight[inside]
    count = -(-n // BLOCK)
    lows = np.maximum(np.arange(count) * BLOCK - RADIUS, 0)
    dense = np.zeros((count, BLOCK, BLOCK + 2 * RADIUS))
    np.add.at(dense, (out // BLOCK, out % BLOCK, src - lows[out // BLOCK]), weight)
    blocks = []
    for b in range(count):
        first, last = b * BLOCK, min(n, (b + 1) * BLOCK)
        lo, hi = int(lows[b]), min(n, last + RADIUS)
        block = np.ascontiguousarray(dense[b, : last - first, : hi - lo], dtype=np.float32)
        blocks.append((first, last, lo, hi, block))
    return tuple(blocks)


def blur(planes: np.ndarray) -> np.ndarray:
    """The port's Gaussian of every plane of `planes` (..., height, width), float32 (the
    scales apply it band by band: `_band_sums`)."""
    height = planes.shape[-2]
    down = np.empty_like(planes)
    for first, last, lo, hi, block in _blocks(height, True):
        np.matmul(block, planes[..., lo:hi, :], out=down[..., first:last, :])
    return _across(down)


def _across(planes: np.ndarray) -> np.ndarray:
    """The horizontal pass of `blur`."""
    out = np.empty_like(planes)
    for first, last, lo, hi, block in _blocks(planes.shape[-1], False):
        np.matmul(planes[..., lo:hi], block.T, out=out[..., first:last])
    return out


def to_linear(rgb: np.ndarray) -> np.ndarray:
    """8-bit sRGB (height, width, 3) to linear light, planar (3, height, width) float32."""
    linear: np.ndarray = _TO_LINEAR[np.moveaxis(rgb, -1, 0)]
    return linear


def to_xyb(linear: np.ndarray) -> np.ndarray:
    """Linear RGB (3, h, w) to SSIMULACRA2's positive XYB (3, h, w)."""
    mixed = np.tensordot(_OPSIN, linear, axes=1)
    mixed += np.float32(_BIAS)
    np.maximum(mixed, 0, out=mixed)
    np.cbrt(mixed, out=mixed)
    mixed -= np.float32(_CBRT_BIAS)
    m0, m1, m2 = mixed
    x = (m0 - m1) * np.float32(0.5 * 14.0) + np.float32(0.42)
    y = (m0 + m1) * np.float32(0.5)
    b = m2 - y + np.float32(0.55)
    y += np.float32(0.01)
    return np.stack((x, y, b))


def downsample(linear: np.ndarray) -> np.ndarray:
    """Halve (3, h, w) by 2x2 means (an odd last row or column is averaged alone)."""
    _, h, w = linear.shape
    if h % 2:
        linear = np.concatenate((linear, linear[:, -1:, :]), axis=1)
    if w % 2:
        linear = np.concatenate((linear, linear[:, :, -1:]), axis=2)
    half: np.ndarray = linear[:, 0::2, 0::2] + linear[:, 0::2, 1::2]
    half += linear[:, 1::2, 0::2]
    half += linear[:, 1::2, 1::2]
    half *= np.float32(0.25)
    return half


def _sums(d: np.ndarray) -> np.ndarray:
    """Per channel of (3, h, w): the sum and the sum of fourth powers (numpy sums a
    contiguous row pairwise: accurate enough in float32)."""
    flat = d.reshape(d.shape[0], -1)
    d2 = flat * flat
    np.multiply(d2, d2, out=d2)
    return np.stack((flat.sum(axis=1, dtype=np.float32), d2.sum(axis=1, dtype=np.float32))).astype(
        np.float64
    )


def _band_sums(
    img1: np.ndarray, img2: np.ndarray, blocks: tuple[tuple[int, int, int, int, np.ndarray], ...]
) -> np.ndarray:
    """The sums of the error maps over the rows of `blocks` (consecutive or not): (3 maps:
    ssim, artifact, detail lost; 2: sum, sum of fourth powers; 3 channels)."""
    rows = sum(last - first for first, last, _, _, _ in blocks)
    width = img1.shape[2]
    down = np.empty((15, rows, width), dtype=np.float32)
    own1 = np.empty((3, rows, width), dtype=np.float32)
    own2 = np.empty_like(own1)
    at = 0
    for first, last, lo, hi, block in blocks:
        a, b = img1[:, lo:hi], img2[:, lo:hi]
        stacked = np.concatenate((a * a, b * b, a * b, a, b))
        np.matmul(block, stacked, out=down[:, at : at + last - first])
        own1[:, at : at + last - first] = img1[:, first:last]
        own2[:, at : at + last - first] = img2[:, first:last]
        at += last - first
    blurred = _across(down)
    del down
    s11, s22, s12 = blurred[0:3], blurred[3:6], blurred[6:9]
    mu1, mu2 = blurred[9:12], blurred[12:15]
    num_m = mu1 - mu2
    np.multiply(num_m, num_m, out=num_m)
    np.subtract(1.0, num_m, out=num_m)
    num_s = s12 - mu1 * mu2
    num_s *= 2.0
    num_s += np.float32(C2)
    # (s11 - m11) + (s22 - m22), grouped as the numerator is: identical images give d = 0
    denom = s11 - mu1 * mu1
    denom += s22 - mu2 * mu2
    denom += np.float32(C2)
    d = num_m * num_s
    d /= denom
    np.subtract(1.0, d, out=d)
    np.maximum(d, 0.0, out=d)
    ssim = _sums(d)
    edge1 = np.abs(own1 - mu1)
    edge1 += 1.0
    ratio = np.abs(own2 - mu2)
    ratio += 1.0
    ratio /= edge1
    ratio -= 1.0
    artifact = _sums(np.maximum(ratio, 0.0))
    np.negative(ratio, out=ratio)
    np.maximum(ratio, 0.0, out=ratio)
    return np.stack((ssim, artifact, _sums(ratio)))


def scale_terms(img1: np.ndarray, img2: np.ndarray, every: int = 1) -> np.ndarray:
    """The 18 terms of one scale, by channel: (3, [ssim mean, ssim 4-norm, artifact mean,
    artifact 4-norm, detail-lost mean, detail-lost 4-norm]). Computed BAND_BLOCKS blocks of
    rows at a time (the memory stays a few bands, whatever the height); from every
    `every`-th block of rows only when `every` > 1 (an estimate)."""
    chosen = _blocks(img1.shape[1], True)[::every]
    sums = np.zeros((3, 2, 3))
    for start in range(0, len(chosen), BAND_BLOCKS):
        sums += _band_sums(img1, img2, chosen[start : start + BAND_BLOCKS])
    count = img1.shape[2] * sum(last - first for first, last, _, _, _ in chosen)
    means = sums[:, 0] / count  # (map, channel)
    norms = (sums[:, 1] / count) ** 0.25
    # by channel: ssim mean, ssim 4-norm, artifact mean, 4-norm, detail lost mean, 4-norm
    return np.stack((means[0], norms[0], means[1], norms[1], means[2], norms[2]), axis=1)


def combine(scales: list[np.ndarray]) -> float:
    """The score from each scale's (3, 6) terms, as libjxl weighs them (with fewer than six
    scales the weights run on, as libjxl's do)."""
    total = 0.0
    i = 0
    for c in range(3):
        for terms in scales:
            for n in range(2):
                # ssim, artifact, detail lost: the mean (n = 0) or the 4-norm (n = 1)
                total += WEIGHTS[i] * abs(terms[c, n])
                total += WEIGHTS[i + 1] * abs(terms[c, 2 + n])
                total += WEIGHTS[i + 2] * abs(terms[c, 4 + n])
                i += 3
    total *= 0.9562382616834844
    total = (
        2.326765642916932 * total
        - 0.020884521182843837 * total * total
        + 6.248496625763138e-05 * total * total * total
    )
    if total <= 0:
        return 100.0
    return float(100.0 - 10.0 * total**0.6276336467831387)


def ssimulacra2(
    source: np.ndarray, distorted: np.ndarray, scales: int = NUM_SCALES, every: int = 1
) -> float:
    """SSIMULACRA2 of `distorted` against `source`: two 8-bit sRGB arrays (height, width, 3)
    of the same shape, at least 8 x 8. With `every` > 1 the full-size scale (the costliest:
    three quarters of the work) is estimated from every `every`-th band of rows."""
    if source.shape != distorted.shape:
        raise ValueError(f"images differ in shape: {source.shape} and {distorted.shape}")
    if source.ndim != 3 or source.shape[2] != 3:
        raise ValueError(f"expected (height, width, 3) RGB, got {source.shape}")
    if source.shape[0] < 8 or source.shape[1] < 8:
        raise ValueError("images must be at least 8 x 8 pixels")
    lin1, lin2 = to_linear(source), to_linear(distorted)
    terms: list[np.ndarray] = []
    for scale in range(scales):
        if lin1.shape[1] < 8 or lin1.shape[2] < 8:
            break
        terms.append(scale_terms(to_xyb(lin1), to_xyb(lin2), every if scale == 0 else 1))
        if scale < scales - 1:
            lin1, lin2 = downsample(lin1), downsample(lin2)
    return combine(terms)


def half_size(source: np.ndarray, distorted: np.ndarray) -> float:
    """A downscaled comparison: the metric of the two images halved (2x2 means in linear
    light, back to sRGB): a quarter of the pixels, but a different scale of detail."""
    return ssimulacra2(_halved(source), _halved(distorted))


def _halved(rgb: np.ndarray) -> np.ndarray:
    linear = downsample(to_linear(rgb))
    v = np.clip(linear, 0.0, 1.0)
    srgb = np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)
    out: np.ndarray = np.moveaxis(np.rint(srgb * 255.0), 0, -1).astype(np.uint8)
    return out


def tiles(rgb: np.ndarray, max_pixels: int, side: int = 256) -> np.ndarray:
    """`rgb` (height, width, 3) itself when it has at most `max_pixels`; else a mosaic of
    `side` x `side` tiles cut from it on an even grid (rows and columns of tiles in the
    image's aspect, about `max_pixels` in all), the same cut from any image of that shape: a
    sample of the image at its own scale, to score a large pair in the time and memory of a
    smaller one. Measured against the whole image it misses by up to 6 points, so the worker
    does not use it (docs/performance.md, "quality: auto")."""
    height, width = rgb.shape[:2]
    if height * width <= max_pixels:
        return rgb
    side = max(8, min(side, height, width))
    count = max(1, max_pixels // (side * side))
    across = max(1, min(count, width // side, round(math.sqrt(count * width / height))))
    down = max(1, min(height // side, count // across))
    ys = [round(i * (height - side) / max(1, down - 1)) for i in range(down)]
    xs = [round(i * (width - side) / max(1, across - 1)) for i in range(across)]
    mosaic = np.empty((down * side, across * side, rgb.shape[2]), dtype=rgb.dtype)
    for row, y in enumerate(ys):
        for col, x in enumerate(xs):
            mosaic[row * side : (row + 1) * side, col * side : (col + 1) * side] = rgb[
                y : y + side, x : x + side
            ]
    return mosaic


Metric = Callable[[np.ndarray, np.ndarray], float]

CANDIDATES: dict[str, Metric] = {
    "full": ssimulacra2,
    "scale 0 from 1/2 of the rows": functools.partial(ssimulacra2, every=2),
    "scale 0 from 1/4 of the rows": functools.partial(ssimulacra2, every=4),
    "half-size input": half_size,
}
