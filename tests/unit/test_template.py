"""template.yaml: lint, offline SAM transform, and the invariants the code and emulator rely on.

Fast and offline: cfn-lint's bundled schemas, samtranslator with a stub managed-policy
loader, and the Chalice app imported in-process.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.cfn_yaml import load_template, loads_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"
CONFIG_PATH = ROOT / "functions" / "chalicelib" / "config.py"

# Logical ids and handlers other parts of the repo (local_emulator, docs) rely on.
HANDLERS = {
    "ApiFunction": "app.app",
    "IngestFunction": "app.ingest_csv",
    "WorkerFunction": "handlers.worker.process_rows",  # app's, with imaging imported at init
    "FinalizeFunction": "app.finalize_jobs",
    "WebhookFunction": "app.deliver_webhooks",
    "RowsDeadLetterFunction": "app.rows_dead_letter",
    "SweepFunction": "app.sweep_jobs",
    "AuthorizerFunction": "app.api_key_authorizer",
}
QUEUES = {
    "IngestQueue": "IngestDeadLetterQueue",
    "RowsQueue": "RowsDeadLetterQueue",
    "FinalizeQueue": "FinalizeDeadLetterQueue",
    "WebhookQueue": "WebhookDeadLetterQueue",
}
SECRET_PARAMETERS = ("MongoUriSecretName", "WebhookSecretName")
MONGO_SECRET_ARN = (
    "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:"
    "${MongoUriSecretName}-??????"
)
# CreateInvalidation on the distribution in front of the outputs, and no other.
DISTRIBUTIONS_ARN = (
    "arn:${AWS::Partition}:cloudfront::${AWS::AccountId}:distribution/${OutputsDistribution}"
)
TENANT_SECRETS_ARN = (
    "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:"
    "${AWS::StackName}/tenants/*"
)
FOURTEEN_DAYS = 14 * 24 * 3600
MAX_VISIBILITY = 43200

# cfn-lint findings we accept, each with its reason. Everything else (errors, warnings,
# informational and experimental checks) fails the test.
IGNORED_LINT_RULES = {
    # Stateful-resource DeletionPolicy: the queues only hold in-flight messages; deleting them
    # with the stack is intended (buckets are not flagged).
    "I3011",
    # Experimental: asks for a Metadata.com.aws.cloudformation.Context architecture block.
    "I4010",
}

# The AWS managed policies each function's role (written in the template, as SAM would make
# it) carries: logs and X-Ray. Not the SQS execution role (receive and delete on every queue
# of the account): the template declares its event source mappings itself and each function
# may consume its own queue only. Nor AWSLambdaVPCAccessExecutionRole (network interfaces on
# every resource), which SAM gives the roles it makes as soon as VpcConfig appears.
AWS_MANAGED_POLICIES = [
    {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"},
    {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AWSXrayWriteOnlyAccess"},
]
SQS_EXECUTION_ROLE = "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole"
VPC_EXECUTION_ROLE = "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
IN_VPC = {"Fn::If": ["InVpc", {"Ref": "VpcNetworkInterfaces"}, {"Ref": "AWS::NoValue"}]}


# ------------------------------------------------------------------ helpers / fixtures


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


def _resources(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def _functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return _resources(template, "AWS::Serverless::Function")


def _prop(template: dict[str, Any], function: dict[str, Any], name: str) -> Any:
    """A function property, falling back to Globals.Function."""
    props = function.get("Properties", {})
    if name in props:
        return props[name]
    return template.get("Globals", {}).get("Function", {}).get(name)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _getatt_target(value: Any) -> str:
    """The logical id of `!GetAtt X.Arn` (or of `!Ref X`)."""
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return str(value["Fn::GetAtt"][0])
    if isinstance(value, dict) and "Ref" in value:
        return str(value["Ref"])
    raise AssertionError(f"expected !GetAtt or !Ref, got {value!r}")


def _walk(node: Any, skip_keys: frozenset[str] = frozenset()) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair in a nested structure, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in skip_keys:
                continue
            yield key, value
            yield from _walk(value, skip_keys)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, skip_keys)


def _strings(node: Any, skip_keys: frozenset[str] = frozenset()) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            if key not in skip_keys:
                yield from _strings(value, skip_keys)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item, skip_keys)


def _mappings(template: dict[str, Any], function_id: str) -> dict[str, dict[str, Any]]:
    """The template's event source mappings (declared as resources) that feed a function's
    alias."""
    return {
        mapping_id: mapping["Properties"]
        for mapping_id, mapping in _resources(template, "AWS::Lambda::EventSourceMapping").items()
        if mapping["Properties"]["FunctionName"] == {"Ref": f"{function_id}.Alias"}
    }


def _sqs_events(template: dict[str, Any], function_id: str) -> list[dict[str, Any]]:
    """A function's SQS sources: its SQS events and the mappings that feed it, each with its
    queue as `Queue`."""
    function = template["Resources"][function_id]
    events = function.get("Properties", {}).get("Events", {}) or {}
    sources = [e["Properties"] for e in events.values() if e["Type"] == "SQS"]
    sources += [
        {**props, "Queue": props["EventSourceArn"]}
        for props in _mappings(template, function_id).values()
    ]
    return sources


# ------------------------------------------------------------------ the loader


def test_loader_expands_short_tags() -> None:
    data = loads_template(
        "A: !Ref X\n"
        "B: !GetAtt Q.Arn\n"
        'C: !Sub "${AWS::StackName}-x"\n'
        "D: !Join [',', [a, !Ref Y]]\n"
        "E: !If [Cond, 1, !Ref AWS::NoValue]\n"
        "F: !GetAtt Res.Some.Nested\n"
        "G: !Sub ['${A}', {A: !Ref Z}]\n"
    )
    assert data == {
        "A": {"Ref": "X"},
        "B": {"Fn::GetAtt": ["Q", "Arn"]},
        "C": {"Fn::Sub": "${AWS::StackName}-x"},
        "D": {"Fn::Join": [",", ["a", {"Ref": "Y"}]]},
        "E": {"Fn::If": ["Cond", 1, {"Ref": "AWS::NoValue"}]},
        "F": {"Fn::GetAtt": ["Res", "Some.Nested"]},
        "G": {"Fn::Sub": ["${A}", {"A": {"Ref": "Z"}}]},
    }


def test_loader_rejects_non_mapping() -> None:
    with pytest.raises(ValueError, match="mapping"):
        loads_template("- just a list\n")


def test_template_shape(template: dict[str, Any]) -> None:
    assert template["AWSTemplateFormatVersion"] == "2010-09-09"
    assert template["Transform"] == "AWS::Serverless-2016-10-31"
    assert template["Description"]
    resources = template["Resources"]
    for queue, dlq in QUEUES.items():
        assert resources[queue]["Type"] == "AWS::SQS::Queue"
        assert resources[dlq]["Type"] == "AWS::SQS::Queue"
    for bucket in ("UploadsBucket", "OutputsBucket"):
        assert resources[bucket]["Type"] == "AWS::S3::Bucket"
    assert resources["IngestQueuePolicy"]["Type"] == "AWS::SQS::QueuePolicy"
    assert resources["Api"]["Type"] == "AWS::Serverless::Api"
    assert {k: v["Properties"]["Handler"] for k, v in _functions(template).items()} == HANDLERS


# ------------------------------------------------------------------ (1) cfn-lint


def test_cfn_lint_is_clean() -> None:
    from cfnlint.api import ManualArgs, lint

    matches = lint(
        TEMPLATE_PATH.read_text(encoding="utf-8"),
        config=ManualArgs(
            regions=["us-east-1", "eu-west-1", "ap-southeast-2"],
            include_checks=["I"],
            include_experimental=True,
            ignore_checks=sorted(IGNORED_LINT_RULES),
        ),
    )
    assert [f"{m.rule.id} line {m.linenumber}: {m.message}" for m in matches] == []


# ------------------------------------------------------------------ (2) SAM transform


class _StubManagedPolicyLoader:
    """samtranslator asks this for AWS managed policy ARNs by name; no IAM call."""

    def load(self) -> dict[str, str]:
        names = ("AWSLambdaBasicExecutionRole", "AWSXrayWriteOnlyAccess")
        return {name: f"arn:aws:iam::aws:policy/{name}" for name in names}


@pytest.fixture(scope="module")
def transformed(template: dict[str, Any]) -> dict[str, Any]:
    from samtranslator.translator.transform import transform

    sam = copy.deepcopy(template)
    # What `sam package` does: the local CodeUri becomes an S3 location.
    sam["Globals"]["Function"]["CodeUri"] = "s3://example-artifacts/functions.zip"
    with pytest.MonkeyPatch.context() as mp:
        # samtranslator reads the region (for pseudo parameters) from a boto3 session.
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.delenv("AWS_PROFILE", raising=False)
        parameters = {name: f"test/{name}" for name in SECRET_PARAMETERS}
        result: dict[str, Any] = transform(sam, parameters, _StubManagedPolicyLoader())
    return result


def test_transform_has_no_serverless_resources_left(transformed: dict[str, Any]) -> None:
    types = {r["Type"] for r in transformed["Resources"].values()}
    assert not {t for t in types if t.startswith("AWS::Serverless::")}
    assert "AWS::Lambda::Function" in types
    assert "AWS::ApiGateway::RestApi" in types


def test_transform_rows_mapping_reports_batch_item_failures(transformed: dict[str, Any]) -> None:
    mappings = [
        r["Properties"]
        for r in transformed["Resources"].values()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
    ]
    by_queue = {_getatt_target(m["EventSourceArn"]): m for m in mappings}
    assert set(by_queue) == {*QUEUES, "RowsDeadLetterQueue"}
    rows = by_queue["RowsQueue"]
    assert rows["FunctionName"] == {"Ref": "WorkerFunctionAliaslive"}  # the alias
    assert rows["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert rows["BatchSize"] == 10
    assert rows["ScalingConfig"]["MaximumConcurrency"] == {
        "Fn::FindInMap": ["ConcurrencyForConnections", {"Ref": "DatabaseConnections"}, "Worker"]
    }
    for queue in ("IngestQueue", "FinalizeQueue", "WebhookQueue"):
        assert by_queue[queue]["BatchSize"] == 1
    # Every handler returns batchItemFailures: without the response type Lambda deletes the
    # whole batch, the failed messages with it.
    for queue, mapping in by_queue.items():
        assert mapping.get("FunctionResponseTypes") == ["ReportBatchItemFailures"], queue


def test_transform_bucket_notifies_ingest_queue(transformed: dict[str, Any]) -> None:
    bucket = transformed["Resources"]["UploadsBucket"]
    assert bucket["DependsOn"] in ("IngestQueuePolicy", ["IngestQueuePolicy"])
    configs = bucket["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert len(configs) == 1
    (config,) = configs
    assert config["Event"] == "s3:ObjectCreated:*"
    assert _getatt_target(config["Queue"]) == "IngestQueue"
    rules = config["Filter"]["S3Key"]["Rules"]
    assert {"Name": "prefix", "Value": "incoming/"} in rules


def test_transform_queues_redrive_to_their_dlq(transformed: dict[str, Any]) -> None:
    resources = transformed["Resources"]
    for queue, dlq in QUEUES.items():
        redrive = resources[queue]["Properties"]["RedrivePolicy"]
        assert _getatt_target(redrive["deadLetterTargetArn"]) == dlq
        assert int(redrive["maxReceiveCount"]) == 5
        assert resources[dlq]["Properties"]["MessageRetentionPeriod"] == FOURTEEN_DAYS


def test_transform_roles_only_get_expected_managed_policies(transformed: dict[str, Any]) -> None:
    resources = transformed["Resources"]
    roles = {
        logical_id: r
        for logical_id, r in resources.items()
        if r["Type"] == "AWS::IAM::Role" and logical_id.removesuffix("Role") in HANDLERS
    }
    assert set(roles) == {f"{function}Role" for function in HANDLERS}
    for logical_id, role in roles.items():
        function = resources[logical_id.removesuffix("Role")]["Properties"]
        assert function["Role"] == {"Fn::GetAtt": [logical_id, "Arn"]}
        # the template's own ReadMongoUriSecret (test_function_permissions), and in VPC mode
        # only its VpcNetworkInterfaces (test_vpc_mode_*)
        assert role["Properties"]["ManagedPolicyArns"] == [
            *AWS_MANAGED_POLICIES,
            {"Ref": "ReadMongoUriSecret"},
            IN_VPC,
        ]
    text = json.dumps(transformed)
    assert SQS_EXECUTION_ROLE.rsplit("/", 1)[1] not in text
    assert VPC_EXECUTION_ROLE.rsplit("/", 1)[1] not in text


def test_sam_would_give_its_own_roles_the_vpc_execution_role() -> None:
    """Why each function's role is written in the template: a role SAM makes gets the managed
    AWSLambdaVPCAccessExecutionRole (ENIs and logs on every resource) whenever its function
    has a VpcConfig, even one under a condition that leaves it out. When SAM stops doing so,
    this fails and the roles may go back to SAM."""
    from samtranslator.translator.transform import transform

    sam = {
        "Transform": "AWS::Serverless-2016-10-31",
        "Parameters": {"Subnets": {"Type": "CommaDelimitedList", "Default": ""}},
        "Conditions": {
            "InVpc": {"Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", {"Ref": "Subnets"}]}, ""]}]}
        },
        "Resources": {
            "Fn": {
                "Type": "AWS::Serverless::Function",
                "Properties": {
                    "Runtime": "python3.13",
                    "Handler": "app.handler",
                    "CodeUri": "s3://example-artifacts/functions.zip",
                    "VpcConfig": {
                        "Fn::If": [
                            "InVpc",
                            {"SubnetIds": {"Ref": "Subnets"}, "SecurityGroupIds": ["sg-1"]},
                            {"Ref": "AWS::NoValue"},
                        ]
                    },
                },
            }
        },
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.delenv("AWS_PROFILE", raising=False)
        result = transform(sam, {}, _StubManagedPolicyLoader())
    assert VPC_EXECUTION_ROLE in result["Resources"]["FnRole"]["Properties"]["ManagedPolicyArns"]


# ------------------------------------------------------------------ (3)/(4) the code


@pytest.fixture(scope="module")
def app_module() -> Any:
    import app  # functions/app.py (pytest's pythonpath includes functions/)

    return app


def app_handler(handler: str) -> str:
    """The handler of app a template Handler resolves to, as Lambda's runtime imports it
    (`handlers.worker.process_rows` is `app.process_rows`, with more imported at init)."""
    import app

    module, _, attribute = handler.rpartition(".")
    function = getattr(importlib.import_module(module), attribute, None)
    assert callable(function), f"{handler} is not callable"
    names = [name for name, value in vars(app).items() if value is function]
    assert names, f"{handler} is none of app's handlers"
    return f"app.{names[0]}"


def test_every_handler_is_a_callable_of_app(app_module: Any) -> None:
    for logical_id, handler in HANDLERS.items():
        attribute = app_handler(handler).partition(".")[2]
        assert attribute == handler.rpartition(".")[2], logical_id
        assert callable(getattr(app_module, attribute)), f"app.{attribute} is not callable"


REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"


@pytest.fixture(scope="module")
def sqs_handlers(app_module: Any) -> dict[str, Any]:
    """Every `@app.on_sqs_message` handler, by its handler string (`app.process_rows`)."""
    from chalice.app import SQSEventConfig

    configs = [s for s in app_module.app.event_sources if isinstance(s, SQSEventConfig)]
    assert configs, "the app has no queue handler"
    return {config.handler_string: config for config in configs}


@pytest.fixture(scope="module")
def batch_reporting_handlers(app_module: Any, sqs_handlers: dict[str, Any]) -> set[str]:
    """The queue handlers that return `batchItemFailures`: by the return annotation (a
    TypedDict with that key, e.g. `BatchResponse`) or by what the handler answers to a
    malformed message over in-memory fakes. Either is enough, so a new handler that reports
    failures one way or the other is caught."""
    import typing

    from chalice.test import Client
    from chalicelib import bootstrap
    from chalicelib.entrypoints.queue_handlers import BatchFailed

    from tests.fakes import make_world

    reporting: set[str] = set()
    bootstrap.override(make_world().deps)
    try:
        with Client(app_module.app) as client:
            for handler, config in sqs_handlers.items():
                function = getattr(app_module, handler.partition(".")[2])
                returns = typing.get_type_hints(function.func).get("return")
                annotated = "batchItemFailures" in getattr(returns, "__annotations__", {})
                event = client.events.generate_sqs_event(
                    message_bodies=["{not json"], queue_name=config.queue
                )
                try:
                    payload = client.lambda_.invoke(config.name, event).payload
                except BatchFailed:  # every record failed: raised instead (as Powertools)
                    payload = {"batchItemFailures": [{"itemIdentifier": "all"}]}
                answered = isinstance(payload, dict) and "batchItemFailures" in payload
                if annotated or answered:
                    reporting.add(handler)
    finally:
        bootstrap.reset()
    return reporting


def _unreported_mappings(template: dict[str, Any], reporting: set[str]) -> list[str]:
    """`Function.Event` of every SQS mapping whose handler returns batchItemFailures but
    that lacks ReportBatchItemFailures (Lambda would then delete the whole batch)."""
    missing = []
    for logical_id, function in _functions(template).items():
        if app_handler(function["Properties"]["Handler"]) not in reporting:
            continue
        events = function["Properties"].get("Events") or {}
        sources = {n: e["Properties"] for n, e in events.items() if e["Type"] == "SQS"}
        sources |= _mappings(template, logical_id)
        for name, props in sources.items():
            types = props.get("FunctionResponseTypes") or []
            if REPORT_BATCH_ITEM_FAILURES not in types:
                missing.append(f"{logical_id}.{name}")
    return missing


def test_every_queue_handler_is_fed_by_a_queue(
    template: dict[str, Any], sqs_handlers: dict[str, Any]
) -> None:
    """A queue handler is wired in the template (else the checks below would skip it)."""
    fed = {
        app_handler(function["Properties"]["Handler"])
        for logical_id, function in _functions(template).items()
        if _sqs_events(template, logical_id)
    }
    assert set(sqs_handlers) == fed


def test_batch_item_failures_are_reported_on_every_mapping(
    template: dict[str, Any], sqs_handlers: dict[str, Any], batch_reporting_handlers: set[str]
) -> None:
    # The detection works: today's five queue handlers all report partial failures.
    assert batch_reporting_handlers == set(sqs_handlers) and len(sqs_handlers) == 5
    assert _unreported_mappings(template, batch_reporting_handlers) == []
    # The check itself: one mapping without the response type is found.
    broken = copy.deepcopy(template)
    mapping = broken["Resources"]["FinalizeFunctionFinalizeQueueEvent"]
    del mapping["Properties"]["FunctionResponseTypes"]
    assert _unreported_mappings(broken, batch_reporting_handlers) == [
        "FinalizeFunction.FinalizeFunctionFinalizeQueueEvent"
    ]


def _template_routes(template: dict[str, Any]) -> set[tuple[str, str]]:
    routes: set[tuple[str, str]] = set()
    for logical_id, function in _functions(template).items():
        for event in (function["Properties"].get("Events") or {}).values():
            if event["Type"] != "Api":
                continue
            assert logical_id == "ApiFunction", f"{logical_id} has an Api event"
            props = event["Properties"]
            assert props["RestApiId"] == {"Ref": "Api"}
            routes.add((props["Path"], props["Method"].upper()))
    return routes


def test_api_routes_match_the_chalice_app(template: dict[str, Any], app_module: Any) -> None:
    chalice_routes = {
        (path, method.upper())
        for path, methods in app_module.app.routes.items()
        for method in methods
    }
    declared = _template_routes(template)
    assert declared - chalice_routes == set(), "declared in template.yaml, not in the app"
    assert chalice_routes - declared == set(), "routes of the app missing from template.yaml"


PUBLIC_ROUTES = {
    ("/api/health", "GET"),
    ("/api/openapi.json", "GET"),
    ("/api-docs", "GET"),
    ("/", "GET"),
}


def _template_public_routes(template: dict[str, Any]) -> set[tuple[str, str]]:
    """Routes whose event opts out of the Api's default authorizer and API key."""
    public = set()
    for event in (_functions(template)["ApiFunction"]["Properties"]["Events"]).values():
        auth = event["Properties"].get("Auth")
        if auth is None:
            continue
        assert auth == {"Authorizer": "NONE", "ApiKeyRequired": False}, event
        public.add((event["Properties"]["Path"], event["Properties"]["Method"].upper()))
    return public


