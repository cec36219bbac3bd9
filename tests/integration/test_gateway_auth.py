"""API Gateway's authentication and throttling as the emulator does them from template.yaml
(local_emulator/gateway_auth.py): the real template, a stand-in authorizer that counts its
invocations, and a clock the tests move (no sleeps). Then the same over loopback through the
API server, with Lambda's 6 MB payload limits."""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from chalice.app import Chalice

from local_emulator.api_server import LAMBDA_PAYLOAD_BYTES, ApiServer
from local_emulator.gateway_auth import (
    GatewayRefusal,
    GatewaySpec,
    LambdaFunction,
    TemplateGateway,
    gateway_for_stack,
    read_gateway_spec,
    spec_from_template,
)
from local_emulator.intrinsics import Resolver
from local_emulator.provision import FunctionInfo, ProvisionedStack, load_template

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"
TEMPLATE = load_template(TEMPLATE_PATH)
API = TEMPLATE["Resources"]["Api"]["Properties"]
AUTHORIZER = API["Auth"]["Authorizers"]["ApiKeyAuthorizer"]
REAUTHORIZE_EVERY = int(AUTHORIZER["Identity"]["ReauthorizeEvery"])
AUTHORIZER_FUNCTION = TEMPLATE["Resources"]["AuthorizerFunction"]["Properties"]
PARAMETERS = TEMPLATE["Parameters"]
RATE = float(PARAMETERS["TenantRateLimit"]["Default"])
# TenantBurstLimit's default, 0: the burst of the default DatabaseConnections' row
assert int(PARAMETERS["TenantBurstLimit"]["Default"]) == 0
CAPS = TEMPLATE["Mappings"]["ConcurrencyForConnections"]
BURSTS = TEMPLATE["Mappings"]["TenantBurstForConnections"]
BURST = int(BURSTS[PARAMETERS["DatabaseConnections"]["Default"]]["Burst"])
SPEC = spec_from_template(TEMPLATE_PATH)
TIME_SCALE = 0.25
KEY = "Bearer ipk_abcdefabcdef_secret"


def gateway_error(response_type: str) -> str:
    """The `error` text the template's GatewayResponse of that type answers."""
    template = API["GatewayResponses"][response_type]["ResponseTemplates"]["application/json"]
    return str(json.loads(template)["error"])


def public_routes() -> list[tuple[str, str]]:
    events = TEMPLATE["Resources"]["ApiFunction"]["Properties"]["Events"]
    return [
        (e["Properties"]["Method"].upper(), e["Properties"]["Path"])
        for e in events.values()
        if (e["Properties"].get("Auth") or {}).get("Authorizer") == "NONE"
    ]


