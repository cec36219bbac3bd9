"""Hostile input, table-driven: URLs, images and CSVs that try to break the pipeline.

Every case runs a whole job through the services on the in-memory fakes (upload, ingest,
worker, finalizer) with one hostile item among good ones, and asserts the exact error code
on the hostile item and that every other row completed. URLs go through the real
HttpImageFetcher with a resolver this file controls; a socket hook refuses (and records) any
connection to an address that is not loopback, so no packet leaves the machine even when
the guard under test is broken.

Test names start with the kind of input (test_url_, test_image_, test_csv_); count with
`.venv/bin/pytest tests/unit/test_hostile_input.py tests/integration/test_hostile_downloads.py
--collect-only -q | grep -c ::test_url_` (and _image_, _csv_).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import ipaddress
import json
import socket
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from chalice.test import Client
from chalicelib.adapters.guarded_http import url_refusal
from chalicelib.adapters.image_download import HttpImageFetcher
from chalicelib.adapters.webhook_delivery import HttpWebhookSender
from chalicelib.config import Settings
from chalicelib.domain.models import ImageErrorCode, JobStatus, RowStatus, WebhookState
from chalicelib.entrypoints import queue_handlers
from chalicelib.entrypoints.queue_handlers import QueueRecord
from chalicelib.errors import CsvInvalid, ImageFailure, InvalidRequest
from chalicelib.services import upload
from PIL import Image

from tests.fakes import FakeWorld, make_world
from tests.support.tenants import api_client

HEADER = "S. No.,Product Name,Input Image Urls\n"
GOOD = "https://good.test/ok.jpg"
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

# What the names in the cases resolve to. Nothing here is ever connected to.
DNS: dict[str, list[str]] = {
    "evil.test": ["10.0.0.1"],
    "metadata.test": ["169.254.169.254"],
    "loop.test": ["127.0.0.1"],
    "loop6.test": ["::1"],
    "mapped.test": ["::ffff:10.0.0.1"],
    "ula.test": ["fd00::5"],
    "cgnat.test": ["100.100.100.100"],
    "mixed.test": ["93.184.216.34", "192.168.1.1"],
    "garbage.test": ["not-an-address"],
    "public.test": ["93.184.216.34"],
}


def fake_resolve(host: str, port: int) -> list[str]:
    if host not in DNS:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} is not in the test's DNS")
    return list(DNS[host])


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Every socket connect to a non-loopback address is refused here, before the kernel sees
    it, and recorded; the test fails at teardown when any was tried."""
    attempts: list[object] = []
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else address
        try:
            loopback = ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            attempts.append(address)
            raise ConnectionRefusedError(f"test hook: no connection to {address!r}")
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield attempts
    assert attempts == [], f"tried to connect beyond loopback: {attempts}"


# --- driving a job ------------------------------------------------------------------------


def jpeg(width: int = 32, height: int = 24, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "JPEG", quality=95)
    return out.getvalue()


class RoutingFetcher:
    """The good URL from memory; every other URL through the real guarded HTTP adapter."""

    def __init__(self, hostile: dict[str, bytes] | None = None) -> None:
        self.hostile = hostile or {}
        self.real = HttpImageFetcher(
            max_bytes=1 << 20,
            connect_timeout=1,
            read_timeout=1,
            deadline=3,
            allow_private=False,
            resolve=fake_resolve,
        )

    def fetch(self, url: str) -> bytes:
        if url == GOOD:
            return jpeg()
        if url in self.hostile:
            return self.hostile[url]
        return self.real.fetch(url)


def storage_record(key: str) -> QueueRecord:
    body = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": "uploads"}, "object": {"key": key, "size": 1}},
            }
        ]
    }
    return QueueRecord("s3", json.dumps(body))


def drain(world: FakeWorld) -> None:
    for _ in range(100):
        moved = False
        for queue, handler in (
            (world.rows_queue, queue_handlers.rows),
            (world.finalize_queue, queue_handlers.finalize),
            (world.webhook_queue, queue_handlers.webhooks),
        ):
            sent = queue.drain()
            for start in range(0, len(sent), 10):
                records = [
                    QueueRecord(f"m{i}", json.dumps(m.body))
                    for i, m in enumerate(sent[start : start + 10])
                ]
                handler(world.deps, records)
                moved = True
        if not moved:
            return
    raise AssertionError("queues never drained")