def test_routes_are_protected_or_public_alike_in_the_app_and_the_template(
    template: dict[str, Any], app_module: Any
) -> None:
    """A route is public in template.yaml exactly when its Chalice route has no authorizer,
    and those are the contract's public routes; every other route needs a key."""
    auth = template["Resources"]["Api"]["Properties"]["Auth"]
    assert auth["DefaultAuthorizer"] == "ApiKeyAuthorizer"
    assert auth["ApiKeyRequired"] is True
    assert auth["AddDefaultAuthorizerToCorsPreflight"] is False  # preflights stay open
    assert auth["AddApiKeyRequiredToCorsPreflight"] is False
    authorizer = auth["Authorizers"]["ApiKeyAuthorizer"]
    # the alias AutoPublishAlias makes, as every other invocation (test_every_invocation_...)
    assert authorizer["FunctionArn"] == {"Ref": "AuthorizerFunction.Alias"}
    assert authorizer["Identity"]["Header"] == "Authorization"
    assert authorizer["Identity"]["ReauthorizeEvery"] <= 300  # revoked within 5 minutes
    assert template["Resources"]["Api"]["Properties"]["ApiKeySourceType"] == "AUTHORIZER"
    app_public = {
        (path, method.upper())
        for path, methods in app_module.app.routes.items()
        for method, entry in methods.items()
        if entry.authorizer is None
    }
    app_protected = {
        (path, method.upper())
        for path, methods in app_module.app.routes.items()
        for method, entry in methods.items()
        if entry.authorizer is not None
    }
    assert {
        entry.authorizer.name
        for methods in app_module.app.routes.values()
        for entry in methods.values()
        if entry.authorizer is not None
    } == {"api_key_authorizer"}
    assert app_public == _template_public_routes(template) == PUBLIC_ROUTES
    assert app_protected == _template_routes(template) - PUBLIC_ROUTES


