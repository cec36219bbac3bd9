"""The input CSV: every accepted variant, every refusal with its line and column, limits."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import IO, cast

import pytest
from chalicelib.domain.csv_input import (
    CsvLimits,
    ValidationReport,
    iter_rows,
    validate_csv,
)
from chalicelib.domain.models import CsvProblem, ProductRow
from chalicelib.errors import CsvInvalid

HEADER = "S. No.,Product Name,Input Image Urls\n"
LIMITS = CsvLimits(max_bytes=10 * 1024 * 1024, max_rows=100_000, max_images_per_row=50)
SERIAL, NAME, URLS = "S. No.", "Product Name", "Input Image Urls"


def validate(data: str | bytes, limits: CsvLimits = LIMITS) -> ValidationReport:
    raw = data.encode() if isinstance(data, str) else data
    return validate_csv(io.BytesIO(raw), limits)


def rows_of(data: str | bytes, limits: CsvLimits = LIMITS) -> list[ProductRow]:
    raw = data.encode() if isinstance(data, str) else data
    return list(iter_rows(io.BytesIO(raw), limits))


def where(report: ValidationReport) -> list[tuple[int, str | None]]:
    return [(p.row, p.column) for p in report.problems]


# -- accepted -----------------------------------------------------------------------------

ACCEPTED: list[tuple[str, bytes, list[ProductRow]]] = [
    (
        "plain",
        (HEADER + "1,Shirt,https://a.test/1.jpg\n").encode(),
        [ProductRow(2, 1, "Shirt", ("https://a.test/1.jpg",))],
    ),
    (
        "columns reordered",
        b"Input Image Urls,S. No.,Product Name\nhttps://a.test/1.jpg,1,Shirt\n",
        [ProductRow(2, 1, "Shirt", ("https://a.test/1.jpg",))],
    ),
    (
        "extra columns ignored",
        b"Notes,S. No.,Price,Product Name,Input Image Urls,More\n"
        b"x,1,9.99,Shirt,https://a.test/1.jpg,y\n",
        [ProductRow(2, 1, "Shirt", ("https://a.test/1.jpg",))],
    ),
    (
        "aliases",
        b"Serial Number,Product,Image URLs\n1,Shirt,https://a.test/1.jpg\n",
        [ProductRow(2, 1, "Shirt", ("https://a.test/1.jpg",))],
    ),
    (
        "alias S.No",
        b"S.No,Product Name,Input Image Url\n1,Shirt,https://a.test/1.jpg\n",
        [ProductRow(2, 1, "Shirt", ("https://a.test/1.jpg",))],
    ),
    (
        "header case and spaces",
        b"  s.  NO. ,PRODUCT   name,  input_image_urls \n1,Shirt,https://a.test/1.jpg\n",
        [ProductRow(2, 1, "Shirt", ("https://a.test/1.jpg",))],
    ),
    (
        "UTF-8 BOM",
        b"\xef\xbb\xbf" + (HEADER + "1,Shirt,https://a.test/1.jpg\n").encode(),
        [ProductRow(2, 1, "Shirt", ("https://a.test/1.jpg",))],
    ),
    (
        "CRLF",
        b"S. No.,Product Name,Input Image Urls\r\n1,Shirt,https://a.test/1.jpg\r\n"
        b"2,Socks,https://a.test/2.jpg\r\n",
        [
            ProductRow(2, 1, "Shirt", ("https://a.test/1.jpg",)),
            ProductRow(3, 2, "Socks", ("https://a.test/2.jpg",)),
        ],
    ),
    (
        "no newline at the end",
        (HEADER + "1,Shirt,https://a.test/1.jpg").encode(),
        [ProductRow(2, 1, "Shirt", ("https://a.test/1.jpg",))],
    ),
    (
        "blank lines and empty-cell lines skipped",
        (
            "\n" + HEADER + "\n1,Shirt,https://a.test/1.jpg\n,,\n  ,  , \n\r\n"
            "2,Socks,https://a.test/2.jpg\n\n"
        ).encode(),
        [
            ProductRow(4, 1, "Shirt", ("https://a.test/1.jpg",)),
            ProductRow(8, 2, "Socks", ("https://a.test/2.jpg",)),
        ],
    ),
    (
        "serial with a trailing dot, leading zeros, .0",
        (
            HEADER
            + "1.,A,https://a.test/1.jpg\n002,B,https://a.test/2.jpg\n3.0,C,http://a.test/3\n"
        ).encode(),
        [
            ProductRow(2, 1, "A", ("https://a.test/1.jpg",)),
            ProductRow(3, 2, "B", ("https://a.test/2.jpg",)),
            ProductRow(4, 3, "C", ("http://a.test/3",)),
        ],
    ),
    (
        "quoted multi-URL cell, trimmed, duplicates kept",
        (
            HEADER + '1,Shirt,"https://a.test/1.jpg, https://a.test/2.jpg ,https://a.test/1.jpg"\n'
        ).encode(),
        [
            ProductRow(
                2,
                1,
                "Shirt",
                ("https://a.test/1.jpg", "https://a.test/2.jpg", "https://a.test/1.jpg"),
            )
        ],
    ),
    (
        "space before a quoted cell",
        (HEADER + '1, Shirt, "https://a.test/1.jpg,https://a.test/2.jpg"\n').encode(),
        [ProductRow(2, 1, "Shirt", ("https://a.test/1.jpg", "https://a.test/2.jpg"))],
    ),
    (
        "empty items between commas ignored",
        (HEADER + '1,Shirt,"https://a.test/1.jpg,,https://a.test/2.jpg,"\n').encode(),
        [ProductRow(2, 1, "Shirt", ("https://a.test/1.jpg", "https://a.test/2.jpg"))],
    ),
    (
        "embedded newline in a quoted name",
        (HEADER + '1,"Shirt\nblue",https://a.test/1.jpg\n2,Socks,https://a.test/2.jpg\n').encode(),
        [
            ProductRow(2, 1, "Shirt\nblue", ("https://a.test/1.jpg",)),
            ProductRow(4, 2, "Socks", ("https://a.test/2.jpg",)),
        ],
    ),
    (
        "quote inside a quoted name",
        (HEADER + '1,"5"" screen, matte",https://a.test/1.jpg\n').encode(),
        [ProductRow(2, 1, '5" screen, matte', ("https://a.test/1.jpg",))],
    ),
    (
        "non-Latin names unchanged",
        (
            HEADER + "1,Κάλτσες 靴下 جوارب,https://a.test/1.jpg\n2,कमीज़ 👕,https://a.test/2.jpg\n"
        ).encode(),
        [
            ProductRow(2, 1, "Κάλτσες 靴下 جوارب", ("https://a.test/1.jpg",)),
            ProductRow(3, 2, "कमीज़ 👕", ("https://a.test/2.jpg",)),
        ],
    ),
    (
        "spaces around cells trimmed",
        (HEADER + "  7 ,  Shirt  ,  https://a.test/1.jpg  \n").encode(),
        [ProductRow(2, 7, "Shirt", ("https://a.test/1.jpg",))],
    ),
    (
        "name that looks like a formula is kept as given",
        (HEADER + "1,=SUM(A1),https://a.test/1.jpg\n").encode(),
        [ProductRow(2, 1, "=SUM(A1)", ("https://a.test/1.jpg",))],
    ),
    (
        "short row with a trailing extra column missing",
        b"S. No.,Product Name,Input Image Urls,Notes\n1,Shirt,https://a.test/1.jpg\n",
        [ProductRow(2, 1, "Shirt", ("https://a.test/1.jpg",))],
    ),
]


@pytest.mark.parametrize(
    ("data", "expected"), [(d, e) for _, d, e in ACCEPTED], ids=[i for i, _, _ in ACCEPTED]
)
def test_accepted_variants(data: bytes, expected: list[ProductRow]) -> None:
    report = validate(data)
    assert report.problems == []
    assert report.ok and not report.problems_truncated
    assert report.total_rows == len(expected)
    assert report.total_images == sum(len(r.urls) for r in expected)
    assert rows_of(data) == expected


# The contract's header spellings: these aliases of the serial column, the other two columns
# by their names; matched case-insensitively after trimming, a UTF-8 BOM ignored.
CONTRACT_SERIAL_ALIASES = ["S. No.", "S. No", "S.No", "Serial Number"]
SPELLINGS = {
    "as written": str,
    "upper case": str.upper,
    "lower case": str.lower,
    "padded": lambda cell: f" \t{cell}  ",
}


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["no BOM", "BOM"])
@pytest.mark.parametrize("spelling", SPELLINGS.values(), ids=SPELLINGS.keys())
@pytest.mark.parametrize("serial", CONTRACT_SERIAL_ALIASES)
def test_every_header_spelling_of_the_contract(
    serial: str, spelling: Callable[[str], str], bom: bytes
) -> None:
    header = ",".join(spelling(cell) for cell in (serial, NAME, URLS))
    data = bom + f"{header}\n1,Shirt,https://a.test/1.jpg\n".encode()
    assert validate(data).problems == []
    assert rows_of(data) == [ProductRow(2, 1, "Shirt", ("https://a.test/1.jpg",))]


# Every other header spelling the parser has accepted, column by column, written out here
# rather than read from the parser: a spelling dropped there is a user's file refused.
ALIASES = {
    SERIAL: [
        "S. No.",
        "S. No",
        "S.No.",
        "S.No",
        "S No",
        "S No.",
        "SNo",
        "Sr. No.",
        "Sr. No",
        "Sr.No.",
        "Sr.No",
        "Sr No",
        "Serial",
        "Serial No",
        "Serial No.",
        "Serial Number",
    ],
    NAME: ["Product Name", "ProductName", "Product"],
    URLS: ["Input Image Urls", "Input Image Url", "InputImageUrls", "Image Urls", "Image Url"],
}


@pytest.mark.parametrize(
    ("column", "alias"),
    [(column, alias) for column, aliases in ALIASES.items() for alias in aliases],
)
def test_every_alias_of_a_column_names_it(column: str, alias: str) -> None:
    header = ",".join(alias if cell == column else cell for cell in (SERIAL, NAME, URLS))
    for spelling in (alias, alias.upper(), alias.lower()):
        data = header.replace(alias, spelling) + "\n1,Shirt,https://a.test/1.jpg\n"
        assert validate(data).problems == [], spelling
        assert rows_of(data) == [ProductRow(2, 1, "Shirt", ("https://a.test/1.jpg",))], spelling


# -- refused ------------------------------------------------------------------------------

REFUSED: list[tuple[str, bytes, list[tuple[int, str | None]], str]] = [
    ("empty file", b"", [(1, None)], "empty"),
    ("only blank lines", b"\n\r\n,,\n", [(1, None)], "empty"),
    ("BOM only", b"\xef\xbb\xbf", [(1, None)], "empty"),
    ("header only", HEADER.encode(), [(1, None)], "no product rows"),
    ("header and blank lines", (HEADER + "\n,,\n").encode(), [(1, None)], "no product rows"),
    (
        "missing column",
        b"S. No.,Input Image Urls\n1,https://a.test/1.jpg\n",
        [(1, NAME)],
        "'Product Name' is missing",
    ),
    (
        "no header at all",
        b"1,Shirt,https://a.test/1.jpg\n2,Socks,https://a.test/2.jpg\n",
        [(1, SERIAL), (1, NAME), (1, URLS)],
        "first line must be the header",
    ),
    (
        "column given twice",
        b"S. No.,Product Name,Input Image Urls,Serial Number\n1,A,https://a.test/1.jpg,1\n",
        [(1, SERIAL)],
        "given 2 times",
    ),
    ("serial empty", (HEADER + ",A,https://a.test/1.jpg\n").encode(), [(2, SERIAL)], "empty"),
    ("serial zero", (HEADER + "0,A,https://a.test/1.jpg\n").encode(), [(2, SERIAL)], "'0'"),
    ("serial negative", (HEADER + "-3,A,https://a.test/1.jpg\n").encode(), [(2, SERIAL)], "'-3'"),
    ("serial text", (HEADER + "abc,A,https://a.test/1.jpg\n").encode(), [(2, SERIAL)], "'abc'"),
    ("serial fraction", (HEADER + "1.5,A,https://a.test/1.jpg\n").encode(), [(2, SERIAL)], "'1.5'"),
    (
        "serial too large",
        (HEADER + "99999999999999999999,A,https://a.test/1.jpg\n").encode(),
        [(2, SERIAL)],
        "99999999999999999999",
    ),
    (
        "serial repeated",
        (
            HEADER
            + "4,A,https://a.test/1.jpg\n5,B,https://a.test/2.jpg\n4.,C,https://a.test/3.jpg\n"
        ).encode(),
        [(4, SERIAL)],
        "first appears on line 2",
    ),
    ("name empty", (HEADER + "1,   ,https://a.test/1.jpg\n").encode(), [(2, NAME)], "empty"),
    ("URL cell empty", (HEADER + "1,A,\n").encode(), [(2, URLS)], "empty"),
    ("URL cell only commas", (HEADER + '1,A," , ,"\n').encode(), [(2, URLS)], "empty"),
    ("URL cell missing (short row)", (HEADER + "1,A\n").encode(), [(2, URLS)], "empty"),
    ("URL not a URL", (HEADER + "1,A,notaurl\n").encode(), [(2, URLS)], "'notaurl'"),
    ("URL ftp", (HEADER + "1,A,ftp://a.test/1.jpg\n").encode(), [(2, URLS)], "ftp://"),
    ("URL relative", (HEADER + "1,A,/images/1.jpg\n").encode(), [(2, URLS)], "'/images/1.jpg'"),
    ("URL without host", (HEADER + "1,A,https:///1.jpg\n").encode(), [(2, URLS)], "https:///"),
    (
        "URL with credentials",
        (HEADER + "1,A,https://user:pw@a.test/1.jpg\n").encode(),
        [(2, URLS)],
        "user:pw",
    ),
    (
        "second URL of a cell bad",
        (HEADER + '1,A,"https://a.test/1.jpg, javascript:alert(1)"\n').encode(),
        [(2, URLS)],
        "URL 2 of 2",
    ),
    (
        "not UTF-8",
        HEADER.encode() + b"1,A,https://a.test/1.jpg\n2,Caf\xe9,https://a.test/2.jpg\n",
        [(3, None)],
        "not UTF-8",
    ),
    (
        "UTF-16",
        b"\xff\xfe" + HEADER.encode("utf-16-le"),
        [(1, None)],
        "UTF-16",
    ),
    (
        "unclosed quote",
        (HEADER + '1,A,https://a.test/1.jpg\n2,"B,https://a.test/2.jpg\n3,C,x\n').encode(),
        [(3, None)],
        "never closed",
    ),
    (
        "text after a closing quote",
        (HEADER + '1,"A"B,https://a.test/1.jpg\n2,C,https://a.test/2.jpg\n').encode(),
        [(2, None)],
        "quoted cell",
    ),
    (
        "carriage return inside a cell",
        (HEADER + "1,A\rB,https://a.test/1.jpg\n").encode(),
        [(2, None)],
        "carriage return",
    ),
]


@pytest.mark.parametrize(
    ("data", "expected", "fragment"),
    [(d, e, f) for _, d, e, f in REFUSED],
    ids=[i for i, _, _, _ in REFUSED],
)
def test_refusals_name_line_and_column(
    data: bytes, expected: list[tuple[int, str | None]], fragment: str
) -> None:
    report = validate(data)
    assert not report.ok
    assert where(report) == expected
    assert fragment in report.problems[0].message
    if "first appears" not in fragment:  # the second pass trusts the first for uniqueness
        with pytest.raises(CsvInvalid):
            rows_of(data)


def test_every_problem_is_reported_in_line_order() -> None:
    text = HEADER + (
        "1,Good,https://a.test/1.jpg\n"  # 2
        "x,Bad serial,https://a.test/2.jpg\n"  # 3
        "3,,https://a.test/3.jpg\n"  # 4
        "4,Good,https://a.test/4.jpg\n"  # 5
        "5,Bad url,notaurl\n"  # 6
        "6,No urls,\n"  # 7
        "1,Repeated,https://a.test/7.jpg\n"  # 8
    )
    report = validate(text)
    assert where(report) == [(3, SERIAL), (4, NAME), (6, URLS), (7, URLS), (8, SERIAL)]
    assert "'x'" in report.problems[0].message
    assert "line 2" in report.problems[4].message
    assert report.total_rows == 7


def test_one_row_can_have_a_problem_in_each_column() -> None:
    report = validate(HEADER + "0,, \n")
    assert where(report) == [(2, SERIAL), (2, NAME), (2, URLS)]


def test_every_bad_url_of_a_cell_is_reported() -> None:
    report = validate(HEADER + '1,A,"nope, https://a.test/1.jpg, ftp://x/y"\n')
    assert where(report) == [(2, URLS), (2, URLS)]
    assert "URL 1 of 3" in report.problems[0].message
    assert "URL 3 of 3" in report.problems[1].message


def test_line_numbers_count_physical_lines_after_a_multi_line_cell() -> None:
    text = HEADER + (
        '1,"Shirt\nwith\nthree more lines",https://a.test/1.jpg\n'  # lines 2-4
        "\n"  # 5
        '2,"Socks\r\nstriped",bad\n'  # 6-7
        "3,,https://a.test/3.jpg\n"  # 8
    )
    report = validate(text)
    assert where(report) == [(6, URLS), (8, NAME)]


def test_rows_after_a_malformed_record_are_still_checked() -> None:
    report = validate(HEADER + '1,"A"B,https://a.test/1.jpg\n2,,https://a.test/2.jpg\n')
    assert where(report) == [(2, None), (3, NAME)]


def test_not_utf8_names_the_line_and_stops_there() -> None:
    data = (HEADER + "1,A,https://a.test/1.jpg\n").encode() + b'2,"multi\nline \xff",x\n3,,\n'
    report = validate(data)
    assert where(report) == [(4, None)]
    assert "0xFF" in report.problems[0].message


def test_bad_values_are_quoted_and_cut_to_about_100_characters() -> None:
    report = validate(HEADER + "1,A," + "x" * 500 + "\n")
    message = report.problems[0].message
    assert "'" + "x" * 100 + "'…" in message
    assert "x" * 101 not in message


# -- limits -------------------------------------------------------------------------------


def test_more_rows_than_allowed_is_one_problem() -> None:
    limits = CsvLimits(max_bytes=10**7, max_rows=3, max_images_per_row=5)
    rows = "".join(f"{n},N{n},https://a.test/{n}.jpg\n" for n in range(1, 11))
    report = validate(HEADER + rows, limits)
    assert where(report) == [(5, None)]
    assert "more than 3 product rows" in report.problems[0].message
    assert validate(HEADER + rows, CsvLimits(10**7, 10, 5)).ok


def test_more_images_than_allowed_per_row() -> None:
    limits = CsvLimits(max_bytes=10**7, max_rows=10, max_images_per_row=3)
    three = ",".join(f"https://a.test/{n}.jpg" for n in range(3))
    four = ",".join(f"https://a.test/{n}.jpg" for n in range(4))
    report = validate(HEADER + f'1,A,"{three}"\n2,B,"{four}"\n', limits)
    assert where(report) == [(3, URLS)]
    assert "4 image URLs" in report.problems[0].message


def test_a_line_longer_than_allowed() -> None:
    limits = CsvLimits(max_bytes=10**7, max_rows=10, max_images_per_row=3, max_line_chars=200)
    long_name = "é" * 300  # 600 bytes: caught by the character count
    huge_name = "n" * 5000  # caught before decoding, over several read chunks
    text = HEADER + (
        f"1,{long_name},https://a.test/1.jpg\n"
        f"2,{huge_name},https://a.test/2.jpg\n"
        "3,,https://a.test/3.jpg\n"
    )
    report = validate(text, limits)
    assert where(report) == [(2, None), (3, None), (4, NAME)]
    assert "longer than 200 characters" in report.problems[0].message


def test_a_very_long_line_is_skipped_without_being_held() -> None:
    limits = CsvLimits(max_bytes=10**7, max_rows=10, max_images_per_row=3, max_line_chars=1000)
    data = HEADER.encode() + b"1,A," + b"u" * 3_000_000 + b"\n2,,https://a.test/2.jpg"
    assert where(validate(data, limits)) == [(2, None), (3, NAME)]


def test_larger_than_max_bytes_is_one_problem() -> None:
    rows = "".join(f"{n},N{n},https://a.test/{n}.jpg\n" for n in range(1, 100))
    report = validate(HEADER + rows, CsvLimits(max_bytes=500, max_rows=1000, max_images_per_row=5))
    assert where(report) == [(1, None)]
    assert "500 bytes" in report.problems[0].message


def test_problems_are_capped_and_flagged_truncated() -> None:
    limits = CsvLimits(max_bytes=10**7, max_rows=1000, max_images_per_row=5, max_problems=10)
    rows = "".join(f"{n},,https://a.test/{n}.jpg\n" for n in range(1, 51))
    report = validate(HEADER + rows, limits)
    assert len(report.problems) == 10 and report.problems_truncated and not report.ok
    assert [p.row for p in report.problems] == list(range(2, 12))


# -- serial order -------------------------------------------------------------------------


def test_position_of_places_an_unsorted_file_in_serial_order() -> None:
    text = HEADER + "".join(
        f"{serial},N{serial},https://a.test/{serial}.jpg\n" for serial in (30, 4, 1000, 7, 5)
    )
    report = validate(text)
    assert list(report.sorted_serials) == [4, 5, 7, 30, 1000]
    rows = rows_of(text)
    assert [r.serial for r in rows] == [30, 4, 1000, 7, 5]  # file order
    assert [report.position_of(r.serial) for r in rows] == [3, 0, 4, 2, 1]
    with pytest.raises(KeyError):
        report.position_of(6)
    with pytest.raises(KeyError):
        report.position_of(2000)


def test_iter_rows_yields_trimmed_rows_with_their_lines() -> None:
    text = HEADER + ' 2 , Socks ,"  https://a.test/2.jpg ,https://a.test/3.jpg  "\n\n1.,Shirt,h\n'
    with pytest.raises(CsvInvalid) as caught:
        rows_of(text)
    assert caught.value.problems == [CsvProblem(4, URLS, caught.value.problems[0].message)]
    good = text.replace(",h\n", ",http://a.test/1\n")
    assert rows_of(good) == [
        ProductRow(2, 2, "Socks", ("https://a.test/2.jpg", "https://a.test/3.jpg")),
        ProductRow(4, 1, "Shirt", ("http://a.test/1",)),
    ]


def test_a_stream_that_returns_short_reads() -> None:
    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            return self._data.read(min(size, 7) if size > 0 else 7)

    data = ("\ufeff" + HEADER + '1,"Κάλτσες\n靴下",https://a.test/1.jpg\r\n2,B,x\n').encode()
    report = validate_csv(cast(IO[bytes], Trickle(data)), LIMITS)
    assert where(report) == [(4, URLS)]


def test_a_file_of_100k_rows_validates() -> None:
    rows = 100_000
    body = "".join(
        f'{serial},Product {serial},"https://img.test/{serial}/a.jpg,https://img.test/{serial}/b.jpg"\n'
        for serial in range(rows, 0, -1)
    )
    data = (HEADER + body).encode()
    assert len(data) < LIMITS.max_bytes
    report = validate(data)
    assert report.ok
    assert (report.total_rows, report.total_images) == (rows, 2 * rows)
    assert report.sorted_serials[0] == 1 and report.sorted_serials[-1] == rows
    assert report.position_of(rows) == rows - 1
    first = next(iter_rows(io.BytesIO(data), LIMITS))
    assert first == ProductRow(
        2,
        rows,
        f"Product {rows}",
        (f"https://img.test/{rows}/a.jpg", f"https://img.test/{rows}/b.jpg"),
    )