def new_world(fetcher: object | None = None, **settings: Any) -> FakeWorld:
    known = {f.name for f in dataclasses.fields(Settings)}
    tuning = {k: v for k, v in {"fetch_backoff": 0.0, "fetch_attempts": 1}.items() if k in known}
    world = make_world(Settings(webhook_secret=SECRET, **tuning, **settings))
    world.deps.fetcher = fetcher or RoutingFetcher()  # type: ignore[assignment]
    world.deps.check_webhook_url = lambda url: url_refusal(
        url, allow_private=False, resolve=fake_resolve
    )
    return world


@dataclass(frozen=True)
class Outcome:
    status: JobStatus
    rows: dict[int, tuple[RowStatus, list[str], list[str]]]  # serial: status, codes, outputs
    output_csv: list[list[str]]


def run_job(world: FakeWorld, text: str, webhook: str | None = None) -> Outcome:
    accepted = upload.submit_csv(world.deps, text.encode(), webhook, None, "default")
    queue_handlers.ingest(world.deps, [storage_record(accepted.job.input_key)])
    drain(world)
    request_id = accepted.job.request_id
    job = world.store.get_job(request_id)
    assert job is not None
    rows = {
        row.serial: (row.status, [str(e["code"]) for e in row.errors], list(row.output_keys))
        for row in world.store.iter_rows(request_id)
    }
    table: list[list[str]] = []
    if job.output_csv_key:
        data = world.outputs.objects[job.output_csv_key][0].decode("utf-8")
        table = list(csv.reader(io.StringIO(data)))
    return Outcome(job.status, rows, table)


def hostile_job(world: FakeWorld, url: str) -> Outcome:
    """Rows 1 and 3 good, row 2 the hostile URL."""
    text = HEADER + f"1,Good,{GOOD}\n2,Hostile,{url}\n3,Also good,{GOOD}\n"
    return run_job(world, text)


def assert_only_row_2_failed(outcome: Outcome, code: ImageErrorCode) -> None:
    assert outcome.rows[2][0] == RowStatus.FAILED
    assert outcome.rows[2][1] == [str(code)]
    assert outcome.rows[2][2] == [""]
    for serial in (1, 3):
        status, codes, outputs = outcome.rows[serial]
        assert status == RowStatus.COMPLETED and codes == [] and outputs[0]
    assert outcome.status == JobStatus.COMPLETED_WITH_ERRORS
    assert len(outcome.output_csv) == 4 and outcome.output_csv[2][3] == ""


# --- URLs: addresses ------------------------------------------------------------------------

BLOCKED_URLS = [
    # IPv4, dotted
    "http://127.0.0.1/a.jpg",
    "http://127.255.255.254/a.jpg",
    "http://10.0.0.1/a.jpg",
    "http://172.16.5.4/a.jpg",
    "http://192.168.0.1/a.jpg",
    "http://100.64.0.1/a.jpg",
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://0.0.0.0/a.jpg",
    "http://224.0.0.1/a.jpg",
    "http://240.0.0.1/a.jpg",
    "http://255.255.255.255/a.jpg",
    "http://192.0.2.1/a.jpg",
    "http://198.51.100.2/a.jpg",
    "http://198.18.0.1/a.jpg",
    "https://127.0.0.1:8443/a.jpg",
    # odd IPv4 spellings
    "http://2130706433/a.jpg",
    "http://0x7f000001/a.jpg",
    "http://0x7f.1/a.jpg",
    "http://0177.0.0.1/a.jpg",
    "http://017700000001/a.jpg",
    "http://127.1/a.jpg",
    "http://10.1/a.jpg",
    "http://0/a.jpg",
    "http://127.0.0.1./a.jpg",
    "http://0xA9FEA9FE/latest/meta-data/",
    "http://0251.0376.0251.0376/a.jpg",
    # IPv6 and IPv4 inside IPv6
    "http://[::1]/a.jpg",
    "http://[0:0:0:0:0:0:0:1]/a.jpg",
    "http://[::]/a.jpg",
    "http://[fe80::1]/a.jpg",
    "http://[fd00::1]/a.jpg",
    "http://[fc00::1]/a.jpg",
    "http://[ff02::1]/a.jpg",
    "http://[fec0::1]/a.jpg",
    "http://[::ffff:127.0.0.1]/a.jpg",
    "http://[::ffff:7f00:1]/a.jpg",
    "http://[::ffff:169.254.169.254]/a.jpg",
    "http://[::ffff:0:a00:1]/a.jpg",
    "http://[::127.0.0.1]/a.jpg",
    "http://[64:ff9b::a9fe:a9fe]/a.jpg",
    "http://[2002:7f00:1::]/a.jpg",
    "http://[2001:db8::1]/a.jpg",
    # loopback names, and names resolving to forbidden addresses
    "http://localhost/a.jpg",
    "http://LOCALHOST./a.jpg",
    "http://shop.localhost/a.jpg",
    "http://evil.test/a.jpg",
    "http://metadata.test/latest/meta-data/",
    "http://loop.test:8080/a.jpg",
    "http://loop6.test/a.jpg",
    "http://mapped.test/a.jpg",
    "http://ula.test/a.jpg",
    "http://cgnat.test/a.jpg",
    "https://mixed.test/a.jpg",
    "http://garbage.test/a.jpg",
]