def test_the_authorizer_validates_as_the_app_parses(template: dict[str, Any]) -> None:
    """API Gateway's ValidationExpression and the app's parser accept the same headers."""
    from chalicelib.domain.tenancy import BEARER, new_api_key

    expression = template["Resources"]["Api"]["Properties"]["Auth"]["Authorizers"][
        "ApiKeyAuthorizer"
    ]["Identity"]["ValidationExpression"]
    gateway = re.compile(expression)
    for header in (
        f"Bearer {new_api_key()}",
        "Bearer my-own-local-key",
        "Bearer a",
        "Bearer " + "a" * 200,
        "Bearer " + "a" * 201,
        "Bearer",
        "bearer x",
        "Bearer x y",
        "Basic eA==",
        "Bearer ü",
    ):
        assert bool(gateway.match(header)) == bool(BEARER.match(header)), header


def test_a_tenants_requests_are_throttled_by_the_usage_plan(template: dict[str, Any]) -> None:
    plan = template["Resources"]["TenantUsagePlan"]
    assert plan["Type"] == "AWS::ApiGateway::UsagePlan"
    props = plan["Properties"]
    assert props["ApiStages"] == [{"ApiId": {"Ref": "Api"}, "Stage": {"Ref": "Api.Stage"}}]
    assert props["Throttle"] == {
        "RateLimit": {"Ref": "TenantRateLimit"},
        # 0 (the default): the burst DatabaseConnections allows (test_one_tenants_burst_...)
        "BurstLimit": {
            "Fn::If": [
                "TenantBurstFromConnections",
                {
                    "Fn::FindInMap": [
                        "TenantBurstForConnections",
                        {"Ref": "DatabaseConnections"},
                        "Burst",
                    ]
                },
                {"Ref": "TenantBurstLimit"},
            ]
        },
    }
    assert template["Conditions"]["TenantBurstFromConnections"] == {
        "Fn::Equals": [{"Ref": "TenantBurstLimit"}, "0"]
    }
    params = template["Parameters"]
    assert (params["TenantRateLimit"]["Default"], params["TenantBurstLimit"]["Default"]) == (20, 0)
    responses = template["Resources"]["Api"]["Properties"]["GatewayResponses"]
    assert responses["THROTTLED"]["ResponseParameters"]["Headers"]["Retry-After"] == "'1'"


# ------------------------------------------------------------------ (5) secrets


def test_secret_parameters(template: dict[str, Any]) -> None:
    params = template["Parameters"]
    for name in SECRET_PARAMETERS:
        assert params[name]["Type"] == "String"
    assert "Default" not in params["MongoUriSecretName"], "the database has no default"
    # from before tenants: the default tenant's secret, when it has none of its own
    assert params["WebhookSecretName"]["Default"] == ""
    assert params["StageName"]["Default"] == "v1"
    assert params["PublicBaseUrl"]["Default"] == ""
    schedule = params["WebhookRetrySchedule"]
    assert schedule["Default"] == "5,300,1800,7200,18000,36000,36000,36000,36000,36000,36000"
    allowed = re.compile(schedule["AllowedPattern"])
    assert allowed.fullmatch(schedule["Default"]) and allowed.fullmatch("0")
    assert allowed.fullmatch(",".join(["86400"] * 19))
    for refused in ("", "5,", "5,,30", "-5", "5;30", "86401", ",".join(["1"] * 20)):
        assert not allowed.fullmatch(refused), refused
    assert params["AllowPrivateHosts"]["Default"] == "0"
    assert params["AllowPrivateHosts"]["AllowedValues"] == ["0", "1"]


def test_the_webhook_schedules_pattern_accepts_what_the_functions_accept(
    template: dict[str, Any],
) -> None:
    """A schedule the stack takes is one the functions start with, and the reverse."""
    from chalicelib.config import Settings

    allowed = re.compile(template["Parameters"]["WebhookRetrySchedule"]["AllowedPattern"])
    for delay in [*range(0, 1000), *range(1000, 100_000, 7), 80_000, 86_399, 86_400, 86_401]:
        raw = f"5,{delay}"
        try:
            Settings.from_env({"WEBHOOK_RETRY_SCHEDULE": raw})
            started = True
        except ValueError:
            started = False
        assert bool(allowed.fullmatch(raw)) == started, raw


def test_secrets_are_read_at_runtime_never_put_in_the_configuration(
    template: dict[str, Any],
) -> None:
    """No dynamic reference resolves a secret into a function's configuration (anyone with
    lambda:GetFunctionConfiguration would read it): the functions get the secrets' names and
    read them from Secrets Manager, each only the ones it needs."""
    for text in _strings(template):
        assert "resolve:secretsmanager" not in text, text
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert "MONGO_URI" not in env and "WEBHOOK_SECRET" not in env
    assert env["MONGO_URI_SECRET_ID"] == {"Ref": "MongoUriSecretName"}
    assert env["TENANT_SECRETS_PREFIX"] == {"Fn::Sub": "${AWS::StackName}/tenants/"}
    assert env["DEFAULT_WEBHOOK_SECRET_ID"] == {"Ref": "WebhookSecretName"}
    readers: dict[str, set[str]] = {}
    for owner, statement in _statements(template):
        if "secretsmanager:GetSecretValue" in _as_list(statement["Action"]):
            assert _as_list(statement["Action"]) == ["secretsmanager:GetSecretValue"]
            for resource in _resources_of(statement):
                readers.setdefault(str(resource["Fn::Sub"]), set()).add(owner)
    assert readers.pop(MONGO_SECRET_ARN) == set(HANDLERS)  # every function uses the store
    assert readers.pop(TENANT_SECRETS_ARN) == {"WebhookFunction"}  # only it signs
    assert readers.pop(MONGO_SECRET_ARN.replace("MongoUriSecretName", "WebhookSecretName")) == {
        "WebhookFunction"
    }
    assert readers == {}


def test_no_plaintext_secrets_anywhere(template: dict[str, Any]) -> None:
    # Descriptions may show the shape of a value; nothing else may carry one.
    for text in _strings(template, skip_keys=frozenset({"Description"})):
        assert "whsec_" not in text
        assert not re.search(r"mongodb(\+srv)?://", text), text


# ------------------------------------------------------------------ environment


API_URL = "https://${Api}.execute-api.${AWS::Region}.amazonaws.com/${StageName}"


def test_all_functions_share_the_global_environment(template: dict[str, Any]) -> None:
    # but API_BASE_URL: the functions that link to the API from outside a request (webhooks,
    # events) are told its URL; ApiFunction cannot be (the API refers to it: a cycle) and
    # answers with the URL it was called at (app.py, deps.REQUEST_API_BASE).
    for logical_id, function in _functions(template).items():
        own = function["Properties"].get("Environment", {}).get("Variables", {})
        if logical_id in {"ApiFunction", "AuthorizerFunction"}:
            assert own == {}, logical_id
        elif logical_id == "IngestFunction":  # and what becomes of a drop of no one
            assert own == {
                "API_BASE_URL": {"Fn::Sub": API_URL},
                "UNOWNED_DROPS": {"Ref": "UnownedDrops"},
            }
        else:
            assert own in ({}, {"API_BASE_URL": {"Fn::Sub": API_URL}}), logical_id
    linking = {k for k, f in _functions(template).items() if f["Properties"].get("Environment")}
    assert {"FinalizeFunction", "WebhookFunction", "SweepFunction", "IngestFunction"} <= linking
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["UPLOADS_BUCKET"] == {"Ref": "UploadsBucket"}
    assert env["OUTPUTS_BUCKET"] == {"Ref": "OutputsBucket"}
    for queue in QUEUES:
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", queue).upper() + "_URL"
        assert env[name] == {"Ref": queue}
    config_source = CONFIG_PATH.read_text(encoding="utf-8")
    read_by_pillow = {"PILLOW_BLOCKS_MAX"}  # applied by PIL.Image at import
    assert env["EVENT_BUS_NAME"] == {"Ref": "JobEventsBus"}
    for name in set(env) - read_by_pillow:
        assert f'"{name}"' in config_source, f"{name} is not read by chalicelib/config.py"


def test_drops_of_no_explicit_tenant_are_held_by_default(template: dict[str, Any]) -> None:
    parameter = template["Parameters"]["UnownedDrops"]
    assert parameter["Default"] == "hold"
    assert parameter["AllowedValues"] == ["hold", "default"]
    assert '"UNOWNED_DROPS"' in CONFIG_PATH.read_text(encoding="utf-8")


def test_globals(template: dict[str, Any]) -> None:
    glob = template["Globals"]["Function"]
    assert glob["Runtime"] == "python3.13"
    assert glob["CodeUri"] == "functions/"
    assert glob["Architectures"] == ["arm64"]
    assert glob["Tracing"] == "Active"


# ------------------------------------------------------------------ (6) visibility