PROTECTED = ("GET", "/api/jobs")
OTHER_PROTECTED = ("POST", "/api/jobs/abc/retry")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class StandInAuthorizer:
    """The authorizer function's stand-in: answers as told, and counts."""

    mode: str = "allow"
    usage_key: str | None = "usage-key-1"
    events: list[dict[str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def calls(self) -> int:
        return len(self.events)

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        self.events.append(event)
        if self.mode == "unauthorized":
            raise RuntimeError("Unauthorized")
        if self.mode == "boom":
            raise RuntimeError("the database is down")
        if self.mode == "nothing":
            return None
        if self.mode == "hang":
            self.release.wait(10)
            return None
        arn = event["methodArn"]
        # "narrow": only the route called; else every route of the stage, as the app does
        resource = arn if self.mode == "narrow" else arn.split("/", 1)[0] + "/v1/*/*"
        statements = [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": [resource]}]
        if self.mode == "deny":  # an explicit Deny of the route wins over the Allow
            statements.append({"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": arn})
        answer: dict[str, Any] = {
            "principalId": "tenant-a",
            "policyDocument": {"Version": "2012-10-17", "Statement": statements},
            "context": {"tenant": "tenant-a", "keyId": "abcdefabcdef", "admin": False},
        }
        if self.usage_key is not None:
            answer["usageIdentifierKey"] = self.usage_key
        return answer


def make_gateway(
    authorizer: StandInAuthorizer,
    clock: Clock,
    *,
    spec: GatewaySpec = SPEC,
    timeout: float = float(AUTHORIZER_FUNCTION["Timeout"]),
    log: list[str] | None = None,
) -> TemplateGateway:
    function = LambdaFunction(
        name="image-pipeline-AuthorizerFunction", handler=authorizer, timeout=timeout
    )
    return TemplateGateway(
        spec,
        {"AuthorizerFunction": function},
        time_scale=TIME_SCALE,
        clock=clock,
        log=(log.append if log is not None else None),
    )


def lambda_event(method: str, path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The event Chalice's LocalGateway builds before it calls the authorizer hook."""
    return {
        "requestContext": {
            "httpMethod": method,
            "resourcePath": path,
            "identity": {"sourceIp": "127.0.0.1"},
            "path": path,
        },
        "headers": {k.lower(): v for k, v in (headers or {}).items()},
        "pathParameters": {},
        "stageVariables": {},
        "body": None,
    }


def call(
    gateway: TemplateGateway, route: tuple[str, str], authorization: str | None = KEY
) -> dict[str, Any]:
    method, path = route
    headers = {"Authorization": authorization} if authorization is not None else {}
    event, _ = gateway.authorize(path, lambda_event(method, path, headers), object())
    return event


def refused(
    gateway: TemplateGateway, route: tuple[str, str], authorization: str | None = KEY
) -> GatewayRefusal:
    with pytest.raises(GatewayRefusal) as caught:
        call(gateway, route, authorization)
    return caught.value


def body_of(refusal: GatewayRefusal) -> dict[str, Any]:
    assert refusal.body is not None
    body: dict[str, Any] = json.loads(refusal.body)
    return body


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def authorizer() -> Iterator[StandInAuthorizer]:
    stand_in = StandInAuthorizer()
    yield stand_in
    stand_in.release.set()


@pytest.fixture
def gateway(authorizer: StandInAuthorizer, clock: Clock) -> TemplateGateway:
    return make_gateway(authorizer, clock)


# -- the template --------------------------------------------------------------------------


def test_the_template_is_read_as_deployed() -> None:
    protected = SPEC.route(*PROTECTED)
    assert protected is not None
    api = protected.api
    assert (protected.authorizer, protected.api_key_required) == ("ApiKeyAuthorizer", True)
    assert api.stage == TEMPLATE["Parameters"]["StageName"]["Default"]
    assert api.api_key_source == "AUTHORIZER"
    token = api.authorizers["ApiKeyAuthorizer"]
    assert token.function_id == "AuthorizerFunction"
    assert (token.header, token.reauthorize_every) == ("Authorization", REAUTHORIZE_EVERY)
    assert api.throttle is not None
    assert (api.throttle.rate, api.throttle.burst) == (RATE, BURST)
    overridden = spec_from_template(
        TEMPLATE_PATH, parameter_overrides={"TenantRateLimit": "2", "TenantBurstLimit": "3"}
    ).route(*PROTECTED)
    assert overridden is not None and overridden.api.throttle is not None
    assert (overridden.api.throttle.rate, overridden.api.throttle.burst) == (2.0, 3)
    for connections, row in BURSTS.items():  # TenantBurstLimit 0: the cluster's row
        sized = spec_from_template(
            TEMPLATE_PATH, parameter_overrides={"DatabaseConnections": connections}
        ).route(*PROTECTED)
        assert sized is not None and sized.api.throttle is not None
        assert sized.api.throttle.burst == row["Burst"], connections


def test_the_authorizer_is_found_through_its_alias_or_its_arn() -> None:
    """The template names the alias AutoPublishAlias makes (`!Ref AuthorizerFunction.Alias`);
    the emulator runs the function behind it, as it does for `!GetAtt X.Arn`."""
    from local_emulator.gateway_auth import _function_id
    from local_emulator.intrinsics import TemplateError

    for arn in (
        {"Ref": "AuthorizerFunction.Alias"},
        {"Fn::GetAtt": ["AuthorizerFunction", "Arn"]},
        {"Fn::Sub": "${AuthorizerFunction.Arn}"},
    ):
        assert _function_id("ApiKeyAuthorizer", arn) == "AuthorizerFunction"
    for arn in ({"Ref": "AuthorizerFunction"}, {"Ref": "AuthorizerFunction.Version"}, "arn:x"):
        with pytest.raises(TemplateError, match=r"!Ref <function>\.Alias"):
            _function_id("ApiKeyAuthorizer", arn)


# -- routes --------------------------------------------------------------------------------


def test_public_routes_need_nothing(
    gateway: TemplateGateway, authorizer: StandInAuthorizer
) -> None:
    routes = public_routes()
    assert ("GET", "/api/health") in routes and len(routes) == 4
    for route in routes:
        event = call(gateway, route, authorization=None)
        assert "authorizer" not in event["requestContext"]
    assert authorizer.calls == 0


def test_a_route_the_template_does_not_declare_is_api_gateways_404(
    gateway: TemplateGateway, authorizer: StandInAuthorizer
) -> None:
    for route in (("GET", "/api/not-deployed"), ("DELETE", "/api/jobs"), ("GET", "/api/jobs/x")):
        refusal = refused(gateway, route)
        assert refusal.CODE == 404
        assert body_of(refusal)["error"] == gateway_error("MISSING_AUTHENTICATION_TOKEN")
    assert authorizer.calls == 0


def test_a_cors_preflight_stays_open(
    gateway: TemplateGateway, authorizer: StandInAuthorizer
) -> None:
    assert API["Auth"]["AddDefaultAuthorizerToCorsPreflight"] is False
    event = call(gateway, ("OPTIONS", PROTECTED[1]), authorization=None)
    assert "authorizer" not in event["requestContext"]
    assert authorizer.calls == 0


# -- the identity header -------------------------------------------------------------------


def test_no_authorization_header_is_401_without_invoking_the_authorizer(
    gateway: TemplateGateway, authorizer: StandInAuthorizer
) -> None:
    refusal = refused(gateway, PROTECTED, authorization=None)
    assert refusal.CODE == 401
    assert refusal.headers["WWW-Authenticate"] == "Bearer"
    assert body_of(refusal) == {"error": gateway_error("UNAUTHORIZED"), "details": []}
    assert authorizer.calls == 0


@pytest.mark.parametrize(
    "header",
    [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer ",
        "bearer ipk_x",
        "Bearer a b",
        "Bearer " + "x" * 201,
    ],
)
def test_a_malformed_header_is_401_without_invoking_the_authorizer(
    gateway: TemplateGateway, authorizer: StandInAuthorizer, header: str
) -> None:
    refusal = refused(gateway, PROTECTED, authorization=header)
    assert refusal.CODE == 401
    assert refusal.headers["WWW-Authenticate"] == "Bearer"
    assert authorizer.calls == 0


# -- the authorizer's answers --------------------------------------------------------------


def test_the_authorizer_gets_a_token_event_with_the_method_arn(
    gateway: TemplateGateway, authorizer: StandInAuthorizer
) -> None:
    call(gateway, OTHER_PROTECTED)
    (event,) = authorizer.events
    assert set(event) == {"type", "authorizationToken", "methodArn"}
    assert (event["type"], event["authorizationToken"]) == ("TOKEN", KEY)
    head, _, resource = event["methodArn"].partition("/")
    assert head.startswith("arn:aws:execute-api:us-east-1:123456789012:")
    assert resource == "v1/POST/api/jobs/abc/retry"


def test_an_authorizer_raising_unauthorized_is_401(
    gateway: TemplateGateway, authorizer: StandInAuthorizer
) -> None:
    authorizer.mode = "unauthorized"
    refusal = refused(gateway, PROTECTED)
    assert refusal.CODE == 401
    assert refusal.headers["WWW-Authenticate"] == "Bearer"
    assert body_of(refusal)["error"] == gateway_error("UNAUTHORIZED")
    assert authorizer.calls == 1


def test_a_deny_policy_is_403(gateway: TemplateGateway, authorizer: StandInAuthorizer) -> None:
    authorizer.mode = "deny"
    refusal = refused(gateway, PROTECTED)
    assert refusal.CODE == 403
    assert body_of(refusal) == {"error": gateway_error("ACCESS_DENIED"), "details": []}


def test_a_cached_policy_that_does_not_cover_the_next_route_is_403(
    gateway: TemplateGateway, authorizer: StandInAuthorizer
) -> None:
    authorizer.mode = "narrow"  # allows only the first route it was asked about
    call(gateway, PROTECTED)
    refusal = refused(gateway, OTHER_PROTECTED)
    assert refusal.CODE == 403
    assert authorizer.calls == 1  # API Gateway's cache, per header, not per route


@pytest.mark.parametrize("mode", ["boom", "nothing"])
def test_any_other_authorizer_failure_is_the_templates_503_in_the_contract_shape(
    authorizer: StandInAuthorizer, clock: Clock, mode: str
) -> None:
    log: list[str] = []
    gateway = make_gateway(authorizer, clock, log=log)
    authorizer.mode = mode
    refusal = refused(gateway, PROTECTED)
    # AUTHORIZER_CONFIGURATION_ERROR: API Gateway's 500, the template's 503 (retry later)
    assert refusal.CODE == 503
    assert refusal.headers["Retry-After"] == "1"
    assert refusal.headers["x-amzn-ErrorType"] == "AuthorizerConfigurationException"
    body = body_of(refusal)
    assert set(body) == {"error", "details"} and isinstance(body["error"], str)
    assert "database" not in body["error"]  # nothing of the function's error reaches the caller
    assert any("AuthorizerFunction" in line for line in log)
    refused(gateway, PROTECTED)
    assert authorizer.calls == 2  # a failure is not cached


def test_an_authorizer_past_its_timeout_is_503(authorizer: StandInAuthorizer, clock: Clock) -> None:
    gateway = make_gateway(authorizer, clock, timeout=0.2)
    authorizer.mode = "hang"
    refusal = refused(gateway, PROTECTED)
    assert refusal.CODE == 503
    assert refusal.headers["x-amzn-ErrorType"] == "AuthorizerConfigurationException"


def test_an_allowed_request_carries_the_authorizers_context(
    gateway: TemplateGateway, authorizer: StandInAuthorizer
) -> None:
    event = call(gateway, PROTECTED)
    assert event["requestContext"]["authorizer"] == {
        "tenant": "tenant-a",
        "keyId": "abcdefabcdef",
        "admin": "false",  # a REST API passes the context's values as strings
        "principalId": "tenant-a",
    }
    assert event["requestContext"]["identity"]["apiKey"] == "usage-key-1"


# -- the cache -----------------------------------------------------------------------------


def test_the_answer_is_cached_per_header_for_reauthorize_every_times_the_time_scale(
    gateway: TemplateGateway, authorizer: StandInAuthorizer, clock: Clock
) -> None:
    ttl = REAUTHORIZE_EVERY * TIME_SCALE
    call(gateway, PROTECTED)
    assert authorizer.calls == 1
    clock.advance(ttl - 0.01)
    call(gateway, OTHER_PROTECTED)  # another route, the same header: from the cache
    assert authorizer.calls == 1
    call(gateway, PROTECTED, authorization=KEY + "x")  # another header: asked
    assert authorizer.calls == 2
    clock.advance(0.02)
    authorizer.mode = "unauthorized"  # e.g. the key was revoked meanwhile
    assert refused(gateway, PROTECTED).CODE == 401
    assert authorizer.calls == 3


# -- API keys and the usage plan -----------------------------------------------------------


def test_a_route_that_requires_an_api_key_without_a_usage_key_is_403(
    gateway: TemplateGateway, authorizer: StandInAuthorizer
) -> None:
    authorizer.usage_key = None
    refusal = refused(gateway, PROTECTED)
    assert refusal.CODE == 403
    assert body_of(refusal) == {"error": "Forbidden", "details": []}  # DEFAULT_4XX, as AWS


def test_burst_plus_one_at_one_instant_lets_exactly_burst_through(
    gateway: TemplateGateway, authorizer: StandInAuthorizer
) -> None:
    passed = 0
    for _ in range(BURST):
        call(gateway, PROTECTED)
        passed += 1
    refusal = refused(gateway, PROTECTED)
    assert passed == BURST
    assert refusal.CODE == 429
    retry_after = refusal.headers["Retry-After"]
    assert retry_after.isdigit() and int(retry_after) >= 1
    assert body_of(refusal) == {"error": gateway_error("THROTTLED"), "details": []}
    authorizer.usage_key = "usage-key-2"  # each tenant has a bucket of its own
    call(gateway, PROTECTED, authorization=KEY + "2")


def test_tokens_come_back_at_the_rate(authorizer: StandInAuthorizer, clock: Clock) -> None:
    spec = spec_from_template(
        TEMPLATE_PATH, parameter_overrides={"TenantRateLimit": "2", "TenantBurstLimit": "3"}
    )
    gateway = make_gateway(authorizer, clock, spec=spec)

    def passing(attempts: int) -> int:
        count = 0
        for _ in range(attempts):
            try:
                call(gateway, PROTECTED)
            except GatewayRefusal as refusal:
                assert refusal.CODE == 429
            else:
                count += 1
        return count

    assert passing(4) == 3
    clock.advance(0.49)  # 0.98 of a token
    assert passing(1) == 0
    clock.advance(0.02)
    assert passing(2) == 1
    clock.advance(10)  # refills up to the burst, no further
    assert passing(5) == 3


def test_the_throttle_answers_retry_after_in_whole_seconds(
    authorizer: StandInAuthorizer, clock: Clock
) -> None:
    spec = spec_from_template(
        TEMPLATE_PATH, parameter_overrides={"TenantRateLimit": "1", "TenantBurstLimit": "1"}
    )
    gateway = make_gateway(authorizer, clock, spec=spec)
    call(gateway, PROTECTED)
    clock.advance(0.1)
    assert refused(gateway, PROTECTED).headers["Retry-After"] == "1"  # 0.9 s, rounded up


# -- from a provisioned stack --------------------------------------------------------------

STAND_IN_MODULE = "gateway_auth_stand_in"
STAND_IN_SOURCE = """
CALLS = []

def authorize(event, context):
    CALLS.append((event, context.function_name, context.get_remaining_time_in_millis()))
    return {
        "principalId": "t",
        "policyDocument": {"Statement": [
            {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": "*"}
        ]},
        "context": {"tenant": "t"},
        "usageIdentifierKey": "k",
    }
"""


def test_the_stack_loads_the_authorizer_function_by_its_handler(tmp_path: Path) -> None:
    (tmp_path / f"{STAND_IN_MODULE}.py").write_text(STAND_IN_SOURCE)
    template_timeout = int(AUTHORIZER_FUNCTION["Timeout"])
    stack = ProvisionedStack(stack_name="image-pipeline", template_path=TEMPLATE_PATH)
    stack.functions["AuthorizerFunction"] = FunctionInfo(
        logical_id="AuthorizerFunction",
        name="image-pipeline-AuthorizerFunction",
        handler=f"{STAND_IN_MODULE}.authorize",
        code_dir=tmp_path,
        timeout=template_timeout * TIME_SCALE,  # what the provisioner reports, scaled
        template_timeout=template_timeout,
        memory_size=512,
        arn="arn:aws:lambda:us-east-1:123456789012:function:image-pipeline-AuthorizerFunction",
    )
    try:
        gateway = gateway_for_stack(stack, time_scale=TIME_SCALE)
        assert gateway is not None
        event = call(gateway, PROTECTED)
        module = sys.modules[STAND_IN_MODULE]
        ((_, name, remaining),) = module.CALLS
        assert name == "image-pipeline-AuthorizerFunction"
        # the template's Timeout, as the caller waits in real time (not the scaled one)
        assert template_timeout * 1000 * 0.9 < remaining <= template_timeout * 1000
        assert event["requestContext"]["authorizer"]["tenant"] == "t"
    finally:
        sys.modules.pop(STAND_IN_MODULE, None)
        if str(tmp_path) in sys.path:
            sys.path.remove(str(tmp_path))


# -- over HTTP, through the API server -----------------------------------------------------


def make_app() -> Chalice:
    """Routes at the template's paths; what the gateway lets through reaches them."""
    app = Chalice(app_name="gateway-auth-test")
    app.api.binary_types.append("multipart/form-data")

    @app.route("/api/health", methods=["GET"])
    def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.route("/api/jobs", methods=["GET"])
    def jobs() -> dict[str, Any]:
        request = app.current_request
        assert request is not None
        return {"authorizer": request.context.get("authorizer")}

    @app.route("/api/jobs/{requestId}/output.csv", methods=["GET"])
    def output(requestId: str) -> str:
        return "a" * int(requestId)

    @app.route("/api/uploadAndProcessDocument", methods=["POST"], content_types=["text/csv"])
    def upload() -> dict[str, Any]:
        return {"ok": True}

    return app


@pytest.fixture
def server(gateway: TemplateGateway) -> Iterator[ApiServer]:
    api = ApiServer(make_app(), "127.0.0.1", 0, quiet=True, authorizer=gateway)
    api.start()
    try:
        yield api
    finally:
        api.stop()


def exchange(
    port: int, method: str, path: str, *headers: str, body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    head = [f"{method} {path} HTTP/1.1", "Host: localhost", "Connection: close", *headers]
    if body:
        head.append(f"Content-Length: {len(body)}")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        received = b""
        while chunk := sock.recv(1 << 20):
            received += chunk
    raw_head, _, payload = received.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    parsed = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return int(lines[0].split(" ")[1]), parsed, payload


def test_over_http_the_gateway_answers_in_the_contract_shape(
    server: ApiServer, authorizer: StandInAuthorizer
) -> None:
    port = server.address[1]
    status, _, body = exchange(port, "GET", "/api/health")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    status, headers, body = exchange(port, "GET", "/api/jobs")
    assert status == 401
    assert headers["www-authenticate"] == "Bearer"
    assert headers["access-control-allow-origin"] == "*"
    assert json.loads(body) == {"error": gateway_error("UNAUTHORIZED"), "details": []}
    assert authorizer.calls == 0
    status, _, body = exchange(port, "GET", "/api/jobs", f"Authorization: {KEY}")
    assert status == 200
    assert json.loads(body)["authorizer"]["tenant"] == "tenant-a"
    for _ in range(BURST - 1):
        assert exchange(port, "GET", "/api/jobs", f"Authorization: {KEY}")[0] == 200
    status, headers, body = exchange(port, "GET", "/api/jobs", f"Authorization: {KEY}")
    assert status == 429
    assert int(headers["retry-after"]) >= 1
    assert json.loads(body) == {"error": gateway_error("THROTTLED"), "details": []}
    assert authorizer.calls == 1


def test_a_request_whose_lambda_event_is_over_6_mb_is_413_with_the_presigned_upload(
    server: ApiServer, authorizer: StandInAuthorizer
) -> None:
    # Under 6 MB as bytes, over it as the event's JSON string: every quote is escaped.
    body = b'"' * (LAMBDA_PAYLOAD_BYTES // 2 + 1024)
    status, _, answer = exchange(
        server.address[1],
        "POST",
        "/api/uploadAndProcessDocument",
        f"Authorization: {KEY}",
        "Content-Type: text/csv",
        body=body,
    )
    assert status == 413
    parsed = json.loads(answer)
    assert set(parsed) == {"error", "details"}
    assert "POST /api/uploads" in parsed["error"]
    fits = b"a" * (LAMBDA_PAYLOAD_BYTES // 2 + 1024)  # the same length, nothing to escape
    status, _, _ = exchange(
        server.address[1],
        "POST",
        "/api/uploadAndProcessDocument",
        f"Authorization: {KEY}",
        "Content-Type: text/csv",
        body=fits,
    )
    assert status == 200


def test_a_response_over_6_mb_is_502_as_api_gateway_answers_lambdas_refusal(
    server: ApiServer,
) -> None:
    port = server.address[1]
    under = LAMBDA_PAYLOAD_BYTES - 4096
    status, _, body = exchange(
        port, "GET", f"/api/jobs/{under}/output.csv", f"Authorization: {KEY}"
    )
    assert (status, len(body)) == (200, under)
    over = LAMBDA_PAYLOAD_BYTES + 1
    status, _, body = exchange(port, "GET", f"/api/jobs/{over}/output.csv", f"Authorization: {KEY}")
    assert status == 502
    parsed = json.loads(body)
    assert set(parsed) == {"error", "details"}
    assert parsed["details"][0]["maxPayloadBytes"] == LAMBDA_PAYLOAD_BYTES


# -- reserved concurrency and the stage's method throttles (issue 25) ----------------------


def capped_gateway(
    authorizer: StandInAuthorizer, clock: Clock, concurrency: dict[str, int]
) -> TemplateGateway:
    function = LambdaFunction(
        name="image-pipeline-AuthorizerFunction",
        handler=authorizer,
        timeout=float(AUTHORIZER_FUNCTION["Timeout"]),
    )
    return TemplateGateway(
        SPEC, {"AuthorizerFunction": function}, clock=clock, concurrency=concurrency
    )


def test_the_api_function_past_its_reserved_concurrency_answers_503(
    authorizer: StandInAuthorizer, clock: Clock
) -> None:
    """Two requests hold the API function's two slots: a third is API Gateway's integration
    failure (Lambda's 429), the template's 503 with Retry-After; a slot freed serves again."""
    gateway = capped_gateway(authorizer, clock, {"ApiFunction": 2})
    holding = threading.Barrier(3)
    done = threading.Event()

    def hold() -> None:
        call(gateway, PROTECTED)
        holding.wait(10)
        done.wait(10)
        gateway.finish_invocation()  # as api_server does once the app answered

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        holding.wait(10)
        refusal = refused(gateway, PROTECTED)
        assert refusal.CODE == 503
        assert refusal.headers["Retry-After"] == "1"
        assert body_of(refusal) == {"error": gateway_error("INTEGRATION_FAILURE"), "details": []}
        public_refusal = refused(gateway, ("GET", "/api/health"), None)  # the same function
        assert public_refusal.CODE == 503
    finally:
        done.set()
        for thread in threads:
            thread.join(10)
    call(gateway, PROTECTED)
    gateway.finish_invocation()


def test_the_authorizer_past_its_reserved_concurrency_answers_503_uninvoked(
    authorizer: StandInAuthorizer, clock: Clock
) -> None:
    gateway = capped_gateway(authorizer, clock, {"AuthorizerFunction": 1})
    authorizer.mode = "hang"  # holds the one slot until released
    first = threading.Thread(target=lambda: refused(gateway, PROTECTED))
    first.start()
    try:
        for _ in range(1000):
            if authorizer.calls == 1:
                break
            threading.Event().wait(0.01)
        assert authorizer.calls == 1
        refusal = refused(gateway, PROTECTED, "Bearer ipk_other_key_value")
        assert refusal.CODE == 503
        assert refusal.headers["x-amzn-ErrorType"] == "AuthorizerConfigurationException"
        assert authorizer.calls == 1  # throttled: not invoked
    finally:
        authorizer.release.set()
        first.join(10)


ALPHA_KEY = "Bearer ipk_alpha0000000_secret"
BETA_KEY = "Bearer ipk_beta00000000_secret"


@dataclass
class TwoTenants:
    """The authorizer's stand-in for two tenants, each with its own usage key; while
    `hold_alpha` is set, alpha's invocations wait (counted) until `release`."""

    hold_alpha: bool = False
    release: threading.Event = field(default_factory=threading.Event)
    alpha_waiting: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        tenant = "alpha" if event["authorizationToken"] == ALPHA_KEY else "beta"
        if tenant == "alpha" and self.hold_alpha:
            with self.lock:
                self.alpha_waiting += 1
            self.release.wait(10)
        resource = event["methodArn"].split("/", 1)[0] + "/v1/*/*"
        return {
            "principalId": tenant,
            "policyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": resource}
                ],
            },
            "context": {"tenant": tenant},
            "usageIdentifierKey": f"usage-{tenant}",
        }


def _until(condition: Any) -> None:
    for _ in range(2000):
        if condition():
            return
        threading.Event().wait(0.005)
    raise AssertionError("the burst's requests never all arrived")


@pytest.mark.parametrize("connections", sorted(CAPS, key=int))
def test_one_tenants_whole_burst_leaves_another_tenant_served(
    connections: str, clock: Clock
) -> None:
    """At each DatabaseConnections, as the template deploys it: alpha fires its whole burst
    at once, first with its key not cached (every request in the authorizer at once, held
    there), then cached (every request in the API function at once, held there). Each time
    beta's request is served: neither function's reserved concurrency is left to alpha
    alone. (With the old figures, a burst of 40 against 10 and 8, beta is a 503.)"""
    spec = spec_from_template(
        TEMPLATE_PATH, parameter_overrides={"DatabaseConnections": connections}
    )
    route = spec.route(*PROTECTED)
    assert route is not None and route.api.throttle is not None
    burst = route.api.throttle.burst
    caps = CAPS[connections]
    stand_in = TwoTenants(hold_alpha=True)
    function = LambdaFunction(
        name="image-pipeline-AuthorizerFunction",
        handler=stand_in,
        timeout=float(AUTHORIZER_FUNCTION["Timeout"]),
    )
    gateway = TemplateGateway(
        spec,
        {"AuthorizerFunction": function},
        clock=clock,
        concurrency={"ApiFunction": caps["Api"], "AuthorizerFunction": caps["Authorizer"]},
    )
    in_function = threading.Semaphore(0)
    leave = threading.Event()
    answers: list[int] = []

    def alpha() -> None:
        try:
            call(gateway, PROTECTED, ALPHA_KEY)
        except GatewayRefusal as refusal:
            with stand_in.lock:
                answers.append(refusal.CODE)
            return
        in_function.release()
        leave.wait(10)
        gateway.finish_invocation()
        with stand_in.lock:
            answers.append(200)

    def beta_is_served() -> None:
        call(gateway, PROTECTED, BETA_KEY)
        gateway.finish_invocation()

    # 1. alpha's key not cached: its whole burst in the authorizer at once
    threads = [threading.Thread(target=alpha) for _ in range(burst)]
    for thread in threads:
        thread.start()
    try:
        _until(lambda: stand_in.alpha_waiting + len(answers) == burst)
        beta_is_served()
        stand_in.hold_alpha = False
        stand_in.release.set()
        # 2. alpha's whole burst in the API function at once
        for _ in range(burst):
            assert in_function.acquire(timeout=10), answers
        beta_is_served()
    finally:
        stand_in.release.set()
        leave.set()
        for thread in threads:
            thread.join(10)
    assert answers == [200] * burst  # and alpha's burst was served whole


def test_public_routes_are_throttled_at_the_stage_all_callers_together(
    gateway: TemplateGateway, clock: Clock
) -> None:
    rate = float(PARAMETERS["PublicRateLimit"]["Default"])
    burst = int(PARAMETERS["PublicBurstLimit"]["Default"])
    health = ("GET", "/api/health")
    for _ in range(burst):
        call(gateway, health, None)
    refusal = refused(gateway, health, None)
    assert refusal.CODE == 429
    assert refusal.headers["Retry-After"] == "1"
    assert body_of(refusal)["error"] == gateway_error("THROTTLED")
    call(gateway, ("GET", "/api/openapi.json"), None)  # each route its own bucket
    call(gateway, PROTECTED)  # the keyed routes: the tenant's usage plan only
    clock.advance(1 / rate)
    call(gateway, health, None)


# -- CORS preflights ---------------------------------------------------------------------


def sam_literal(value: str) -> str:
    """A SAM header value `'text'` as sent: text."""
    assert value.startswith("'") and value.endswith("'")
    return value[1:-1]


def test_a_preflight_is_answered_from_the_templates_cors_as_sams_mock_does(
    server: ApiServer, authorizer: StandInAuthorizer
) -> None:
    """Not by the function (Chalice's local gateway would answer `Access-Control-Allow-Methods:
    OPTIONS` and nothing else, which no browser accepts): the Api's Cors, whoever asks and
    whatever for, with no key. A page of another origin may send If-None-Match."""
    cors = API["Cors"]
    status, headers, body = exchange(
        server.address[1],
        "OPTIONS",
        "/api/jobs",
        "Origin: https://shop.example",
        "Access-Control-Request-Method: GET",
        "Access-Control-Request-Headers: authorization,if-none-match",
    )
    assert (status, body) == (200, b"{}\n")
    assert headers["access-control-allow-origin"] == sam_literal(cors["AllowOrigin"]) == "*"
    assert headers["access-control-allow-methods"] == sam_literal(cors["AllowMethods"])
    allowed = {h.strip().lower() for h in headers["access-control-allow-headers"].split(",")}
    assert allowed == {h.lower() for h in sam_literal(cors["AllowHeaders"]).split(",")}
    assert {"authorization", "if-none-match", "idempotency-key"} <= allowed
    assert headers["access-control-max-age"] == sam_literal(cors["MaxAge"])
    assert authorizer.calls == 0


def test_without_allow_methods_a_preflight_names_the_paths_methods() -> None:
    """SAM's default: the methods the template declares on the path, and OPTIONS."""
    template = json.loads(json.dumps(TEMPLATE))
    del template["Resources"]["Api"]["Properties"]["Cors"]["AllowMethods"]
    resolver = Resolver(template, stack_name="s", region="us-east-1", account_id="1" * 12)
    spec = read_gateway_spec(template, resolver)
    gateway = TemplateGateway(
        spec, {"AuthorizerFunction": LambdaFunction("auth", lambda e, c: {}, 3.0)}
    )
    answer = gateway.preflight("/api/jobs/7ccca9c7-868c-417e-baee-5f244c0fda81", {})
    assert answer is not None
    assert answer[1]["Access-Control-Allow-Methods"] == "DELETE,OPTIONS"
    answer = gateway.preflight("/api/jobs", {})
    assert answer is not None and answer[1]["Access-Control-Allow-Methods"] == "GET,OPTIONS"
