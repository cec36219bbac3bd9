"""Output options through a running stack (issue 16, "Done when"): a job asking for WebP at
most 300 px wide (multipart fields) and one asking for AVIF at quality 40 (the presigned
upload's JSON) end completed with outputs of that format that fit the bound with their
aspect kept, at links without expiry that answer a plain GET with a long Cache-Control; a
small image under a large bound keeps its size; a bad option is a 400 in the contract's
error shape naming the field, on both upload routes. A re-submitted job of the same tenant
with the same options copies its outputs (the `ImagesReused` metric counts them, and an
output altered in the store comes back as altered: copied, not encoded again); other
options or another tenant make them anew."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from PIL import Image, ImageOps

from local_emulator.stack import Emulator
from tests.e2e.emulator_support import SAMPLES, keyed, never_expires
from tests.support.emulator import running_emulator
from tests.support.metrics import EmittedMetrics, emitted_metrics

pytestmark = pytest.mark.e2e

HEADER = "S. No.,Product Name,Input Image Urls\n"
TERMINAL = {"completed", "completed_with_errors", "failed", "cancelled"}
PILLOW_FORMAT = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF"}
EXTENSION = {"jpeg": ".jpg", "webp": ".webp", "avif": ".avif"}
LONG_CACHE = 30 * 86_400  # "long": a month at least (a year, or the outputs' retention)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with running_emulator(tenants=("local", "other")) as emu:
        yield emu


# -- helpers ----------------------------------------------------------------------------------


def source_size(name: str) -> tuple[int, int]:
    """The sample's width and height as the pipeline sees it (EXIF orientation applied)."""
    with Image.open(SAMPLES / "images" / name) as image:
        size: tuple[int, int] = ImageOps.exif_transpose(image).size
        return size


def table(images: str, names: Sequence[str]) -> str:
    """One product per image, in order."""
    return HEADER + "".join(f"{n},Product {n},{images}/{name}\n" for n, name in enumerate(names, 1))


def api(emulator: Emulator, tenant: int = 0) -> requests.Session:
    if tenant == 0:
        return keyed(emulator)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {emulator.tenants[tenant].api_key}"
    return session


def submit_multipart(
    emulator: Emulator, text: str, fields: Mapping[str, str], tenant: int = 0
) -> requests.Response:
    return api(emulator, tenant).post(
        f"{emulator.api_url}/api/uploadAndProcessDocument",
        files={"file": ("products.csv", text.encode(), "text/csv")},
        data=dict(fields),
        timeout=30,
    )


def submit_presigned(emulator: Emulator, text: str, options: Mapping[str, Any]) -> str:
    created = keyed(emulator).post(
        f"{emulator.api_url}/api/uploads", json={"fileName": "products.csv", **options}, timeout=10
    )
    assert created.status_code == 201, created.text
    answer = created.json()
    posted = requests.post(
        answer["upload"]["url"],
        data=answer["upload"]["fields"],
        files={"file": ("products.csv", text.encode(), "text/csv")},
        timeout=30,
    )
    assert posted.status_code in (200, 201, 204), posted.text
    return str(answer["requestId"])


def run_job(
    emulator: Emulator, text: str, fields: Mapping[str, str], tenant: int = 0
) -> dict[str, Any]:
    answer = submit_multipart(emulator, text, fields, tenant)
    assert answer.status_code == 202, answer.text
    return wait_terminal(emulator, answer.json()["requestId"], tenant)


def wait_terminal(
    emulator: Emulator, request_id: str, tenant: int = 0, timeout: float = 120
) -> dict[str, Any]:
    session = api(emulator, tenant)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc: dict[str, Any] = session.get(
            f"{emulator.api_url}/api/getProcessingStatus/{request_id}", timeout=10
        ).json()
        if doc.get("status") in TERMINAL:
            return doc
        time.sleep(0.3)
    raise AssertionError(f"job {request_id} did not end within {timeout}s")


def status_links(doc: Mapping[str, Any]) -> list[str]:
    return [url for product in doc["products"] for url in product["outputImageUrls"]]


