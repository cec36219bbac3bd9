"""ETag and If-None-Match on the status and the job list, over the Chalice routes and the
in-memory fakes: a 304 with no body while nothing in the answer changed, a new tag on every
kind of change (a row recorded, a webhook attempt, a cancel, another page), the tag checked
only once the job is the caller's, and If-None-Match read as RFC 9110 says."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from chalice.test import Client
from chalicelib.config import Settings
from chalicelib.domain.etag import none_match, weak_tag
from chalicelib.domain.models import ImageResult, Progress, WebhookAttempt, WebhookState
from chalicelib.domain.timefmt import iso
from chalicelib.entrypoints import queue_handlers
from chalicelib.services import status
from chalicelib.services.deps import REQUEST_API_BASE

from tests.fakes import FakeWorld, make_world
from tests.support.jobs import make_rows, new_job
from tests.support.tenants import add_tenant, api_client
from tests.unit.test_api_routes import multipart, post
from tests.unit.test_pipeline_services import HEADER, drain, jpeg, storage_record

URLS = [f"https://a.test/{n}.jpg" for n in range(1, 6)]
STATUS = "/api/getProcessingStatus/"


# -- If-None-Match ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "matches"),
    [
        (None, False),
        ('W/"abc"', True),
        ('"abc"', True),  # weak comparison: W/ or not, the same opaque tag
        ('"abd"', False),
        ('"x", W/"abc"', True),
        ('"x",W/"y" , "abc"', True),
        ('"x", , "abc"', True),  # empty list elements are allowed (RFC 9110 5.6.1)
        ('"x", "y"', False),
        ("*", True),
        (" * ", True),
        ("abc", False),  # not quoted: malformed, matches nothing
        ('W/"abc', False),
        ('"x" "abc"', False),  # not a list
        ("", False),
        ('"ab,c"', False),
    ],
)
def test_if_none_match_is_read_as_rfc_9110_says(field: str | None, matches: bool) -> None:
    assert none_match(field, 'W/"abc"') is matches


def test_a_tag_with_a_comma_inside_its_quotes_is_one_tag() -> None:
    assert none_match('"a,b"', '"a,b"')
    assert not none_match('"a,b"', '"b"')


def test_tags_are_weak_opaque_and_differ_with_any_part() -> None:
    tag = weak_tag("status", 1, "acme", 3)
    assert tag.startswith('W/"') and tag.endswith('"') and "acme" not in tag
    assert tag == weak_tag("status", 1, "acme", 3)
    assert tag != weak_tag("status", 1, "acme", 4)
    assert tag != weak_tag("status", 1, "acm", 3)


# -- the routes -------------------------------------------------------------------------


@pytest.fixture
def world() -> FakeWorld:
    w = make_world(Settings(webhook_secret="whsec_" + "A" * 32, job_action_interval=0))
    w.fetcher.responses = {u: jpeg(8, 8) for u in URLS}
    return w


@pytest.fixture
def client(world: FakeWorld) -> Iterator[Client]:
    with api_client(world) as c:
        yield c


def start(client: Client, world: FakeWorld, webhook: str = "") -> str:
    """A job of five rows submitted through the API and ingested; no row run yet."""
    text = HEADER + "".join(f"{n},P{n},{u}\n" for n, u in enumerate(URLS, 1))
    body, ctype = multipart(
        {"file": ("p.csv", text, "text/csv")}, {"webhookUrl": webhook} if webhook else None
    )
    answer = post(client, "/api/uploadAndProcessDocument", body, ctype)
    assert answer.status_code == 202
    request_id = str(json.loads(answer.body)["requestId"])
    queue_handlers.ingest(world.deps, [storage_record(f"incoming/{request_id}.csv")])
    return request_id


def get(client: Client, path: str, tag: str | None = None, **headers: str) -> Any:
    if tag is not None:
        headers["If-None-Match"] = tag
    return client.http.request("GET", path, headers=headers, body=b"")


def tag_of(client: Client, path: str) -> str:
    answer = get(client, path)
    assert answer.status_code == 200
    return str(answer.headers["ETag"])


def unchanged(client: Client, path: str, tag: str) -> bool:
    """True for a 304 (checked: no body, the same tag and caching), False for a 200."""
    answer = get(client, path, tag)
    assert answer.status_code in (200, 304)
    assert answer.headers["Cache-Control"] == "private, no-cache"
    if answer.status_code == 200:
        assert not none_match(tag, answer.headers["ETag"])
        return False
    assert answer.body == b""
    assert none_match(tag, answer.headers["ETag"])  # the current tag, which the client sent
    assert "Content-Type" not in answer.headers
    return True


def test_the_status_answers_304_while_nothing_changed(client: Client, world: FakeWorld) -> None:
    request_id = start(client, world)
    path = STATUS + request_id
    first = get(client, path)
    assert first.status_code == 200
    assert first.headers["Cache-Control"] == "private, no-cache"
    assert first.headers["Vary"] == "Authorization"
    assert first.headers["Access-Control-Expose-Headers"] == "ETag"
    tag = first.headers["ETag"]
    assert unchanged(client, path, tag)
    assert unchanged(client, path, f'"other", {tag}')
    assert unchanged(client, path, "*")
    assert not unchanged(client, path, '"other"')
    assert unchanged(client, path, tag.removeprefix("W/"))  # weak comparison


def test_every_kind_of_change_gives_a_new_tag(client: Client, world: FakeWorld) -> None:
    request_id = start(client, world, webhook="https://hook.test/x")
    path = STATUS + request_id
    tags = [tag_of(client, path)]

    def changed() -> None:
        assert not unchanged(client, path, tags[-1])
        tags.append(tag_of(client, path))
        assert unchanged(client, path, tags[-1])

    now = world.clock.now()
    row = world.store.list_rows(request_id, 0, 1)[0]
    result = ImageResult(row.urls[0], output_key=f"outputs/{request_id}/1/0.jpg")
    world.store.record_row(request_id, 0, [result], now)  # a row recorded
    changed()
    cancel = client.http.request("POST", f"/api/jobs/{request_id}/cancel", body=b"")
    assert cancel.status_code == 202  # cancel asked
    changed()
    drain(world)  # the cancel carried out (rows cancelled, job ended); the webhook sent
    changed()
    attempt = WebhookAttempt(attempt=2, at=iso(now), status_code=503, error="", duration_ms=1)
    world.store.record_webhook_attempt(request_id, attempt, WebhookState.FAILED, None)
    changed()
    assert len(set(tags)) == len(tags)


def test_each_page_has_its_own_tag(client: Client, world: FakeWorld) -> None:
    request_id = start(client, world)
    path = STATUS + request_id
    pages = [f"{path}?limit=2", f"{path}?limit=2&cursor=2", f"{path}?limit=3", path]
    tags = [tag_of(client, page) for page in pages]
    assert len(set(tags)) == len(tags)
    for page, tag in zip(pages, tags, strict=True):
        assert unchanged(client, page, tag)
        others = [t for t in tags if t != tag]
        assert not unchanged(client, page, ", ".join(others))


def test_another_tenants_job_is_404_whatever_the_tag(client: Client, world: FakeWorld) -> None:
    """Authorization first: the victim's tag (or `*`) from another tenant is the 404 of an
    unknown job, never a 304 that would tell the job exists and has not changed."""
    request_id = start(client, world)
    path = STATUS + request_id
    tag = tag_of(client, path)
    other = {"Authorization": f"Bearer {add_tenant(world, 'beta')}"}
    for sent in (tag, "*", f'"x", {tag}'):
        answer = get(client, path, sent, **other)
        assert answer.status_code == 404, answer.body
        assert "ETag" not in answer.headers
    unknown = STATUS + "7ccca9c7-868c-417e-baee-5f244c0fda81"
    assert get(client, unknown, "*").status_code == 404
    assert get(client, STATUS + "not-an-id", "*").status_code == 400
    # the lists of two tenants with no job are empty alike, yet tagged apart
    assert (
        tag_of(client, "/api/jobs?status=failed")
        != get(client, "/api/jobs?status=failed", **other).headers["ETag"]
    )


def test_what_the_request_changes_in_the_status_is_in_its_tag(
    client: Client, world: FakeWorld
) -> None:
    """`outputCsvUrl` starts with the URL the request came in at (API Gateway's domain and
    stage), every image link with PUBLIC_BASE_URL: a client that reaches the API by two names
    must not keep one's links for the other."""
    request_id = start(client, world)
    job = world.store.get_job(request_id)
    assert job is not None
    here = status.status_tag(world.deps, job, 0, 100, None)
    token = REQUEST_API_BASE.set("https://api.example/prod")
    try:
        assert status.status_tag(world.deps, job, 0, 100, None) != here
    finally:
        REQUEST_API_BASE.reset(token)
    elsewhere = replace(world.deps.settings, public_base_url="https://cdn.example")
    world.deps.settings = elsewhere
    assert status.status_tag(world.deps, job, 0, 100, None) != here


