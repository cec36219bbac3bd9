"""The whole pipeline through the emulator, over HTTP: real image host, real webhook receiver."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from chalicelib.services.ingest import job_id_for_key
from PIL import Image, ImageOps

from local_emulator.stack import Emulator
from tests.e2e.emulator_support import SAMPLES, keyed
from tests.support.emulator import running_emulator
from tests.support.servers import WebhookReceiver, webhook_receiver

pytestmark = pytest.mark.e2e

TERMINAL = {"completed", "completed_with_errors", "failed"}
HEADER = "S. No.,Product Name,Input Image Urls\n"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with running_emulator({"WEBHOOK_RETRY_SCHEDULE": "1,1,1,1"}) as emu:
        yield emu


def sample_csv(images: str) -> str:
    return (SAMPLES / "products.csv").read_text().replace("{IMAGES_BASE}", images)


def sample_image_count() -> int:
    """Images named in the bundled sample, counted independently of the app's parser."""
    rows = list(csv.reader(io.StringIO(sample_csv("http://h"))))[1:]
    return sum(len([u for u in row[2].split(",") if u.strip()]) for row in rows if row)


def upload(emulator: Emulator, text: str, webhook: str | None = None) -> str:
    data = {"webhookUrl": webhook} if webhook else {}
    response = keyed(emulator).post(
        f"{emulator.api_url}/api/uploadAndProcessDocument",
        files={"file": ("products.csv", text.encode(), "text/csv")},
        data=data,
        timeout=30,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["requestId"])


def wait_terminal(emulator: Emulator, request_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc: dict[str, Any] = (
            keyed(emulator)
            .get(f"{emulator.api_url}/api/getProcessingStatus/{request_id}", timeout=10)
            .json()
        )
        if doc.get("status") in TERMINAL:
            return doc
        time.sleep(0.3)
    raise AssertionError(f"job {request_id} did not end within {timeout}s")


def oriented_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).size


def read_output_csv(emulator: Emulator, request_id: str) -> list[list[str]]:
    response = keyed(emulator).get(
        f"{emulator.api_url}/api/jobs/{request_id}/output.csv", timeout=30
    )
    assert response.status_code == 200
    return list(csv.reader(io.StringIO(response.content.decode("utf-8"))))


def test_health(emulator: Emulator) -> None:
    response = keyed(emulator).get(f"{emulator.api_url}/api/health", timeout=10)
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_multipart_upload_runs_to_a_completed_job_with_outputs_csv_and_webhook(
    emulator: Emulator, images: str, receiver: WebhookReceiver
) -> None:
    request_id = upload(emulator, sample_csv(images), receiver.url)
    doc = wait_terminal(emulator, request_id)
    assert doc["status"] == "completed", json.dumps(doc, indent=1)
    progress = doc["progress"]
    assert progress["processedProducts"] == progress["totalProducts"] == 5
    assert progress["processedImages"] == progress["totalImages"] == sample_image_count()
    assert progress["failedImages"] == 0 and progress["percent"] == 100.0
    assert [p["serialNumber"] for p in doc["products"]] == [1, 2, 3, 4, 5]

    rows = read_output_csv(emulator, request_id)
    assert rows[0] == ["S. No.", "Product Name", "Input Image Urls", "Output Image Urls"]
    assert len(rows) == 6
    for serial, _name, inputs, outputs in rows[1:]:
        in_urls, out_urls = inputs.split(","), outputs.split(",")
        assert len(in_urls) == len(out_urls), serial
        for in_url, out_url in zip(in_urls, out_urls, strict=True):
            source = SAMPLES / "images" / in_url.rsplit("/", 1)[1]
            got = requests.get(out_url, timeout=30)
            assert got.status_code == 200
            image = Image.open(io.BytesIO(got.content))
            assert image.format == "JPEG" and image.mode == "RGB"
            assert image.size == oriented_size(source)
            assert len(got.content) < source.stat().st_size, in_url

    deliveries = receiver.wait_for(1, 30)
    assert len(deliveries) == 1 and deliveries[0].verified
    event = json.loads(deliveries[0].body)
    assert event["type"] == "job.completed"
    assert event["data"]["requestId"] == request_id
    assert event["data"]["progress"]["processedImages"] == sample_image_count()
    final = wait_terminal(emulator, request_id)
    assert final["webhook"]["state"] in {"delivered", "pending"}


