"""How many pixels a HEIF's primary image is stored at, read from its boxes (ISO/IEC 23008-12,
in ISO BMFF) without decoding anything.

The size Pillow's HEIF opener reports is libheif's: the image as shown, after its clean
aperture (`clap`) has cropped it. libheif decodes the whole stored image first: its `ispe`
(image spatial extents) for a coded image, its canvas for a grid (`grid`) or an overlay
(`iovl`), read from the item's own data. A small crop of a huge stored image would pass a
cap on the shown size and still be decoded whole, so `imaging` also caps what this module
reads: the largest of those for the primary item.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

_CONTAINERS = frozenset({b"iprp", b"ipco"})


class NotHeif(ValueError):
    """The boxes are missing, cut short or inconsistent."""


@dataclass
class _Meta:
    primary: int | None = None
    types: dict[int, bytes] = field(default_factory=dict)
    extents: dict[int, tuple[int, int, list[tuple[int, int]]]] = field(default_factory=dict)
    properties: list[tuple[bytes, bytes]] = field(default_factory=list)
    associations: dict[int, list[int]] = field(default_factory=dict)
    idat: bytes = b""


def stored_pixels(data: bytes) -> int:
    """The pixels libheif decodes for the primary image: the largest of its `ispe` and, for
    a grid or an overlay, its canvas. `NotHeif` when the boxes do not say."""
    meta = _read_meta(data)
    if meta.primary is None:
        raise NotHeif("no primary item")
    areas = [0]
    for index in meta.associations.get(meta.primary, []):
        if 1 <= index <= len(meta.properties):
            kind, body = meta.properties[index - 1]
            if kind == b"ispe" and len(body) >= 12:
                areas.append(_u32(body, 4) * _u32(body, 8))
    item_type = meta.types.get(meta.primary)
    if item_type in (b"grid", b"iovl"):
        areas.append(_canvas_area(item_type, _item_data(data, meta, meta.primary)))
    return max(areas)


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of each box between `start` and `end`."""
    end = len(data) if end is None else end
    position = start
    while position + 8 <= end:
        size, kind, header = _u32(data, position), data[position + 4 : position + 8], 8
        if size == 1:
            if position + 16 > end:
                raise NotHeif("a box's 64-bit size is cut short")
            size, header = int.from_bytes(data[position + 8 : position + 16], "big"), 16
        elif size == 0:
            size = end - position
        if size < header or position + size > end:
            raise NotHeif(f"a {kind!r} box of {size} bytes at {position} overruns its parent")
        yield kind, position + header, position + size
        position += size


def _read_meta(data: bytes) -> _Meta:
    for kind, start, end in _boxes(data):
        if kind == b"meta":
            meta = _Meta()
            _read_children(data, start + 4, end, meta)  # meta is a full box
            return meta
    raise NotHeif("no meta box")


def _read_children(data: bytes, start: int, end: int, meta: _Meta) -> None:
    for kind, begin, finish in _boxes(data, start, end):
        body = data[begin:finish]
        if kind in _CONTAINERS:
            if kind == b"ipco":
                meta.properties += [(k, data[b:f]) for k, b, f in _boxes(data, begin, finish)]
            else:
                _read_children(data, begin, finish, meta)
        elif kind == b"pitm":
            meta.primary = _u16(body, 4) if body[0] == 0 else _u32(body, 4)
        elif kind == b"iinf":
            _read_iinf(data, begin, finish, meta)
        elif kind == b"ipma":
            _read_ipma(body, meta)
        elif kind == b"iloc":
            _read_iloc(body, meta)
        elif kind == b"idat":
            meta.idat = body


def _read_iinf(data: bytes, start: int, end: int, meta: _Meta) -> None:
    version = data[start]
    first = start + (6 if version == 0 else 8)  # version/flags, then the entry count
    for kind, begin, _ in _boxes(data, first, end):
        if kind == b"infe" and data[begin] >= 2:
            id_size = 2 if data[begin] == 2 else 4
            item = int.from_bytes(data[begin + 4 : begin + 4 + id_size], "big")
            at = begin + 4 + id_size + 2  # after the item's protection index
            meta.types[item] = data[at : at + 4]


def _read_ipma(body: bytes, meta: _Meta) -> None:
    version, wide = body[0], body[3] & 1
    position, count = 8, _u32(body, 4)
    for _ in range(count):
        if version < 1:
            item, position = _u16(body, position), position + 2
        else:
            item, position = _u32(body, position), position + 4
        associations, position = body[position], position + 1
        indexes = meta.associations.setdefault(item, [])
        for _ in range(associations):
            if wide:
                indexes.append(_u16(body, position) & 0x7FFF)
                position += 2
            else:
                indexes.append(body[position] & 0x7F)
                position += 1
    if position > len(body):
        raise NotHeif("the ipma box is cut short")


def _read_iloc(body: bytes, meta: _Meta) -> None:
    version = body[0]
    offset_size, length_size = body[4] >> 4, body[4] & 15
    base_size, index_size = body[5] >> 4, (body[5] & 15 if version in (1, 2) else 0)
    position = 6
    if version < 2:
        count, position = _u16(body, position), position + 2
    else:
        count, position = _u32(body, position), position + 4
    for _ in range(count):
        if version < 2:
            item, position = _u16(body, position), position + 2
        else:
            item, position = _u32(body, position), position + 4
        method = 0
        if version in (1, 2):
            method, position = _u16(body, position) & 15, position + 2
        position += 2  # data reference index
        base, position = _uint(body, position, base_size), position + base_size
        extents = []
        extent_count, position = _u16(body, position), position + 2
        for _ in range(extent_count):
            position += index_size
            offset, position = _uint(body, position, offset_size), position + offset_size
            length, position = _uint(body, position, length_size), position + length_size
            extents.append((offset, length))
        meta.extents[item] = (method, base, extents)
    if position > len(body):
        raise NotHeif("the iloc box is cut short")


def _item_data(data: bytes, meta: _Meta, item: int) -> bytes:
    if item not in meta.extents:
        raise NotHeif(f"item {item} has no location")
    method, base, extents = meta.extents[item]
    source = {0: data, 1: meta.idat}.get(method)
    if source is None:
        raise NotHeif(f"item {item} is stored by construction method {method}")
    return b"".join(source[base + offset : base + offset + length] for offset, length in extents)


def _canvas_area(kind: bytes, body: bytes) -> int:
    """The output size a grid's or an overlay's data declares."""
    if len(body) < 2:
        raise NotHeif(f"the {kind!r} item's data is cut short")
    wide = body[1] & 1
    start = 4 if kind == b"grid" else 2 + 8  # after rows and columns, or the fill colour
    size = 4 if wide else 2
    if len(body) < start + 2 * size:
        raise NotHeif(f"the {kind!r} item's data is cut short")
    return _uint(body, start, size) * _uint(body, start + size, size)


def _uint(body: bytes, position: int, size: int) -> int:
    if position + size > len(body):
        raise NotHeif("a field runs past its box")
    return int.from_bytes(body[position : position + size], "big")


def _u16(body: bytes, position: int) -> int:
    return _uint(body, position, 2)


def _u32(body: bytes, position: int) -> int:
    return _uint(body, position, 4)
