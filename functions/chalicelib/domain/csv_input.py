"""The input CSV, read as a stream: checked in full (`validate_csv`), then read row by row.

The file can be 10 MiB and 100,000 rows, so neither pass holds the rows: the bytes are read in
chunks, split into physical lines, decoded one line at a time (a line break never falls inside
a UTF-8 sequence, so the line where decoding broke is known) and handed to the `csv` module.
`row` in every problem is the 1-based physical line where the record starts (the header is
line 1), also when an earlier quoted cell spans several lines.

What the validation keeps is small: the problems (capped), two counters and the valid serials
in an `array('q')`, so the ingest can place each row of the second pass (`iter_rows`) at its
position in serial order (`ValidationReport.position_of`) without holding the rows.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import re
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO

from chalicelib.domain.errors import CsvInvalid
from chalicelib.domain.models import CsvProblem, ProductRow
from chalicelib.domain.netguard import check_url_syntax

SERIAL_COLUMN = "S. No."
NAME_COLUMN = "Product Name"
URLS_COLUMN = "Input Image Urls"
REQUIRED_COLUMNS = (SERIAL_COLUMN, NAME_COLUMN, URLS_COLUMN)

# Header spellings, as `_normalise_header` leaves them (case-folded, `_` as a space, inner
# whitespace collapsed), mapped to the canonical column name.
_ALIASES: dict[str, str] = {
    **dict.fromkeys(
        (
            "s. no.",
            "s. no",
            "s.no.",
            "s.no",
            "s no",
            "s no.",
            "sno",
            "sr. no.",
            "sr. no",
            "sr.no.",
            "sr.no",
            "sr no",
            "serial",
            "serial no",
            "serial no.",
            "serial number",
        ),
        SERIAL_COLUMN,
    ),
    **dict.fromkeys(("product name", "productname", "product"), NAME_COLUMN),
    **dict.fromkeys(
        (
            "input image urls",
            "input image url",
            "inputimageurls",
            "image urls",
            "image url",
        ),
        URLS_COLUMN,
    ),
}
_COLUMN_RANK = {None: -1, SERIAL_COLUMN: 0, NAME_COLUMN: 1, URLS_COLUMN: 2}

_READ_CHUNK = 64 * 1024
_SHOWN_CHARS = 100
_MAX_SERIAL = 2**63 - 1  # what array('q') and the database's int64 hold
_SERIAL = re.compile(r"0*([0-9]{1,19})(?:\.0*)?", re.ASCII)
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_HEADER_HINT = "the first line must be the header: S. No.,Product Name,Input Image Urls"


@dataclass(frozen=True)
class CsvLimits:
    max_bytes: int
    max_rows: int
    max_images_per_row: int
    max_line_chars: int = 64 * 1024
    max_problems: int = 1000


@dataclass
class ValidationReport:
    """What `validate_csv` found. `problems` is in line order, at most `max_problems` long;
    `sorted_serials` holds the valid serials, ascending (meaningful when `ok`)."""

    problems: list[CsvProblem]
    total_rows: int
    total_images: int
    problems_truncated: bool = False
    sorted_serials: array[int] = field(default_factory=lambda: array("q"))

    @property
    def ok(self) -> bool:
        return not self.problems and not self.problems_truncated

    def position_of(self, serial: int) -> int:
        """The 0-based position of `serial` in serial order. KeyError when it is not in the file."""
        index = bisect.bisect_left(self.sorted_serials, serial)
        if index == len(self.sorted_serials) or self.sorted_serials[index] != serial:
            raise KeyError(serial)
        return index


def validate_csv(stream: IO[bytes], limits: CsvLimits) -> ValidationReport:
    """Read the whole stream once and report every problem (up to `limits.max_problems`)."""
    problems: list[CsvProblem] = []
    truncated = False

    def report(problem: CsvProblem) -> None:
        nonlocal truncated
        if len(problems) < limits.max_problems:
            problems.append(problem)
        else:
            truncated = True

    serials: array[int] = array("q")
    lines: array[int] = array("q")
    total_rows = total_images = 0
    for row in _Scanner(stream, limits, report).rows():
        total_rows += 1
        total_images += row.images
        if row.serial is not None:
            serials.append(row.serial)
            lines.append(row.line)

    ordered = array("q", sorted(serials))
    repeated = {a for a, b in itertools.pairwise(ordered) if a == b}
    if repeated:
        first_line: dict[int, int] = {}
        for serial, line in zip(serials, lines, strict=True):
            if serial not in repeated:
                continue
            if serial in first_line:
                report(
                    CsvProblem(
                        line,
                        SERIAL_COLUMN,
                        f"S. No. {serial} is used again; it first appears on line "
                        f"{first_line[serial]} (each serial must be unique)",
                    )
                )
            else:
                first_line[serial] = line
    problems.sort(key=lambda p: (p.row, _COLUMN_RANK.get(p.column, 3)))
    return ValidationReport(problems, total_rows, total_images, truncated, ordered)


def iter_rows(stream: IO[bytes], limits: CsvLimits) -> Iterator[ProductRow]:
    """The rows of a file that passed `validate_csv`, in file order, trimmed.

    Raises CsvInvalid on the first problem met (the file changed since it was validated).
    Duplicate serials are not looked for here; `ValidationReport` already did.
    """

    def fail(problem: CsvProblem) -> None:
        raise CsvInvalid([problem])

    for row in _Scanner(stream, limits, fail).rows():
        if row.product is None:  # every way to get here reports a problem first
            raise CsvInvalid([CsvProblem(row.line, None, "the row is not valid")])
        yield row.product


@dataclass(frozen=True)
class _Row:
    line: int
    serial: int | None  # None when the serial cell is not valid
    product: ProductRow | None  # None when any cell is not valid
    images: int


class _Scanner:
    """One pass over the stream: reports problems through `report`, yields data rows."""

    def __init__(
        self, stream: IO[bytes], limits: CsvLimits, report: Callable[[CsvProblem], None]
    ) -> None:
        self._stream = stream
        self._limits = limits
        self._report = report
        self._stopped = False  # reading ended early: a file-level problem was reported
        self._long_lines = 0  # lines reported as too long (each stands in for a record)

    def _stop(self, problem: CsvProblem) -> None:
        self._stopped = True
        self._report(problem)

    # -- physical lines -------------------------------------------------------------------

    def _lines(self) -> Iterator[str]:
        """Decoded physical lines, each ending in "\\n"; exactly one item per line of the file,
        so csv.reader's `line_num` is the physical line number. A line that is too long is
        reported and replaced by an empty one; reading stops at bytes that are not UTF-8 and
        past `max_bytes`."""
        limits = self._limits
        byte_cap = limits.max_line_chars * 4 + 2  # more bytes than this: too many characters
        pending = b""  # the start of the line not yet ended by "\n"
        skipping = False  # inside a line already reported as too long
        line = 0  # lines yielded so far
        total = 0
        while chunk := self._stream.read(_READ_CHUNK):
            total += len(chunk)
            if total > limits.max_bytes:
                self._stop(
                    CsvProblem(
                        1, None, f"the file is larger than the limit of {limits.max_bytes} bytes"
                    )
                )
                return
            parts = chunk.split(b"\n")
            *ended, rest = parts
            for index, part in enumerate(ended):
                line += 1
                if index == 0 and skipping:
                    skipping = False
                    yield "\n"
                    continue
                text = self._decode(pending + part if index == 0 else part, line)
                if text is None:
                    return
                yield text
            if ended:
                pending = b""
            if skipping:
                continue
            pending += rest
            if len(pending) > byte_cap:
                self._report(self._too_long(line + 1))
                skipping = True
                pending = b""
        if skipping:
            yield "\n"
        elif pending:
            text = self._decode(pending, line + 1)
            if text is not None:
                yield text

    def _decode(self, raw: bytes, line: int) -> str | None:
        """One line (without its "\\n") as text ending in "\\n"; None when it is not UTF-8."""
        if line == 1 and raw.startswith(_UTF8_BOM):
            raw = raw[len(_UTF8_BOM) :]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            if line == 1 and raw.startswith(_UTF16_BOMS):
                message = "the file is UTF-16 text; save it as UTF-8 (e.g. 'CSV UTF-8')"
            else:
                position = len(raw[: exc.start].decode("utf-8", "replace")) + 1
                message = (
                    f"the text is not UTF-8: byte 0x{raw[exc.start]:02X} at character "
                    f"{position} of line {line} is not valid UTF-8; save the file as UTF-8"
                )
            self._stop(CsvProblem(line, None, message))
            return None
        if len(text) - text.endswith("\r") > self._limits.max_line_chars:
            self._report(self._too_long(line))
            return "\n"
        return text + "\n"

    def _too_long(self, line: int) -> CsvProblem:
        self._long_lines += 1
        return CsvProblem(
            line, None, f"line {line} is longer than {self._limits.max_line_chars} characters"
        )

    # -- records --------------------------------------------------------------------------

    def rows(self) -> Iterator[_Row]:
        """Every non-blank record after the header, checked; problems go to `report`."""
        reader = csv.reader(self._lines(), strict=True, skipinitialspace=True)
        columns: dict[str, int] | None = None
        header_line = 0
        seen_content = False
        data_rows = 0
        while True:
            start = reader.line_num + 1
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                if self._stopped:  # the input was cut short; that is already reported
                    break
                seen_content = True
                if columns is not None:
                    data_rows += 1  # a broken product row is still a row
                self._report(CsvProblem(start, None, _csv_error_message(str(exc), start)))
                continue
            if not any(cell.strip() for cell in record):
                seen_content = seen_content or self._long_lines > 0
                continue
            seen_content = True
            if columns is None:
                columns = self._header(record, start)
                header_line = start
                continue
            data_rows += 1
            if data_rows > self._limits.max_rows:
                self._stop(
                    CsvProblem(
                        start,
                        None,
                        f"the file has more than {self._limits.max_rows} product rows; "
                        f"the limit is {self._limits.max_rows}",
                    )
                )
                break
            yield self._row(record, start, columns)
        if self._stopped:
            return
        if not seen_content:
            self._report(CsvProblem(1, None, "the file is empty"))
        elif data_rows == 0 and not self._long_lines:
            self._report(
                CsvProblem(
                    header_line or 1,
                    None,
                    "no product rows: the file has a header and nothing else",
                )
            )

    def _header(self, record: list[str], line: int) -> dict[str, int]:
        found: dict[str, list[int]] = {}
        for index, cell in enumerate(record):
            canonical = _ALIASES.get(_normalise_header(cell))
            if canonical is not None:
                found.setdefault(canonical, []).append(index)
        for canonical in REQUIRED_COLUMNS:
            indexes = found.get(canonical)
            if not indexes:
                shown = ", ".join(_show(cell) for cell in record[:10] if cell.strip())
                self._report(
                    CsvProblem(
                        line,
                        canonical,
                        f"the required column '{canonical}' is missing ({_HEADER_HINT}; "
                        f"found {shown})",
                    )
                )
            elif len(indexes) > 1:
                where = ", ".join(f"{i + 1} ({_show(record[i])})" for i in indexes)
                self._report(
                    CsvProblem(
                        line,
                        canonical,
                        f"the column '{canonical}' is given {len(indexes)} times, as columns "
                        f"{where}; keep one",
                    )
                )
        return {canonical: indexes[0] for canonical, indexes in found.items()}

    def _row(self, record: list[str], line: int, columns: dict[str, int]) -> _Row:
        valid = len(columns) == len(REQUIRED_COLUMNS)
        report = self._report

        def cell(column: str) -> str | None:
            """The cell, "" when the row is too short; None when the header lacks the column."""
            index = columns.get(column)
            if index is None:
                return None
            return record[index] if index < len(record) else ""

        serial: int | None = None
        raw_serial = cell(SERIAL_COLUMN)
        if raw_serial is not None:
            serial, message = _parse_serial(raw_serial.strip())
            if message:
                report(CsvProblem(line, SERIAL_COLUMN, message))
                valid = False

        name = cell(NAME_COLUMN)
        if name is not None:
            name = name.strip()
            if not name:
                report(CsvProblem(line, NAME_COLUMN, "Product Name is empty"))
                valid = False

        urls: list[str] = []
        raw_urls = cell(URLS_COLUMN)
        if raw_urls is not None:
            urls = [url for url in (part.strip() for part in raw_urls.split(",")) if url]
            url_problems = _url_problems(urls, self._limits.max_images_per_row)
            for message in url_problems:
                report(CsvProblem(line, URLS_COLUMN, message))
            valid = valid and not url_problems

        product = None
        if valid and serial is not None and name:
            product = ProductRow(line=line, serial=serial, name=name, urls=tuple(urls))
        return _Row(line, serial, product, len(urls))


def _parse_serial(value: str) -> tuple[int | None, str]:
    """(serial, "") or (None, the problem)."""
    if not value:
        return None, "S. No. is empty"
    match = _SERIAL.fullmatch(value)
    serial = int(match.group(1)) if match else 0
    if serial <= 0:
        return None, f"S. No. must be a positive whole number (like 7 or 7.), got {_show(value)}"
    if serial > _MAX_SERIAL:
        return None, f"S. No. {_show(value)} is too large (at most {_MAX_SERIAL})"
    return serial, ""


def _url_problems(urls: list[str], max_images: int) -> list[str]:
    if not urls:
        return ["Input Image Urls is empty: give one or more image URLs separated by commas"]
    problems = []
    if len(urls) > max_images:
        problems.append(f"{len(urls)} image URLs; at most {max_images} are allowed per row")
    for number, url in enumerate(urls, 1):
        reason = check_url_syntax(url)
        if reason:
            where = f" (URL {number} of {len(urls)})" if len(urls) > 1 else ""
            problems.append(f"{_show(url)}{where} is not a usable image URL: {reason}")
    return problems


def _normalise_header(cell: str) -> str:
    return " ".join(cell.replace("_", " ").split()).casefold()


def _show(value: str) -> str:
    """The value quoted for a message, cut to about 100 characters."""
    if len(value) > _SHOWN_CHARS:
        return repr(value[:_SHOWN_CHARS]) + "…"
    return repr(value)


def _csv_error_message(error: str, line: int) -> str:
    if "expected after" in error:
        return (
            "a quoted cell must be followed by a comma or the end of the line "
            '(write a quote inside a quoted cell as two quotes "")'
        )
    if "unexpected end of data" in error:
        return f"a quoted cell that starts on line {line} is never closed"
    if "field larger than field limit" in error:
        return (
            f"a cell in the record starting on line {line} is longer than "
            f"{csv.field_size_limit()} characters (is a quote left open?)"
        )
    if "new-line character" in error:
        return "a carriage return (CR) inside an unquoted cell; lines must end with LF or CRLF"
    return f"the line is not valid CSV: {error}"
