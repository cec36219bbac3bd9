"""Tenants on in-memory fakes: API keys, the authorizer, every job route scoped to its
tenant, Idempotency-Keys per tenant, rate-limited actions, per-tenant signing secrets, the
tenant of a dropped CSV. (The emulator's API Gateway and the operator's command have their
own tests; tests/e2e/test_tenants_e2e.py runs the same rules through a running stack.)"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import app as app_module
import pytest
import requests
from chalice.test import Client
from chalicelib import bootstrap, observability
from chalicelib.config import Settings
from chalicelib.domain.tenancy import Tenant, key_id, new_api_key
from chalicelib.entrypoints import authorizer, queue_handlers
from chalicelib.entrypoints.queue_handlers import QueueRecord
from chalicelib.errors import NotFound, Unauthorized
from chalicelib.observability import MetricsBuffer
from chalicelib.services import ingest, job_access, tenant_admin, tenants, upload, webhooks
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.fakes import FakeWorld, make_world
from tests.support.tenants import SECRETS_PREFIX, add_tenant, admin_of, with_api_key
from tests.unit.test_pipeline_services import HEADER, drain, jpeg, storage_record

JOB_ID = "00000000-0000-4000-8000-000000000001"
METHOD_ARN = "arn:aws:execute-api:eu-west-1:123456789012:abc123/v1/GET/api/jobs"


def world_with_tenants(**settings: Any) -> FakeWorld:
    base = {"tenant_secrets_prefix": SECRETS_PREFIX, "job_action_interval": 60, **settings}
    return make_world(Settings(**base))


# --- keys and the authorizer -------------------------------------------------------------


def test_a_key_authenticates_as_its_tenant_by_one_indexed_read() -> None:
    world = world_with_tenants()
    key = add_tenant(world, "acme")
    reads = world.tenants.key_reads
    caller = tenants.authenticate(world.deps, f"Bearer {key}")
    assert caller is not None and caller.tenant == "acme" and caller.key_id == key_id(key)
    assert caller.usage_key  # the usage plan's key, for API Gateway's throttle
    assert world.tenants.key_reads == reads + 1
    stored = world.tenants.keys[key_id(key)]
    assert key not in repr(stored) and stored.key_hash != key  # only the hash is kept


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "bearer KEY",  # the scheme is case-sensitive in our ValidationExpression too
        "Bearer KEY extra",
        "Bearer " + "a" * 201,
        "Bearer ipk_aaaaaaaaaaaa_" + "x" * 43,  # well formed, unknown
    ],
)
def test_malformed_or_unknown_keys_are_refused(header: str | None) -> None:
    world = world_with_tenants()
    key = add_tenant(world, "acme")
    header = header.replace("KEY", key) if header else header
    assert tenants.authenticate(world.deps, header) is None


def test_a_key_with_the_right_id_and_a_wrong_secret_is_refused() -> None:
    world = world_with_tenants()
    key = add_tenant(world, "acme")
    forged = key[: key.rindex("_") + 1] + "A" * 43
    assert key_id(forged) == key_id(key)
    assert tenants.authenticate(world.deps, f"Bearer {forged}") is None


def test_a_revoked_key_is_refused_and_the_others_go_on() -> None:
    world = world_with_tenants()
    first = add_tenant(world, "acme")
    second = tenant_admin.add_key(admin_of(world), "acme", label="ci")
    assert tenant_admin.revoke_key(admin_of(world), key_id(first))
    assert tenants.authenticate(world.deps, f"Bearer {first}") is None
    assert tenants.authenticate(world.deps, f"Bearer {second}") is not None
    assert not tenant_admin.revoke_key(admin_of(world), key_id(first))  # once


def test_a_key_given_as_is_works_and_lists_without_its_hash() -> None:
    world = world_with_tenants()
    add_tenant(world, "acme", api_key="my-own-local-key-1234567890")
    assert tenants.authenticate(world.deps, "Bearer my-own-local-key-1234567890") is not None
    views = [k.to_view() for k in tenant_admin.list_keys(admin_of(world), "acme")]
    assert len(views) == 1 and "hash" not in json.dumps(views).lower()
    assert "my-own-local-key" not in json.dumps(views)


def test_the_authorizer_allows_every_route_of_the_stage_for_its_cache() -> None:
    world = world_with_tenants()
    key = add_tenant(world, "acme")
    answer = authorizer.authorize(world.deps, f"Bearer {key}", METHOD_ARN)
    assert answer["principalId"] == "acme"
    assert answer["context"] == {"tenant": "acme", "keyId": key_id(key)}
    statement = answer["policyDocument"]["Statement"][0]
    assert statement["Effect"] == "Allow"
    assert statement["Resource"] == ["arn:aws:execute-api:eu-west-1:123456789012:abc123/v1/*/*"]
    assert answer["usageIdentifierKey"] == world.tenants.tenants["acme"].usage_key


def test_the_authorizer_fails_with_the_message_api_gateway_turns_into_401() -> None:
    world = world_with_tenants()
    with pytest.raises(Unauthorized) as refused:
        authorizer.authorize(world.deps, f"Bearer {new_api_key()}", METHOD_ARN)
    assert str(refused.value) == "Unauthorized"


def test_the_lambda_handler_answers_as_api_gateway_expects() -> None:
    world = world_with_tenants()
    key = add_tenant(world, "acme")
    bootstrap.override(world.deps)
    try:
        event = {"type": "TOKEN", "authorizationToken": f"Bearer {key}", "methodArn": METHOD_ARN}
        answer = app_module.api_key_authorizer(event, None)
        assert answer["context"]["tenant"] == "acme"
        with pytest.raises(Exception, match=r"^Unauthorized$"):
            app_module.api_key_authorizer({**event, "authorizationToken": "Bearer nope"}, None)
    finally:
        bootstrap.reset()


# --- the routes, per tenant -----------------------------------------------------------


@pytest.fixture
def two_tenants() -> Iterator[tuple[FakeWorld, Client, Client, Client]]:
    """A world with tenants alpha and beta: a client for each, and one without a key."""
    world = world_with_tenants(default_tenant="alpha")
    alpha, beta = add_tenant(world, "alpha"), add_tenant(world, "beta")
    bootstrap.override(world.deps)
    try:
        with (
            Client(app_module.app) as a,
            Client(app_module.app) as b,
            Client(app_module.app) as anonymous,
        ):
            yield world, with_api_key(a, alpha), with_api_key(b, beta), anonymous
    finally:
        bootstrap.reset()


def upload_body(text: str) -> tuple[bytes, str]:
    prepared = requests.Request(
        "POST", "http://x/", files={"file": ("p.csv", text, "text/csv")}
    ).prepare()
    assert isinstance(prepared.body, bytes)
    return prepared.body, prepared.headers["Content-Type"]


def submit_as(client: Client, text: str, **headers: str) -> Any:
    body, ctype = upload_body(text)
    return client.http.request(
        "POST",
        "/api/uploadAndProcessDocument",
        headers={"Content-Type": ctype, **headers},
        body=body,
    )


def job_routes(request_id: str) -> list[tuple[str, str]]:
    return [
        ("GET", f"/api/getProcessingStatus/{request_id}"),
        ("GET", f"/api/jobs/{request_id}/output.csv"),
        ("POST", f"/api/jobs/{request_id}/retry"),
        ("POST", f"/api/jobs/{request_id}/webhook/redeliver"),
        ("POST", f"/api/jobs/{request_id}/cancel"),
        ("DELETE", f"/api/jobs/{request_id}"),
    ]


def test_each_route_of_a_job_is_404_for_another_tenant(
    two_tenants: tuple[FakeWorld, Client, Client, Client],
) -> None:
    world, alpha, beta, _ = two_tenants
    world.fetcher.responses = {"https://a.test/1.jpg": jpeg()}
    answer = submit_as(alpha, HEADER + "1,A,https://a.test/1.jpg\n")
    assert answer.status_code == 202
    request_id = json.loads(answer.body)["requestId"]
    ingest.handle_object_created(
        world.deps, ingest.ObjectCreated("uploads", f"incoming/{request_id}.csv", 1, "e")
    )
    drain(world)
    unknown = "00000000-0000-4000-8000-0000000000ff"
    for method, path in job_routes(request_id):
        theirs = beta.http.request(method, path)
        nobody = beta.http.request(method, path.replace(request_id, unknown))
        assert theirs.status_code == 404, (method, path)
        assert json.loads(theirs.body)["error"] == json.loads(nobody.body)["error"].replace(
            unknown, request_id
        )  # the same answer as for an id that does not exist
    status = alpha.http.get(f"/api/getProcessingStatus/{request_id}")
    assert status.status_code == 200 and json.loads(status.body)["status"] == "completed"


def test_without_a_key_every_protected_route_is_401(
    two_tenants: tuple[FakeWorld, Client, Client, Client],
) -> None:
    _, _, _, anonymous = two_tenants
    body, ctype = upload_body(HEADER + "1,A,https://a.test/1.jpg\n")
    protected = [
        ("POST", "/api/uploadAndProcessDocument"),
        ("POST", "/api/validate"),
        ("POST", "/api/uploads"),
        ("GET", "/api/jobs"),
        *job_routes(JOB_ID),
    ]
    # (an unknown key is refused by the authorizer, tested above; Chalice's local gateway
    # has no API Gateway in front to turn that into a 401: the emulator's does, e2e)
    for method, path in protected:
        answer = anonymous.http.request(method, path, headers={"Content-Type": ctype}, body=body)
        assert answer.status_code == 401, (method, path)
    for path in ("/api/health", "/api/openapi.json", "/api-docs", "/"):
        assert anonymous.http.get(path).status_code == 200, path


def test_a_view_reached_without_the_authorizer_refuses_too() -> None:
    """Should a route ever be deployed without the authorizer, the app still answers 401."""
    world = world_with_tenants()
    bootstrap.override(world.deps)
    try:
        event = {
            "resource": "/api/jobs",
            "path": "/api/jobs",
            "httpMethod": "GET",
            "headers": {},
            "multiValueHeaders": {},
            "queryStringParameters": None,
            "multiValueQueryStringParameters": None,
            "pathParameters": None,
            "stageVariables": None,
            "requestContext": {"httpMethod": "GET", "resourcePath": "/api/jobs", "path": "/"},
            "body": None,
            "isBase64Encoded": False,
        }
        answer = app_module.app(event, None)
        assert answer["statusCode"] == 401
        assert answer["headers"]["WWW-Authenticate"] == "Bearer"
        assert json.loads(answer["body"])["error"]
    finally:
        bootstrap.reset()


def test_identical_idempotency_keys_of_two_tenants_make_two_jobs(
    two_tenants: tuple[FakeWorld, Client, Client, Client],
) -> None:
    world, alpha, beta, _ = two_tenants
    text = HEADER + "1,A,https://a.test/1.jpg\n"
    first = json.loads(submit_as(alpha, text, **{"Idempotency-Key": "k-1"}).body)["requestId"]
    again = json.loads(submit_as(alpha, text, **{"Idempotency-Key": "k-1"}).body)["requestId"]
    other = json.loads(submit_as(beta, text, **{"Idempotency-Key": "k-1"}).body)["requestId"]
    assert first == again and other != first
    assert world.store.get_job(first).tenant == "alpha"  # type: ignore[union-attr]
    assert world.store.get_job(other).tenant == "beta"  # type: ignore[union-attr]


def test_a_tenant_lists_its_own_jobs_newest_first(
    two_tenants: tuple[FakeWorld, Client, Client, Client],
) -> None:
    world, alpha, beta, _ = two_tenants
    text = HEADER + "1,A,https://a.test/1.jpg\n"
    mine = []
    for _ in range(3):
        mine.append(json.loads(submit_as(alpha, text).body)["requestId"])
        world.clock.advance(1)
    submit_as(beta, text)
    page = json.loads(alpha.http.get("/api/jobs?limit=2").body)
    assert [j["requestId"] for j in page["jobs"]] == mine[::-1][:2]
    assert set(page["jobs"][0]) == {"requestId", "status", "createdAt", "updatedAt", "progress"}
    rest = json.loads(alpha.http.get(f"/api/jobs?limit=2&cursor={page['nextCursor']}").body)
    assert [j["requestId"] for j in rest["jobs"]] == [mine[0]] and rest["nextCursor"] is None
    pending = json.loads(alpha.http.get("/api/jobs?status=pending").body)
    assert len(pending["jobs"]) == 3
    for query in ("limit=0", "limit=201", "limit=x", "status=done", "cursor=%%%"):
        answer = alpha.http.get(f"/api/jobs?{query}")
        assert answer.status_code == 400, query
        assert json.loads(answer.body)["error"]


def finished_job_with_failure(world: FakeWorld, client: Client) -> str:
    world.fetcher.responses = {"https://a.test/1.jpg": jpeg()}  # 2.jpg is not there: fails
    text = HEADER + "1,A,https://a.test/1.jpg\n2,B,https://a.test/2.jpg\n"
    body, ctype = upload_body(text)
    answer = client.http.request(
        "POST",
        "/api/uploadAndProcessDocument",
        headers={"Content-Type": ctype},
        body=body + b"",
    )
    request_id = json.loads(answer.body)["requestId"]
    job = world.store.get_job(request_id)
    assert job is not None
    world.store.jobs[request_id].webhook_url = "https://hook.test/h"
    ingest.handle_object_created(world.deps, ingest.ObjectCreated("uploads", job.input_key, 1, "e"))
    drain(world)
    return request_id


def test_retry_and_redeliver_are_rate_limited_per_job(
    two_tenants: tuple[FakeWorld, Client, Client, Client],
) -> None:
    world, alpha, _, _ = two_tenants
    request_id = finished_job_with_failure(world, alpha)
    redeliver = f"/api/jobs/{request_id}/webhook/redeliver"
    assert alpha.http.post(redeliver).status_code == 202
    drain(world)
    world.clock.advance(10)
    again = alpha.http.post(redeliver)
    assert again.status_code == 429
    assert again.headers["Retry-After"] == "50"
    assert json.loads(again.body)["error"]
    world.clock.advance(50)
    assert alpha.http.post(redeliver).status_code == 202
    drain(world)
    retry = f"/api/jobs/{request_id}/retry"
    assert alpha.http.post(retry).status_code == 202
    world.clock.advance(1)
    assert alpha.http.post(retry).status_code in (409, 429)  # re-opened, or too soon


@pytest.mark.parametrize(
    ("elapsed", "asked"),
    [(10.5, "50"), (0.9995, "60"), (59.999, "1")],
    ids=["half a second", "half a millisecond", "a millisecond left"],
)
def test_a_fractional_wait_is_asked_for_in_whole_seconds_rounded_up(
    two_tenants: tuple[FakeWorld, Client, Client, Client], elapsed: float, asked: str
) -> None:
    """Retry-After never says less than is left of the interval (60 s): a caller that
    waits exactly as long as it is told is let through, on retry as on redeliver."""
    world, alpha, _, _ = two_tenants
    request_id = finished_job_with_failure(world, alpha)
    for action in ("webhook/redeliver", "retry"):
        route = f"/api/jobs/{request_id}/{action}"
        asked_at = world.clock.now()
        assert alpha.http.post(route).status_code == 202, action
        settle(world)  # the job ends again and its webhook is delivered
        world.clock.advance(elapsed - (world.clock.now() - asked_at).total_seconds())
        again = alpha.http.post(route)
        assert again.status_code == 429, (action, again.body)
        assert again.headers["Retry-After"] == asked, action
        world.clock.advance(float(asked))  # exactly the wait asked for
        assert alpha.http.post(route).status_code == 202, action
        settle(world)


def settle(world: FakeWorld) -> None:
    """Every queued message handled, a retry's included."""
    for message in world.ingest_queue.drain():
        queue_handlers.ingest(world.deps, [QueueRecord("i", json.dumps(message.body))])
    drain(world)