def test_queue_visibility_covers_six_consumer_timeouts(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    consumed: set[str] = set()
    for logical_id, function in _functions(template).items():
        timeout = int(_prop(template, function, "Timeout"))
        for event in _sqs_events(template, logical_id):
            queue = _getatt_target(event["Queue"])
            consumed.add(queue)
            window = int(event.get("MaximumBatchingWindowInSeconds", 0))
            visibility = int(resources[queue]["Properties"].get("VisibilityTimeout", 30))
            assert visibility >= 6 * timeout + window, (
                f"{queue}: VisibilityTimeout {visibility} < 6 x {logical_id} {timeout}s"
                f" + {window}s window"
            )
            assert visibility <= MAX_VISIBILITY
    assert consumed == {*QUEUES, "RowsDeadLetterQueue"}


LAMBDA_DEFAULT_TIMEOUT = 3
SQS_DEFAULT_VISIBILITY = 30


def _visibility_shortfalls(resources: dict[str, Any]) -> list[str]:
    """Each SQS event source mapping of a (transformed) template whose queue's
    VisibilityTimeout is below 6 x its function's Timeout + its batching window."""
    short = []
    for mapping in resources.values():
        if mapping["Type"] != "AWS::Lambda::EventSourceMapping":
            continue
        props = mapping["Properties"]
        queue = resources[_getatt_target(props["EventSourceArn"])]
        if queue["Type"] != "AWS::SQS::Queue":
            continue
        function_id = _getatt_target(props["FunctionName"])
        if resources[function_id]["Type"] == "AWS::Lambda::Alias":  # AutoPublishAlias's
            function_id = _getatt_target(resources[function_id]["Properties"]["FunctionName"])
        function = resources[function_id]["Properties"]
        timeout = int(function.get("Timeout", LAMBDA_DEFAULT_TIMEOUT))
        window = int(props.get("MaximumBatchingWindowInSeconds", 0))
        visibility = int(queue["Properties"].get("VisibilityTimeout", SQS_DEFAULT_VISIBILITY))
        if visibility < 6 * timeout + window:
            short.append(f"{function_id}: {visibility} < 6 x {timeout} + {window}")
    return short


def test_transform_visibility_covers_every_mapping(transformed: dict[str, Any]) -> None:
    """The same rule on every AWS::Lambda::EventSourceMapping SAM produces (or a template
    writes by hand), with Lambda's and SQS's defaults where a value is left out."""
    resources = transformed["Resources"]
    assert _visibility_shortfalls(resources) == []
    mappings = _resources(transformed, "AWS::Lambda::EventSourceMapping")
    assert {_getatt_target(m["Properties"]["EventSourceArn"]) for m in mappings.values()} == {
        *QUEUES,
        "RowsDeadLetterQueue",
    }
    # The check itself: a batching window the visibility does not cover is found.
    broken = copy.deepcopy(resources)
    rows = next(
        m
        for m in broken.values()
        if m["Properties"].get("EventSourceArn") == {"Fn::GetAtt": ["RowsQueue", "Arn"]}
    )
    rows["Properties"]["MaximumBatchingWindowInSeconds"] = 60
    assert _visibility_shortfalls(broken) == ["WorkerFunction: 750 < 6 x 120 + 60"]


def test_function_timeouts_and_memory(template: dict[str, Any]) -> None:
    functions = _functions(template)
    expected_timeouts = {
        "ApiFunction": 29,
        "IngestFunction": 900,
        "WorkerFunction": 120,
        "FinalizeFunction": 900,
        "WebhookFunction": 30,
    }
    for logical_id, timeout in expected_timeouts.items():
        assert _prop(template, functions[logical_id], "Timeout") == timeout
    for function in functions.values():
        assert 1 <= int(_prop(template, function, "Timeout")) <= 900
    assert _prop(template, functions["WorkerFunction"], "MemorySize") == {"Ref": "WorkerMemorySize"}
    assert template["Parameters"]["WorkerMemorySize"]["Default"] == 1769
    assert _prop(template, functions["IngestFunction"], "MemorySize") == 512


def test_event_sources(template: dict[str, Any]) -> None:
    functions = _functions(template)
    assert "WorkerFunction" in functions
    worker = _sqs_events(template, "WorkerFunction")
    assert len(worker) == 1
    assert worker[0]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # The fan-out sends rows ten at a time, so batches fill without a window; a window would
    # only hold back the last, partial batch of every job.
    assert worker[0].get("MaximumBatchingWindowInSeconds", 0) == 0


# ------------------------------------------------------------------ (7) least privilege


def _role_policies(template: dict[str, Any], function_id: str) -> Iterator[Any]:
    """The policy documents of a function's role: its inline ones and those of the
    template's managed policies it names, outside VPC mode (VpcNetworkInterfaces is
    test_vpc_mode_*'s); no AWS managed policy but logs' and X-Ray's, no policy template."""
    resources = template["Resources"]
    function = resources[function_id]["Properties"]
    assert "Policies" not in function, f"{function_id}: its policies belong to its role"
    role_id = _getatt_target(function["Role"])
    assert role_id == f"{function_id}Role"
    role = resources[role_id]["Properties"]
    for arn in role["ManagedPolicyArns"]:
        if arn in AWS_MANAGED_POLICIES or arn == IN_VPC:
            continue
        managed = resources[arn["Ref"]]
        assert managed["Type"] == "AWS::IAM::ManagedPolicy", arn
        yield managed["Properties"]["PolicyDocument"]
    for inline in role.get("Policies", []):
        yield inline["PolicyDocument"]


def _statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each function's statements (its role's, outside VPC mode), and the queue policies'."""
    for logical_id in _functions(template):
        for policy in _role_policies(template, logical_id):
            assert isinstance(policy, dict) and "Statement" in policy, (
                f"{logical_id}: use explicit statements, not {policy!r}"
            )
            for statement in _as_list(policy["Statement"]):
                yield logical_id, statement
    for logical_id, resource in _resources(template, "AWS::SQS::QueuePolicy").items():
        for statement in _as_list(resource["Properties"]["PolicyDocument"]["Statement"]):
            yield logical_id, statement


def _resources_of(statement: dict[str, Any]) -> list[Any]:
    """A statement's resources, both branches of an `!If` (less `AWS::NoValue`)."""
    out: list[Any] = []
    for resource in _as_list(statement["Resource"]):
        if isinstance(resource, dict) and "Fn::If" in resource:
            out += [r for r in resource["Fn::If"][1:] if r != {"Ref": "AWS::NoValue"}]
        else:
            out.append(resource)
    return out


def test_no_wildcard_actions_or_resources(template: dict[str, Any]) -> None:
    count = 0
    for logical_id, statement in _statements(template):
        count += 1
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement and "NotResource" not in statement
        for action in _as_list(statement["Action"]):
            assert "*" not in action, f"{logical_id}: wildcard action {action!r}"
        for resource in _resources_of(statement):
            assert resource != "*", f"{logical_id}: Resource '*'"
    assert count > 0


CONSUME = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")


def test_function_permissions(template: dict[str, Any]) -> None:
    """Each function can do what its code needs, on the resources it needs, nothing more."""

    def grants(logical_id: str) -> set[tuple[str, str]]:
        out: set[tuple[str, str]] = set()
        for owner, statement in _statements(template):
            if owner != logical_id:
                continue
            for action in _as_list(statement["Action"]):
                for resource in _resources_of(statement):
                    if isinstance(resource, dict) and "Fn::Sub" in resource:
                        target = str(resource["Fn::Sub"])
                    else:
                        target = _getatt_target(resource)
                    out.add((action, target))
        return out

    uploads_in = "${UploadsBucket.Arn}/incoming/*"
    outputs = "${OutputsBucket.Arn}/outputs/*"
    output_csvs = "${OutputsBucket.Arn}/outputs/*.csv"
    assert ("s3:PutObject", uploads_in) in grants("ApiFunction")
    # it presigns the output CSV's short-lived link; images are read through the CDN
    assert ("s3:GetObject", output_csvs) in grants("ApiFunction")
    assert ("s3:GetObject", outputs) not in grants("ApiFunction")
    assert ("sqs:SendMessage", "WebhookQueue") in grants("ApiFunction")  # redeliver
    assert ("sqs:SendMessage", "IngestQueue") in grants("ApiFunction")  # retry failed images
    assert ("sqs:SendMessage", "RowsQueue") not in grants("ApiFunction")
    # cancel (the finalizer carries it out) and delete (outputs, the uploaded CSV, the CDN)
    assert ("sqs:SendMessage", "FinalizeQueue") in grants("ApiFunction")
    assert ("s3:DeleteObject", outputs) in grants("ApiFunction")
    assert ("s3:DeleteObject", uploads_in) in grants("ApiFunction")
    assert ("s3:GetObject", uploads_in) in grants("ApiFunction")  # still this job's CSV?
    assert ("s3:ListBucket", "OutputsBucket") in grants("ApiFunction")
    assert ("cloudfront:CreateInvalidation", DISTRIBUTIONS_ARN) in grants("ApiFunction")
    for logical_id in set(HANDLERS) - {"ApiFunction"}:  # nothing else deletes or invalidates
        actions = {action for action, _ in grants(logical_id)}
        assert not actions & {"s3:DeleteObject", "cloudfront:CreateInvalidation"}, logical_id
    assert ("s3:GetObject", uploads_in) in grants("IngestFunction")
    assert ("sqs:SendMessage", "RowsQueue") in grants("IngestFunction")
    assert ("sqs:SendMessage", "WebhookQueue") in grants("IngestFunction")
    assert ("sqs:SendMessage", "IngestQueue") in grants("IngestFunction")  # hand-over
    assert grants("WorkerFunction") == {
        ("s3:PutObject", outputs),
        ("sqs:SendMessage", "FinalizeQueue"),
        ("sqs:SendMessage", "RowsQueue"),  # the continuation of an unfinished row
        ("secretsmanager:GetSecretValue", MONGO_SECRET_ARN),
        *{(action, "RowsQueue") for action in CONSUME},  # its mapping's polling
    }
    assert ("s3:PutObject", outputs) in grants("FinalizeFunction")
    assert ("sqs:SendMessage", "WebhookQueue") in grants("FinalizeFunction")
    read_secret = "secretsmanager:GetSecretValue"
    assert grants("WebhookFunction") == {  # its outputCsvUrl is the API's route: no presigning
        ("sqs:SendMessage", "WebhookQueue"),
        *{(action, "WebhookQueue") for action in CONSUME},
        (read_secret, MONGO_SECRET_ARN),
        (read_secret, TENANT_SECRETS_ARN),
        (read_secret, MONGO_SECRET_ARN.replace("MongoUriSecretName", "WebhookSecretName")),
    }
    assert grants("AuthorizerFunction") == {(read_secret, MONGO_SECRET_ARN)}
    bus = "JobEventsBus"
    for publisher in ("IngestFunction", "FinalizeFunction", "SweepFunction"):
        assert ("events:PutEvents", bus) in grants(publisher)
    assert ("sqs:SendMessage", "FinalizeQueue") in grants("SweepFunction")
    # Besides S3, only the API (a retry of failed images) and the ingest itself (handing an
    # unfinished ingest over to a fresh invocation) send to the ingest queue.
    for logical_id in set(HANDLERS) - {"ApiFunction", "IngestFunction"}:
        assert ("sqs:SendMessage", "IngestQueue") not in grants(logical_id)
    # Each queue is consumed by its own function alone, the one its mapping feeds.
    consumers = {
        logical_id: {q for action, q in grants(logical_id) if action in CONSUME[:2]}
        for logical_id in HANDLERS
    }
    assert consumers == {
        logical_id: {_getatt_target(s["Queue"]) for s in _sqs_events(template, logical_id)}
        for logical_id in HANDLERS
    }
    assert consumers["WorkerFunction"] == {"RowsQueue"}


def test_the_api_lists_the_outputs_bucket_under_outputs_only(template: dict[str, Any]) -> None:
    """Deleting a job lists `outputs/<id>/`: the listing is granted for that prefix alone."""
    listings = [
        statement
        for owner, statement in _statements(template)
        if "s3:ListBucket" in _as_list(statement["Action"])
        and _getatt_target(statement["Resource"]) == "OutputsBucket"
    ]
    assert listings
    for statement in listings:
        assert statement["Condition"] == {"StringLike": {"s3:prefix": "outputs/*"}}