def csv_links(emulator: Emulator, doc: Mapping[str, Any], tenant: int = 0) -> list[str]:
    """The output CSV's links, read through the authenticated route the status names."""
    answer = api(emulator, tenant).get(doc["outputCsvUrl"], timeout=30)
    assert answer.status_code == 200, answer.text
    rows = list(csv.reader(io.StringIO(answer.content.decode("utf-8"))))
    assert rows[0] == ["S. No.", "Product Name", "Input Image Urls", "Output Image Urls"]
    return [url for row in rows[1:] for url in row[3].split(",")]


@dataclass(frozen=True)
class Output:
    url: str
    headers: Mapping[str, str]
    data: bytes
    format: str | None
    size: tuple[int, int]


def fetch(url: str) -> Output:
    """A plain GET, no credentials: the image, decoded with Pillow."""
    answer = requests.get(url, timeout=30)
    assert answer.status_code == 200, (url, answer.status_code, answer.text[:200])
    with Image.open(io.BytesIO(answer.content)) as image:
        image.load()
        return Output(url, answer.headers, answer.content, image.format, image.size)


def fitted(source: tuple[int, int], max_width: int | None, max_height: int | None) -> float:
    """The scale that fits `source` inside the bound without enlarging it."""
    width, height = source
    return min(1.0, (max_width or width) / width, (max_height or height) / height)


def assert_fits(
    got: tuple[int, int],
    source: tuple[int, int],
    max_width: int | None = None,
    max_height: int | None = None,
) -> None:
    """Inside the bound, never larger than the source, aspect kept within a pixel's rounding,
    and as large as the bound allows (not shrunk further than asked)."""
    width, height = got
    scale = fitted(source, max_width, max_height)
    assert width <= (max_width or width) and height <= (max_height or height), (got, source)
    assert width <= source[0] and height <= source[1], (got, source)
    assert abs(width - source[0] * scale) <= 1, (got, source, scale)
    assert abs(height - source[1] * scale) <= 1, (got, source, scale)
    # the aspect ratio: equal up to the rounding of the smaller side to whole pixels
    assert abs(width / height - source[0] / source[1]) <= source[0] / source[1] / min(got)


def assert_long_cache(emulator: Emulator, output: Output) -> None:
    """Public, for a long time, never longer than the bucket keeps the output."""
    cache_control = output.headers.get("Cache-Control", "")
    directives = {d.strip().partition("=")[0]: d.strip() for d in cache_control.split(",")}
    assert "public" in directives and "no-store" not in directives, (output.url, cache_control)
    max_age = int(directives.get("max-age", "max-age=0").partition("=")[2])
    days = int(emulator.environment.get("OUTPUT_RETENTION_DAYS", "0"))
    assert LONG_CACHE <= max_age <= (days * 86_400 if days > 0 else 365 * 86_400), cache_control


def assert_outputs(
    emulator: Emulator,
    doc: Mapping[str, Any],
    names: Sequence[str],
    fmt: str,
    *,
    max_width: int | None = None,
    max_height: int | None = None,
) -> list[Output]:
    """Every image of a completed job, from its status and its output CSV alike: the asked
    format (extension, Content-Type, what Pillow reads), fitting the bound, no expiry, a long
    Cache-Control."""
    assert doc["status"] == "completed", json.dumps(doc, indent=1)
    links = status_links(doc)
    assert len(links) == len(names) and all(links), links
    assert csv_links(emulator, doc) == links
    public_base = emulator.environment["PUBLIC_BASE_URL"]
    outputs = []
    for url, name in zip(links, names, strict=True):
        assert url.startswith(f"{public_base}/outputs/{doc['requestId']}/"), url
        assert urlsplit(url).path.endswith(EXTENSION[fmt]) and never_expires(url), url
        output = fetch(url)
        assert output.headers["Content-Type"] == f"image/{fmt}", (url, output.headers)
        assert output.format == PILLOW_FORMAT[fmt], (url, output.format)
        assert_fits(output.size, source_size(name), max_width, max_height)
        assert_long_cache(emulator, output)
        outputs.append(output)
    return outputs


# -- the jobs the issue names ------------------------------------------------------------------

# landscape, portrait by EXIF, square with alpha, CMYK, palette smaller than the bound
BOUNDED = ("mug.jpg", "hills-portrait.jpg", "lamp-cutout.png", "catalogue-cmyk.jpg", "sunrise.gif")


