"""API Gateway's authentication and throttling, from the template, in front of the local API.

On AWS the API's routes, their authorizer, the API key they need and the usage plan's
throttle are the template's (`AWS::Serverless::Api` Auth, each `Type: Api` event's Auth,
`AWS::ApiGateway::UsagePlan` Throttle), not the Chalice app's. Chalice's own local
authorizer runs the routes' Chalice authorizers, answers 500 when one raises and knows no
cache, API key or throttle: a test could pass locally and fail deployed. This one does what
API Gateway does, in its order:

1. The route must be the template's (method and path; a CORS preflight of a declared path
   when the Api has Cors): else MISSING_AUTHENTICATION_TOKEN. A preflight is answered as
   SAM's OPTIONS mock answers it, from the Api's `Cors` (`preflight`), not by the function.
2. A route with an authorizer (a TOKEN Lambda authorizer): the identity header missing or
   not matching Identity.ValidationExpression -> UNAUTHORIZED (401), the authorizer not
   invoked. Else its answer for that header value, cached for ReauthorizeEvery (times the
   time scale), or the authorizer function invoked with
   `{"type": "TOKEN", "authorizationToken", "methodArn"}` within its Timeout: raising
   "Unauthorized" -> 401; a policy that denies the methodArn or does not allow it ->
   ACCESS_DENIED (403); any other failure (another error, a timeout, an answer that is not
   a valid authorizer response) -> 500 (AuthorizerConfigurationException). Allowed: the
   answer's context and principalId become `requestContext.authorizer` (values as strings,
   as REST APIs pass them).
3. ApiKeyRequired: the key is the authorizer's `usageIdentifierKey` (ApiKeySourceType
   AUTHORIZER) or the `x-api-key` header (HEADER); none -> INVALID_API_KEY (403 Forbidden).
   Every key has a token bucket of the usage plan's Throttle (BurstLimit tokens, RateLimit
   a second): empty -> THROTTLED (429) with Retry-After.

The stage's MethodSettings throttle a route for all callers together (one bucket per
method and resource path; `/*` and `*` for every route): empty -> THROTTLED (429) with
Retry-After, before the authorizer. A function's ReservedConcurrentExecutions is how many of
its invocations may run at once: an authorizer over it -> AUTHORIZER_CONFIGURATION_ERROR,
the route's function over it -> INTEGRATION_FAILURE (as API Gateway answers Lambda's 429),
each the template's GatewayResponse.

Each refusal is the template's GatewayResponse for its type (status, headers, body), or
DEFAULT_4XX/DEFAULT_5XX, or API Gateway's default; `$context.error.messageString` and
`$context.error.message` are filled in. Not emulated: which keys exist (any non-empty key
is one; on AWS it must be a key of the usage plan), usage plan quotas and per-method
throttles, REQUEST and Cognito authorizers, AWS_IAM (refused at start, not waved through).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from chalice.local import LambdaContext, LocalGatewayException

from local_emulator.intrinsics import NO_VALUE, Resolver, TemplateError, references
from local_emulator.provision import (
    ACCOUNT_ID,
    REGION,
    STACK_NAME,
    FunctionInfo,
    ProvisionedStack,
    load_template,
)

EventType = dict[str, Any]
Clock = Callable[[], float]
Log = Callable[[str], None]

IMPLICIT_API = "ServerlessRestApi"  # SAM's API for events without a RestApiId
IMPLICIT_STAGE = "Prod"
SAM_REAUTHORIZE_EVERY = 300  # SAM's default Identity.ReauthorizeEvery
UNAUTHORIZED_MESSAGE = "Unauthorized"  # the one authorizer error API Gateway answers 401
MAX_CACHED = 10_000

# API Gateway's response types used here: default status and message.
MISSING_AUTHENTICATION_TOKEN = "MISSING_AUTHENTICATION_TOKEN"  # noqa: S105 - a response type
UNAUTHORIZED = "UNAUTHORIZED"
ACCESS_DENIED = "ACCESS_DENIED"
INVALID_API_KEY = "INVALID_API_KEY"
THROTTLED = "THROTTLED"
AUTHORIZER_CONFIGURATION_ERROR = "AUTHORIZER_CONFIGURATION_ERROR"
INTEGRATION_FAILURE = "INTEGRATION_FAILURE"
DEFAULT_RESPONSES: dict[str, tuple[int, str]] = {
    MISSING_AUTHENTICATION_TOKEN: (403, "Missing Authentication Token"),
    UNAUTHORIZED: (401, "Unauthorized"),
    ACCESS_DENIED: (403, "User is not authorized to access this resource"),
    INVALID_API_KEY: (403, "Forbidden"),
    THROTTLED: (429, "Too Many Requests"),
    AUTHORIZER_CONFIGURATION_ERROR: (500, "the authorizer failed; the request was not served"),
    INTEGRATION_FAILURE: (504, "Internal server error"),
}
ERROR_TYPES = {
    MISSING_AUTHENTICATION_TOKEN: "MissingAuthenticationTokenException",
    UNAUTHORIZED: "UnauthorizedException",
    ACCESS_DENIED: "AccessDeniedException",
    INVALID_API_KEY: "ForbiddenException",
    THROTTLED: "TooManyRequestsException",
    AUTHORIZER_CONFIGURATION_ERROR: "AuthorizerConfigurationException",
    INTEGRATION_FAILURE: "InternalServerErrorException",
}
_PATH_PARAMETER = re.compile(r"\{([^}/]+?)(\+?)\}")
_STATIC_HEADER = re.compile(r"^'(.*)'$", re.DOTALL)


class GatewayRefusal(LocalGatewayException):
    """API Gateway answering instead of the function (api_server.py writes it as is)."""

    def __init__(
        self, response_type: str, status: int, headers: dict[str, str], body: bytes
    ) -> None:
        super().__init__(headers, body)
        self.CODE = status
        self.response_type = response_type


# -- the template -----------------------------------------------------------------------


@dataclass(frozen=True)
class TokenAuthorizer:
    name: str
    function_id: str  # the authorizer function's logical id
    header: str
    validation: re.Pattern[str] | None
    reauthorize_every: int  # seconds, the template's


@dataclass(frozen=True)
class Throttle:
    rate: float  # tokens a second
    burst: int  # the bucket's size


@dataclass(frozen=True)
class GatewayResponse:
    status: int | None
    headers: Mapping[str, str]
    template: str | None


@dataclass(frozen=True)
class CorsSpec:
    """An Api's `Cors`: what SAM's OPTIONS mock on each of its paths answers."""

    allow_origin: str
    allow_headers: str | None = None
    allow_methods: str | None = None  # None: the path's methods and OPTIONS (SAM's default)
    max_age: str | None = None
    allow_credentials: bool = False


ALL_HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")  # SAM's, for ANY


@dataclass(frozen=True)
class ApiSpec:
    logical_id: str
    stage: str
    api_key_source: str  # HEADER or AUTHORIZER
    cors: CorsSpec | None
    authorizers: Mapping[str, TokenAuthorizer]
    default_authorizer: str | None
    api_key_required: bool  # the Api's default for its routes
    responses: Mapping[str, GatewayResponse]
    throttle: Throttle | None
    preflight_authorizer: str | None  # the default authorizer, when it guards preflights
    preflight_api_key: bool
    # the stage's MethodSettings throttles: (HTTP method or *, resource path or /*) -> bucket
    method_throttles: Mapping[tuple[str, str], Throttle] = field(default_factory=dict)

    def method_throttle(self, method: str, path: str) -> tuple[tuple[str, str], Throttle] | None:
        """The MethodSettings entry for a route: its own, else the stage's `/*/*`."""
        for key in ((method, path), ("*", path), (method, "/*"), ("*", "/*")):
            if key in self.method_throttles:
                return key, self.method_throttles[key]
        return None


