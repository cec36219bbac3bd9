"""An ICC profile for a HEIF's `nclx` colour description, so that its colours reach sRGB as
an embedded profile's do.

A HEIF names its colours either by an ICC profile or by `nclx`: code points of ITU-T H.273
(colour primaries, transfer characteristics) that libheif reads; pi-heif hands them over with
the primaries' and white point's chromaticities. Wide-gamut phones that write `nclx` rather
than a profile (Display P3 is primaries 12) would otherwise come out as if their numbers were
sRGB's: dull. The profile built here is an ICC v2 RGB matrix/TRC display profile: the
primaries adapted to D50 (Bradford, as ICC profiles carry them) and a tone curve for the
transfer. Descriptions already sRGB's (BT.709 primaries or unspecified, an sRGB-like
transfer) need none, and HDR transfers (PQ, HLG) want tone mapping, not a profile: both get
None and the pixels are left as decoded.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

D50 = (0.9642, 1.0, 0.8249)
# H.273 colour primaries that are sRGB's (1: BT.709) or say nothing (2: unspecified)
_SRGB_PRIMARIES = frozenset({1, 2})
# H.273 transfer characteristics, by their tone curve: sRGB's, or the BT.709 family, which
# displays as sRGB does (1, 6, 14, 15); unspecified (2) taken as sRGB too
_SRGB_LIKE = frozenset({1, 2, 6, 13, 14, 15})
_GAMMA = {4: 2.2, 5: 2.8, 8: 1.0}  # BT.470 M, BT.470 BG, linear
_SRGB_CURVE = (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)  # ICC parametric type 3
_BRADFORD = (
    (0.8951, 0.2664, -0.1614),
    (-0.7502, 1.7135, 0.0367),
    (0.0389, -0.0685, 1.0296),
)
Matrix = tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]
Vector = tuple[float, float, float]


def icc_for_nclx(nclx: Mapping[str, object]) -> bytes | None:
    """An ICC profile that says what `nclx` says, or None when the pixels are sRGB's already
    or cannot be described so (HDR, or chromaticities missing or degenerate)."""
    primaries, transfer = nclx.get("color_primaries"), nclx.get("transfer_characteristics")
    if not isinstance(primaries, int) or not isinstance(transfer, int):
        return None
    if transfer not in _SRGB_LIKE and transfer not in _GAMMA:
        return None  # PQ, HLG, logarithmic...: not a display profile's business
    if primaries in _SRGB_PRIMARIES and transfer in _SRGB_LIKE:
        return None
    try:
        columns = _primaries_in_d50(nclx)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    curve = parametric_curve(_SRGB_CURVE) if transfer in _SRGB_LIKE else _gamma(_GAMMA[transfer])
    return display_profile(f"nclx primaries {primaries} transfer {transfer}", columns, curve)


def _chromaticity(nclx: Mapping[str, object], name: str) -> tuple[float, float]:
    x, y = nclx[f"color_primary_{name}_x"], nclx[f"color_primary_{name}_y"]
    if not isinstance(x, (int, float)) or not isinstance(y, (int, float)) or not 0 < y <= 1:
        raise ValueError(f"no chromaticity for {name}")
    return float(x), float(y)


def _xyz(x: float, y: float) -> Vector:
    return x / y, 1.0, (1 - x - y) / y


def _primaries_in_d50(nclx: Mapping[str, object]) -> tuple[Vector, Vector, Vector]:
    """The XYZ of full red, green and blue (white at Y=1), adapted to D50 by Bradford."""
    red, green, blue = (_xyz(*_chromaticity(nclx, name)) for name in ("red", "green", "blue"))
    white = _xyz(*_chromaticity(nclx, "white"))
    primaries: Matrix = (
        (red[0], green[0], blue[0]),
        (red[1], green[1], blue[1]),
        (red[2], green[2], blue[2]),
    )
    scale = _apply(_inverse(primaries), white)  # the primaries' weights that make white
    rgb_to_xyz = tuple(tuple(row[i] * scale[i] for i in range(3)) for row in primaries)
    cone_white, cone_d50 = _apply(_BRADFORD, white), _apply(_BRADFORD, D50)
    gain: Matrix = (
        (cone_d50[0] / cone_white[0], 0.0, 0.0),
        (0.0, cone_d50[1] / cone_white[1], 0.0),
        (0.0, 0.0, cone_d50[2] / cone_white[2]),
    )
    adapt = _multiply(_inverse(_BRADFORD), _multiply(gain, _BRADFORD))
    adapted = _multiply(adapt, rgb_to_xyz)
    column = [(adapted[0][i], adapted[1][i], adapted[2][i]) for i in range(3)]
    return column[0], column[1], column[2]


def _apply(matrix: Sequence[Sequence[float]], vector: Sequence[float]) -> Vector:
    a, b, c = (sum(matrix[r][k] * vector[k] for k in range(3)) for r in range(3))
    return a, b, c


def _multiply(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> Matrix:
    rows = [tuple(sum(a[r][k] * b[k][c] for k in range(3)) for c in range(3)) for r in range(3)]
    return (rows[0], rows[1], rows[2])  # type: ignore[return-value]


def _inverse(m: Sequence[Sequence[float]]) -> Matrix:
    (a, b, c), (d, e, f), (g, h, i) = m
    det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
    if abs(det) < 1e-12:
        raise ValueError("degenerate primaries")
    return (
        ((e * i - f * h) / det, (c * h - b * i) / det, (b * f - c * e) / det),
        ((f * g - d * i) / det, (a * i - c * g) / det, (c * d - a * f) / det),
        ((d * h - e * g) / det, (b * g - a * h) / det, (a * e - b * d) / det),
    )


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz_tag(vector: Sequence[float]) -> bytes:
    return b"XYZ " + bytes(4) + b"".join(_s15(v) for v in vector)


def parametric_curve(parameters: Sequence[float]) -> bytes:
    return b"para" + bytes(4) + struct.pack(">HH", 3, 0) + b"".join(_s15(v) for v in parameters)


def _gamma(gamma: float) -> bytes:
    return b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)


def display_profile(description: str, columns: Sequence[Vector], curve: bytes) -> bytes:
    """An ICC v2 RGB display profile: its primaries' D50 XYZ `columns` and one tone `curve`
    (`parametric_curve` or a gamma) for all three channels."""
    text = description.encode("ascii") + b"\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8 + 3 + 67)
    tags = [
        (b"desc", desc),
        (b"wtpt", _xyz_tag(D50)),
        (b"rXYZ", _xyz_tag(columns[0])),
        (b"gXYZ", _xyz_tag(columns[1])),
        (b"bXYZ", _xyz_tag(columns[2])),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, data in tags:
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data + bytes(-len(data) % 4)
    header = (
        struct.pack(">I", offset + len(body))
        + bytes(4)
        + struct.pack(">I", 0x02100000)  # version 2.1
        + b"mntrRGB XYZ "
        + bytes(12)
        + b"acsp"
        + bytes(28)
        + b"".join(_s15(v) for v in D50)  # the connection space's illuminant
        + bytes(48)
    )
    return header + struct.pack(">I", len(tags)) + table + body