def test_webp_at_most_300_wide_through_multipart_fields(emulator: Emulator, images: str) -> None:
    doc = run_job(emulator, table(images, BOUNDED), {"format": "webp", "maxWidth": "300"})
    assert doc["options"] == {"format": "webp", "quality": None, "maxWidth": 300, "maxHeight": None}
    outputs = assert_outputs(emulator, doc, BOUNDED, "webp", max_width=300)
    assert [o.size for o in outputs] == [(300, 200), (300, 400), (300, 300), (300, 225), (240, 180)]


def test_avif_at_quality_40_through_the_presigned_uploads_json(
    emulator: Emulator, images: str
) -> None:
    options = {"format": "avif", "quality": 40, "maxWidth": 300, "maxHeight": 300}
    request_id = submit_presigned(emulator, table(images, BOUNDED), options)
    doc = wait_terminal(emulator, request_id)
    assert doc["options"] == options
    outputs = assert_outputs(emulator, doc, BOUNDED, "avif", max_width=300, max_height=300)
    assert [o.size for o in outputs] == [(300, 200), (225, 300), (300, 300), (300, 225), (240, 180)]


def test_a_small_image_under_a_large_bound_keeps_its_size(emulator: Emulator, images: str) -> None:
    names = ("sunrise.gif", "meadow.webp", "mug.jpg")
    doc = run_job(emulator, table(images, names), {"maxWidth": "5000", "maxHeight": "5000"})
    bound = {"maxWidth": 5000, "maxHeight": 5000}
    assert doc["options"] == {"format": "jpeg", "quality": None, **bound}  # JPEG: the default
    outputs = assert_outputs(emulator, doc, names, "jpeg", max_width=5000, max_height=5000)
    assert [o.size for o in outputs] == [source_size(name) for name in names]


# -- bad options: 400 naming the field, on both routes ------------------------------------------

BAD_FIELDS = [
    ({"format": "gif"}, "format"),
    ({"format": "png"}, "format"),
    ({"quality": "0"}, "quality"),
    ({"quality": "101"}, "quality"),
    ({"quality": "x"}, "quality"),
    ({"quality": "40.5"}, "quality"),
    ({"maxWidth": "0"}, "maxWidth"),
    ({"maxWidth": "-1"}, "maxWidth"),
    ({"maxWidth": "100000000000000000000"}, "maxWidth"),
    ({"maxHeight": "0"}, "maxHeight"),
    ({"maxHeight": "tall"}, "maxHeight"),
]
BAD_JSON = [
    ({"format": "gif"}, "format"),
    ({"format": 1}, "format"),
    ({"quality": 0}, "quality"),
    ({"quality": 101}, "quality"),
    ({"quality": "x"}, "quality"),
    ({"quality": 40.5}, "quality"),
    ({"quality": True}, "quality"),
    ({"maxWidth": 0}, "maxWidth"),
    ({"maxWidth": -1}, "maxWidth"),
    ({"maxWidth": 10**20}, "maxWidth"),
    ({"maxHeight": 0}, "maxHeight"),
    ({"maxHeight": [300]}, "maxHeight"),
]


def assert_names_fields(answer: requests.Response, fields: set[str]) -> None:
    assert answer.status_code == 400, (answer.status_code, answer.text)
    assert answer.headers["Content-Type"].startswith("application/json")
    body = answer.json()
    assert set(body) == {"error", "details"} and body["error"], body
    named = {d["field"] for d in body["details"] if isinstance(d, dict) and "field" in d}
    assert named == fields, body
    assert all(isinstance(d["message"], str) and d["message"] for d in body["details"]), body


def job_count(emulator: Emulator) -> int:
    listed = keyed(emulator).get(f"{emulator.api_url}/api/jobs?limit=100", timeout=10)
    assert listed.status_code == 200, listed.text
    return len(listed.json()["jobs"])


def test_bad_options_in_multipart_fields_are_400s_naming_the_field(
    emulator: Emulator, images: str
) -> None:
    text = table(images, ("mug.jpg",))
    before = job_count(emulator)
    for fields, name in BAD_FIELDS:
        assert_names_fields(submit_multipart(emulator, text, fields), {name})
    every = {"format": "gif", "quality": "0", "maxWidth": "-1", "maxHeight": "x"}
    assert_names_fields(submit_multipart(emulator, text, every), set(every))
    assert job_count(emulator) == before  # nothing was accepted