def test_presigned_upload_starts_the_job_when_the_object_arrives(
    emulator: Emulator, images: str
) -> None:
    created = keyed(emulator).post(
        f"{emulator.api_url}/api/uploads", json={"fileName": "products.csv"}, timeout=10
    )
    assert created.status_code == 201
    answer = created.json()
    request_id = answer["requestId"]
    assert answer["upload"]["fields"]["key"] == f"incoming/{request_id}.csv"
    pending = keyed(emulator).get(
        f"{emulator.api_url}/api/getProcessingStatus/{request_id}", timeout=10
    )
    assert pending.json()["status"] == "pending"
    posted = requests.post(
        answer["upload"]["url"],
        data=answer["upload"]["fields"],
        files={"file": ("products.csv", sample_csv(images).encode(), "text/csv")},
        timeout=30,
    )
    assert posted.status_code in (200, 201, 204), posted.text
    doc = wait_terminal(emulator, request_id)
    assert doc["status"] == "completed"
    assert doc["progress"]["processedImages"] == sample_image_count()


def test_storage_refuses_what_the_presigned_policy_does_not_allow(
    emulator: Emulator, images: str
) -> None:
    """The emulator's storage holds the upload to its POST policy, as S3 does: another key or
    a file over MAX_CSV_BYTES is refused, nothing is stored, the job stays pending."""
    created = keyed(emulator).post(f"{emulator.api_url}/api/uploads", json={}, timeout=10).json()
    request_id, upload = created["requestId"], created["upload"]
    other_key = "incoming/00000000-0000-4000-8000-000000000000.csv"
    csv_body = sample_csv(images).encode()
    refused = {
        "another key": ({**upload["fields"], "key": other_key}, csv_body, 403, "AccessDenied"),
        "over the cap": (upload["fields"], b"x" * (10 * 1024 * 1024 + 1), 400, "EntityTooLarge"),
    }
    for case, (fields, body, status, code) in refused.items():
        posted = requests.post(
            upload["url"], data=fields, files={"file": ("p.csv", body, "text/csv")}, timeout=60
        )
        assert posted.status_code == status, case
        assert f"<Code>{code}</Code>" in posted.text, case
    s3 = emulator.s3_client()
    listed = s3.list_objects_v2(Bucket=emulator.uploads_bucket, Prefix="incoming/")
    keys = {o["Key"] for o in listed.get("Contents", [])}
    assert not keys & {other_key, upload["fields"]["key"]}
    status = keyed(emulator).get(
        f"{emulator.api_url}/api/getProcessingStatus/{request_id}", timeout=10
    )
    assert status.json()["status"] == "pending"


def test_csv_dropped_in_the_bucket_becomes_a_job_once(emulator: Emulator, images: str) -> None:
    s3 = emulator.s3_client()
    key = "incoming/partner feeds/products.csv"
    body = sample_csv(images).encode()
    put = s3.put_object(Bucket=emulator.uploads_bucket, Key=key, Body=body)
    request_id = job_id_for_key(key, put["ETag"].strip('"'))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = keyed(emulator).get(
            f"{emulator.api_url}/api/getProcessingStatus/{request_id}", timeout=10
        )
        if found.status_code == 200:
            break
        time.sleep(0.3)
    doc = wait_terminal(emulator, request_id)
    assert doc["status"] == "completed"
    s3.put_object(Bucket=emulator.uploads_bucket, Key=key, Body=body)  # same object again
    time.sleep(2)
    again = wait_terminal(emulator, request_id)
    assert again["progress"] == doc["progress"] and again["updatedAt"] == doc["updatedAt"]