@pytest.mark.parametrize("url", BLOCKED_URLS)
def test_url_forbidden_address_is_blocked_and_the_job_goes_on(
    url: str, loopback_only: list[object]
) -> None:
    outcome = hostile_job(new_world(), url)
    assert_only_row_2_failed(outcome, ImageErrorCode.BLOCKED_ADDRESS)
    assert loopback_only == []


def test_url_public_name_is_let_through_the_guard_to_the_connect_hook(
    loopback_only: list[object],
) -> None:
    """The hook itself works: a public address passes the guard and is stopped by the hook
    (a fetch_failed), so a broken guard would be seen, not hidden."""
    fetcher = RoutingFetcher()
    with pytest.raises(ImageFailure) as info:
        fetcher.real.fetch("http://public.test/a.jpg")
    assert info.value.code == ImageErrorCode.FETCH_FAILED
    assert loopback_only == [("93.184.216.34", 80)]
    loopback_only.clear()


# --- URLs: syntax ---------------------------------------------------------------------------

INVALID_URLS = [
    "file:///etc/passwd",
    "ftp://files.test/a.jpg",
    "gopher://evil.test:70/_GET",
    "data:image/png;base64,iVBORw0KGgo=",
    "javascript:alert(1)",
    "dict://evil.test:11211/stat",
    "//cdn.test/a.jpg",
    "cdn.test/a.jpg",
    "/images/a.jpg",
    "http://user:pass@cdn.test/a.jpg",
    "http://user@cdn.test/a.jpg",
    "http://cdn.test@evil.test/a.jpg",
    "http:///a.jpg",
    "http://cdn.test:0/a.jpg",
    "http://cdn.test:99999/a.jpg",
    "http://[::1%25eth0]/a.jpg",
    "http://cdn..test/a.jpg",
    "http://cdn.test\\@evil.test/a.jpg",
]


@pytest.mark.parametrize("url", INVALID_URLS)
def test_url_invalid_is_refused_in_the_csv_and_by_the_fetcher(
    url: str, loopback_only: list[object]
) -> None:
    world = new_world()
    text = HEADER + f"1,Good,{GOOD}\n2,Hostile,{url}\n3,Also good,{GOOD}\n"
    with pytest.raises(CsvInvalid) as info:
        upload.submit_csv(world.deps, text.encode(), None, None, "default")
    assert [(p.row, p.column) for p in info.value.problems] == [(3, "Input Image Urls")]
    assert world.store.jobs == {} and world.uploads.objects == {}
    with pytest.raises(ImageFailure) as failure:
        RoutingFetcher().real.fetch(url)
    assert failure.value.code == ImageErrorCode.INVALID_URL


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://2130706433/hook",
        "http://[::ffff:169.254.169.254]/hook",
        "http://metadata.test/hook",
        "http://localhost:9000/hook",
        "ftp://hook.test/x",
        "https://user:pw@public.test/hook",
        "hook.test/x",
    ],
)
def test_url_webhook_refused_at_submit_with_a_400(url: str) -> None:
    world = new_world()
    with pytest.raises(InvalidRequest) as info:
        upload.submit_csv(world.deps, (HEADER + f"1,A,{GOOD}\n").encode(), url, None, "default")
    assert info.value.details and info.value.details[0]["field"] == "webhookUrl"
    assert world.store.jobs == {}