def test_bad_options_in_the_presigned_uploads_json_are_400s_naming_the_field(
    emulator: Emulator,
) -> None:
    before = job_count(emulator)
    for options, name in BAD_JSON:
        answer = keyed(emulator).post(f"{emulator.api_url}/api/uploads", json=options, timeout=10)
        assert_names_fields(answer, {name})
    every = {"format": "avif2", "quality": 101, "maxWidth": 0, "maxHeight": -5}
    answer = keyed(emulator).post(f"{emulator.api_url}/api/uploads", json=every, timeout=10)
    assert_names_fields(answer, set(every))
    assert job_count(emulator) == before


# -- work not done twice -----------------------------------------------------------------------


def key_of(url: str, emulator: Emulator) -> str:
    return url.removeprefix(emulator.environment["PUBLIC_BASE_URL"] + "/")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def outputs_of(emulator: Emulator, doc: Mapping[str, Any], tenant: int = 0) -> list[str]:
    """The digests of a completed job's output images, in order."""
    assert doc["status"] == "completed", json.dumps(doc, indent=1)
    links = status_links(doc)
    assert csv_links(emulator, doc, tenant) == links
    return [digest(fetch(url).data) for url in links]


REUSED = ("mug.jpg", "hills-portrait.jpg", "lamp-cutout.png")
# options no other test of the module uses: its jobs made these images with theirs
REUSED_METRIC = "ImagesReused"
WEBP_300 = {"format": "webp", "maxWidth": "300", "quality": "61"}


def test_a_resubmitted_job_reuses_its_outputs_other_options_or_tenants_do_not(
    emulator: Emulator, images: str
) -> None:
    with emitted_metrics(emulator) as metrics:
        reused_and_not(emulator, images, metrics)


def reused_and_not(emulator: Emulator, images: str, metrics: EmittedMetrics) -> None:
    text = table(images, REUSED)

    first = run_job(emulator, text, WEBP_300)
    made = outputs_of(emulator, first)
    assert metrics.wait_total(REUSED_METRIC, 1, timeout=2) == 0  # a first job makes its images

    # the same CSV, options and tenant: every image copied, the same bytes at the job's own keys
    second = run_job(emulator, text, WEBP_300)
    assert second["requestId"] != first["requestId"]
    assert outputs_of(emulator, second) == made
    for url in status_links(second):  # a copy is served as the original was
        assert_long_cache(emulator, fetch(url))
    assert metrics.wait_total(REUSED_METRIC, len(REUSED)) == len(REUSED)
    first_keys = [key_of(u, emulator) for u in status_links(first)]
    second_keys = [key_of(u, emulator) for u in status_links(second)]
    assert all(k.startswith(f"outputs/{second['requestId']}/") for k in second_keys)
    assert [p["outputBytes"] for p in second["products"]] == [
        p["outputBytes"] for p in first["products"]
    ]

    # Encoding is deterministic, so equal bytes alone do not tell a copy from a new encode:
    # alter the newest outputs where they are stored; a job that copies gets the altered bytes.
    s3 = emulator.s3_client()
    bucket = emulator.environment["OUTPUTS_BUCKET"]
    altered = []
    for key in second_keys:
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read() + b"copied, not encoded"
        s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType="image/webp")
        altered.append(digest(data))
    third = run_job(emulator, text, WEBP_300)
    assert outputs_of(emulator, third) == altered
    reused = 2 * len(REUSED)
    assert metrics.wait_total(REUSED_METRIC, reused) == reused

    # other options, or the same ones for another tenant: made anew, nothing copied
    narrower = run_job(emulator, text, {**WEBP_300, "maxWidth": "200"})
    remade = outputs_of(emulator, narrower)
    assert not set(remade) & set(made + altered)
    assert_outputs(emulator, narrower, REUSED, "webp", max_width=200)
    avif = run_job(emulator, text, {**WEBP_300, "format": "avif"})
    assert not set(outputs_of(emulator, avif)) & set(made + altered)
    other_tenant = run_job(emulator, text, WEBP_300, tenant=1)
    assert outputs_of(emulator, other_tenant, tenant=1) == made  # encoded again, not the altered
    assert metrics.wait_total(REUSED_METRIC, reused + 1, timeout=3) == reused
    assert first_keys != second_keys
