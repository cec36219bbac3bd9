"""The output CSV: header, alignment of outputs with inputs, formula neutralisation."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest
from chalicelib.domain.csv_output import OUTPUT_HEADER, neutralise, write_output_csv

Row = tuple[int, str, list[str], list[str]]


def write(rows: list[Row]) -> tuple[bytes, int]:
    out = io.BytesIO()
    count = write_output_csv(iter(rows), out)
    return out.getvalue(), count


def table(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def test_header_only_when_there_are_no_rows() -> None:
    data, count = write([])
    assert count == 0
    assert data == b"S. No.,Product Name,Input Image Urls,Output Image Urls\r\n"
    assert table(data) == [list(OUTPUT_HEADER)]


def test_round_trip_through_csv_reader() -> None:
    rows: list[Row] = [
        (
            1,
            "Shirt",
            ["https://a.test/1.jpg", "https://a.test/2.jpg"],
            ["https://out.test/1/0.jpg", "https://out.test/1/1.jpg"],
        ),
        (2, 'Socks, "striped"\nwool', ["https://a.test/3.jpg"], ["https://out.test/2/0.jpg"]),
        (
            3,
            "Κάλτσες 靴下 👕",
            ["https://a.test/4.jpg?x=1&y=2"],
            ["https://out.test/3/0.jpg?sig=a%2Fb"],
        ),
    ]
    data, count = write(rows)
    assert count == 3
    assert table(data) == [
        list(OUTPUT_HEADER),
        [
            "1",
            "Shirt",
            "https://a.test/1.jpg,https://a.test/2.jpg",
            "https://out.test/1/0.jpg,https://out.test/1/1.jpg",
        ],
        ["2", 'Socks, "striped"\nwool', "https://a.test/3.jpg", "https://out.test/2/0.jpg"],
        [
            "3",
            "Κάλτσες 靴下 👕",
            "https://a.test/4.jpg?x=1&y=2",
            "https://out.test/3/0.jpg?sig=a%2Fb",
        ],
    ]


def test_multi_url_cells_are_quoted_and_lines_end_with_crlf() -> None:
    data, _ = write([(1, "A", ["https://a.test/1", "https://a.test/2"], ["o1", "o2"])])
    assert data.split(b"\r\n")[1] == b'1,A,"https://a.test/1,https://a.test/2","o1,o2"'
    assert data.endswith(b"\r\n") and b"\n" not in data.replace(b"\r\n", b"")


def test_utf8_without_bom() -> None:
    data, _ = write([(1, "Café", ["https://a.test/1"], ["o"])])
    assert not data.startswith(b"\xef\xbb\xbf")
    assert "Café".encode() in data


def test_failed_images_are_empty_and_outputs_stay_aligned() -> None:
    data, _ = write(
        [
            (
                1,
                "A",
                ["https://a.test/1", "https://a.test/2", "https://a.test/3"],
                ["o1", "", "o3"],
            ),
            (2, "B", ["https://a.test/4", "https://a.test/5"], ["o4", ""]),
            (3, "C", ["https://a.test/6"], [""]),
            (4, "D", ["https://a.test/7", "https://a.test/7"], ["o7", "o7"]),
        ]
    )
    rows = table(data)[1:]
    assert [r[3] for r in rows] == ["o1,,o3", "o4,", "", "o7,o7"]
    for row in rows:
        assert len(row[2].split(",")) == len(row[3].split(","))


def test_missing_outputs_are_padded_and_surplus_dropped() -> None:
    data, _ = write(
        [
            (1, "A", ["https://a.test/1", "https://a.test/2"], []),
            (2, "B", ["https://a.test/3"], ["o3", "extra"]),
        ]
    )
    assert [r[3] for r in table(data)[1:]] == [",", "o3"]


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("=SUM(A1:A2)", "'=SUM(A1:A2)"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@cmd", "'@cmd"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
        ("Shirt", "Shirt"),
        ("a=b", "a=b"),
        ("1-2", "1-2"),
        ("", ""),
        ("'quoted", "'quoted"),
        ("https://a.test/x.jpg", "https://a.test/x.jpg"),
    ],
)
def test_neutralise(cell: str, expected: str) -> None:
    assert neutralise(cell) == expected


def test_names_and_url_cells_are_neutralised_in_the_file() -> None:
    data, _ = write(
        [
            (1, '=HYPERLINK("http://evil")', ["https://a.test/1"], ["o1"]),
            (2, "@SUM(1)", ["-x"], ["+y"]),
            (3, "-20% sale", ["https://a.test/3"], [""]),
        ]
    )
    rows = table(data)[1:]
    assert rows[0][1] == '\'=HYPERLINK("http://evil")'
    assert rows[1][1:] == ["'@SUM(1)", "'-x", "'+y"]
    assert rows[2][1] == "'-20% sale"
    assert rows[2][3] == ""


def test_writes_into_the_stream_row_by_row_without_closing_it() -> None:
    out = io.BytesIO()
    sizes: list[int] = []

    def rows() -> Iterator[Row]:
        for n in range(1, 4):
            sizes.append(len(out.getvalue()))
            yield (n, f"N{n}", [f"https://a.test/{n}"], [f"o{n}"])

    assert write_output_csv(rows(), out) == 3
    assert sizes[0] > 0 and sizes[0] < sizes[1] < sizes[2]
    assert not out.closed
    out.write(b"")  # still usable