def test_url_webhook_rebinding_after_submit_is_refused_at_send(
    loopback_only: list[object],
) -> None:
    """hook.rebind.test is public when the job is submitted, private when the webhook goes."""
    answers = {"hook.rebind.test": ["93.184.216.34"]}

    def resolve(host: str, port: int) -> list[str]:
        return list(answers[host])

    world = new_world()
    world.deps.check_webhook_url = lambda url: url_refusal(
        url, allow_private=False, resolve=resolve
    )
    world.deps.webhook_sender = HttpWebhookSender(allow_private=False, timeout=1, resolve=resolve)
    accepted = upload.submit_csv(
        world.deps,
        (HEADER + f"1,A,{GOOD}\n").encode(),
        "http://hook.rebind.test/h",
        None,
        "default",
    )
    answers["hook.rebind.test"] = ["10.0.0.7"]
    queue_handlers.ingest(world.deps, [storage_record(accepted.job.input_key)])
    drain(world)
    job = world.store.get_job(accepted.job.request_id)
    assert job is not None and job.status == JobStatus.COMPLETED
    assert job.webhook.attempts >= 1 and job.webhook.state != WebhookState.DELIVERED
    assert job.webhook.last_status_code is None
    assert loopback_only == []


# --- images ---------------------------------------------------------------------------------


def png_header_only(width: int, height: int, mode_byte: int = 2) -> bytes:
    """A PNG whose IHDR claims width x height, with one tiny IDAT: a pixel-count bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode_byte, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF header is patched to claim width x height."""
    data = bytearray(jpeg(16, 16))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def gif_claiming(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("P", (4, 4)), "GIF"))
    struct.pack_into("<HH", data, 6, width, height)
    image_descriptor = data.find(b"\x2c")
    struct.pack_into("<HH", data, image_descriptor + 5, width, height)
    return bytes(data)


def bmp_claiming(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("RGB", (4, 4)), "BMP"))
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


def webp_claiming(width: int, height: int) -> bytes:
    """A lossless WebP (VP8L) whose header claims width x height."""
    data = bytearray(encode(Image.new("RGB", (4, 4), (1, 2, 3)), "WEBP", lossless=True))
    at = data.find(b"VP8L") + 8 + 1
    bits = (width - 1) | ((height - 1) << 14) | (data[at + 3] >> 4 << 28)
    struct.pack_into("<I", data, at, bits)
    return bytes(data)


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def png_with_bad_crc() -> bytes:
    data = bytearray(encode(Image.new("RGB", (40, 40), (9, 9, 9)), "PNG"))
    idat = data.find(b"IDAT")
    data[idat + 6] ^= 0xFF
    return bytes(data)


def png_text_bomb() -> bytes:
    """A PNG with a zTXt chunk that inflates to 64 MiB."""
    data = encode(Image.new("RGB", (8, 8)), "PNG")
    payload = b"Comment\x00\x00" + zlib.compress(b"A" * (64 << 20), 9)
    body = b"zTXt" + payload
    chunk = struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))
    return data[:33] + chunk + data[33:]


def noisy(size: tuple[int, int] = (64, 64)) -> Image.Image:
    image = Image.new("RGB", size)
    image.putdata(
        [((x * 7) % 256, (y * 13) % 256, (x * y) % 256) for y in range(64) for x in range(64)]
    )
    return image


BIG_JPEG = encode(noisy(), "JPEG", quality=95)
BIG_PNG = encode(noisy(), "PNG")
PROGRESSIVE = encode(noisy(), "JPEG", quality=95, progressive=True)

