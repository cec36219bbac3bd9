"""The output CSV, written row by row into a binary stream.

UTF-8 without a BOM, RFC 4180 (`\\r\\n` line endings, minimal quoting). A URL list is one cell,
its URLs joined by `,` (so the cell is quoted); `outputs[i]` belongs to `inputs[i]` and is ""
for an image that failed. A cell a spreadsheet would run as a formula gets a leading `'`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import IO

OUTPUT_HEADER = ("S. No.", "Product Name", "Input Image Urls", "Output Image Urls")
LINE_TERMINATOR = "\r\n"

# OWASP "CSV injection": cells starting with these are run as formulas by spreadsheets.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell: str) -> str:
    """`cell`, with a leading `'` when a spreadsheet would read it as a formula."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


def write_output_csv(
    rows: Iterable[tuple[int, str, Sequence[str], Sequence[str]]], out: IO[bytes]
) -> int:
    """Write the header and one line per (serial, name, input URLs, output URLs); returns the
    number of rows written. `out` is written to, never closed. Outputs are aligned with the
    inputs: missing ones are written as "", surplus ones dropped."""
    line = io.StringIO()
    writer = csv.writer(line, lineterminator=LINE_TERMINATOR)

    def emit(cells: Sequence[str]) -> None:
        writer.writerow(cells)
        out.write(line.getvalue().encode("utf-8"))
        line.seek(0)
        line.truncate()

    emit(OUTPUT_HEADER)
    written = 0
    for serial, name, inputs, outputs in rows:
        aligned = [outputs[i] if i < len(outputs) else "" for i in range(len(inputs))]
        emit(
            (
                str(serial),
                neutralise(name),
                neutralise(",".join(inputs)),
                neutralise(",".join(aligned)),
            )
        )
        written += 1
    return written
