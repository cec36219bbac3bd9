"""The Chalice routes over in-memory fakes: status codes and the contract's error shape."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import app as app_module
import pytest
import requests
from chalice.test import Client
from chalicelib.config import Settings

from tests.fakes import FakeWorld, make_world
from tests.support.tenants import api_client

HEADER = "S. No.,Product Name,Input Image Urls\n"


@pytest.fixture
def world() -> FakeWorld:
    return make_world(Settings(max_csv_bytes=2048, webhook_secret="whsec_" + "A" * 32))


@pytest.fixture
def client(world: FakeWorld) -> Iterator[Client]:
    with api_client(world) as c:
        yield c


def multipart(files: dict[str, Any], data: dict[str, str] | None = None) -> tuple[bytes, str]:
    prepared = requests.Request("POST", "http://x/", files=files, data=data).prepare()
    assert isinstance(prepared.body, bytes)
    return prepared.body, prepared.headers["Content-Type"]


def post(client: Client, path: str, body: bytes, ctype: str, **headers: str) -> Any:
    return client.http.request("POST", path, headers={"Content-Type": ctype, **headers}, body=body)


def body_of(response: Any) -> Any:
    return json.loads(response.body)


def test_upload_answers_202_with_request_id_and_status_url(
    client: Client, world: FakeWorld
) -> None:
    body, ctype = multipart(
        {"file": ("p.csv", HEADER + "1,A,https://a.test/x.jpg\n", "text/csv")},
        {"webhookUrl": "https://hook.test/x"},
    )
    response = post(client, "/api/uploadAndProcessDocument", body, ctype)
    assert response.status_code == 202
    answer = body_of(response)
    assert answer["statusUrl"].endswith(f"/api/getProcessingStatus/{answer['requestId']}")
    assert world.store.get_job(answer["requestId"]) is not None


def test_upload_lists_every_csv_problem_with_row_and_column(client: Client) -> None:
    csv_text = HEADER + "1,,https://a.test/x.jpg\n1,B,notaurl\n"
    body, ctype = multipart({"file": ("p.csv", csv_text, "text/csv")})
    response = post(client, "/api/uploadAndProcessDocument", body, ctype)
    assert response.status_code == 400
    answer = body_of(response)
    assert answer["error"]
    assert {(d["row"], d["column"]) for d in answer["details"]} >= {
        (2, "Product Name"),
        (3, "Input Image Urls"),
    }
    assert all(set(d) == {"row", "column", "message"} for d in answer["details"])


def test_upload_that_is_not_multipart_is_415(client: Client) -> None:
    response = post(client, "/api/uploadAndProcessDocument", b'{"a":1}', "application/json")
    assert response.status_code == 415
    assert set(body_of(response)) == {"error", "details"}


def test_upload_of_an_image_instead_of_a_csv_is_415(client: Client) -> None:
    body, ctype = multipart({"file": ("p.png", b"\x89PNG\r\n\x1a\n\x00\x00", "image/png")})
    assert post(client, "/api/uploadAndProcessDocument", body, ctype).status_code == 415


def test_upload_over_the_size_limit_is_413(client: Client) -> None:
    rows = "".join(f"{n},Name {n},https://a.test/{n}.jpg\n" for n in range(1, 200))
    body, ctype = multipart({"file": ("p.csv", HEADER + rows, "text/csv")})
    assert post(client, "/api/uploadAndProcessDocument", body, ctype).status_code == 413


def test_upload_without_file_part_is_400(client: Client) -> None:
    body, ctype = multipart({"other": ("p.csv", HEADER, "text/csv")})
    response = post(client, "/api/uploadAndProcessDocument", body, ctype)
    assert response.status_code == 400


def test_idempotency_key_header_returns_the_same_request_id(client: Client) -> None:
    body, ctype = multipart({"file": ("p.csv", HEADER + "1,A,https://a.test/x.jpg\n", "text/csv")})
    first = body_of(
        post(client, "/api/uploadAndProcessDocument", body, ctype, **{"Idempotency-Key": "k1"})
    )
    second = body_of(
        post(client, "/api/uploadAndProcessDocument", body, ctype, **{"Idempotency-Key": "k1"})
    )
    assert first["requestId"] == second["requestId"]


def test_presigned_upload_is_201_and_bound_to_the_job_key(client: Client, world: FakeWorld) -> None:
    response = post(client, "/api/uploads", b'{"fileName": "p.csv"}', "application/json")
    assert response.status_code == 201
    answer = body_of(response)
    assert answer["upload"]["fields"]["key"] == f"incoming/{answer['requestId']}.csv"
    assert answer["expiresIn"] <= 900
    job = world.store.get_job(answer["requestId"])
    assert job is not None and job.status == "pending"


def test_presigned_upload_refuses_a_non_object_body(client: Client) -> None:
    assert post(client, "/api/uploads", b"[1]", "application/json").status_code == 400
    assert post(client, "/api/uploads", b"{", "application/json").status_code == 400


def test_status_404_and_400(client: Client) -> None:
    missing = client.http.get("/api/getProcessingStatus/00000000-0000-4000-8000-000000000999")
    assert missing.status_code == 404 and "error" in body_of(missing)
    assert client.http.get("/api/getProcessingStatus/nope").status_code == 400


def test_output_csv_is_409_until_the_job_ends(client: Client) -> None:
    body, ctype = multipart({"file": ("p.csv", HEADER + "1,A,https://a.test/x.jpg\n", "text/csv")})
    request_id = body_of(post(client, "/api/uploadAndProcessDocument", body, ctype))["requestId"]
    assert client.http.get(f"/api/jobs/{request_id}/output.csv").status_code == 409


def test_validate_is_a_dry_run(client: Client, world: FakeWorld) -> None:
    body, ctype = multipart({"file": ("p.csv", HEADER + "1,A,https://a.test/x.jpg\n", "text/csv")})
    response = post(client, "/api/validate", body, ctype)
    assert response.status_code == 200
    assert body_of(response) == {"valid": True, "totalProducts": 1, "totalImages": 1}
    assert world.store.jobs == {} and world.uploads.objects == {}


def test_health_and_openapi(client: Client) -> None:
    assert body_of(client.http.get("/api/health")) == {"status": "ok"}
    spec = body_of(client.http.get("/api/openapi.json"))
    assert spec["openapi"].startswith("3.")
    routes = {path for path in app_module.app.routes}
    assert routes == set(spec["paths"])


def test_health_answers_only_up_or_down_and_logs_which_dependency_failed(
    client: Client,
    world: FakeWorld,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def refused() -> None:
        raise ConnectionError("db.internal.example:27017: [Errno 111] Connection refused")

    monkeypatch.setattr(world.store, "ping", refused, raising=False)
    monkeypatch.setattr(logging.getLogger("chalicelib"), "propagate", True)
    caplog.set_level(logging.INFO, logger="chalicelib.entrypoints.http_api")
    response = client.http.get("/api/health")
    assert response.status_code == 503
    assert body_of(response) == {"error": "a dependency is not answering", "details": []}
    assert b"27017" not in response.body and b"example" not in response.body
    assert b"database" not in response.body
    logged = [r for r in caplog.records if r.name == "chalicelib.entrypoints.http_api"]
    assert any("database" in r.getMessage() and r.exc_info for r in logged)


def test_unhandled_errors_answer_500_without_a_stack_trace(
    client: Client, world: FakeWorld
) -> None:
    def broken(_key: str) -> None:
        raise RuntimeError("secret internals")

    world.deps.store.find_by_idempotency_key = broken  # type: ignore[method-assign]
    body, ctype = multipart({"file": ("p.csv", HEADER + "1,A,https://a.test/x.jpg\n", "text/csv")})
    response = post(
        client, "/api/uploadAndProcessDocument", body, ctype, **{"Idempotency-Key": "k"}
    )
    assert response.status_code == 500
    assert "secret" not in response.body.decode()


def _contract_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.body
    answer = body_of(response)
    assert set(answer) == {"error", "details"}
    assert isinstance(answer["error"], str) and answer["error"]
    assert isinstance(answer["details"], list)
    return answer


@pytest.mark.parametrize("length", [71, 256, 257, 300, 5000])
def test_a_multipart_boundary_over_70_characters_is_400(client: Client, length: int) -> None:
    boundary = "b" * length
    body = f"--{boundary}\r\nContent-Disposition: form-data; name=file; filename=p.csv\r\n\r\n"
    body += f"{HEADER}1,A,https://a.test/x.jpg\n\r\n--{boundary}--\r\n"
    ctype = f"multipart/form-data; boundary={boundary}"
    for path in ("/api/uploadAndProcessDocument", "/api/validate"):
        answer = _contract_error(post(client, path, body.encode(), ctype), 400)
        assert "boundary" in answer["error"]


def test_a_multipart_boundary_of_70_characters_is_parsed(client: Client) -> None:
    boundary = "b" * 70
    body = f"--{boundary}\r\nContent-Disposition: form-data; name=file; filename=p.csv\r\n\r\n"
    body += f"{HEADER}1,A,https://a.test/x.jpg\n\r\n--{boundary}--\r\n"
    response = post(
        client, "/api/validate", body.encode(), f"multipart/form-data; boundary={boundary}"
    )
    assert response.status_code == 200, response.body


@pytest.mark.parametrize(
    "body",
    [
        b"--x\r\nContent-Disposition: form-data; name=file\r\n" + b"X: y\r\n" * 50 + b"\r\n",
        b"--x\r\n" + b"A" * 10_000 + b": v\r\n\r\ndata\r\n--x--\r\n",
        b"garbage before --x\r\n\x00\x01",
    ],
    ids=["too-many-part-headers", "huge-part-header", "garbage"],
)
def test_a_malformed_multipart_body_is_400_in_the_contract_shape(
    client: Client, body: bytes
) -> None:
    response = post(
        client, "/api/uploadAndProcessDocument", body, "multipart/form-data; boundary=x"
    )
    assert response.status_code in (400, 415)
    _contract_error(response, response.status_code)


@pytest.mark.parametrize(
    "body", [b"[" * 100_000, b"{" * 100_000, b'{"a":' * 100_000, b"[" * 100_000 + b"]" * 100_000]
)
def test_an_over_deep_json_body_is_400_not_500(client: Client, body: bytes) -> None:
    answer = _contract_error(post(client, "/api/uploads", body, "application/json"), 400)
    assert "JSON" in answer["error"]


SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def _inline_hashes(page: str, tag: str) -> set[str]:
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.DOTALL)
    return {
        "'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() + "'"
        for b in blocks
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/api-docs"),
        ("GET", "/api/health"),
        ("GET", "/api/openapi.json"),
        ("GET", "/api/getProcessingStatus/nope"),
        ("PUT", "/api/health"),
        ("POST", "/api/uploads"),
    ],
)
def test_every_answer_carries_the_security_headers(client: Client, method: str, path: str) -> None:
    response = client.http.request(method, path, body=b"{}")
    for name, value in SECURITY.items():
        assert response.headers.get(name) == value
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp


@pytest.mark.parametrize("path", ["/", "/api-docs"])
def test_each_page_allows_exactly_its_own_inline_blocks_by_hash(client: Client, path: str) -> None:
    response = client.http.get(path)
    page = response.body.decode()
    policy = {}
    for directive in response.headers["Content-Security-Policy"].split(";"):
        name, _, sources = directive.strip().partition(" ")
        policy[name] = sources
    assert policy["default-src"] == "'none'"
    script_sources = set(policy["script-src"].split())
    style_sources = set(policy["style-src"].split())
    assert _inline_hashes(page, "script") <= script_sources
    assert _inline_hashes(page, "style") <= style_sources
    allowed = {"'self'", "'none'"}
    assert script_sources - _inline_hashes(page, "script") <= allowed
    assert style_sources - _inline_hashes(page, "style") <= allowed


def test_the_watch_page_checks_a_job_id_before_fetching_with_it(client: Client) -> None:
    page = client.http.get("/").body.decode()
    assert "JOB_ID.test(id)" in page
    assert "id = jobId(id);" in page


def test_chalices_own_errors_take_the_contract_shape(client: Client) -> None:
    wrong_method = client.http.request("PUT", "/api/health")
    assert _contract_error(wrong_method, 405)["error"]
    assert wrong_method.headers["Allow"] == "GET"
    not_declared = client.http.request("GET", "/api/health", headers={"Content-Type": "text/x"})
    _contract_error(not_declared, 415)