def test_rows_stored_during_the_ingest_change_the_tag(world: FakeWorld) -> None:
    """Storing rows moves no version: while a job's rows are not all written its tag counts
    the page's rows."""
    request_id = "7ccca9c7-868c-417e-baee-5f244c0fda81"
    job = replace(new_job(chunk_size=2, tenant="default"), request_id=request_id)
    world.store.create_job(job)
    rows = make_rows(4, images=1)
    world.store.start_processing(request_id, Progress(4, 0, 4), world.clock.now())
    world.store.insert_rows(request_id, 0, rows[:2])
    first = status.tagged_status(world.deps, request_id, "default")
    assert first.document is not None and len(first.document["products"]) == 2  # type: ignore[arg-type]
    world.store.insert_rows(request_id, 1, rows[2:])
    again = status.tagged_status(world.deps, request_id, "default", if_none_match=first.tag)
    assert again.document is not None and again.tag != first.tag


def test_the_job_list_answers_304_until_a_job_changes(client: Client, world: FakeWorld) -> None:
    path = "/api/jobs?limit=2"
    tags = [tag_of(client, path)]

    def changed() -> None:
        assert not unchanged(client, path, tags[-1])
        tags.append(tag_of(client, path))
        assert unchanged(client, path, tags[-1])

    first = start(client, world)  # a job created
    changed()
    world.store.record_row(
        first,
        0,
        [ImageResult(URLS[0], output_key=f"outputs/{first}/1/0.jpg")],
        world.clock.now(),
    )  # its progress moved
    changed()
    world.clock.advance(1)
    start(client, world)
    changed()
    world.clock.advance(1)
    start(client, world)  # the oldest falls off this page: the page changed
    changed()
    second_page = json.loads(get(client, path).body)["nextCursor"]
    assert second_page
    assert tag_of(client, f"{path}&cursor={second_page}") != tags[-1]
    assert tag_of(client, "/api/jobs?limit=3") != tags[-1]
    assert tag_of(client, "/api/jobs?limit=2&status=processing") != tags[-1]
    deleted = client.http.request("DELETE", f"/api/jobs/{first}", body=b"")
    assert deleted.status_code == 409  # running: nothing changed
    assert unchanged(client, path, tags[-1])