def test_failed_images_are_reported_with_codes_and_the_job_goes_on(
    emulator: Emulator, images: str
) -> None:
    text = HEADER + (
        f'1,Good,"{images}/mug.jpg,{images}/missing.jpg"\n'
        f"2,Web page,{images}/html\n"
        f"3,=cmd|' /C calc'!A0,{images}/meadow.webp\n"
    )
    request_id = upload(emulator, text)
    doc = wait_terminal(emulator, request_id)
    assert doc["status"] == "completed_with_errors"
    assert doc["progress"]["failedImages"] == 2
    first, second, third = doc["products"]
    assert first["outputImageUrls"][0] and first["outputImageUrls"][1] == ""
    assert [e["code"] for e in first["errors"]] == ["http_error"]
    assert [e["code"] for e in second["errors"]] == ["not_an_image"]
    assert third["status"] == "completed"
    rows = read_output_csv(emulator, request_id)
    assert rows[3][1].startswith("'=")  # neutralised for spreadsheets
    assert rows[1][3].endswith(",")  # the failed image's cell is empty, alignment kept


def test_webhook_is_retried_until_the_receiver_accepts_it(emulator: Emulator, images: str) -> None:
    with webhook_receiver(emulator.webhook_secret, fail_first=2) as hook:
        request_id = upload(emulator, HEADER + f"1,Mug,{images}/mug.jpg\n", hook.url)
        wait_terminal(emulator, request_id)
        deliveries = hook.wait_for(3, 60)
        assert [d.status_sent for d in deliveries] == [500, 500, 204]
        assert all(d.verified for d in deliveries)
        assert len({d.headers["webhook-id"] for d in deliveries}) == 1
        deadline = time.monotonic() + 10
        doc: dict[str, Any] = {}
        while time.monotonic() < deadline:
            doc = wait_terminal(emulator, request_id)
            if doc["webhook"]["state"] == "delivered":
                break
            time.sleep(0.3)
        delivered = doc["webhook"]
    assert (delivered["state"], delivered["attempts"], delivered["lastStatusCode"]) == (
        "delivered",
        3,
        204,
    )
    assert delivered["id"] == deliveries[0].headers["webhook-id"]
    assert [(a["attempt"], a["statusCode"]) for a in delivered["history"]] == [
        (1, 500),
        (2, 500),
        (3, 204),
    ]
    assert [a["error"] for a in delivered["history"]] == ["HTTP 500", "HTTP 500", ""]


def test_invalid_csv_through_presigned_upload_fails_the_job_with_details(
    emulator: Emulator, receiver: WebhookReceiver
) -> None:
    created = (
        keyed(emulator)
        .post(f"{emulator.api_url}/api/uploads", json={"webhookUrl": receiver.url}, timeout=10)
        .json()
    )
    requests.post(
        created["upload"]["url"],
        data=created["upload"]["fields"],
        files={"file": ("bad.csv", b"S. No.,Product Name\n1,Mug\n", "text/csv")},
        timeout=30,
    )
    doc = wait_terminal(emulator, created["requestId"])
    assert doc["status"] == "failed"
    assert any(e["column"] == "Input Image Urls" for e in doc["errors"])
    event = json.loads(receiver.wait_for(1, 30)[0].body)
    assert event["type"] == "job.failed" and event["data"]["errors"] == doc["errors"]


def test_api_refuses_bad_requests_in_the_contract_shape(emulator: Emulator) -> None:
    bad = keyed(emulator).post(
        f"{emulator.api_url}/api/uploadAndProcessDocument",
        files={"file": ("p.csv", b"S. No.,Product Name,Input Image Urls\n", "text/csv")},
        timeout=10,
    )
    assert bad.status_code == 400 and set(bad.json()) == {"error", "details"}
    not_multipart = keyed(emulator).post(
        f"{emulator.api_url}/api/uploadAndProcessDocument",
        data=b"x",
        timeout=10,
        headers={"Content-Type": "text/plain"},
    )
    assert not_multipart.status_code == 415
    unknown = keyed(emulator).get(
        f"{emulator.api_url}/api/getProcessingStatus/00000000-0000-4000-8000-000000000000",
        timeout=10,
    )
    assert unknown.status_code == 404