# --- signing secrets, webhooks, dropped CSVs -----------------------------------------


def webhook_of(world: FakeWorld) -> tuple[bytes, dict[str, str]]:
    assert world.sender.posts, "no webhook was sent"
    _url, body, headers = world.sender.posts[-1]
    return body, dict(headers)


def verifies(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


def test_a_csv_dropped_under_a_tenants_prefix_is_its_job_signed_with_its_secret_only() -> None:
    world = world_with_tenants(default_tenant="alpha", webhook_url="https://hook.test/alpha")
    add_tenant(world, "alpha")
    add_tenant(world, "beta", webhook_url="https://hook.test/beta")
    world.fetcher.responses = {"https://a.test/1.jpg": jpeg()}
    key = "incoming/beta/x.csv"
    world.uploads.put_bytes(key, (HEADER + "1,A,https://a.test/1.jpg\n").encode(), "text/csv")
    queue_handlers.ingest(world.deps, [storage_record(key)])
    drain(world)
    (job,) = world.store.jobs.values()
    assert job.tenant == "beta"
    url, body, headers = world.sender.posts[-1]
    assert url == "https://hook.test/beta"  # beta's own default webhook, not WEBHOOK_URL
    beta_secret = tenants.signing_secrets(world.deps, "beta")[0]
    alpha_secret = tenants.signing_secrets(world.deps, "alpha")[0]
    assert verifies(beta_secret, body, dict(headers))
    assert not verifies(alpha_secret, body, dict(headers))
    source = json.loads(body)["data"]["source"]
    assert source == {"bucket": world.deps.settings.uploads_bucket, "key": key}


UNOWNED = [
    "incoming/gamma/x.csv",  # names no tenant
    "incoming/2024/feed.csv",
    "incoming/BETA/x.csv",  # not a tenant name
    "incoming/feed.csv",
    f"incoming/{JOB_ID}.csv",  # an id nobody asked for
]


@pytest.mark.parametrize(
    ("key", "owner"),
    [
        ("incoming/beta/x.csv", "beta"),
        ("incoming/beta/deep/er/x.csv", "beta"),
        ("incoming/alpha/x.csv", "alpha"),
        *((key, None) for key in UNOWNED),  # held
    ],
)
def test_the_tenant_of_a_dropped_csv(key: str, owner: str | None) -> None:
    world = world_with_tenants(default_tenant="alpha")  # UNOWNED_DROPS: hold, the default
    add_tenant(world, "alpha")
    add_tenant(world, "beta")
    assert ingest.tenant_for_key(world.deps, key) == owner


@pytest.mark.parametrize("key", UNOWNED)
def test_unowned_drops_default_keeps_the_routing_of_earlier_versions(key: str) -> None:
    world = world_with_tenants(default_tenant="alpha", unowned_drops="default")
    add_tenant(world, "alpha")
    add_tenant(world, "beta")
    assert ingest.tenant_for_key(world.deps, key) == "alpha"
    assert ingest.tenant_for_key(world.deps, "incoming/beta/x.csv") == "beta"


@pytest.mark.parametrize("key", [*UNOWNED, "incoming/beta/x.csv"])
def test_with_a_single_tenant_every_drop_is_its_own(key: str) -> None:
    world = world_with_tenants(default_tenant="default")
    add_tenant(world, "shop")
    assert ingest.tenant_for_key(world.deps, key) == "shop"


def test_the_setting_reads_hold_or_default_and_anything_else_is_hold() -> None:
    assert Settings.from_env({}).unowned_drops == "hold"
    assert Settings.from_env({"UNOWNED_DROPS": "default"}).unowned_drops == "default"
    assert Settings.from_env({"UNOWNED_DROPS": " Default "}).unowned_drops == "default"
    assert Settings.from_env({"UNOWNED_DROPS": "defualt"}).unowned_drops == "hold"


def test_a_held_drop_makes_no_job_for_anyone_is_counted_and_its_key_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    buffer = MetricsBuffer(sink=lambda line: None)
    monkeypatch.setattr(observability, "_buffer", buffer)
    monkeypatch.setattr(logging.getLogger("chalicelib"), "propagate", True)
    caplog.set_level(logging.INFO, logger="chalicelib.services.ingest")
    world = world_with_tenants(default_tenant="alpha")
    add_tenant(world, "alpha")
    add_tenant(world, "beta")
    key = "incoming/BETA/x.csv"
    world.uploads.put_bytes(key, (HEADER + "1,A,https://a.test/1.jpg\n").encode(), "text/csv")

    assert queue_handlers.ingest(world.deps, [storage_record(key)]) == {"batchItemFailures": []}

    assert world.store.jobs == {}  # no job for anyone
    assert key in world.uploads.objects  # left for the upload retention
    held = [d.get("DropsHeld", 0) for d in buffer.documents()]
    assert sum(held) == 1
    assert any(key in r.getMessage() and "held" in r.getMessage() for r in caplog.records)


def test_a_presigned_upload_is_the_job_of_the_tenant_that_asked() -> None:
    world = world_with_tenants(default_tenant="alpha")
    add_tenant(world, "alpha")
    add_tenant(world, "beta")
    job = upload.create_presigned_upload(world.deps, None, "beta").job
    world.uploads.put_bytes(job.input_key, (HEADER + "1,A,https://a.test/1.jpg\n").encode(), "")
    record = storage_record(job.input_key)
    queue_handlers.ingest(world.deps, [record])
    stored = world.store.get_job(job.request_id)
    assert stored is not None and stored.tenant == "beta"


def test_a_rotating_secret_signs_twice_and_each_signature_verifies() -> None:
    world = world_with_tenants()
    add_tenant(world, "default")
    old = tenants.signing_secrets(world.deps, "default")[0]
    new = tenant_admin.rotate_webhook_secret(admin_of(world), "default")
    assert tenants.signing_secrets(world.deps, "default") == [new, old]
    body = '{"type":"job.completed"}'
    headers = webhooks.signed_headers([new, old], "msg_1", world.clock.now(), body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verifies(old, body.encode(), headers) and verifies(new, body.encode(), headers)
    tenant_admin.finish_rotation(admin_of(world), "default")
    assert tenants.signing_secrets(world.deps, "default") == [new]


def test_without_a_secret_of_its_own_the_default_tenant_signs_with_webhook_secret() -> None:
    world = world_with_tenants(webhook_secret="whsec_" + "B" * 32)
    assert tenants.signing_secrets(world.deps, "default") == ["whsec_" + "B" * 32]
    assert tenants.signing_secrets(world.deps, "other") == []  # WEBHOOK_SECRET is not theirs


def test_a_tenant_without_a_secret_gets_no_unsigned_webhook() -> None:
    world = world_with_tenants(default_tenant="alpha", webhook_secret="")
    world.tenants.put_tenant(Tenant("beta"))  # no secret stored
    world.fetcher.responses = {"https://a.test/1.jpg": jpeg()}
    key = "incoming/beta/x.csv"
    world.uploads.put_bytes(key, (HEADER + "1,A,https://a.test/1.jpg\n").encode(), "text/csv")
    world.tenants.put_tenant(Tenant("beta", webhook_url="https://hook.test/b"))
    queue_handlers.ingest(world.deps, [QueueRecord("s3", storage_record(key).body)])
    drain(world)
    assert world.sender.posts == []
    (job,) = world.store.jobs.values()
    assert job.webhook.state == "failed"
    assert "signing secret" in job.webhook.history[-1].error


def test_secrets_are_read_through_the_source_not_the_configuration() -> None:
    world = world_with_tenants()
    add_tenant(world, "default")
    world.secrets.reads.clear()
    tenants.signing_secrets(world.deps, "default")
    assert world.secrets.reads == [f"{SECRETS_PREFIX}default/webhook"]


def test_another_tenants_job_is_looked_up_by_one_query_on_id_and_tenant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = world_with_tenants(default_tenant="alpha")
    add_tenant(world, "alpha")
    add_tenant(world, "beta")
    text = HEADER + "1,A,https://a.test/1.jpg\n"
    request_id = upload.submit_csv(world.deps, text.encode(), None, None, "alpha").job.request_id
    calls: list[tuple[Any, ...]] = []
    get = world.store.get_job

    def counted(*args: Any) -> Any:
        calls.append(args)
        return get(*args)

    monkeypatch.setattr(world.store, "get_job", counted)
    with pytest.raises(NotFound):
        job_access.load_job(world.deps, request_id, "beta")
    assert calls == [(request_id, "beta")]  # not loaded, then compared
    assert job_access.load_job(world.deps, request_id, "alpha").request_id == request_id
