"""Links that last: output images are `<PUBLIC_BASE_URL>/<key>`, never presigned, in the
status, the output CSV, the webhook and the events; the output CSV is behind the API's
authenticated route, which answers with a short-lived presigned link; retention settings and
the outputs' Cache-Control."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import app as app_module
import pytest
from chalice.test import Client
from chalicelib.config import Settings
from chalicelib.domain.retention import (
    ONE_YEAR,
    job_retention,
    output_cache_control,
    output_max_age,
)
from chalicelib.entrypoints.http_api import MAX_CSV_LINK_SECONDS, api_base_of
from chalicelib.services import status
from chalicelib.services.deps import REQUEST_API_BASE, MissingPublicBaseUrl
from standardwebhooks.webhooks import Webhook

from tests.fakes import FakeObjectStore, FakeWorld, make_world
from tests.support.tenants import add_tenant, api_client
from tests.unit.test_pipeline_services import HEADER, drain, jpeg, submit

CDN = "https://d111111abcdef8.cloudfront.net"
API = "https://abc123.execute-api.eu-west-1.amazonaws.com/v1"
EXPIRY_PARAMETERS = {"x-amz-expires", "expires", "x-amz-signature", "signature", "x-amz-date"}


class NoPresigning(FakeObjectStore):
    """An outputs bucket that fails the test if anything presigns a GET of it."""

    def __init__(self, bucket: str) -> None:
        super().__init__(bucket)
        self.presigned: list[str] = []

    def presigned_get(self, key: str, expires_in: int) -> str:
        self.presigned.append(key)
        return super().presigned_get(key, expires_in)


def lasting(url: str) -> bool:
    """Under the CDN, and nothing in it that expires."""
    parts = urlsplit(url)
    names = {name.lower() for name in parse_qs(parts.query, keep_blank_values=True)}
    return url.startswith(f"{CDN}/outputs/") and not names & EXPIRY_PARAMETERS


def finished_world(**settings: Any) -> tuple[FakeWorld[Any], str, NoPresigning]:
    base = Settings(
        webhook_secret="whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        public_base_url=CDN,
        api_base_url=API,
        **settings,
    )
    outputs = NoPresigning("outputs")
    world = make_world(base, outputs=outputs)
    world.outputs = outputs
    world.fetcher.responses = {"https://a.test/1.jpg": jpeg(), "https://a.test/2.jpg": jpeg(20, 10)}
    text = (
        HEADER + '1,Shirt,"https://a.test/1.jpg,https://a.test/2.jpg"\n2,Socks,https://a.test/x\n'
    )
    request_id = submit(world, text, webhook="https://hook.test/h")
    drain(world)
    return world, request_id, outputs


def test_output_images_are_under_the_public_base_url_never_presigned() -> None:
    world, request_id, outputs = finished_world()
    doc = status.job_status(world.deps, request_id, "default")
    urls = [u for p in doc["products"] for u in p["outputImageUrls"]]  # type: ignore[attr-defined]
    assert urls[:2] == [
        f"{CDN}/outputs/{request_id}/1/0.jpg",
        f"{CDN}/outputs/{request_id}/1/1.jpg",
    ]
    assert urls[2] == ""  # the failed image
    assert all(lasting(u) for u in urls if u)
    assert outputs.presigned == []  # nothing was presigned on the way

    job = world.store.get_job(request_id)
    assert job is not None
    table = list(csv.reader(io.StringIO(outputs.objects[job.output_csv_key][0].decode())))
    cells = [u for row in table[1:] for u in row[3].split(",") if u]
    assert cells == urls[:2] and all(lasting(u) for u in cells)
    assert outputs.presigned == []


def test_the_output_csv_link_is_the_authenticated_route_everywhere() -> None:
    world, request_id, outputs = finished_world()
    route = f"{API}/api/jobs/{request_id}/output.csv"
    assert status.job_status(world.deps, request_id, "default")["outputCsvUrl"] == route
    _, body, headers = world.sender.posts[0]
    payload = Webhook(world.deps.settings.webhook_secret).verify(body, headers)
    assert payload["data"]["outputCsvUrl"] == route
    finished = [e for e in world.events.published if e[0].startswith("job.completed")]
    assert finished and all(detail["outputCsvUrl"] == route for _, detail in finished)
    assert "X-Amz" not in body.decode() and outputs.presigned == []


def test_without_api_base_url_the_link_starts_where_the_request_came_in() -> None:
    world, request_id, _ = finished_world()
    world.deps.settings = replace(world.deps.settings, api_base_url="")
    path = f"/api/jobs/{request_id}/output.csv"
    assert status.job_status(world.deps, request_id, "default")["outputCsvUrl"] == path
    token = REQUEST_API_BASE.set("https://api.example.com/v1")
    try:
        document = status.job_status(world.deps, request_id, "default")
    finally:
        REQUEST_API_BASE.reset(token)
    assert document["outputCsvUrl"] == f"https://api.example.com/v1{path}"


def test_api_base_of_an_api_gateway_request() -> None:
    job = "/api/getProcessingStatus/abc"
    execute_api = {"domainName": "abc.execute-api.eu-west-1.amazonaws.com", "path": f"/v1{job}"}
    assert api_base_of(execute_api, job) == "https://abc.execute-api.eu-west-1.amazonaws.com/v1"
    custom = {"domainName": "api.shop.example", "path": f"/images{job}"}
    assert api_base_of(custom, job) == "https://api.shop.example/images"
    assert api_base_of({"domainName": "api.shop.example", "path": job}, job) == (
        "https://api.shop.example"
    )
    assert api_base_of({}, job) == ""  # a local server: API_BASE_URL says it
    assert api_base_of({"domainName": "x", "path": "/elsewhere"}, job) == ""


def test_output_url_needs_a_public_base_url() -> None:
    world = make_world()
    world.deps.settings = replace(world.deps.settings, public_base_url="")
    assert world.deps.output_url("") == ""
    with pytest.raises(MissingPublicBaseUrl, match="PUBLIC_BASE_URL"):
        world.deps.output_url("outputs/x/1/0.jpg")


# -- the route ------------------------------------------------------------------------
@pytest.fixture
def finished() -> Iterator[tuple[FakeWorld[Any], str, Client]]:
    world, request_id, _ = finished_world(output_csv_link_ttl=60)
    with api_client(world) as client:
        yield world, request_id, client


def test_the_route_redirects_to_a_short_lived_presigned_link(
    finished: tuple[FakeWorld[Any], str, Client],
) -> None:
    world, request_id, client = finished
    answer = client.http.get(f"/api/jobs/{request_id}/output.csv")
    assert answer.status_code == 302
    location = answer.headers["Location"]
    query = parse_qs(urlsplit(location).query)
    assert location.startswith(f"https://outputs.s3.test/outputs/{request_id}/output.csv?")
    assert int(query["X-Amz-Expires"][0]) == 60 <= MAX_CSV_LINK_SECONDS
    assert answer.headers["Cache-Control"] == "no-store"
    assert json.loads(answer.body) == {"location": location, "expiresIn": 60}
    world.deps.settings = replace(world.deps.settings, output_csv_link_ttl=7 * 86400)
    again = client.http.get(f"/api/jobs/{request_id}/output.csv")
    assert parse_qs(urlsplit(again.headers["Location"]).query)["X-Amz-Expires"] == ["900"]


def test_the_route_is_the_tenants_only(finished: tuple[FakeWorld[Any], str, Client]) -> None:
    world, request_id, client = finished
    other = add_tenant(world, "someone-else")
    headers = {"Authorization": f"Bearer {other}"}
    answer = client.http.request("GET", f"/api/jobs/{request_id}/output.csv", headers=headers)
    assert answer.status_code == 404
    assert "Location" not in answer.headers


# -- settings and retention --------------------------------------------------------------
def test_settings_of_links_and_retention() -> None:
    defaults = Settings.from_env({})
    assert defaults.output_csv_link_ttl == 300
    assert defaults.output_retention_days == 365 and defaults.job_retention_days == 0
    env = {
        "PUBLIC_BASE_URL": " https://cdn.example.com/ ",
        "OUTPUT_CSV_LINK_TTL": "3600",
        "OUTPUT_RETENTION_DAYS": "30",
        "JOB_RETENTION_DAYS": "90",
    }
    settings = Settings.from_env(env)
    assert settings.public_base_url == "https://cdn.example.com"
    assert settings.output_csv_link_ttl == 900  # at most 15 minutes
    assert (settings.output_retention_days, settings.job_retention_days) == (30, 90)
    with pytest.raises(ValueError, match="OUTPUT_RETENTION_DAYS"):
        Settings.from_env({"OUTPUT_RETENTION_DAYS": "-1"})


@pytest.mark.parametrize(
    ("days", "max_age"),
    [(365, ONE_YEAR), (0, ONE_YEAR), (3650, ONE_YEAR), (30, 30 * 86400), (1, 86400)],
)
def test_cache_control_never_outlives_the_retention(days: int, max_age: int) -> None:
    settings = Settings(output_retention_days=days)
    assert output_max_age(settings) == max_age
    assert output_cache_control(settings) == f"public, max-age={max_age}, immutable"
    if days:
        assert output_max_age(settings) <= days * 86400


def test_job_retention() -> None:
    assert job_retention(Settings()) is None
    retention = job_retention(Settings(job_retention_days=7))
    assert retention is not None and retention.days == 7


def test_on_aws_the_api_links_to_the_url_it_was_called_at(
    finished: tuple[FakeWorld[Any], str, Client],
) -> None:
    """API Gateway's proxy event, as the API function receives it on AWS (no API_BASE_URL:
    the template cannot tell the API function its own API's URL)."""
    world, request_id, _ = finished
    world.deps.settings = replace(world.deps.settings, api_base_url="")
    route = f"/api/getProcessingStatus/{request_id}"
    event = {
        "resource": "/api/getProcessingStatus/{requestId}",
        "path": route,
        "httpMethod": "GET",
        "headers": {"Host": "abc123.execute-api.eu-west-1.amazonaws.com"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"requestId": request_id},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/api/getProcessingStatus/{requestId}",
            "httpMethod": "GET",
            "path": f"/v1{route}",
            "stage": "v1",
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
            "requestId": "r-1",
            "authorizer": {"tenant": "default"},
        },
        "body": None,
        "isBase64Encoded": False,
    }
    answer = app_module.app(event, None)
    assert answer["statusCode"] == 200, answer
    document = json.loads(answer["body"])
    assert document["outputCsvUrl"] == (
        f"https://abc123.execute-api.eu-west-1.amazonaws.com/v1/api/jobs/{request_id}/output.csv"
    )
    assert REQUEST_API_BASE.get() == ""  # nothing left behind for the next request
