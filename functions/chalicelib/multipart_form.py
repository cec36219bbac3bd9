"""multipart/form-data bodies, parsed with python-multipart (Chalice does not parse them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

from chalicelib.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType

# RFC 2046 section 5.1.1: a boundary is 1 to 70 characters. Longer ones are refused with a 400
# (python-multipart would raise on its own past 256, which used to surface as a 500).
MAX_BOUNDARY_CHARS = 70


@dataclass
class FormPart:
    name: str
    filename: str | None
    content_type: str
    data: bytearray = field(default_factory=bytearray)


@dataclass
class Form:
    parts: list[FormPart]

    def file(self, name: str) -> FormPart | None:
        return next((p for p in self.parts if p.name == name), None)

    def text(self, name: str) -> str | None:
        part = self.file(name)
        if part is None:
            return None
        try:
            return bytes(part.data).decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"form field {name!r} is not UTF-8 text") from exc


def parse_form(content_type: str, body: bytes, *, max_file_bytes: int) -> Form:
    """Parse a multipart body; a part larger than `max_file_bytes` is a 413."""
    mime, params = parse_options_header(content_type or "")
    if mime != b"multipart/form-data":
        raise UnsupportedMediaType(
            "expected a multipart/form-data body with a 'file' part",
            [{"contentType": content_type or None}],
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidRequest("multipart/form-data body has no boundary")
    if len(boundary) > MAX_BOUNDARY_CHARS:
        raise InvalidRequest(
            f"the multipart boundary is longer than {MAX_BOUNDARY_CHARS} characters (RFC 2046)",
            [{"field": "Content-Type", "boundaryLength": len(boundary)}],
        )

    parts: list[FormPart] = []
    header_field = bytearray()
    header_value = bytearray()
    headers: dict[str, str] = {}
    current: list[FormPart | None] = [None]

    def on_part_begin() -> None:
        headers.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers[header_field.decode("latin-1").lower()] = header_value.decode("utf-8", "replace")
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        _disp, disp_params = parse_options_header(headers.get("content-disposition", ""))
        name = disp_params.get(b"name", b"").decode("utf-8", "replace")
        raw_filename = disp_params.get(b"filename")
        filename = raw_filename.decode("utf-8", "replace") if raw_filename is not None else None
        part = FormPart(name, filename, headers.get("content-type", ""))
        parts.append(part)
        current[0] = part

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part = current[0]
        if part is None:
            return
        part.data.extend(data[start:end])
        if len(part.data) > max_file_bytes:
            raise PayloadTooLarge(
                f"part {part.name!r} is larger than the limit of {max_file_bytes} bytes",
                [{"maxBytes": max_file_bytes}],
            )

    def on_part_end() -> None:
        current[0] = None

    try:  # the constructor too: it refuses some boundaries on its own
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": on_part_begin,
                "on_header_field": on_header_field,
                "on_header_value": on_header_value,
                "on_header_end": on_header_end,
                "on_headers_finished": on_headers_finished,
                "on_part_data": on_part_data,
                "on_part_end": on_part_end,
            },
        )
        parser.write(body)
        parser.finalize()
    except PayloadTooLarge:
        raise
    except Exception as exc:  # python-multipart raises its own errors for malformed bodies
        raise InvalidRequest(f"malformed multipart body: {exc}") from exc
    return Form(parts)