def test_ingest_queue_policy_names_the_uploads_bucket(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    (statement,) = resources["IngestQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
    source_arn = statement["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"]
    bucket_name = resources["UploadsBucket"]["Properties"]["BucketName"]["Fn::Sub"]
    assert source_arn == f"arn:${{AWS::Partition}}:s3:::{bucket_name}"
    assert resources["IngestQueuePolicy"]["Properties"]["Queues"] == [{"Ref": "IngestQueue"}]


# ------------------------------------------------------------------ dead-letter alarms


def _dead_letter_queues(template: dict[str, Any]) -> set[str]:
    """Every queue some RedrivePolicy names as its deadLetterTargetArn."""
    return {
        _getatt_target(queue["Properties"]["RedrivePolicy"]["deadLetterTargetArn"])
        for queue in _resources(template, "AWS::SQS::Queue").values()
        if "RedrivePolicy" in queue.get("Properties", {})
    }


def _alarmed_queue(alarm: dict[str, Any]) -> str | None:
    """The queue an alarm watches the depth of (None for any other alarm)."""
    props = alarm["Properties"]
    if (props.get("Namespace"), props.get("MetricName")) != (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
    ):
        return None
    (dimension,) = props["Dimensions"]
    assert dimension["Name"] == "QueueName"
    assert dimension["Value"]["Fn::GetAtt"][1] == "QueueName"
    return _getatt_target(dimension["Value"])


def test_every_dead_letter_queue_has_one_depth_alarm(template: dict[str, Any]) -> None:
    dead_letter_queues = _dead_letter_queues(template)
    assert dead_letter_queues == set(QUEUES.values())
    alarms = _resources(template, "AWS::CloudWatch::Alarm")
    watched = [_alarmed_queue(alarm) for alarm in alarms.values()]
    for queue in dead_letter_queues:
        assert watched.count(queue) == 1, f"{queue}: {watched.count(queue)} depth alarms"
    for logical_id, alarm in alarms.items():
        if _alarmed_queue(alarm) not in dead_letter_queues:
            continue
        props = alarm["Properties"]
        # Any visible message, within a minute or so; an idle queue sends no data.
        assert props["Statistic"] == "Maximum", logical_id
        assert props["ComparisonOperator"] == "GreaterThanThreshold", logical_id
        assert props["Threshold"] == 0, logical_id
        assert props["Period"] <= 300 and props["EvaluationPeriods"] == 1, logical_id
        assert props.get("DatapointsToAlarm", 1) == 1, logical_id
        assert props["TreatMissingData"] == "notBreaching", logical_id
        assert props["AlarmActions"] == ALARM_ACTIONS, logical_id
        assert "Condition" not in alarm, f"{logical_id}: the alarm exists without a topic too"


def test_alarm_topic_parameter_is_optional(template: dict[str, Any]) -> None:
    param = template["Parameters"]["AlarmTopicArn"]
    assert param["Type"] == "String"
    assert param["Default"] == ""
    pattern = re.compile(param["AllowedPattern"])
    assert pattern.match("")
    assert pattern.match("arn:aws:sns:eu-west-1:123456789012:image-pipeline-alarms")
    assert not pattern.match("image-pipeline-alarms")
    assert template["Conditions"]["HasAlarmTopic"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]
    }


def test_transform_keeps_the_alarms(transformed: dict[str, Any]) -> None:
    alarms = _resources(transformed, "AWS::CloudWatch::Alarm")
    assert {_alarmed_queue(alarm) for alarm in alarms.values()} - {None} == set(QUEUES.values())
    assert "HasAlarmTopic" in transformed["Conditions"]


# ------------------------------------------------------------------ buckets, API, outputs


def test_buckets_are_private_and_encrypted(template: dict[str, Any]) -> None:
    for logical_id in ("UploadsBucket", "OutputsBucket"):
        props = template["Resources"][logical_id]["Properties"]
        block = props["PublicAccessBlockConfiguration"]
        assert all(block[k] is True for k in block) and len(block) == 4, logical_id
        rule = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    uploads = template["Resources"]["UploadsBucket"]["Properties"]
    expiring = [r for r in uploads["LifecycleConfiguration"]["Rules"] if r.get("ExpirationInDays")]
    assert [(r["Prefix"], r["ExpirationInDays"]) for r in expiring] == [
        ("incoming/", {"Ref": "UploadRetentionDays"})
    ]
    cors = uploads["CorsConfiguration"]["CorsRules"]
    assert any("POST" in r["AllowedMethods"] and r["AllowedOrigins"] == ["*"] for r in cors)


def test_api(template: dict[str, Any]) -> None:
    props = template["Resources"]["Api"]["Properties"]
    assert props["StageName"] == {"Ref": "StageName"}
    assert props["BinaryMediaTypes"] == ["multipart~1form-data"]
    assert props["Cors"]


def test_the_apis_cors_lets_another_origin_poll_conditionally(template: dict[str, Any]) -> None:
    """The preflight (SAM's mock, from Cors) allows every method the API routes and the
    headers its clients send, If-None-Match included; the functions' own answers carry the
    same origin and expose ETag (http_api.CORS_HEADERS, added by app.py to every answer)."""
    from chalicelib.entrypoints.http_api import CORS_HEADERS

    cors = template["Resources"]["Api"]["Properties"]["Cors"]
    unquoted = {name: str(value).strip("'") for name, value in cors.items()}
    allowed = {h.strip().lower() for h in unquoted["AllowHeaders"].split(",")}
    assert {"authorization", "content-type", "idempotency-key", "if-none-match"} <= allowed
    events = template["Resources"]["ApiFunction"]["Properties"]["Events"].values()
    routed = {e["Properties"]["Method"].upper() for e in events if e["Type"] == "Api"}
    assert routed | {"OPTIONS"} <= set(unquoted["AllowMethods"].split(","))
    assert CORS_HEADERS["Access-Control-Allow-Origin"] == unquoted["AllowOrigin"]
    assert "ETag" in CORS_HEADERS["Access-Control-Expose-Headers"].split(", ")


def test_outputs(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    assert outputs["ApiUrl"]["Value"] == {
        "Fn::Sub": "https://${Api}.execute-api.${AWS::Region}.amazonaws.com/${StageName}"
    }
    assert outputs["UploadsBucketName"]["Value"] == {"Ref": "UploadsBucket"}
    assert outputs["OutputsBucketName"]["Value"] == {"Ref": "OutputsBucket"}
    for queue, dlq in QUEUES.items():
        assert outputs[f"{queue}Url"]["Value"] == {"Ref": queue}
        assert outputs[f"{dlq}Url"]["Value"] == {"Ref": dlq}


def test_the_templates_settings_are_the_codes_defaults(template: dict[str, Any]) -> None:
    """Each default is written once, in chalicelib.config.Settings: a literal the template
    keeps (a global environment value, a parameter's Default that feeds one) must be that
    default, so setting it changes nothing."""
    from chalicelib.config import Settings

    defaults = Settings.from_env({})
    parameters = template.get("Parameters", {})
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    checked = []
    for name, raw in variables.items():
        value = raw
        if isinstance(raw, dict) and set(raw) == {"Ref"} and raw["Ref"] in parameters:
            value = parameters[raw["Ref"]].get("Default")
        if not isinstance(value, str):
            continue  # a resource or a secret: not a setting with a default
        assert Settings.from_env({name: value}) == defaults, f"{name}={value!r}"
        checked.append(name)
    assert {"WEBHOOK_RETRY_SCHEDULE", "ROWS_PER_CHUNK", "OUTPUT_QUALITY"} <= set(checked)


GATEWAY_ANSWERS = {
    "MISSING_AUTHENTICATION_TOKEN": 404,  # API Gateway's answer to an unknown route or method
    "UNAUTHORIZED": 401,
    "ACCESS_DENIED": 403,
    "REQUEST_TOO_LARGE": 413,
    "THROTTLED": 429,
    "INTEGRATION_TIMEOUT": 504,
    # a function over its reserved concurrency (DatabaseConnections): busy, retry
    "INTEGRATION_FAILURE": 503,
    "AUTHORIZER_CONFIGURATION_ERROR": 503,
    "AUTHORIZER_FAILURE": 503,
    "DEFAULT_4XX": None,
    "DEFAULT_5XX": None,
}


def test_api_gateways_own_answers_are_in_the_contracts_error_shape(
    template: dict[str, Any], transformed: dict[str, Any]
) -> None:
    """What API Gateway answers by itself (before or instead of the function) is JSON
    `{"error", "details"}` with CORS, as the contract wants for every route and request."""
    responses = template["Resources"]["Api"]["Properties"]["GatewayResponses"]
    assert set(responses) == set(GATEWAY_ANSWERS)
    for kind, status in GATEWAY_ANSWERS.items():
        response = responses[kind]
        assert response.get("StatusCode") == status, kind
        assert response["ResponseParameters"]["Headers"]["Access-Control-Allow-Origin"] == "'*'"
        body = response["ResponseTemplates"]["application/json"]
        # $context.error.messageString is API Gateway's message, already a quoted JSON string
        rendered = json.loads(body.replace("$context.error.messageString", '"message"'))
        assert set(rendered) == {"error", "details"} and rendered["details"] == [], kind
        assert isinstance(rendered["error"], str) and rendered["error"], kind
    (rest_api,) = [
        r for r in transformed["Resources"].values() if r["Type"] == "AWS::ApiGateway::RestApi"
    ]
    deployed = rest_api["Properties"]["Body"]["x-amazon-apigateway-gateway-responses"]
    assert set(deployed) == set(GATEWAY_ANSWERS)
    assert deployed["REQUEST_TOO_LARGE"]["statusCode"] == "413"


# ------------------------------------------------------------------ CDN, links that last


def _bucket_policy(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (policy,) = _resources(template, "AWS::S3::BucketPolicy").values()
    assert policy["Properties"]["Bucket"] == {"Ref": "OutputsBucket"}
    return {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"]}


def test_a_cdn_with_origin_access_control_serves_the_outputs_bucket(
    template: dict[str, Any],
) -> None:
    resources = template["Resources"]
    (distribution,) = _resources(template, "AWS::CloudFront::Distribution").values()
    config = distribution["Properties"]["DistributionConfig"]
    assert config["Enabled"] is True
    (origin,) = config["Origins"]
    assert origin["DomainName"] == {"Fn::GetAtt": ["OutputsBucket", "RegionalDomainName"]}
    assert origin["OriginAccessControlId"] == {"Fn::GetAtt": ["OutputsOriginAccessControl", "Id"]}
    assert origin["S3OriginConfig"] == {"OriginAccessIdentity": ""}  # OAC, not a legacy OAI
    oac = resources["OutputsOriginAccessControl"]
    assert oac["Type"] == "AWS::CloudFront::OriginAccessControl"
    assert oac["Properties"]["OriginAccessControlConfig"] | {"Name": None, "Description": None} == {
        "Name": None,
        "Description": None,
        "OriginAccessControlOriginType": "s3",
        "SigningBehavior": "always",
        "SigningProtocol": "sigv4",
    }
    behaviour = config["DefaultCacheBehavior"]
    assert behaviour["TargetOriginId"] == origin["Id"]
    assert behaviour["ViewerProtocolPolicy"] == "https-only"
    assert behaviour["AllowedMethods"] == ["GET", "HEAD"]
    assert behaviour["Compress"] is False  # images: compressed already
    assert "CacheBehaviors" not in config  # one behaviour: everything goes through the policy
    assert "DefaultRootObject" not in config
    # an alternate domain only with OutputsDomainName (and its certificate)
    assert config["Aliases"]["Fn::If"][0] == "HasOutputsDomain"


def test_the_cdn_honours_the_objects_cache_control(template: dict[str, Any]) -> None:
    (distribution,) = _resources(template, "AWS::CloudFront::Distribution").values()
    behaviour = distribution["Properties"]["DistributionConfig"]["DefaultCacheBehavior"]
    assert behaviour["CachePolicyId"] == {"Ref": "OutputsCachePolicy"}
    assert not {"ForwardedValues", "MinTTL", "DefaultTTL", "MaxTTL"} & set(behaviour)
    config = template["Resources"]["OutputsCachePolicy"]["Properties"]["CachePolicyConfig"]
    # an origin's max-age counts between MinTTL and MaxTTL: 0 to a year covers all ours
    assert config["MinTTL"] == 0
    assert config["MaxTTL"] == 365 * 86400 >= config["DefaultTTL"]
    key = config["ParametersInCacheKeyAndForwardedToOrigin"]
    assert key["QueryStringsConfig"] == {"QueryStringBehavior": "none"}
    assert key["CookiesConfig"] == {"CookieBehavior": "none"}
    assert key["HeadersConfig"] == {"HeaderBehavior": "none"}
    assert key["EnableAcceptEncodingGzip"] is False and key["EnableAcceptEncodingBrotli"] is False


def test_any_origin_may_read_an_output_through_the_cdn_never_with_credentials(
    template: dict[str, Any],
) -> None:
    """The page (on the API's origin) counts an output's bytes with a CORS fetch when a row
    has none; the CDN answers it by its response headers policy. The bucket keeps no CORS
    rule: the cache policy forwards no Origin, so S3's rules would never be consulted."""
    (distribution,) = _resources(template, "AWS::CloudFront::Distribution").values()
    behaviour = distribution["Properties"]["DistributionConfig"]["DefaultCacheBehavior"]
    assert behaviour["ResponseHeadersPolicyId"] == {"Ref": "OutputsResponseHeadersPolicy"}
    assert behaviour["AllowedMethods"] == ["GET", "HEAD"]  # no preflight is ever answered
    policy = template["Resources"]["OutputsResponseHeadersPolicy"]
    assert policy["Type"] == "AWS::CloudFront::ResponseHeadersPolicy"
    config = policy["Properties"]["ResponseHeadersPolicyConfig"]
    assert set(config) == {"Name", "Comment", "CorsConfig"}  # CORS and nothing else
    assert config["CorsConfig"] == {
        "AccessControlAllowOrigins": {"Items": ["*"]},
        "AccessControlAllowMethods": {"Items": ["GET", "HEAD"]},
        "AccessControlAllowHeaders": {"Items": ["*"]},
        "AccessControlAllowCredentials": False,
        "OriginOverride": True,
    }
    assert "CorsConfiguration" not in template["Resources"]["OutputsBucket"]["Properties"]


def test_only_the_distribution_reads_the_outputs_bucket_and_only_images(
    template: dict[str, Any],
) -> None:
    statements = _bucket_policy(template)
    assert set(statements) == {"CdnReadsOutputs", "OutputCsvsAreNotPublic", "HttpsOnly"}
    allow = statements["CdnReadsOutputs"]
    assert allow["Effect"] == "Allow"
    assert allow["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert allow["Action"] == "s3:GetObject"
    assert allow["Resource"] == {"Fn::Sub": "${OutputsBucket.Arn}/outputs/*"}
    assert allow["Condition"] == {
        "StringEquals": {
            "AWS:SourceArn": {
                "Fn::Sub": "arn:${AWS::Partition}:cloudfront::${AWS::AccountId}:distribution/"
                "${OutputsDistribution}"
            }
        }
    }
    csvs = statements["OutputCsvsAreNotPublic"]
    assert (csvs["Effect"], csvs["Principal"], csvs["Action"]) == (
        "Deny",
        {"Service": "cloudfront.amazonaws.com"},
        "s3:GetObject",
    )
    assert csvs["Resource"] == {"Fn::Sub": "${OutputsBucket.Arn}/outputs/*.csv"}
    from chalicelib.domain.models import output_csv_key, output_key
    from chalicelib.domain.output_options import OutputFormat

    assert output_csv_key("x").startswith("outputs/") and output_csv_key("x").endswith(".csv")
    for fmt in OutputFormat:  # every image the CDN serves is under the allowed prefix
        key = output_key("x", 1, 0, fmt.extension)
        assert key.startswith("outputs/") and not key.endswith(".csv")
    https = statements["HttpsOnly"]
    assert https["Effect"] == "Deny" and https["Principal"] == "*"
    assert https["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    # no statement grants anyone but the distribution anything
    for statement in statements.values():
        if statement["Effect"] == "Allow":
            assert statement["Principal"] == {"Service": "cloudfront.amazonaws.com"}
            assert "AWS:SourceArn" in statement["Condition"]["StringEquals"]


def test_the_outputs_bucket_still_blocks_public_access(template: dict[str, Any]) -> None:
    props = template["Resources"]["OutputsBucket"]["Properties"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert "WebsiteConfiguration" not in props  # no website endpoint: only the CDN serves it


def test_public_base_url_is_the_distribution_unless_overridden(template: dict[str, Any]) -> None:
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    from_cdn = {
        "Fn::If": [
            "HasOutputsDomain",
            {"Fn::Sub": "https://${OutputsDomainName}"},
            {"Fn::Sub": "https://${OutputsDistribution.DomainName}"},
        ]
    }
    assert env["PUBLIC_BASE_URL"] == {
        "Fn::If": ["HasPublicBaseUrl", {"Ref": "PublicBaseUrl"}, from_cdn]
    }
    assert template["Conditions"]["HasPublicBaseUrl"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "PublicBaseUrl"}, ""]}]
    }
    parameter = template["Parameters"]["PublicBaseUrl"]
    assert parameter["Default"] == ""
    pattern = re.compile(parameter["AllowedPattern"])
    for good in ("", "https://images.example.com", "https://cdn.example.com:8443/shop"):
        assert pattern.match(good), good
    for bad in ("http://images.example.com", "images.example.com", "https://x.test/?a=1"):
        assert not pattern.match(bad), bad
    outputs = template["Outputs"]
    assert outputs["OutputsDistributionDomain"]["Value"] == {
        "Fn::GetAtt": ["OutputsDistribution", "DomainName"]
    }
    assert outputs["OutputsDistributionId"]["Value"] == {"Ref": "OutputsDistribution"}
    assert outputs["PublicBaseUrl"]["Value"] == env["PUBLIC_BASE_URL"]


def test_transform_keeps_the_cdn(transformed: dict[str, Any]) -> None:
    types = [r["Type"] for r in transformed["Resources"].values()]
    for kind in (
        "AWS::CloudFront::Distribution",
        "AWS::CloudFront::OriginAccessControl",
        "AWS::CloudFront::CachePolicy",
        "AWS::S3::BucketPolicy",
    ):
        assert types.count(kind) == 1, kind
    resources = transformed["Resources"].values()
    for function in [r for r in resources if r["Type"] == "AWS::Lambda::Function"]:
        variables = function["Properties"]["Environment"]["Variables"]
        assert "OutputsDistribution.DomainName" in json.dumps(variables["PUBLIC_BASE_URL"])


# ------------------------------------------------------------------ retention


def test_lifecycle_rules_follow_the_retention_parameters(template: dict[str, Any]) -> None:
    params = template["Parameters"]
    bounds = {
        name: (params[name]["Default"], params[name]["MinValue"])
        for name in ("UploadRetentionDays", "OutputRetentionDays", "JobRetentionDays")
    }
    assert bounds["UploadRetentionDays"] == ("30", 1)
    assert bounds["OutputRetentionDays"] == ("365", 0)  # 0: for ever
    assert bounds["JobRetentionDays"] == ("0", 0)
    rules = template["Resources"]["OutputsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    expire = {
        "Id": "ExpireOutputs",
        "Status": "Enabled",
        "Prefix": "outputs/",
        "ExpirationInDays": {"Ref": "OutputRetentionDays"},
    }
    # 0 keeps outputs for ever: no expiration rule at all
    assert rules[0] == {"Fn::If": ["OutputsExpire", expire, {"Ref": "AWS::NoValue"}]}
    assert template["Conditions"]["OutputsExpire"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "OutputRetentionDays"}, "0"]}]
    }
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["OUTPUT_RETENTION_DAYS"] == {"Ref": "OutputRetentionDays"}
    assert env["JOB_RETENTION_DAYS"] == {"Ref": "JobRetentionDays"}
    from chalicelib.config import Settings

    defaults = Settings()
    assert defaults.output_retention_days == int(params["OutputRetentionDays"]["Default"])
    assert defaults.job_retention_days == int(params["JobRetentionDays"]["Default"])


