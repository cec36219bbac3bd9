"""Tenants through a running stack: the emulator's API Gateway (authorizer, its cache, the
usage plan's throttle) in front of the app, keys and secrets as `serve --tenant` makes them.

Issue 15's "done when": without a key every protected route is a 401; tenant B gets 404 for
each route of tenant A's job; two tenants' identical Idempotency-Keys make two jobs; a CSV
dropped at `incoming/beta/x.csv` is beta's and its webhook verifies with beta's secret only."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from chalicelib.adapters.mongo_tenants import MongoTenantStore
from chalicelib.bootstrap import SystemClock
from chalicelib.domain.tenancy import key_id, new_api_key
from chalicelib.services import tenant_admin
from chalicelib.services.ingest import job_id_for_key
from pymongo import MongoClient
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from local_emulator.stack import Emulator
from tests.support.emulator import running_emulator
from tests.support.metrics import emitted_metrics
from tests.support.patience import PatientSession
from tests.support.servers import webhook_receiver
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

HEADER = "S. No.,Product Name,Input Image Urls\n"
TERMINAL = {"completed", "completed_with_errors", "failed"}
TIME_SCALE = 0.1  # the authorizer's 60 s cache is 6 s; the worker can still start images


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    # the template's default burst (5 at the default DatabaseConnections), which the
    # throttle test below meets; the other tests' sessions wait out its 429 as SDKs do
    with running_emulator(
        tenants=("alpha", "beta"),
        time_scale=TIME_SCALE,
        parameter_overrides={"TenantBurstLimit": "0"},
    ) as emu:
        yield emu


def keys(emulator: Emulator) -> dict[str, str]:
    return {t.name: t.api_key for t in emulator.tenants}


def secrets(emulator: Emulator) -> dict[str, str]:
    return {t.name: t.webhook_secret for t in emulator.tenants}


def session(key: str | None, patient: bool = True) -> requests.Session:
    """A client with `key`; patient: it waits out the gateway's throttle (tests/support/
    patience.py), as SDKs do; not patient: it sees every 429."""
    s = PatientSession() if patient else requests.Session()
    if key:
        s.headers["Authorization"] = f"Bearer {key}"
    return s


def upload(api: requests.Session, emulator: Emulator, text: str, **headers: str) -> Any:
    return api.post(
        f"{emulator.api_url}/api/uploadAndProcessDocument",
        files={"file": ("p.csv", text.encode(), "text/csv")},
        headers=headers,
        timeout=30,
    )


def wait_terminal(api: requests.Session, emulator: Emulator, request_id: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def terminal() -> bool:
        answer = api.get(f"{emulator.api_url}/api/getProcessingStatus/{request_id}", timeout=10)
        found.update(answer.json() if answer.status_code == 200 else {})
        return found.get("status") in TERMINAL

    assert wait_until(terminal, timeout=60, step=0.2), found
    return found


def admin(emulator: Emulator) -> tenant_admin.Admin:
    """The operator's side, on the emulator's own database (tests/integration covers the
    command; here only what a running stack must notice)."""
    from chalicelib.adapters.secrets_manager import SecretsManagerWriter

    client: MongoClient[Any] = MongoClient(emulator.mongo_uri)
    store = MongoTenantStore(client[emulator.environment.get("MONGO_DB", "image_pipeline")])
    return tenant_admin.Admin(
        tenants=store,
        secrets=SecretsManagerWriter(emulator.session().client("secretsmanager")),
        usage=None,
        secrets_prefix=emulator.environment["TENANT_SECRETS_PREFIX"],
        clock=SystemClock(),
    )


def test_without_a_valid_key_every_protected_route_is_401(emulator: Emulator) -> None:
    job = "00000000-0000-4000-8000-000000000001"
    protected = [
        ("POST", "/api/uploadAndProcessDocument"),
        ("POST", "/api/validate"),
        ("POST", "/api/uploads"),
        ("GET", "/api/jobs"),
        ("GET", f"/api/getProcessingStatus/{job}"),
        ("GET", f"/api/jobs/{job}/output.csv"),
        ("POST", f"/api/jobs/{job}/retry"),
        ("POST", f"/api/jobs/{job}/webhook/redeliver"),
    ]
    for header in (None, "Bearer " + new_api_key(), "Basic eDp5", "Bearer", "Bearer a b"):
        for method, path in protected:
            headers = {"Authorization": header} if header else {}
            answer = requests.request(method, emulator.api_url + path, headers=headers, timeout=10)
            assert answer.status_code == 401, (header, method, path, answer.text)
            assert answer.json()["error"] and answer.json()["details"] == []
            assert answer.headers["WWW-Authenticate"] == "Bearer"
    for path in ("/api/health", "/api/openapi.json", "/api-docs", "/"):
        assert requests.get(emulator.api_url + path, timeout=10).status_code == 200, path
    preflight = requests.options(
        f"{emulator.api_url}/api/jobs",
        headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "GET"},
        timeout=10,
    )
    assert preflight.status_code == 200  # CORS preflights stay open


def test_another_tenant_gets_404_for_each_route_of_a_job(emulator: Emulator, images: str) -> None:
    alpha, beta = session(keys(emulator)["alpha"]), session(keys(emulator)["beta"])
    answer = upload(alpha, emulator, HEADER + f"1,A,{images}/mug.jpg\n")
    assert answer.status_code == 202, answer.text
    request_id = answer.json()["requestId"]
    wait_terminal(alpha, emulator, request_id)
    routes = [
        ("GET", f"/api/getProcessingStatus/{request_id}"),
        ("GET", f"/api/jobs/{request_id}/output.csv"),
        ("POST", f"/api/jobs/{request_id}/retry"),
        ("POST", f"/api/jobs/{request_id}/webhook/redeliver"),
    ]
    for method, path in routes:
        theirs = beta.request(method, emulator.api_url + path, timeout=10, allow_redirects=False)
        assert theirs.status_code == 404, (method, path, theirs.text)
    listed = beta.get(f"{emulator.api_url}/api/jobs", timeout=10).json()
    assert request_id not in {j["requestId"] for j in listed["jobs"]}
    mine = alpha.get(f"{emulator.api_url}/api/jobs", timeout=10).json()
    assert request_id in {j["requestId"] for j in mine["jobs"]}


def test_identical_idempotency_keys_of_two_tenants_make_two_jobs(
    emulator: Emulator, images: str
) -> None:
    alpha, beta = session(keys(emulator)["alpha"]), session(keys(emulator)["beta"])
    text = HEADER + f"1,A,{images}/mug.jpg\n"
    ids = [
        upload(api, emulator, text, **{"Idempotency-Key": "order-7"}).json()["requestId"]
        for api in (alpha, alpha, beta, beta)
    ]
    assert ids[0] == ids[1] and ids[2] == ids[3] and ids[0] != ids[2]


def verifies(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


def test_a_csv_dropped_under_beta_is_betas_and_verifies_with_betas_secret_only(
    emulator: Emulator, images: str
) -> None:
    with webhook_receiver(secrets(emulator)["beta"]) as receiver:
        tenant_admin.create_tenant(admin(emulator), "beta", webhook_url=receiver.url)
        s3 = emulator.s3_client()
        key = "incoming/beta/x.csv"
        body = (HEADER + f"1,A,{images}/mug.jpg\n").encode()
        put = s3.put_object(Bucket=emulator.uploads_bucket, Key=key, Body=body)
        request_id = job_id_for_key(key, put["ETag"].strip('"'))
        beta = session(keys(emulator)["beta"])
        doc = wait_terminal(beta, emulator, request_id)
        assert doc["status"] == "completed"
        alpha = session(keys(emulator)["alpha"])
        status = alpha.get(f"{emulator.api_url}/api/getProcessingStatus/{request_id}", timeout=10)
        assert status.status_code == 404  # not alpha's

        def ours() -> list[Any]:  # beta's earlier jobs may end now and come here too
            return [
                d
                for d in receiver.deliveries
                if json.loads(d.body)["data"]["requestId"] == request_id
            ]

        assert wait_until(lambda: bool(ours()), timeout=30)
        hook = ours()[0]
        assert hook.verified
        assert verifies(secrets(emulator)["beta"], hook.body, hook.headers)
        assert not verifies(secrets(emulator)["alpha"], hook.body, hook.headers)
        payload = json.loads(hook.body)
        assert payload["data"]["source"] == {"bucket": emulator.uploads_bucket, "key": key}


def test_a_revoked_key_stops_working_within_the_authorizers_cache(emulator: Emulator) -> None:
    operator = admin(emulator)
    key = tenant_admin.add_key(operator, "alpha", label="short-lived")
    api = session(key)
    assert api.get(f"{emulator.api_url}/api/jobs", timeout=10).status_code == 200
    revoked_at = time.monotonic()
    assert tenant_admin.revoke_key(operator, key_id(key))
    cache = 60 * TIME_SCALE  # the template's ReauthorizeEvery, scaled as the emulator does

    def refused() -> bool:
        return api.get(f"{emulator.api_url}/api/jobs", timeout=10).status_code == 401

    assert wait_until(refused, timeout=cache + 5, step=0.1)
    assert time.monotonic() - revoked_at <= cache + 5
    # and the tenant's other key goes on
    assert session(keys(emulator)["alpha"]).get(f"{emulator.api_url}/api/jobs").status_code == 200


def test_a_tenant_over_its_rate_is_throttled_with_retry_after(emulator: Emulator) -> None:
    """The template's usage plan: 20 requests/s with bursts of 5 (the default
    DatabaseConnections'), per tenant. 80 requests at once from beta: some 429 with
    Retry-After; alpha, at the same moment, is not held. Any past the authorizer's or the API
    function's reserved concurrency (10 and 11 at the default DatabaseConnections) would be
    the contract's 503 with Retry-After, as on AWS."""
    barrier = threading.Barrier(80)
    codes: list[requests.Response] = []
    lock = threading.Lock()

    def hit() -> None:
        api = session(keys(emulator)["beta"], patient=False)
        barrier.wait(10)
        answer = api.get(f"{emulator.api_url}/api/jobs?limit=1", timeout=30)
        with lock:
            codes.append(answer)

    threads = [threading.Thread(target=hit) for _ in range(80)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    throttled = [a for a in codes if a.status_code == 429]
    assert len(codes) == 80 and throttled, [a.status_code for a in codes]
    assert {a.status_code for a in codes} <= {200, 429, 503}
    for answer in [a for a in codes if a.status_code in (429, 503)]:
        assert int(answer.headers["Retry-After"]) >= 1
        assert answer.json()["error"] and answer.json()["details"] == []
    alpha = session(keys(emulator)["alpha"])
    assert alpha.get(f"{emulator.api_url}/api/jobs?limit=1", timeout=10).status_code == 200


def test_each_tenant_key_and_secret_are_the_emulators_own(emulator: Emulator) -> None:
    assert [t.name for t in emulator.tenants] == ["alpha", "beta"]
    assert emulator.api_key == keys(emulator)["alpha"]
    assert len(set(keys(emulator).values())) == 2
    assert all(s.startswith("whsec_") for s in secrets(emulator).values())


def test_a_csv_dropped_under_a_folder_naming_no_tenant_is_held_for_no_one(
    emulator: Emulator, images: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 23's "done when": with alpha (the default) and beta, `incoming/BETA/x.csv` (a
    typo of beta's folder) and a CSV directly under `incoming/` make no job for anyone
    (UNOWNED_DROPS is the template's `hold`); the DropsHeld metric counts them, a log line
    names each key, and the objects stay in the bucket."""
    s3 = emulator.s3_client()
    body = (HEADER + f"1,A,{images}/mug.jpg\n").encode()
    held = ["incoming/BETA/x.csv", "incoming/loose-feed.csv"]
    ids = []
    caplog.set_level(logging.INFO, logger="chalicelib.services.ingest")
    with emitted_metrics(emulator) as metrics:
        for key in held:
            put = s3.put_object(Bucket=emulator.uploads_bucket, Key=key, Body=body)
            ids.append(job_id_for_key(key, put["ETag"].strip('"')))
        assert metrics.wait_total("DropsHeld", len(held)) == len(held)
    assert all(f"drop {key} held" in caplog.text for key in held)
    for name in ("alpha", "beta"):
        api = session(keys(emulator)[name])
        for request_id in ids:
            status = api.get(f"{emulator.api_url}/api/getProcessingStatus/{request_id}", timeout=10)
            assert status.status_code == 404, (name, status.text)
        listed = api.get(f"{emulator.api_url}/api/jobs?limit=200", timeout=10).json()["jobs"]
        assert not {j["requestId"] for j in listed} & set(ids)
    for key in held:  # left for the upload retention (or an operator moving it)
        assert s3.head_object(Bucket=emulator.uploads_bucket, Key=key)["ContentLength"] > 0
