"""Links that last, through a running stack: every output image link of a job (its status,
its output CSV, its webhook) is under PUBLIC_BASE_URL, carries no expiry and answers a plain
GET without credentials with the image, from the emulator's stand-in for the template's CDN.
The output CSV is not public: its link is the API's authenticated route, a 302 to a
short-lived presigned link for its tenant and a 404 for another; an uploaded CSV is not
readable without credentials."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from PIL import Image

from local_emulator.stack import Emulator
from tests.e2e.emulator_support import keyed, never_expires
from tests.e2e.test_pipeline_e2e import wait_terminal
from tests.support.emulator import running_emulator
from tests.support.servers import webhook_receiver

pytestmark = pytest.mark.e2e

HEADER = "S. No.,Product Name,Input Image Urls\n"
IMAGE_TYPES = {"image/jpeg", "image/webp", "image/avif"}


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with running_emulator(tenants=("local", "other")) as emu:
        yield emu


def plain_get_is_an_image(url: str) -> None:
    """A GET with no credentials at all (no session, no header) answers the image."""
    answer = requests.get(url, timeout=30)
    assert answer.status_code == 200, (url, answer.status_code, answer.text[:200])
    assert answer.headers["Content-Type"] in IMAGE_TYPES
    Image.open(io.BytesIO(answer.content)).verify()


def test_a_jobs_links_last_and_answer_a_plain_get(emulator: Emulator, images: str) -> None:
    public_base = emulator.environment["PUBLIC_BASE_URL"]
    outputs_bucket = emulator.environment["OUTPUTS_BUCKET"]
    assert public_base == f"{emulator.storage_url}/{outputs_bucket}"  # the CDN's stand-in
    text = HEADER + (
        f'1,Mug,"{images}/mug.jpg,{images}/meadow.webp"\n'
        f"2,Lamp,{images}/lamp-cutout.png\n"
        f"3,Gone,{images}/not-there.jpg\n"
    )
    with webhook_receiver(emulator.webhook_secret) as receiver:
        answer = keyed(emulator).post(
            f"{emulator.api_url}/api/uploadAndProcessDocument",
            files={"file": ("p.csv", text.encode(), "text/csv")},
            data={"webhookUrl": receiver.url},
            timeout=30,
        )
        assert answer.status_code == 202, answer.text
        request_id = answer.json()["requestId"]
        doc = wait_terminal(emulator, request_id)
        deliveries = receiver.wait_for(1, 60)
    assert doc["status"] == "completed_with_errors", json.dumps(doc, indent=1)

    # the status: each output under PUBLIC_BASE_URL, no expiry, a plain GET away
    status_links = [u for p in doc["products"] for u in p["outputImageUrls"] if u]
    assert len(status_links) == 3
    for url in status_links:
        assert url.startswith(f"{public_base}/outputs/{request_id}/"), url
        assert never_expires(url), url
        plain_get_is_an_image(url)

    # the output CSV's link: the authenticated route, not a public or presigned link
    route = f"{emulator.api_url}/api/jobs/{request_id}/output.csv"
    assert doc["outputCsvUrl"] == route
    assert requests.get(route, timeout=10, allow_redirects=False).status_code == 401
    redirect = keyed(emulator).get(route, timeout=10, allow_redirects=False)
    assert redirect.status_code == 302
    location = redirect.headers["Location"]
    assert int(parse_qs(urlsplit(location).query)["X-Amz-Expires"][0]) <= 900  # short-lived
    table = list(csv.reader(io.StringIO(requests.get(location, timeout=10).text)))
    csv_links = [u for row in table[1:] for u in row[3].split(",") if u]
    assert csv_links == status_links
    assert all(never_expires(u) for u in csv_links)

    # another tenant: the route is a 404, as for a job that does not exist
    other = requests.get(
        route,
        headers={"Authorization": f"Bearer {emulator.tenants[1].api_key}"},
        timeout=10,
        allow_redirects=False,
    )
    assert other.status_code == 404 and "Location" not in other.headers

    # the webhook's data links to the route too: nothing in it expires
    assert deliveries and deliveries[0].verified
    event = json.loads(deliveries[0].body)
    assert event["data"]["outputCsvUrl"] == route
    assert "X-Amz-" not in deliveries[0].body.decode()

    # neither CSV is readable without credentials where it is stored
    output_csv = f"{public_base}/outputs/{request_id}/output.csv"
    assert requests.get(output_csv, timeout=10).status_code == 403
    uploads = emulator.uploads_bucket
    uploaded = requests.get(
        f"{emulator.storage_url}/{uploads}/incoming/{request_id}.csv", timeout=10
    )
    assert uploaded.status_code == 403
    assert b"AccessDenied" in uploaded.content
    # ... while it is there for whoever has credentials
    s3 = emulator.s3_client()
    assert s3.head_object(Bucket=uploads, Key=f"incoming/{request_id}.csv")["ContentLength"] > 0


def test_the_emulator_says_what_stands_in_for_the_cdn(emulator: Emulator) -> None:
    lines = emulator.describe()
    outputs_bucket = emulator.environment["OUTPUTS_BUCKET"]
    (cdn,) = [line for line in lines if line.startswith("cdn ")]
    assert "created in moto" in cdn
    assert f"stand-in serves {outputs_bucket} at {emulator.storage_url}/{outputs_bucket}" in cdn
    lifecycles = [line for line in lines if line.startswith("lifecycle ")]
    assert len(lifecycles) == 2 and all("nothing expires locally" in x for x in lifecycles)