@dataclass(frozen=True)
class Route:
    method: str  # or ANY
    path: str  # the template's, e.g. /api/jobs/{requestId}
    api: ApiSpec
    authorizer: str | None  # a name in api.authorizers; None: no authorizer
    api_key_required: bool
    pattern: re.Pattern[str] = field(compare=False)
    function: str = ""  # the logical id of the function the route invokes
    preflight: bool = False  # a CORS preflight SAM adds (the template declares no OPTIONS)

    @property
    def precedence(self) -> tuple[int, int, int]:
        """API Gateway prefers literal segments, then {param}, then {proxy+}; an exact
        method over ANY."""
        greedy = self.path.count("+}")
        params = len(_PATH_PARAMETER.findall(self.path)) - greedy
        return (greedy, params, int(self.method == "ANY"))


@dataclass(frozen=True)
class GatewaySpec:
    routes: tuple[Route, ...]

    def route(self, method: str, path: str) -> Route | None:
        """The template's route for a request, a CORS preflight of a declared path
        included; None: API Gateway has no such route (or method)."""
        matching = [r for r in self.routes if r.pattern.fullmatch(path)]
        for route in sorted(matching, key=lambda r: r.precedence):
            if route.method in (method, "ANY"):
                return route
        if method == "OPTIONS":
            return next(
                (
                    Route(
                        method="OPTIONS",
                        path=route.path,
                        api=route.api,
                        authorizer=route.api.preflight_authorizer,
                        api_key_required=route.api.preflight_api_key,
                        pattern=route.pattern,
                        preflight=True,
                    )
                    for route in sorted(matching, key=lambda r: r.precedence)
                    if route.api.cors
                ),
                None,
            )
        return None


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """SAM's Globals merge: maps key by key, anything else replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _literal(value: Any) -> str:
    """A header value as SAM takes it: `'text'` is the literal text."""
    text = str(value)
    static = _STATIC_HEADER.match(text)
    return static.group(1) if static else text


def _cors(raw: Any, resolver: Resolver) -> CorsSpec | None:
    """An Api's `Cors`: a string is AllowOrigin alone; a map names each header's value."""
    value = resolver.resolve(raw) if raw is not None else None
    if not value or value is NO_VALUE:
        return None
    if not isinstance(value, Mapping):
        return CorsSpec(allow_origin=_literal(value))
    if "AllowOrigin" not in value:
        raise TemplateError("Api Cors: AllowOrigin is required")

    def optional(name: str) -> str | None:
        found = value.get(name)
        return None if found in (None, NO_VALUE, "") else _literal(found)

    return CorsSpec(
        allow_origin=_literal(value["AllowOrigin"]),
        allow_headers=optional("AllowHeaders"),
        allow_methods=optional("AllowMethods"),
        max_age=optional("MaxAge"),
        allow_credentials=_flag(value.get("AllowCredentials"), False),
    )


def _flag(value: Any, default: bool) -> bool:
    if value is None or value is NO_VALUE:
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() == "true"


def _function_id(authorizer: str, arn: Any) -> str:
    """`!GetAtt X.Arn`, `!Sub ${X.Arn}` or `!Ref X.Alias` (the alias AutoPublishAlias makes)
    -> X: the function the emulator runs."""
    if isinstance(arn, Mapping) and set(arn) == {"Ref"}:
        match = re.fullmatch(r"([A-Za-z0-9]+)\.Alias", str(arn["Ref"]))
        if match:
            return match.group(1)
    if isinstance(arn, Mapping) and "Fn::GetAtt" in arn:
        target = arn["Fn::GetAtt"]
        parts = target.split(".", 1) if isinstance(target, str) else list(target)
        if len(parts) == 2 and parts[1] == "Arn":
            return str(parts[0])
    if isinstance(arn, Mapping) and "Fn::Sub" in arn:
        text = arn["Fn::Sub"] if isinstance(arn["Fn::Sub"], str) else arn["Fn::Sub"][0]
        match = re.fullmatch(r"\$\{([A-Za-z0-9]+)\.Arn\}", str(text))
        if match:
            return match.group(1)
    raise TemplateError(
        f"authorizer {authorizer}: FunctionArn must be !GetAtt <function>.Arn or "
        "!Ref <function>.Alias of a function of the template to run locally"
    )


def _authorizers(auth: Mapping[str, Any], resolver: Resolver) -> dict[str, TokenAuthorizer]:
    out: dict[str, TokenAuthorizer] = {}
    for name, raw in (auth.get("Authorizers") or {}).items():
        if "FunctionArn" not in raw:
            raise TemplateError(f"authorizer {name}: only Lambda authorizers are emulated")
        payload = str(resolver.resolve(raw.get("FunctionPayloadType", "TOKEN")))
        if payload != "TOKEN":
            raise TemplateError(f"authorizer {name}: only TOKEN authorizers are emulated")
        identity = resolver.resolve(raw.get("Identity") or {})
        expression = identity.get("ValidationExpression")
        out[name] = TokenAuthorizer(
            name=name,
            function_id=_function_id(name, raw["FunctionArn"]),
            header=str(identity.get("Header") or "Authorization"),
            validation=re.compile(str(expression)) if expression else None,
            reauthorize_every=int(identity.get("ReauthorizeEvery", SAM_REAUTHORIZE_EVERY)),
        )
    return out


def _responses(raw: Mapping[str, Any]) -> dict[str, GatewayResponse]:
    out: dict[str, GatewayResponse] = {}
    for response_type, spec in raw.items():
        headers: dict[str, str] = {}
        for name, value in ((spec.get("ResponseParameters") or {}).get("Headers") or {}).items():
            static = _STATIC_HEADER.match(str(value))
            if static:  # a literal; mappings ($context..., method.request...) are not emulated
                headers[str(name)] = static.group(1)
        templates = spec.get("ResponseTemplates") or {}
        out[str(response_type)] = GatewayResponse(
            status=int(spec["StatusCode"]) if "StatusCode" in spec else None,
            headers=headers,
            template=templates.get("application/json"),
        )
    return out


def _throttle(
    template: Mapping[str, Any], resolver: Resolver, api_id: str, warn: Log
) -> Throttle | None:
    """The Throttle of the usage plan whose ApiStages name this API."""
    plans = []
    for logical_id, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") != "AWS::ApiGateway::UsagePlan":
            continue
        if not resolver.resource_enabled(resource):
            continue
        props = resource.get("Properties") or {}
        stages = props.get("ApiStages") or []
        if any(api_id in references(stage.get("ApiId")) for stage in stages):
            plans.append((logical_id, props))
    if not plans:
        return None
    if len(plans) > 1:
        warn(
            f"API {api_id}: usage plans {', '.join(p for p, _ in plans)}; each key is "
            f"throttled under {plans[0][0]}'s limits locally"
        )
    logical_id, props = plans[0]
    for stage in props.get("ApiStages") or []:
        if stage.get("Throttle"):
            warn(f"usage plan {logical_id}: per-method throttles are not emulated")
    if props.get("Quota"):
        warn(f"usage plan {logical_id}: quotas are not emulated")
    throttle = resolver.resolve(props.get("Throttle") or {})
    if not throttle:
        return None
    return Throttle(
        rate=float(throttle.get("RateLimit", math.inf)),
        burst=int(throttle.get("BurstLimit", 0) or 0),
    )


def _api_specs(
    template: Mapping[str, Any], resolver: Resolver, api_ids: set[str], warn: Log
) -> dict[str, ApiSpec]:
    resources = template.get("Resources") or {}
    global_props = (template.get("Globals") or {}).get("Api") or {}
    specs: dict[str, ApiSpec] = {}
    for api_id in sorted(api_ids):
        if api_id == IMPLICIT_API:
            props = dict(global_props)
            stage = IMPLICIT_STAGE
        else:
            resource = resources.get(api_id) or {}
            if resource.get("Type") != "AWS::Serverless::Api":
                raise TemplateError(f"RestApiId {api_id} is not an AWS::Serverless::Api")
            props = _merge(global_props, resource.get("Properties") or {})
            stage = str(resolver.resolve(props.get("StageName", IMPLICIT_STAGE)))
        auth = props.get("Auth") or {}
        authorizers = _authorizers(auth, resolver)
        default = auth.get("DefaultAuthorizer")
        default = str(resolver.resolve(default)) if default else None
        if default not in (None, *authorizers):
            raise TemplateError(f"API {api_id}: DefaultAuthorizer {default} is not declared")
        api_key_required = _flag(resolver.resolve(auth.get("ApiKeyRequired")), False)
        specs[api_id] = ApiSpec(
            logical_id=api_id,
            stage=stage,
            api_key_source=str(resolver.resolve(props.get("ApiKeySourceType", "HEADER"))),
            cors=_cors(props.get("Cors"), resolver),
            authorizers=authorizers,
            default_authorizer=default,
            api_key_required=api_key_required,
            responses=_responses(resolver.resolve(props.get("GatewayResponses") or {})),
            throttle=_throttle(template, resolver, api_id, warn),
            preflight_authorizer=(
                default
                if _flag(resolver.resolve(auth.get("AddDefaultAuthorizerToCorsPreflight")), True)
                else None
            ),
            preflight_api_key=api_key_required
            and _flag(resolver.resolve(auth.get("AddApiKeyRequiredToCorsPreflight")), True),
            method_throttles=_method_throttles(resolver.resolve(props.get("MethodSettings") or [])),
        )
    return specs


def _method_throttles(settings: Any) -> dict[tuple[str, str], Throttle]:
    """MethodSettings' throttles by (method, path). ResourcePath is a slash then the path
    with each of its slashes as ~1 (`/~1api~1health`); `/` alone is the root, `/*` all."""
    out: dict[tuple[str, str], Throttle] = {}
    for setting in settings if isinstance(settings, list) else []:
        if "ThrottlingRateLimit" not in setting and "ThrottlingBurstLimit" not in setting:
            continue
        raw = str(setting.get("ResourcePath", "/*"))
        path = raw if raw in ("/", "/*") else raw[1:].replace("~1", "/")
        method = str(setting.get("HttpMethod", "*")).upper()
        out[(method, path)] = Throttle(
            rate=float(setting.get("ThrottlingRateLimit", math.inf)),
            burst=int(setting.get("ThrottlingBurstLimit", 0) or 0),
        )
    return out


def _path_pattern(path: str) -> re.Pattern[str]:
    out, last = "", 0
    for match in _PATH_PARAMETER.finditer(path):
        out += re.escape(path[last : match.start()])
        out += ".+" if match.group(2) else "[^/]+"
        last = match.end()
    return re.compile(out + re.escape(path[last:]))


def read_gateway_spec(
    template: Mapping[str, Any], resolver: Resolver, warn: Log | None = None
) -> GatewaySpec:
    """The routes of every `Type: Api` event of the template, with their auth."""
    say: Log = warn or (lambda message: None)
    events: list[tuple[str, Mapping[str, Any]]] = []
    for function_id, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        if not resolver.resource_enabled(resource):
            continue
        for event_name, event in ((resource.get("Properties") or {}).get("Events") or {}).items():
            if event.get("Type") != "Api":
                continue
            props = event.get("Properties") or {}
            named = references(props.get("RestApiId"))
            api_id = next(iter(named)) if named else IMPLICIT_API
            events.append((api_id, {"Function": function_id, "Event": event_name, **props}))
    apis = _api_specs(template, resolver, {api_id for api_id, _ in events}, say)
    routes = []
    for api_id, props in events:
        api = apis[api_id]
        path = str(resolver.resolve(props["Path"]))
        method = str(resolver.resolve(props["Method"])).upper()
        auth = resolver.resolve(props.get("Auth") or {})
        name = auth.get("Authorizer")
        if name is None:
            name = api.default_authorizer
        where = f"{props['Function']}.{props['Event']}"
        if name == "AWS_IAM":
            raise TemplateError(f"{where}: AWS_IAM authorization is not emulated")
        authorizer = None if name in (None, "NONE") else str(name)
        if authorizer is not None and authorizer not in api.authorizers:
            raise TemplateError(f"{where}: authorizer {authorizer} is not declared")
        routes.append(
            Route(
                method=method,
                path=path,
                api=api,
                authorizer=authorizer,
                api_key_required=_flag(auth.get("ApiKeyRequired"), api.api_key_required),
                pattern=_path_pattern(path),
                function=str(props["Function"]),
            )
        )
    return GatewaySpec(routes=tuple(routes))


def spec_from_template(
    template_path: Path,
    *,
    stack_name: str = STACK_NAME,
    parameter_overrides: Mapping[str, str] | None = None,
    warn: Log | None = None,
) -> GatewaySpec:
    template = load_template(template_path)
    resolver = Resolver(
        template,
        stack_name=stack_name,
        region=REGION,
        account_id=ACCOUNT_ID,
        parameter_overrides=parameter_overrides,
    )
    return read_gateway_spec(template, resolver, warn)


# -- the gateway at run time ------------------------------------------------------------


class Handler(Protocol):
    def __call__(self, event: EventType, context: Any, /) -> Any: ...


@dataclass(frozen=True)
class LambdaFunction:
    """An authorizer function as the gateway invokes it."""

    name: str
    handler: Handler
    timeout: float  # seconds
    memory_size: int = 128


class _AuthorizerFailed(Exception):
    """Anything but Allow, Deny or Unauthorized: API Gateway answers 500."""


class TokenBuckets:
    """A usage plan's throttle, one bucket per API key: `burst` tokens, `rate` a second."""

    def __init__(self, throttle: Throttle, clock: Clock) -> None:
        self.throttle = throttle
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> float:
        """0 when a request may pass (its token taken), else the seconds until one may."""
        rate, burst = self.throttle.rate, self.throttle.burst
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (float(burst), now))
            tokens = min(float(burst), tokens + max(0.0, now - at) * rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
        if burst < 1 or rate <= 0:
            return math.inf
        return (1 - tokens) / rate


def _stringified(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _arn_matches(pattern: str, arn: str) -> bool:
    """IAM's wildcards in an execute-api resource: `*` any characters, `?` any one."""
    regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, arn) is not None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statement_applies(statement: Mapping[str, Any], arn: str) -> bool:
    actions = [str(a) for a in _as_list(statement.get("Action", []))]
    if not any(a in ("execute-api:Invoke", "execute-api:*", "*") for a in actions):
        return False
    return any(_arn_matches(str(r), arn) for r in _as_list(statement.get("Resource", [])))


def _checked_answer(answer: Any) -> dict[str, Any]:
    """A TOKEN authorizer's answer as API Gateway accepts it, else _AuthorizerFailed."""
    if not isinstance(answer, dict):
        raise _AuthorizerFailed(f"the answer is not an object: {type(answer).__name__}")
    if not isinstance(answer.get("principalId"), str):
        raise _AuthorizerFailed("the answer has no principalId")
    policy = answer.get("policyDocument")
    statements = policy.get("Statement") if isinstance(policy, dict) else None
    if not isinstance(statements, list | dict) or not statements:
        raise _AuthorizerFailed("the answer has no policyDocument with a Statement")
    for statement in _as_list(statements):
        if not isinstance(statement, dict) or statement.get("Effect") not in ("Allow", "Deny"):
            raise _AuthorizerFailed("a policy statement has no Effect Allow or Deny")
    context = answer.get("context") or {}
    if not isinstance(context, dict) or any(
        not isinstance(v, str | int | float | bool) for v in context.values()
    ):
        raise _AuthorizerFailed("the context is not a map of strings, numbers and booleans")
    key = answer.get("usageIdentifierKey")
    if key is not None and not isinstance(key, str):
        raise _AuthorizerFailed("usageIdentifierKey is not a string")
    return answer


def _allows(answer: Mapping[str, Any], arn: str) -> bool:
    """An explicit Deny wins; else some Allow must cover the methodArn."""
    statements = _as_list(answer["policyDocument"]["Statement"])
    applying = [s for s in statements if _statement_applies(s, arn)]
    if any(s["Effect"] == "Deny" for s in applying):
        return False
    return any(s["Effect"] == "Allow" for s in applying)


class TemplateGateway:
    """What API Gateway does before the function, for the template's routes. Chalice's
    `LocalGateway` calls `authorize(path, event, context)` before the app (api_server.py
    installs it as the gateway's `_authorizer`); refusals raise GatewayRefusal."""

    def __init__(
        self,
        spec: GatewaySpec,
        functions: Mapping[str, LambdaFunction],
        *,
        time_scale: float = 1.0,
        clock: Clock = time.monotonic,
        log: Log | None = None,
        stack_name: str = STACK_NAME,
        region: str = REGION,
        account_id: str = ACCOUNT_ID,
        concurrency: Mapping[str, int] | None = None,
    ) -> None:
        self.spec = spec
        self._functions = dict(functions)
        for route in spec.routes:
            for authorizer in route.api.authorizers.values():
                if authorizer.function_id not in self._functions:
                    raise TemplateError(
                        f"authorizer {authorizer.name}: function {authorizer.function_id} "
                        "is not in the stack"
                    )
        self.time_scale = time_scale
        self._clock = clock
        self._log: Log = log or (lambda message: None)
        self._stack_name = stack_name
        self._region = region
        self._account_id = account_id
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str, str], tuple[float, dict[str, Any]]] = {}
        self._buckets: dict[str, TokenBuckets] = {}
        self._method_buckets: dict[str, TokenBuckets] = {}
        # function logical id -> its invocations' slots (ReservedConcurrentExecutions)
        self._slots = {
            function_id: threading.BoundedSemaphore(limit) if limit > 0 else None
            for function_id, limit in (concurrency or {}).items()
        }
        self._invocation = threading.local()  # the route function's slot this thread holds

    # -- the hook -------------------------------------------------------------------
    def authorize(
        self, raw_path: str, lambda_event: EventType, lambda_context: Any
    ) -> tuple[EventType, Any]:
        context = lambda_event.setdefault("requestContext", {})
        method = str(context.get("httpMethod", "")).upper()
        path = raw_path.split("?", 1)[0]
        route = self.spec.route(method, path)
        if route is None:
            raise self.refusal(
                None, MISSING_AUTHENTICATION_TOKEN, f"no route answers {method} {path}"
            )
        api = route.api
        self._method_throttle(api, method, route.path)
        headers = {str(k).lower(): str(v) for k, v in (lambda_event.get("headers") or {}).items()}
        answer: dict[str, Any] | None = None
        if route.authorizer is not None:
            answer = self._authorized(api, api.authorizers[route.authorizer], method, path, headers)
            context["authorizer"] = {
                **{str(k): _stringified(v) for k, v in (answer.get("context") or {}).items()},
                "principalId": answer["principalId"],
            }
        if route.api_key_required:
            if api.api_key_source == "AUTHORIZER":
                key = answer.get("usageIdentifierKey") if answer is not None else None
            else:
                key = headers.get("x-api-key")
            if not key:
                raise self.refusal(api, INVALID_API_KEY, "Forbidden")
            self._throttle(api, str(key))
            context.setdefault("identity", {})["apiKey"] = str(key)
        self._start_invocation(api, route.function)
        return lambda_event, lambda_context

    # -- reserved concurrency ---------------------------------------------------------------
    def _take_slot(self, function_id: str) -> bool | None:
        """True: a slot taken; False: none left (Lambda's 429); None: the function is not
        capped."""
        if function_id not in self._slots:
            return None
        slot = self._slots[function_id]
        return slot is not None and slot.acquire(blocking=False)

    def _start_invocation(self, api: ApiSpec, function_id: str) -> None:
        self.finish_invocation()  # a slot left by a request that never reached the app
        taken = self._take_slot(function_id)
        if taken is False:
            self._log(f"{function_id} throttled: its reserved concurrency is in use")
            raise self.refusal(api, INTEGRATION_FAILURE, "Internal server error")
        if taken:
            self._invocation.function = function_id

    def finish_invocation(self) -> None:
        """The app answered (api_server.py calls this): its function's slot is free again."""
        function_id = getattr(self._invocation, "function", None)
        if function_id is not None:
            self._invocation.function = None
            slot = self._slots.get(function_id)
            if slot is not None:
                slot.release()

    def _method_throttle(self, api: ApiSpec, method: str, path: str) -> None:
        found = api.method_throttle(method, path)
        if found is None:
            return
        key, throttle = found
        name = f"{api.logical_id} {key[0]} {key[1]}"
        with self._lock:
            buckets = self._method_buckets.get(name)
            if buckets is None:
                buckets = self._method_buckets[name] = TokenBuckets(throttle, self._clock)
        self._take_or_refuse(api, buckets, name)

    def preflight(
        self, raw_path: str, headers: Mapping[str, str]
    ) -> tuple[int, dict[str, str], bytes] | None:
        """API Gateway's answer to an OPTIONS request that the template routes to no function:
        on a path of an Api with `Cors`, SAM's mock (200, the Cors headers, whatever the
        request asks: the browser checks them), after the preflight's auth if the Api adds it;
        no route: MISSING_AUTHENTICATION_TOKEN. None: the template declares OPTIONS on this
        path, and the function answers."""
        path = raw_path.split("?", 1)[0]
        route = self.spec.route("OPTIONS", path)
        if route is None:
            raise self.refusal(
                None, MISSING_AUTHENTICATION_TOKEN, f"no route answers OPTIONS {path}"
            )
        if not route.preflight:
            return None
        event: EventType = {"headers": dict(headers), "requestContext": {"httpMethod": "OPTIONS"}}
        self.authorize(raw_path, event, None)
        cors = route.api.cors
        assert cors is not None  # a preflight route exists only for an Api with Cors
        methods = cors.allow_methods
        if methods is None:
            declared = {r.method for r in self.spec.routes if r.path == route.path}
            named = set(ALL_HTTP_METHODS) if "ANY" in declared else declared | {"OPTIONS"}
            methods = ",".join(sorted(named))
        out = {
            "Content-Type": "application/json",
            "Access-Control-Allow-Origin": cors.allow_origin,
            "Access-Control-Allow-Methods": methods,
        }
        if cors.allow_headers:
            out["Access-Control-Allow-Headers"] = cors.allow_headers
        if cors.max_age is not None:
            out["Access-Control-Max-Age"] = cors.max_age
        if cors.allow_credentials:
            out["Access-Control-Allow-Credentials"] = "true"
        return 200, out, b"{}\n"

    # -- the authorizer ---------------------------------------------------------------
    def method_arn(self, api: ApiSpec, method: str, path: str) -> str:
        digest = hashlib.sha256(f"{self._stack_name}/{api.logical_id}".encode()).hexdigest()
        resource = path[1:] if path != "/" else path  # API Gateway: GET/api/x, GET// for /
        return (
            f"arn:aws:execute-api:{self._region}:{self._account_id}:{digest[:10]}/"
            f"{api.stage}/{method}/{resource}"
        )

    def cache_seconds(self, authorizer: TokenAuthorizer) -> float:
        # Scaled like every other duration of the stack (timescale.py): ReauthorizeEvery is
        # the longest a revoked key keeps working, and locally that bound shrinks with the
        # app's own durations, so a test can watch revocation take effect within
        # ReauthorizeEvery x scale, and no relation between durations that holds on AWS
        # breaks locally. (The throttle is not scaled: it counts the client's real requests.)
        return authorizer.reauthorize_every * self.time_scale

    def _authorized(
        self,
        api: ApiSpec,
        authorizer: TokenAuthorizer,
        method: str,
        path: str,
        headers: Mapping[str, str],
    ) -> dict[str, Any]:
        token = headers.get(authorizer.header.lower())
        if token is None:
            raise self.refusal(api, UNAUTHORIZED, "Unauthorized")
        if authorizer.validation is not None and not authorizer.validation.fullmatch(token):
            raise self.refusal(api, UNAUTHORIZED, "Unauthorized")
        arn = self.method_arn(api, method, path)
        answer = self._cached(api, authorizer, token)
        if answer is None:
            answer = self._invoke(api, authorizer, token, arn)
        if not _allows(answer, arn):
            raise self.refusal(api, ACCESS_DENIED, DEFAULT_RESPONSES[ACCESS_DENIED][1])
        return answer

    @staticmethod
    def _cache_key(api: ApiSpec, authorizer: TokenAuthorizer, token: str) -> tuple[str, str, str]:
        return (api.logical_id, authorizer.name, token)

    def _cached(
        self, api: ApiSpec, authorizer: TokenAuthorizer, token: str
    ) -> dict[str, Any] | None:
        key = self._cache_key(api, authorizer, token)
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                return None
            expires, answer = entry
            if self._clock() >= expires:
                del self._cache[key]
                return None
            return answer

    def _remember(
        self, api: ApiSpec, authorizer: TokenAuthorizer, token: str, answer: dict[str, Any]
    ) -> None:
        seconds = self.cache_seconds(authorizer)
        if seconds <= 0:
            return
        now = self._clock()
        with self._lock:
            if len(self._cache) >= MAX_CACHED:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            self._cache[self._cache_key(api, authorizer, token)] = (now + seconds, answer)

    def _invoke(
        self, api: ApiSpec, authorizer: TokenAuthorizer, token: str, arn: str
    ) -> dict[str, Any]:
        """The authorizer function, as Lambda runs it for API Gateway: within its Timeout;
        "Unauthorized" -> 401; an allow or deny policy is cached; anything else -> 500."""
        function = self._functions[authorizer.function_id]
        taken = self._take_slot(authorizer.function_id)
        if taken is False:
            self._log(f"authorizer {authorizer.name} ({function.name}) throttled")
            raise self.refusal(
                api,
                AUTHORIZER_CONFIGURATION_ERROR,
                DEFAULT_RESPONSES[AUTHORIZER_CONFIGURATION_ERROR][1],
            )
        try:
            return self._invoke_function(api, authorizer, function, token, arn)
        finally:
            if taken:
                slot = self._slots[authorizer.function_id]
                if slot is not None:
                    slot.release()

    def _invoke_function(
        self,
        api: ApiSpec,
        authorizer: TokenAuthorizer,
        function: LambdaFunction,
        token: str,
        arn: str,
    ) -> dict[str, Any]:
        event = {"type": "TOKEN", "authorizationToken": token, "methodArn": arn}
        context = LambdaContext(
            function_name=function.name,
            memory_size=function.memory_size,
            max_runtime_ms=int(function.timeout * 1000),
        )
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["answer"] = function.handler(event, context)
            except BaseException as exc:
                outcome["error"] = exc

        # On Lambda a timed-out invocation is stopped; here its thread is left to finish.
        thread = threading.Thread(target=run, name=f"authorizer-{function.name}", daemon=True)
        thread.start()
        thread.join(function.timeout)
        try:
            if thread.is_alive():
                raise _AuthorizerFailed(f"timed out after {function.timeout:g}s")
            error = outcome.get("error")
            if error is not None:
                if str(error) == UNAUTHORIZED_MESSAGE:
                    raise self.refusal(api, UNAUTHORIZED, "Unauthorized")
                raise _AuthorizerFailed(f"raised {error!r}") from error
            answer = _checked_answer(outcome.get("answer"))
        except _AuthorizerFailed as exc:
            self._log(f"authorizer {authorizer.name} ({function.name}) failed: {exc}")
            raise self.refusal(
                api,
                AUTHORIZER_CONFIGURATION_ERROR,
                DEFAULT_RESPONSES[AUTHORIZER_CONFIGURATION_ERROR][1],
            ) from exc
        self._remember(api, authorizer, token, answer)
        return answer

    # -- the usage plan ---------------------------------------------------------------
    def _throttle(self, api: ApiSpec, key: str) -> None:
        if api.throttle is None:
            return
        with self._lock:
            buckets = self._buckets.get(api.logical_id)
            if buckets is None:
                buckets = self._buckets[api.logical_id] = TokenBuckets(api.throttle, self._clock)
        self._take_or_refuse(api, buckets, key)

    def _take_or_refuse(self, api: ApiSpec, buckets: TokenBuckets, key: str) -> None:
        """One token of `key`'s bucket, or API Gateway's 429 with when to come back."""
        wait = buckets.take(key)
        if wait > 0:
            retry_after = max(1, math.ceil(wait)) if math.isfinite(wait) else 3600
            raise self.refusal(
                api,
                THROTTLED,
                DEFAULT_RESPONSES[THROTTLED][1],
                headers={"Retry-After": str(retry_after)},
            )

    # -- answers --------------------------------------------------------------------
    def refusal(
        self,
        api: ApiSpec | None,
        response_type: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> GatewayRefusal:
        """API Gateway's answer of `response_type`: the template's GatewayResponse for it,
        else its DEFAULT_4XX/DEFAULT_5XX, else API Gateway's own `{"message"}`."""
        default_status, _ = DEFAULT_RESPONSES[response_type]
        responses = api.responses if api is not None else self._any_responses()
        family = "DEFAULT_5XX" if default_status >= 500 else "DEFAULT_4XX"
        response = responses.get(response_type) or responses.get(family)
        status = (response.status if response else None) or default_status
        out = {"Content-Type": "application/json", "x-amzn-ErrorType": ERROR_TYPES[response_type]}
        out.update(response.headers if response else {})
        out.update(headers or {})
        body: bytes | None = None
        if response is not None and response.template:
            rendered = (
                response.template.replace("$context.error.messageString", json.dumps(message))
                .replace("$context.error.message", message)
                .replace("$context.error.responseType", response_type)
            )
            try:
                json.loads(rendered)
            except ValueError:
                self._log(f"gateway response {response_type}: the template is not JSON")
            else:
                body = rendered.encode()
        if body is None:
            body = json.dumps({"message": message}).encode()
        return GatewayRefusal(response_type, status, out, body)

    def _any_responses(self) -> Mapping[str, GatewayResponse]:
        """For a request no route answers: the responses of the (first) API."""
        return self.spec.routes[0].api.responses if self.spec.routes else {}


def gateway_for_stack(
    stack: ProvisionedStack,
    *,
    parameter_overrides: Mapping[str, str] | None = None,
    time_scale: float = 1.0,
    log: Log | None = None,
    load: Callable[[str, Path], Any] | None = None,
    clock: Clock = time.monotonic,
) -> TemplateGateway | None:
    """The gateway of a provisioned stack's template; None when it declares no Api event
    (a stand-in stack: Chalice's own local gateway then serves every route)."""
    spec = spec_from_template(
        stack.template_path,
        stack_name=stack.stack_name,
        parameter_overrides=parameter_overrides,
        warn=(lambda message: log(f"warning: {message}")) if log else None,
    )
    if not spec.routes:
        return None
    if load is None:
        from local_emulator.dispatch import load_handler

        load = load_handler
    needed = {a.function_id for r in spec.routes for a in r.api.authorizers.values()}
    functions: dict[str, LambdaFunction] = {}
    for function_id in sorted(needed):
        info: FunctionInfo | None = stack.functions.get(function_id)
        if info is None:
            raise TemplateError(f"authorizer function {function_id} is not in the stack")
        functions[function_id] = LambdaFunction(
            name=info.name,
            handler=load(info.handler, info.code_dir),
            # The template's Timeout, not scaled: like the API function's, the authorizer
            # answers a caller waiting in real time, and its work is not faster locally.
            timeout=float(info.template_timeout or info.timeout),
            memory_size=info.memory_size,
        )
    return TemplateGateway(
        spec,
        functions,
        time_scale=time_scale,
        clock=clock,
        log=log,
        stack_name=stack.stack_name,
        concurrency={
            logical_id: info.reserved_concurrency
            for logical_id, info in stack.functions.items()
            if info.reserved_concurrency is not None
        },
    )
