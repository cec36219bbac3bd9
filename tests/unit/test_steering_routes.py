"""The cancel and delete routes over in-memory fakes: status codes, the contract's error shape,
and a job that is another tenant's answering exactly as an unknown one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from chalice.test import Client
from chalicelib.config import Settings
from chalicelib.entrypoints import queue_handlers
from chalicelib.services import deletion

from tests.fakes import FakeWorld, make_world
from tests.support.tenants import add_tenant, api_client
from tests.unit.test_api_routes import multipart, post
from tests.unit.test_pipeline_services import HEADER, drain, jpeg, storage_record

URLS = [f"https://a.test/{n}.jpg" for n in (1, 2, 3)]
UNKNOWN = "7ccca9c7-868c-417e-baee-5f244c0fda81"


@pytest.fixture
def world() -> FakeWorld:
    w = make_world(Settings(webhook_secret="whsec_" + "A" * 32, job_action_interval=0))
    w.fetcher.responses = {u: jpeg(8, 8) for u in URLS}
    return w


@pytest.fixture
def client(world: FakeWorld) -> Iterator[Client]:
    with api_client(world) as c:
        yield c


def start(client: Client, world: FakeWorld) -> str:
    """A job of three rows submitted through the API and ingested; its rows not yet run."""
    text = HEADER + "".join(f"{n},P{n},{u}\n" for n, u in enumerate(URLS, 1))
    body, ctype = multipart({"file": ("p.csv", text, "text/csv")})
    answer = post(client, "/api/uploadAndProcessDocument", body, ctype)
    assert answer.status_code == 202
    request_id = str(json.loads(answer.body)["requestId"])
    queue_handlers.ingest(world.deps, [storage_record(f"incoming/{request_id}.csv")])
    return request_id


def call(client: Client, method: str, path: str, **headers: str) -> Any:
    return client.http.request(method, path, headers=headers, body=b"")


def error_of(response: Any) -> dict[str, Any]:
    body = json.loads(response.body)
    assert set(body) == {"error", "details"}
    return dict(body)


def test_cancel_is_202_then_the_job_ends_cancelled_and_a_second_cancel_or_retry_is_409(
    client: Client, world: FakeWorld
) -> None:
    request_id = start(client, world)
    response = call(client, "POST", f"/api/jobs/{request_id}/cancel")
    assert response.status_code == 202
    answer = json.loads(response.body)
    assert answer["requestId"] == request_id and answer["status"] == "processing"
    assert answer["statusUrl"].endswith(f"/api/getProcessingStatus/{request_id}")
    drain(world)
    document = json.loads(call(client, "GET", f"/api/getProcessingStatus/{request_id}").body)
    assert document["status"] == "cancelled"
    assert [p["status"] for p in document["products"]] == ["cancelled"] * 3
    assert world.fetcher.calls == []
    for path in (f"/api/jobs/{request_id}/cancel", f"/api/jobs/{request_id}/retry"):
        again = call(client, "POST", path)
        assert again.status_code == 409, path
        assert "cancelled" in error_of(again)["error"]


def test_another_tenants_job_is_404_to_cancel_and_delete_and_is_left_alone(
    client: Client, world: FakeWorld
) -> None:
    request_id = start(client, world)
    other = {"Authorization": f"Bearer {add_tenant(world, 'acme')}"}
    for method, path in (
        ("POST", f"/api/jobs/{request_id}/cancel"),
        ("DELETE", f"/api/jobs/{request_id}"),
        ("POST", f"/api/jobs/{UNKNOWN}/cancel"),
        ("DELETE", f"/api/jobs/{UNKNOWN}"),
    ):
        response = call(client, method, path, **other)
        assert response.status_code == 404, (method, path)
        error_of(response)
    job = world.store.get_job(request_id)
    assert job is not None and not job.cancel_requested_at
    assert world.finalize_queue.sent == []


def test_a_malformed_id_is_400(client: Client, world: FakeWorld) -> None:
    """(Without a key, 401: tests/unit/test_tenancy.py, which runs every route of a job.)"""
    for method, path in (("POST", "/api/jobs/nope/cancel"), ("DELETE", "/api/jobs/nope")):
        response = call(client, method, path)
        assert response.status_code == 400, (method, path)
        assert error_of(response)["details"] == [{"field": "requestId", "value": "nope"}]


def test_delete_is_409_while_the_job_runs_then_204_and_the_job_is_404(
    client: Client, world: FakeWorld
) -> None:
    request_id = start(client, world)
    running = call(client, "DELETE", f"/api/jobs/{request_id}")
    assert running.status_code == 409 and "processing" in error_of(running)["error"]
    drain(world)
    assert world.store.get_job(request_id) is not None
    outputs = [k for k in world.outputs.objects if k.startswith(f"outputs/{request_id}/")]
    assert len(outputs) == len(URLS) + 1

    deleted = call(client, "DELETE", f"/api/jobs/{request_id}")
    assert deleted.status_code == 204 and not deleted.body
    assert not [k for k in world.outputs.objects if k.startswith(f"outputs/{request_id}/")]
    assert f"incoming/{request_id}.csv" not in world.uploads.objects
    assert world.cdn.invalidated == [[f"/outputs/{request_id}/*"]]
    for method, path in (
        ("GET", f"/api/getProcessingStatus/{request_id}"),
        ("GET", f"/api/jobs/{request_id}/output.csv"),
        ("DELETE", f"/api/jobs/{request_id}"),
        ("POST", f"/api/jobs/{request_id}/cancel"),
    ):
        assert call(client, method, path).status_code == 404, (method, path)
    listing = json.loads(call(client, "GET", "/api/jobs").body)
    assert request_id not in [job["requestId"] for job in listing["jobs"]]


def test_a_cdn_refusing_is_503_with_retry_after_and_deleting_again_finishes(
    client: Client, world: FakeWorld
) -> None:
    request_id = start(client, world)
    drain(world)
    world.cdn.refuse = 1
    refused = call(client, "DELETE", f"/api/jobs/{request_id}")
    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) > 0
    assert "CDN" in error_of(refused)["error"]
    assert call(client, "DELETE", f"/api/jobs/{request_id}").status_code == 204


def test_a_job_with_many_outputs_answers_202_until_the_last_call(
    client: Client, world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    request_id = start(client, world)
    drain(world)
    monkeypatch.setattr(deletion, "MAX_OBJECTS_PER_CALL", 3)
    first = call(client, "DELETE", f"/api/jobs/{request_id}")
    assert first.status_code == 202
    assert json.loads(first.body) == {
        "requestId": request_id,
        "message": "part of the outputs are deleted; send DELETE again to go on",
        "deletedObjects": 3,
    }
    assert call(client, "DELETE", f"/api/jobs/{request_id}").status_code == 204
    assert call(client, "GET", f"/api/getProcessingStatus/{request_id}").status_code == 404