HOSTILE_IMAGES: list[tuple[str, bytes, ImageErrorCode]] = [
    # not images at all, whatever the server would say the type is
    ("html", b"<!doctype html><html><body>Not found</body></html>", ImageErrorCode.NOT_AN_IMAGE),
    ("json", b'{"error": "no such image"}', ImageErrorCode.NOT_AN_IMAGE),
    (
        "svg",
        b'<svg xmlns="http://www.w3.org/2000/svg" width="9"><script>x()</script></svg>',
        ImageErrorCode.NOT_AN_IMAGE,
    ),
    (
        "svg-with-prolog",
        b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]><svg>&x;</svg>',
        ImageErrorCode.NOT_AN_IMAGE,
    ),
    ("plain-text", b"hello world\n" * 10, ImageErrorCode.NOT_AN_IMAGE),
    ("empty", b"", ImageErrorCode.NOT_AN_IMAGE),
    ("pdf", b"%PDF-1.7\n1 0 obj<<>>endobj\n%%EOF", ImageErrorCode.NOT_AN_IMAGE),
    (
        "postscript",
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
        ImageErrorCode.NOT_AN_IMAGE,
    ),
    ("zip", b"PK\x03\x04" + b"\x00" * 60, ImageErrorCode.NOT_AN_IMAGE),
    ("html-then-jpeg", b"<html>" + BIG_JPEG, ImageErrorCode.NOT_AN_IMAGE),
    ("psd-outside-allow-list", b"8BPS\x00\x01" + b"\x00" * 40, ImageErrorCode.NOT_AN_IMAGE),
    # damaged images: never half-grey output
    ("truncated-jpeg", BIG_JPEG[: len(BIG_JPEG) // 2], ImageErrorCode.DECODE_FAILED),
    (
        "truncated-progressive-jpeg",
        PROGRESSIVE[: len(PROGRESSIVE) // 2],
        ImageErrorCode.DECODE_FAILED,
    ),
    ("truncated-png", BIG_PNG[: len(BIG_PNG) // 2], ImageErrorCode.DECODE_FAILED),
    ("jpeg-signature-only", b"\xff\xd8\xff\xe0" + b"\x00" * 30, ImageErrorCode.DECODE_FAILED),
    ("png-signature-only", b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, ImageErrorCode.DECODE_FAILED),
    ("gif-signature-only", b"GIF89a" + b"\x00" * 4, ImageErrorCode.DECODE_FAILED),
    (
        "webp-riff-garbage",
        b"RIFF\x20\x00\x00\x00WEBPVP8 " + b"\x00" * 20,
        ImageErrorCode.DECODE_FAILED,
    ),
    ("png-bad-crc", png_with_bad_crc(), ImageErrorCode.DECODE_FAILED),
    ("png-zero-width", png_header_only(0, 10), ImageErrorCode.DECODE_FAILED),
    ("png-text-bomb", png_text_bomb(), ImageErrorCode.DECODE_FAILED),
    # too many pixels, told by the header before any decoding
    ("png-60mp-over-our-cap", png_header_only(10_000, 6_000), ImageErrorCode.TOO_MANY_PIXELS),
    ("png-100mp-pillow-warning", png_header_only(10_000, 10_000), ImageErrorCode.TOO_MANY_PIXELS),
    ("png-4gp-pillow-error", png_header_only(65_535, 65_535), ImageErrorCode.TOO_MANY_PIXELS),
    ("jpeg-65500-square", jpeg_claiming(65_500, 65_500), ImageErrorCode.TOO_MANY_PIXELS),
    ("jpeg-wide-strip", jpeg_claiming(65_500, 1_000), ImageErrorCode.TOO_MANY_PIXELS),
    ("gif-65535-square", gif_claiming(65_535, 65_535), ImageErrorCode.TOO_MANY_PIXELS),
    ("bmp-huge", bmp_claiming(30_000, 30_000), ImageErrorCode.TOO_MANY_PIXELS),
    ("webp-16k-square", webp_claiming(16_384, 16_384), ImageErrorCode.TOO_MANY_PIXELS),
]


@pytest.mark.parametrize(
    ("body", "code"), [(b, c) for _, b, c in HOSTILE_IMAGES], ids=[n for n, _, _ in HOSTILE_IMAGES]
)
def test_image_hostile_body_fails_with_its_code_and_the_job_goes_on(
    body: bytes, code: ImageErrorCode
) -> None:
    url = "https://img.test/hostile"
    outcome = hostile_job(new_world(RoutingFetcher({url: body})), url)
    assert_only_row_2_failed(outcome, code)


# --- CSV: refused ---------------------------------------------------------------------------

U = "https://img.test/a.jpg"
NAME, SERIAL, URLS = "Product Name", "S. No.", "Input Image Urls"

HOSTILE_CSVS: list[tuple[str, bytes, list[tuple[int, str | None]]]] = [
    ("empty-file", b"", [(1, None)]),
    ("only-blank-lines", b"\n\r\n  \n", [(1, None)]),
    ("header-only", HEADER.encode(), [(1, None)]),
    ("missing-url-column", b"S. No.,Product Name\n1,A\n", [(1, URLS)]),
    ("missing-every-column", b"a,b,c\n1,A,x\n", [(1, SERIAL), (1, NAME), (1, URLS)]),
    (
        "serial-column-twice",
        f"S. No.,Product Name,Serial Number,Input Image Urls\n1,A,1,{U}\n".encode(),
        [(1, SERIAL)],
    ),
    ("duplicate-serial", f"{HEADER}1,A,{U}\n1,B,{U}\n".encode(), [(3, SERIAL)]),
    ("serial-not-integer", f"{HEADER}abc,A,{U}\n".encode(), [(2, SERIAL)]),
    ("serial-fraction", f"{HEADER}1.5,A,{U}\n".encode(), [(2, SERIAL)]),
    ("serial-zero", f"{HEADER}0,A,{U}\n".encode(), [(2, SERIAL)]),
    ("serial-negative", f"{HEADER}-3,A,{U}\n".encode(), [(2, SERIAL)]),
    ("serial-empty", f"{HEADER},A,{U}\n".encode(), [(2, SERIAL)]),
    ("serial-formula", f"{HEADER}=1+1,A,{U}\n".encode(), [(2, SERIAL)]),
    ("serial-too-big", f"{HEADER}99999999999999999999,A,{U}\n".encode(), [(2, SERIAL)]),
    ("name-empty", f"{HEADER}1,,{U}\n".encode(), [(2, NAME)]),
    ("name-spaces", f"{HEADER}1,   ,{U}\n".encode(), [(2, NAME)]),
    ("url-cell-empty", f"{HEADER}1,A,\n".encode(), [(2, URLS)]),
    ("url-cell-only-commas", f'{HEADER}1,A," , ,"\n'.encode(), [(2, URLS)]),
    ("url-relative", f"{HEADER}1,A,/a.jpg\n".encode(), [(2, URLS)]),
    ("url-credentials", f"{HEADER}1,A,https://u:p@img.test/a.jpg\n".encode(), [(2, URLS)]),
    ("url-file-scheme", f"{HEADER}1,A,file:///etc/passwd\n".encode(), [(2, URLS)]),
    ("url-second-of-two-bad", f'{HEADER}1,A,"{U},ftp://x.test/b"\n'.encode(), [(2, URLS)]),
    ("not-utf8-latin1", f"{HEADER}1,Caf\xe9,{U}\n".encode("latin-1"), [(2, None)]),
    ("utf16", ("\ufeff" + HEADER + f"1,A,{U}\n").encode("utf-16"), [(1, None)]),
    ("line-too-long", f"{HEADER}1,{'x' * 70_000},{U}\n".encode(), [(2, None)]),
    ("unclosed-quote", f'{HEADER}1,"A,{U}\n'.encode(), [(2, None)]),
    ("text-after-quote", f'{HEADER}1,"A"B,{U}\n'.encode(), [(2, None)]),
    (
        "too-many-rows",
        (HEADER + "".join(f"{n},P,{U}\n" for n in range(1, 12))).encode(),
        [(12, None)],
    ),
    (
        "too-many-images",
        (
            HEADER + '1,A,"' + ",".join(f"https://img.test/{n}.jpg" for n in range(6)) + '"\n'
        ).encode(),
        [(2, URLS)],
    ),
    ("binary", b"\x00\x01\x02\xff\xfe" * 20, [(1, None)]),
]


@pytest.mark.parametrize(
    ("data", "where"), [(d, w) for _, d, w in HOSTILE_CSVS], ids=[n for n, _, _ in HOSTILE_CSVS]
)
def test_csv_hostile_file_is_refused_with_every_problem_located(
    data: bytes, where: list[tuple[int, str | None]]
) -> None:
    world = new_world(max_rows=10, max_images_per_row=5)
    with pytest.raises(CsvInvalid) as info:
        upload.submit_csv(world.deps, data, None, None, "default")
    problems = info.value.problems
    assert [(p.row, p.column) for p in problems] == where
    assert all(p.message for p in problems)
    assert world.store.jobs == {} and world.uploads.objects == {}


def test_csv_every_problem_of_a_file_is_reported_at_once() -> None:
    text = HEADER + f"0,A,{U}\n2,,{U}\n3,C,\n4,D,ftp://x\nfoo,E,{U}\n6,F,{U}\n6,G,{U}\n"
    with pytest.raises(CsvInvalid) as info:
        upload.submit_csv(new_world().deps, text.encode(), None, None, "default")
    assert [(p.row, p.column) for p in info.value.problems] == [
        (2, SERIAL),
        (3, NAME),
        (4, URLS),
        (5, URLS),
        (6, SERIAL),
        (8, SERIAL),
    ]


def test_csv_not_utf8_says_so_and_names_the_line() -> None:
    data = (HEADER + f"1,A,{U}\n2,B,{U}\n").encode() + b"3,Caf\xe9,https://img.test/c.jpg\n"
    with pytest.raises(CsvInvalid) as info:
        upload.submit_csv(new_world().deps, data, None, None, "default")
    (problem,) = info.value.problems
    assert problem.row == 4 and "UTF-8" in problem.message and "line 4" in problem.message


# --- CSV: accepted the way the user means it -------------------------------------------------

A, B = "https://img.test/a.jpg", "https://img.test/b.jpg"
ACCEPTED_CSVS: list[tuple[str, bytes, list[tuple[int, str, list[str]]]]] = [
    (
        "columns-in-another-order",
        f"Input Image Urls,Product Name,S. No.\n{A},Mug,1\n".encode(),
        [(1, "Mug", [A])],
    ),
    (
        "extra-columns-ignored",
        f"Notes,S. No.,Price,Product Name,Input Image Urls,More\nx,1,9.99,Mug,{A},y\n".encode(),
        [(1, "Mug", [A])],
    ),
    ("spaces-trimmed", f'{HEADER}  1 ,  Mug  ,"  {A} ,  {B}  "\n'.encode(), [(1, "Mug", [A, B])]),
    (
        "bom-crlf-blank-lines",
        f"\ufeff{HEADER}\r\n\r\n1,Mug,{A}\r\n\r\n".encode(),
        [(1, "Mug", [A])],
    ),
    (
        "serial-with-dot",
        f"{HEADER}1.,Mug,{A}\n2.0,Cup,{B}\n".encode(),
        [(1, "Mug", [A]), (2, "Cup", [B])],
    ),
    (
        "quoted-newline-in-name",
        f'{HEADER}1,"Mug\nlarge",{A}\n2,Cup,{B}\n'.encode(),
        [(1, "Mug\nlarge", [A]), (2, "Cup", [B])],
    ),
    (
        "names-in-any-script",
        f"{HEADER}1,Чашка 杯子 كوب 🍵,{A}\n2,\uff2d\uff55\uff47\u200d,{B}\n".encode(),
        [(1, "Чашка 杯子 كوب 🍵", [A]), (2, "\uff2d\uff55\uff47\u200d", [B])],
    ),
    (
        "header-case-and-aliases",
        f"serial number,PRODUCT NAME,input image urls\n1,Mug,{A}\n".encode(),
        [(1, "Mug", [A])],
    ),
    (
        "formula-looking-name-kept-and-neutralised",
        f'{HEADER}1,=HYPERLINK("http://x"),{A}\n'.encode(),
        [(1, '=HYPERLINK("http://x")', [A])],
    ),
]


@pytest.mark.parametrize(
    ("data", "expected"),
    [(d, e) for _, d, e in ACCEPTED_CSVS],
    ids=[n for n, _, _ in ACCEPTED_CSVS],
)
def test_csv_accepted_variant_runs_to_completion(
    data: bytes, expected: list[tuple[int, str, list[str]]]
) -> None:
    world = new_world(RoutingFetcher({A: jpeg(), B: jpeg(8, 8)}))
    outcome = run_job(world, data.decode("utf-8"))
    assert outcome.status == JobStatus.COMPLETED
    assert sorted(outcome.rows) == [serial for serial, _, _ in expected]
    assert all(r[0] == RowStatus.COMPLETED for r in outcome.rows.values())
    names = {int(row[0]): row[1] for row in outcome.output_csv[1:]}
    inputs = {int(row[0]): row[2] for row in outcome.output_csv[1:]}
    for serial, name, urls in expected:
        assert names[serial] == ("'" + name if name.startswith("=") else name)
        assert inputs[serial] == ",".join(urls)


def test_csv_same_url_twice_in_a_row_is_fetched_once_and_its_output_repeated() -> None:
    calls: list[str] = []

    class Counting(RoutingFetcher):
        def fetch(self, url: str) -> bytes:
            calls.append(url)
            return super().fetch(url)

    world = new_world(Counting({A: jpeg()}))
    outcome = run_job(world, HEADER + f'1,Mug,"{A}, {A}"\n')
    assert calls == [A]
    assert outcome.rows[1][2][0] == outcome.rows[1][2][1] != ""
    out_urls = outcome.output_csv[1][3].split(",")
    assert len(out_urls) == 2 and out_urls[0] == out_urls[1]


def test_csv_output_formula_cells_are_neutralised_in_the_file() -> None:
    """Opens the output CSV the job wrote and checks no cell starts like a formula."""
    names = ["=1+1", "+SUM(A1)", "-2+3", "@cmd", "=cmd|' /C calc'!A0", "Plain"]
    text = HEADER + "".join(f'{n},"{name}",{A}\n' for n, name in enumerate(names, 1))
    outcome = run_job(new_world(RoutingFetcher({A: jpeg()})), text)
    assert outcome.status == JobStatus.COMPLETED
    cells = [cell for row in outcome.output_csv[1:] for cell in row]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]
    written = [row[1] for row in outcome.output_csv[1:]]
    assert written == [f"'{name}" for name in names[:-1]] + ["Plain"]


# --- POST /api/validate: the same report, no job ---------------------------------------------


@pytest.fixture
def api() -> Iterator[tuple[Client, FakeWorld]]:
    world = new_world()
    with api_client(world) as client:
        yield client, world


def post_csv(client: Client, path: str, data: bytes, webhook: str | None = None) -> Any:
    fields = {"webhookUrl": webhook} if webhook else None
    prepared = requests.Request(
        "POST", "http://x/", files={"file": ("p.csv", data, "text/csv")}, data=fields
    ).prepare()
    assert isinstance(prepared.body, bytes)
    return client.http.request(
        "POST", path, headers={"Content-Type": prepared.headers["Content-Type"]}, body=prepared.body
    )


@pytest.mark.parametrize(
    "data",
    [d for n, d, _ in HOSTILE_CSVS if n not in ("too-many-rows", "too-many-images")],
    ids=[n for n, _, _ in HOSTILE_CSVS if n not in ("too-many-rows", "too-many-images")],
)
def test_csv_validate_route_answers_the_upload_report_without_a_job(
    api: tuple[Client, FakeWorld], data: bytes
) -> None:
    """The dry run answers what the upload answers (400 with the same details, or 415 for
    a file that is not text), and neither starts a job."""
    client, world = api
    dry = post_csv(client, "/api/validate", data)
    real = post_csv(client, "/api/uploadAndProcessDocument", data)
    assert dry.status_code == real.status_code
    assert dry.status_code in (400, 415)
    assert json.loads(dry.body) == json.loads(real.body)
    if dry.status_code == 400:
        assert json.loads(dry.body)["details"]
    assert world.store.jobs == {} and world.uploads.objects == {}


def test_csv_validate_route_accepts_a_good_file_and_refuses_a_blocked_webhook(
    api: tuple[Client, FakeWorld],
) -> None:
    client, world = api
    good = (HEADER + f'1,A,"{A},{B}"\n2,B,{A}\n').encode()
    answer = post_csv(client, "/api/validate", good)
    assert answer.status_code == 200
    assert json.loads(answer.body) == {"valid": True, "totalProducts": 2, "totalImages": 3}
    refused = post_csv(client, "/api/validate", good, webhook="http://169.254.169.254/")
    assert refused.status_code == 400
    assert world.store.jobs == {} and world.uploads.objects == {}
