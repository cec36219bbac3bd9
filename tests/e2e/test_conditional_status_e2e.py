"""Conditional requests through the emulator, over real HTTP: the status (each page) and the
job list answer 304 with no body to If-None-Match with their current ETag, a 200 with a new
tag once anything in them changed, another tenant's tag or `*` is a 404 of their job, the
304 is framed as HTTP says (no content, no Content-Length: the connection goes on), and a
page of another origin may send If-None-Match (the preflight, from the template's Cors) and
read the ETag (exposed)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests

from local_emulator.stack import Emulator
from tests.e2e.test_tenants_e2e import keys, session, upload, wait_terminal
from tests.support.emulator import running_emulator

pytestmark = pytest.mark.e2e

HEADER = "S. No.,Product Name,Input Image Urls\n"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with running_emulator(tenants=("alpha", "beta")) as emu:
        yield emu


def job_of(api: requests.Session, emulator: Emulator, images: str, rows: int) -> str:
    text = HEADER + "".join(f"{n},P{n},{images}/mug.jpg\n" for n in range(1, rows + 1))
    answer = upload(api, emulator, text)
    assert answer.status_code == 202, answer.text
    request_id = str(answer.json()["requestId"])
    wait_terminal(api, emulator, request_id)
    return request_id


def test_status_pages_and_the_job_list_answer_304_until_they_change(
    emulator: Emulator, images: str
) -> None:
    alpha, beta = session(keys(emulator)["alpha"]), session(keys(emulator)["beta"])
    request_id = job_of(alpha, emulator, images, 3)
    status = f"{emulator.api_url}/api/getProcessingStatus/{request_id}"
    tags = {}
    for page in ("?limit=2", "?limit=2&cursor=2", "?limit=1", ""):
        answer = alpha.get(status + page, timeout=10)
        assert answer.status_code == 200
        assert answer.headers["Cache-Control"] == "private, no-cache"
        tags[page] = answer.headers["ETag"]
    assert len(set(tags.values())) == len(tags)  # the tag covers limit and cursor
    for page, tag in tags.items():
        again = alpha.get(status + page, headers={"If-None-Match": tag}, timeout=10)
        assert (again.status_code, again.content) == (304, b"")
        assert again.headers["ETag"] == tag
        other = alpha.get(status + page, headers={"If-None-Match": '"stale"'}, timeout=10)
        assert other.status_code == 200 and other.json()["requestId"] == request_id
    for sent in (tags[""], "*"):  # authorization first: another tenant learns nothing
        theirs = beta.get(status, headers={"If-None-Match": sent}, timeout=10)
        assert theirs.status_code == 404 and "ETag" not in theirs.headers

    listing = f"{emulator.api_url}/api/jobs?limit=5"
    first = alpha.get(listing, timeout=10)
    assert first.status_code == 200 and first.json()["jobs"][0]["requestId"] == request_id
    tag = first.headers["ETag"]
    assert alpha.get(listing, headers={"If-None-Match": tag}, timeout=10).status_code == 304
    newer = job_of(alpha, emulator, images, 1)  # a job created and run: the list changed
    changed = alpha.get(listing, headers={"If-None-Match": tag}, timeout=10)
    assert changed.status_code == 200 and changed.headers["ETag"] != tag
    assert changed.json()["jobs"][0]["requestId"] == newer
    # beta's list does not move with alpha's jobs
    empty = beta.get(listing, timeout=10)
    assert empty.json()["jobs"] == []
    assert (
        beta.get(listing, headers={"If-None-Match": empty.headers["ETag"]}, timeout=10).status_code
        == 304
    )


def test_a_304_has_no_content_and_the_connection_goes_on(emulator: Emulator, images: str) -> None:
    key = keys(emulator)["alpha"]
    request_id = job_of(session(key), emulator, images, 1)
    where = urlsplit(emulator.api_url)
    connection = http.client.HTTPConnection(where.hostname or "", where.port, timeout=10)
    path = f"/api/getProcessingStatus/{request_id}"
    auth = {"Authorization": f"Bearer {key}"}
    try:
        connection.request("GET", path, headers=auth)
        first = connection.getresponse()
        body = first.read()
        assert first.status == 200 and json.loads(body)["requestId"] == request_id
        tag = first.getheader("ETag")
        assert tag
        for _ in range(2):  # the same connection: nothing left over from the 304
            connection.request("GET", path, headers={**auth, "If-None-Match": tag})
            answer = connection.getresponse()
            assert (answer.status, answer.read()) == (304, b"")
            assert answer.getheader("Content-Length") is None
            assert answer.getheader("Content-Type") is None
            assert answer.getheader("ETag") == tag
        connection.request("GET", path, headers=auth)
        last = connection.getresponse()
        assert last.status == 200 and last.read() == body
    finally:
        connection.close()


def test_another_origin_may_send_if_none_match_and_read_the_etag(emulator: Emulator) -> None:
    key = keys(emulator)["alpha"]
    origin = {"Origin": "https://shop.example"}
    preflight = requests.options(
        f"{emulator.api_url}/api/getProcessingStatus/7ccca9c7-868c-417e-baee-5f244c0fda81",
        headers={
            **origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization,if-none-match",
        },
        timeout=10,
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    allowed = {
        h.strip().lower() for h in preflight.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {"authorization", "if-none-match"} <= allowed
    assert "GET" in preflight.headers["Access-Control-Allow-Methods"].split(",")
    answer = requests.get(
        f"{emulator.api_url}/api/jobs",
        headers={**origin, "Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert "ETag" in [h.strip() for h in answer.headers["Access-Control-Expose-Headers"].split(",")]