def test_transform_keeps_the_lifecycle_rules(transformed: dict[str, Any]) -> None:
    resources = transformed["Resources"]
    uploads = resources["UploadsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert {"Ref": "UploadRetentionDays"} in [r.get("ExpirationInDays") for r in uploads]
    outputs = resources["OutputsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert "OutputsExpire" in json.dumps(outputs)


# ------------------------------------------------------------------ versions, SnapStart, bundles

ALIAS = "live"


def test_every_function_publishes_versions_with_snapstart(template: dict[str, Any]) -> None:
    """SnapStart works on published versions only: every function publishes one per deploy
    (AutoPublishAlias) and snapshots it; nothing SnapStart refuses is set."""
    for logical_id, function in _functions(template).items():
        assert _prop(template, function, "AutoPublishAlias") == ALIAS, logical_id
        assert _prop(template, function, "SnapStart") == {"ApplyOn": "PublishedVersions"}
        props = function["Properties"]
        # SnapStart takes neither provisioned concurrency, EFS, nor over 512 MB of /tmp
        for setting in ("ProvisionedConcurrencyConfig", "FileSystemConfigs"):
            assert _prop(template, function, setting) is None, (logical_id, setting)
        storage = _prop(template, function, "EphemeralStorage") or {"Size": 512}
        assert int(storage["Size"]) <= 512, logical_id
        assert "DeploymentPreference" not in props  # the alias moves at once


def test_every_invocation_goes_to_the_alias(transformed: dict[str, Any]) -> None:
    """Event source mappings, schedules, the API's integrations and permissions and the
    authorizer all name the alias: $LATEST is never snapshotted, so calling it would pay the
    full cold start."""
    resources = transformed["Resources"]
    functions = {k for k, v in resources.items() if v["Type"] == "AWS::Lambda::Function"}
    aliases = {
        k: v["Properties"] for k, v in resources.items() if v["Type"] == "AWS::Lambda::Alias"
    }
    assert {a["Name"] for a in aliases.values()} == {ALIAS}
    assert {a["FunctionName"]["Ref"] for a in aliases.values()} == functions
    alias_ids = set(aliases)
    for kind in ("AWS::Lambda::EventSourceMapping", "AWS::Lambda::Permission"):
        for logical_id, resource in resources.items():
            if resource["Type"] == kind:
                assert resource["Properties"]["FunctionName"]["Ref"] in alias_ids, logical_id
    for rule in [r for r in resources.values() if r["Type"] == "AWS::Events::Rule"]:
        for target in rule["Properties"]["Targets"]:
            assert target["Arn"]["Ref"] in alias_ids
    (api,) = [r for r in resources.values() if r["Type"] == "AWS::ApiGateway::RestApi"]
    body = api["Properties"]["Body"]
    integrations = [
        operation["x-amazon-apigateway-integration"]["uri"]
        for path in body["paths"].values()
        for operation in path.values()
        if isinstance(operation, dict)
        and operation.get("x-amazon-apigateway-integration", {}).get("type") == "aws_proxy"
    ]  # (the CORS preflights are API Gateway's mock integrations: no function)
    authorizers = [
        scheme["x-amazon-apigateway-authorizer"]["authorizerUri"]
        for scheme in body["components"]["securitySchemes"].values()
        if "x-amazon-apigateway-authorizer" in scheme
    ]
    assert integrations and authorizers
    for uri in integrations + authorizers:
        named = set(re.findall(r"\$\{([A-Za-z0-9]+)\}", json.dumps(uri))) | {
            v["Ref"] for _, v in _walk(uri) if isinstance(v, dict) and "Ref" in v
        }
        assert named & alias_ids and not named & functions, uri


def test_every_function_is_built_by_the_functions_makefile(template: dict[str, Any]) -> None:
    from infra.bundles import read_makefile

    rules = read_makefile()
    for logical_id, function in _functions(template).items():
        assert function["Metadata"]["BuildMethod"] == "makefile", logical_id
        assert set(function["Metadata"]) <= {"BuildMethod", "checkov"}, logical_id
        assert _prop(template, function, "CodeUri") == "functions/"
    assert set(rules) == set(_functions(template))


# ------------------------------------------------------------------ operable (issue 25)

ALARM_ACTIONS = {
    "Fn::If": [
        "HasAlarmTopic",
        [{"Ref": "AlarmTopic"}, {"Ref": "AlarmTopicArn"}],
        [{"Ref": "AlarmTopic"}],
    ]
}
OPERATIONS_DOC = ROOT / "docs" / "operations.md"
PERFORMANCE_DOC = ROOT / "docs" / "performance.md"


def _alarms_on(template: dict[str, Any], namespace: str, metric: str) -> dict[str, Any]:
    """Alarm props by the value of their one dimension (a Ref/GetAtt target or a literal)."""
    out: dict[str, Any] = {}
    for alarm in _resources(template, "AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        if (props["Namespace"], props["MetricName"]) != (namespace, metric):
            continue
        value = props["Dimensions"][0]["Value"]
        out[value if isinstance(value, str) else _getatt_target(value)] = props
    return out


def test_every_alarm_notifies_the_stacks_topic(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    assert resources["AlarmTopic"]["Type"] == "AWS::SNS::Topic"
    assert "Condition" not in resources["AlarmTopic"]
    subscription = resources["AlarmTopicEmail"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"] == {
        "TopicArn": {"Ref": "AlarmTopic"},
        "Protocol": "email",
        "Endpoint": {"Ref": "AlarmEmail"},
    }
    assert template["Parameters"]["AlarmEmail"]["Default"] == ""
    alarms = _resources(template, "AWS::CloudWatch::Alarm")
    assert len(alarms) >= 27  # 8 functions x 2, 4 queues' age, 4 dead-letter depths, 3
    for logical_id, alarm in alarms.items():
        assert alarm["Properties"]["AlarmActions"] == ALARM_ACTIONS, logical_id
        assert "Condition" not in alarm, logical_id
        assert alarm["Properties"]["TreatMissingData"] == "notBreaching", logical_id


def test_alarms_on_functions_queues_the_api_and_held_drops(template: dict[str, Any]) -> None:
    from chalicelib.observability import DEFAULT_NAMESPACE, SERVICE

    functions = set(_functions(template))
    for metric in ("Errors", "Throttles"):
        watched = _alarms_on(template, "AWS/Lambda", metric)
        assert set(watched) == functions, metric
        for props in watched.values():
            assert (props["Statistic"], props["Threshold"]) == ("Sum", 0)
    ages = _alarms_on(template, "AWS/SQS", "ApproximateAgeOfOldestMessage")
    assert set(ages) == set(QUEUES)
    for queue, props in ages.items():
        assert props["Statistic"] == "Maximum"
        # older than a message ever is while its consumer keeps up, younger than its retention
        retention = template["Resources"][queue]["Properties"]["MessageRetentionPeriod"]
        assert 600 <= props["Threshold"] < retention, queue
    (errors,) = _alarms_on(template, "AWS/ApiGateway", "5XXError").values()
    (latency,) = _alarms_on(template, "AWS/ApiGateway", "Latency").values()
    for props in (errors, latency):
        assert props["Dimensions"] == [
            {"Name": "ApiName", "Value": {"Ref": "AWS::StackName"}},
            {"Name": "Stage", "Value": {"Ref": "StageName"}},
        ]
    assert latency["ExtendedStatistic"] == "p99"
    assert latency["Threshold"] < 29_000  # below API Gateway's integration limit
    (drops,) = _alarms_on(template, DEFAULT_NAMESPACE, "DropsHeld").values()
    (dimension,) = drops["Dimensions"]
    assert dimension == {"Name": "Service", "Value": SERVICE}
    assert (drops["Statistic"], drops["Threshold"]) == ("Sum", 0)


def test_every_alarm_has_a_runbook_line(template: dict[str, Any]) -> None:
    """docs/operations.md names each alarm (its name after `<stack>-`) in its runbook."""
    runbook = OPERATIONS_DOC.read_text(encoding="utf-8")
    missing = []
    for logical_id, alarm in _resources(template, "AWS::CloudWatch::Alarm").items():
        name = alarm["Properties"]["AlarmName"]["Fn::Sub"].removeprefix("${AWS::StackName}-")
        # one line for a kind of alarm: <Function>-errors, <Queue>-oldest-message
        generic = re.sub(r"^[A-Za-z]+Function-", "<Function>-", name)
        generic = re.sub(r"^[A-Za-z]+Queue-oldest", "<Queue>-oldest", generic)
        if f"`{name}`" not in runbook and f"`{generic}`" not in runbook:
            missing.append(f"{logical_id}: {name}")
    assert missing == []


def test_every_function_logs_to_a_group_kept_log_retention_days(
    template: dict[str, Any],
) -> None:
    resources = template["Resources"]
    parameter = template["Parameters"]["LogRetentionDays"]
    assert parameter["Default"] == 30 and 30 in parameter["AllowedValues"]
    groups = set()
    for logical_id, function in _functions(template).items():
        config = function["Properties"]["LoggingConfig"]
        group_id = config["LogGroup"]["Ref"]
        group = resources[group_id]
        assert group["Type"] == "AWS::Logs::LogGroup", logical_id
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        assert group["DeletionPolicy"] == "Delete"  # the stack's: it goes with it
        name = group["Properties"]["LogGroupName"]["Fn::Sub"]
        assert name.startswith("/aws/lambda/${AWS::StackName}/"), name
        groups.add(group_id)
    assert len(groups) == len(HANDLERS)
    access = resources["ApiAccessLogGroup"]
    assert access["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_the_api_writes_json_access_logs_with_tenant_and_key_id_never_the_key(
    template: dict[str, Any], transformed: dict[str, Any]
) -> None:
    setting = template["Resources"]["Api"]["Properties"]["AccessLogSetting"]
    assert setting["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    line = json.loads(setting["Format"])
    assert line["tenant"] == "$context.authorizer.tenant"
    assert line["keyId"] == "$context.authorizer.keyId"
    for field_name in ("requestId", "status", "route", "method"):
        assert line[field_name].startswith("$context."), field_name
    # never the key: not the usage key's value, not a header, not the caller's token
    values = set(line.values())
    assert "$context.identity.apiKey" not in values
    assert not [v for v in values if "header" in v.lower() or "token" in v.lower()]
    # API Gateway needs its account's logging role before the stage can log
    resources = template["Resources"]
    assert resources["ApiAccessLogGroup"]["DependsOn"] == "ApiGatewayAccount"
    role = resources["ApiGatewayAccount"]["Properties"]["CloudWatchRoleArn"]
    assert role["Fn::If"][0] == "CreatesApiGatewayLogRole"
    (stage,) = _resources(transformed, "AWS::ApiGateway::Stage").values()
    assert stage["Properties"]["AccessLogSetting"]["Format"] == setting["Format"]


MONGO_MONITOR_CONNECTIONS = 2  # pymongo 4: a monitor and an RTT monitor per server
HEADROOM = 0.10  # operators, Atlas's own, containers not yet reclaimed (docs/performance.md)


def _short(function_id: str) -> str:
    return function_id.removesuffix("Function")


def test_every_function_is_capped_by_the_database_connections(
    template: dict[str, Any],
) -> None:
    parameter = template["Parameters"]["DatabaseConnections"]
    by_connections = template["Mappings"]["ConcurrencyForConnections"]
    assert set(parameter["AllowedValues"]) == set(by_connections)
    assert parameter["Default"] in by_connections
    for logical_id, function in _functions(template).items():
        cap = {
            "Fn::FindInMap": [
                "ConcurrencyForConnections",
                {"Ref": "DatabaseConnections"},
                _short(logical_id),
            ]
        }
        assert function["Properties"]["ReservedConcurrentExecutions"] == cap, logical_id
        for source in _sqs_events(template, logical_id):
            # the mapping's own cap is the function's: Lambda never throttles its batches
            assert source["ScalingConfig"]["MaximumConcurrency"] == cap, logical_id
        assert not function["Properties"].get("Events", {}) or all(
            event["Type"] != "SQS" for event in function["Properties"]["Events"].values()
        ), f"{logical_id}: an SQS event brings SAM's managed SQS role"
    for connections, caps in by_connections.items():
        assert set(caps) == {_short(f) for f in HANDLERS}, connections
        for function_id in HANDLERS:
            if _sqs_events(template, function_id):
                assert caps[_short(function_id)] >= 2, (connections, function_id)  # SQS's least


def test_the_caps_fit_the_clusters_connections(template: dict[str, Any]) -> None:
    """Every container of every function at once, each with its whole pool and pymongo's
    monitors, stays within the cluster's connections less the headroom."""
    from chalicelib.config import Settings

    pool = Settings.from_env({}).mongo_max_pool_size
    assert 1 <= pool <= 10
    per_container = pool + MONGO_MONITOR_CONNECTIONS
    for connections, caps in template["Mappings"]["ConcurrencyForConnections"].items():
        used = sum(caps.values()) * per_container
        assert used <= int(connections) * (1 - HEADROOM), (connections, used)
    # the arithmetic the docs give is this one
    doc = PERFORMANCE_DOC.read_text(encoding="utf-8")
    assert f"MONGO_MAX_POOL_SIZE` ({pool})" in doc
    row = template["Mappings"]["ConcurrencyForConnections"]["500"]
    assert f"| 500 | {sum(row.values())} | {sum(row.values()) * per_container} |" in doc


def test_one_tenants_burst_leaves_half_of_the_front_door_to_the_others(
    template: dict[str, Any],
) -> None:
    """At every DatabaseConnections, a tenant's whole burst (every request at once) takes at
    most half of the API function's and of the authorizer's reserved concurrency: another
    tenant's request is served, not 503 (tests/e2e/test_tenants_e2e.py fires it)."""
    caps = template["Mappings"]["ConcurrencyForConnections"]
    bursts = template["Mappings"]["TenantBurstForConnections"]
    assert set(bursts) == set(caps)
    for connections, row in caps.items():
        burst = bursts[connections]["Burst"]
        front_door = min(row["Api"], row["Authorizer"])
        assert 1 <= burst <= front_door // 2, (connections, burst, front_door)
        # and no smaller than it need be: the largest burst that leaves the other half
        assert burst == front_door // 2, (connections, burst, front_door)
    # the arithmetic the docs give is this one
    doc = PERFORMANCE_DOC.read_text(encoding="utf-8")
    for connections, row in caps.items():
        burst = bursts[connections]["Burst"]
        line = f"| {connections} | {row['Api']} | {row['Authorizer']} | {burst} |"
        assert line in doc, line


def test_transform_leaves_no_managed_sqs_execution_role(transformed: dict[str, Any]) -> None:
    roles = _resources(transformed, "AWS::IAM::Role")
    assert roles
    text = json.dumps(roles)
    assert "AWSLambdaSQSQueueExecutionRole" not in text
    # and the mappings are there, on the aliases, capped
    mappings = _resources(transformed, "AWS::Lambda::EventSourceMapping")
    assert len(mappings) == 5
    for mapping in mappings.values():
        assert mapping["Properties"]["FunctionName"]["Ref"].endswith("Aliaslive")
        assert "MaximumConcurrency" in mapping["Properties"]["ScalingConfig"]


def test_public_routes_are_throttled_at_the_stage(
    template: dict[str, Any], transformed: dict[str, Any]
) -> None:
    settings = template["Resources"]["Api"]["Properties"]["MethodSettings"]
    throttled = set()
    for setting in settings:
        assert setting["ThrottlingRateLimit"] == {"Ref": "PublicRateLimit"}
        assert setting["ThrottlingBurstLimit"] == {"Ref": "PublicBurstLimit"}
        # "/" is the root; "/~1api~1health" is /api/health (a slash, then ~1 for each slash)
        path = setting["ResourcePath"]
        throttled.add((path if path == "/" else path[1:].replace("~1", "/"), setting["HttpMethod"]))
    public = _template_public_routes(template)
    assert public and throttled == public
    (stage,) = _resources(transformed, "AWS::ApiGateway::Stage").values()
    assert len(stage["Properties"]["MethodSettings"]) == len(public)


def test_every_checkov_skip_is_on_its_resource_with_a_reason(template: dict[str, Any]) -> None:
    """`make deploy-check` runs checkov and fails on any finding not skipped; a skip is on
    the resource it excuses, with the reason next to it."""
    skips = 0
    for logical_id, resource in template["Resources"].items():
        for skip in ((resource.get("Metadata") or {}).get("checkov") or {}).get("skip", []):
            assert re.fullmatch(r"CKV2?_AWS_[0-9]+", skip["id"]), logical_id
            assert len(skip.get("comment", "").split()) >= 8, f"{logical_id} {skip['id']}"
            skips += 1
    assert skips >= 10
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    rule = re.search(r"^deploy-check:.*\n(\t.*\n)+", makefile, re.MULTILINE)
    assert rule is not None
    assert "checkov" in rule.group(0) and "--soft-fail" not in rule.group(0)


def test_the_example_configuration_agrees_with_the_template(template: dict[str, Any]) -> None:
    """infra/samconfig.toml.example names only the template's parameters, with values the
    template accepts, and everything a deploy must give; it sets no secret nobody creates and
    no schedule other than the template's."""
    import tomllib

    config = tomllib.loads((ROOT / "infra" / "samconfig.toml.example").read_text("utf-8"))
    deploy = config["default"]["deploy"]["parameters"]
    overrides = dict(item.split("=", 1) for item in deploy["parameter_overrides"])
    parameters = template["Parameters"]
    assert set(overrides) <= set(parameters)
    required = {name for name, spec in parameters.items() if "Default" not in spec}
    assert required <= set(overrides)
    for name, value in overrides.items():
        spec = parameters[name]
        if "AllowedPattern" in spec:
            assert re.fullmatch(spec["AllowedPattern"], value), name
        if "AllowedValues" in spec:
            assert value in [str(v) for v in spec["AllowedValues"]], name
        if "MinValue" in spec:
            assert int(value) >= int(spec["MinValue"]), name
    assert "WebhookSecretName" not in overrides  # no step creates it: tenants have their own
    assert "WebhookRetrySchedule" not in overrides  # the template's three days
    assert deploy["capabilities"] == "CAPABILITY_IAM"


def test_a_custom_domain_and_its_certificate_are_parameters(template: dict[str, Any]) -> None:
    parameters = template["Parameters"]
    domain = re.compile(parameters["OutputsDomainName"]["AllowedPattern"])
    certificate = re.compile(parameters["OutputsCertificateArn"]["AllowedPattern"])
    assert domain.fullmatch("") and domain.fullmatch("images.example.com")
    assert not domain.fullmatch("https://images.example.com")
    arn = "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-aaaa-bbbb-cccc-0123456789ab"
    assert certificate.fullmatch(arn) and certificate.fullmatch("")
    assert not certificate.fullmatch(arn.replace("us-east-1", "eu-west-1"))  # CloudFront's
    config = template["Resources"]["OutputsDistribution"]["Properties"]["DistributionConfig"]
    assert config["Aliases"] == {
        "Fn::If": ["HasOutputsDomain", [{"Ref": "OutputsDomainName"}], {"Ref": "AWS::NoValue"}]
    }
    condition, viewer, default = config["ViewerCertificate"]["Fn::If"]
    assert condition == "HasOutputsDomain" and default == {"Ref": "AWS::NoValue"}
    assert viewer == {
        "AcmCertificateArn": {"Ref": "OutputsCertificateArn"},
        "SslSupportMethod": "sni-only",
        "MinimumProtocolVersion": "TLSv1.2_2021",
    }
    rule = template["Rules"]["OutputsDomainHasACertificate"]
    assert rule["Assertions"][0]["Assert"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "OutputsCertificateArn"}, ""]}]
    }


# ------------------------------------------------------------------ VPC mode

ENI_ARN = "arn:aws:ec2:us-east-1:123456789012:network-interface/*"


def _resolved_functions(
    template: dict[str, Any], parameters: dict[str, str]
) -> dict[str, tuple[Any, set[tuple[str, tuple[str, ...]]]]]:
    """Each function's VpcConfig (None when absent) and its role's EC2 grants, as
    CloudFormation would resolve them with these parameters: (action, resources) pairs."""
    from local_emulator.intrinsics import NO_VALUE, Resolver

    resolver = Resolver(
        template,
        stack_name="shop",
        region="us-east-1",
        account_id="123456789012",
        parameter_overrides=parameters,
    )
    resources = template["Resources"]
    for logical_id in resources:
        resolver.register(logical_id, f"ref-{logical_id}", {"Arn": f"arn-{logical_id}"})
    out = {}
    for function_id in _functions(template):
        props = {**template["Globals"]["Function"], **resources[function_id]["Properties"]}
        vpc = resolver.resolve(props.get("VpcConfig", {"Ref": "AWS::NoValue"}))
        role = resources[_getatt_target(props["Role"])]["Properties"]
        documents = [p["PolicyDocument"] for p in role.get("Policies", [])]
        for arn in resolver.resolve(role["ManagedPolicyArns"]):
            managed = next((r for k, r in resources.items() if arn == f"ref-{k}"), None)
            if managed is not None:  # the template's own (the others: AWS_MANAGED_POLICIES)
                assert resolver.resource_enabled(managed), arn
                documents.append(managed["Properties"]["PolicyDocument"])
        grants = set()
        for raw in (s for d in documents for s in _as_list(d["Statement"])):
            statement = resolver.resolve(raw)
            for action in _as_list(statement["Action"]):
                if action.startswith("ec2:"):
                    grants.add((action, tuple(_as_list(statement["Resource"]))))
                    assert "Condition" not in statement
        out[function_id] = (None if vpc is NO_VALUE else vpc, grants)
    return out


def test_vpc_mode_is_off_by_default(template: dict[str, Any]) -> None:
    functions = _resolved_functions(template, {})
    assert set(functions) == set(HANDLERS)
    assert all(vpc is None and not grants for vpc, grants in functions.values()), functions
    assert template["Resources"]["VpcNetworkInterfaces"]["Condition"] == "InVpc"


def test_vpc_mode_puts_every_function_in_the_vpc_with_exactly_the_eni_permissions(
    template: dict[str, Any],
) -> None:
    subnets, groups = ["subnet-1a", "subnet-1b"], ["sg-1"]
    parameters = {"VpcSubnetIds": ",".join(subnets), "VpcSecurityGroupIds": ",".join(groups)}
    expected = {
        # EC2 has no resource-level permissions for these two
        ("ec2:DescribeNetworkInterfaces", ("*",)),
        ("ec2:DescribeSubnets", ("*",)),
        # in the stack's subnets with its security groups, whoever owns them
        (
            "ec2:CreateNetworkInterface",
            (
                ENI_ARN,
                "arn:*:ec2:*:*:subnet/subnet-1a",
                "arn:*:ec2:*:*:subnet/subnet-1b",
                "arn:*:ec2:*:*:security-group/sg-1",
            ),
        ),
        *{
            (action, (ENI_ARN,))
            for action in (
                "ec2:DeleteNetworkInterface",
                "ec2:AssignPrivateIpAddresses",
                "ec2:UnassignPrivateIpAddresses",
            )
        },
    }
    for function_id, (vpc, grants) in _resolved_functions(template, parameters).items():
        assert vpc == {"SubnetIds": subnets, "SecurityGroupIds": groups}, function_id
        assert grants == expected, function_id


def test_vpc_parameters_go_together(template: dict[str, Any]) -> None:
    parameters = template["Parameters"]
    for name in ("VpcSubnetIds", "VpcSecurityGroupIds"):
        assert parameters[name]["Type"] == "CommaDelimitedList"
        assert parameters[name]["Default"] == ""
    # the rule's functions are the rules' own (no Fn::Join there)
    rule = template["Rules"]["VpcSubnetsHaveSecurityGroups"]
    is_empty = {"Fn::EachMemberEquals": [{"Ref": "VpcSubnetIds"}, ""]}
    assert rule["RuleCondition"] == {"Fn::Not": [is_empty]}
    is_empty["Fn::EachMemberEquals"][0] = {"Ref": "VpcSecurityGroupIds"}
    assert [a["Assert"] for a in rule["Assertions"]] == [{"Fn::Not": [is_empty]}]
