"""The provisioner on moto (in-process): the template's alarms exist where `describe-alarms`
finds them, and every resource it does not create is named as such."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from infra.cfn_yaml import load_template
from local_emulator.provision import REGION, ProvisionedStack, Provisioner

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
TOPIC = "arn:aws:sns:us-east-1:123456789012:ops-alerts"


@pytest.fixture
def session() -> Iterator[boto3.session.Session]:
    with mock_aws():
        yield boto3.session.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=REGION,
        )


def _provision(
    session: boto3.session.Session, template: Path = TEMPLATE, **kw: Any
) -> ProvisionedStack:
    return Provisioner(template, session, warn=lambda _: None, **kw).provision()


def test_every_alarm_of_the_template_is_in_moto(session: boto3.session.Session) -> None:
    stack = _provision(session)
    resources = load_template(TEMPLATE)["Resources"]
    alarm_ids = {k for k, v in resources.items() if v["Type"] == "AWS::CloudWatch::Alarm"}
    assert alarm_ids and set(stack.alarms) == alarm_ids
    created = {
        a["AlarmName"]: a for a in session.client("cloudwatch").describe_alarms()["MetricAlarms"]
    }
    assert set(created) == {alarm.name for alarm in stack.alarms.values()}
    depth = {
        a["Dimensions"][0]["Value"]: a
        for a in created.values()
        if a["MetricName"] == "ApproximateNumberOfMessagesVisible"
    }
    assert set(depth) == {stack.queues[q].name for q in stack.dead_letter_queue_ids()}
    for alarm in depth.values():
        assert alarm["Threshold"] == 0
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    topic = stack.other_resources["AlarmTopic"]
    assert topic.startswith("arn:aws:sns:")
    for alarm in created.values():
        assert alarm["AlarmName"].startswith(f"{stack.stack_name}-")
        assert alarm["TreatMissingData"] == "notBreaching"
        assert alarm["AlarmActions"] == [topic]  # no AlarmTopicArn: the stack's topic alone


def test_alarm_topic_becomes_the_alarm_action(session: boto3.session.Session) -> None:
    stack = _provision(session, parameter_overrides={"AlarmTopicArn": TOPIC})
    alarms = session.client("cloudwatch").describe_alarms()["MetricAlarms"]
    assert len(alarms) == len(stack.alarms)
    topic = stack.other_resources["AlarmTopic"]
    assert all(a["AlarmActions"] == [topic, TOPIC] for a in alarms)
    assert all(
        f"notifies {topic}, {TOPIC}" in line
        for line in stack.describe_extras()
        if line.startswith("alarm ")
    )


def test_vpc_mode_is_said_not_emulated(session: boto3.session.Session) -> None:
    stack = _provision(
        session,
        parameter_overrides={"VpcSubnetIds": "subnet-1a,subnet-1b", "VpcSecurityGroupIds": "sg-1"},
    )
    assert {f.vpc_subnets for f in stack.functions.values()} == {("subnet-1a", "subnet-1b")}
    lines = stack.describe_extras()
    assert (
        f"not emulated: VpcConfig of all {len(stack.functions)} functions (subnets subnet-1a, "
        "subnet-1b; on AWS they reach the internet and AWS's APIs only through the subnets' "
        "NAT or endpoints): locally they use this machine's network"
    ) in lines
    assert stack.not_emulated["VpcNetworkInterfaces"] == "AWS::IAM::ManagedPolicy"


def test_what_is_not_created_is_said(session: boto3.session.Session, tmp_path: Path) -> None:
    stack = _provision(session)
    lines = stack.describe_extras()
    assert "not emulated: IngestQueuePolicy (AWS::SQS::QueuePolicy)" in lines
    assert (
        "not emulated: ReadMongoUriSecret (AWS::IAM::ManagedPolicy): moto enforces no IAM, so "
        "locally every function may read every secret (on AWS each reads only what its "
        "policies allow)"
    ) in lines
    assert (
        "not emulated: WorkerFunctionRole (AWS::IAM::Role): moto enforces no IAM, so locally a "
        "function may do what no role of the template allows (on AWS each function does only "
        "what its role allows)"
    ) in lines
    assert sum(line.startswith("alarm ") for line in lines) == len(stack.alarms)
    # Every resource of the template is created, served otherwise (the API) or named.
    accounted = (
        set(stack.buckets)
        | set(stack.queues)
        | set(stack.functions)
        | set(stack.alarms)
        | set(stack.other_resources)
        | set(stack.usage_plans)
        | set(stack.not_emulated)
        | {"Api"}
    )
    resources = load_template(TEMPLATE)["Resources"]
    # the template's only resources off by default: AlarmTopicEmail (no AlarmEmail) and
    # VpcNetworkInterfaces (no VpcSubnetIds)
    off = {"HasAlarmEmail", "InVpc"}
    assert {k for k, v in resources.items() if v.get("Condition") not in off} == accounted
    assert not any("VpcConfig" in line for line in lines)

    odd = tmp_path / "template.yaml"
    odd.write_text(
        "Resources:\n"
        "  Logs:\n"
        "    Type: AWS::Logs::LogGroup\n"
        "  FunctionErrors:\n"
        "    Type: AWS::CloudWatch::Alarm\n"
        "    Properties:\n"
        "      Namespace: AWS/Lambda\n"
        "      MetricName: Errors\n"
        "      Dimensions: [{Name: FunctionName, Value: !GetAtt Missing.Name}]\n"
        "      Statistic: Sum\n"
        "      Period: 60\n"
        "      EvaluationPeriods: 1\n"
        "      Threshold: 1\n"
        "      ComparisonOperator: GreaterThanOrEqualToThreshold\n",
        encoding="utf-8",
    )
    other = _provision(session, odd, stack_name="odd")
    assert other.not_emulated == {
        "Logs": "AWS::Logs::LogGroup",
        "FunctionErrors": "AWS::CloudWatch::Alarm",  # refers to what is not there
    }
    assert other.alarms == {}


def test_the_usage_plan_is_in_moto_with_the_template_throttle(
    session: boto3.session.Session,
) -> None:
    stack = _provision(session, parameter_overrides={"TenantRateLimit": "7"})
    (plan,) = stack.usage_plans.values()
    (created,) = session.client("apigateway").get_usage_plans()["items"]
    assert created["id"] == plan.id
    assert created["name"] == f"{stack.stack_name}-tenants"
    # TenantBurstLimit 0: the burst of the default DatabaseConnections' row (5 at 500)
    assert created["throttle"] == {"rateLimit": 7.0, "burstLimit": 5}
    assert created.get("apiStages", []) == []  # the API is not in moto
    assert (
        f"usage plan {plan.name} (id {plan.id}; throttle 7/s, burst 5; tenants' keys join it; "
        "moto neither meters nor throttles)"
    ) in stack.describe_extras()


def test_the_cdn_is_in_moto_and_its_stand_in_is_said(session: boto3.session.Session) -> None:
    stack = _provision(session)
    (cdn,) = stack.cdns.values()
    outputs = stack.buckets["OutputsBucket"].name
    assert cdn.logical_id == "OutputsDistribution" and cdn.buckets == (outputs,)
    cloudfront = session.client("cloudfront")
    (listed,) = cloudfront.list_distributions()["DistributionList"]["Items"]
    assert (listed["Id"], listed["ARN"], listed["DomainName"]) == (
        cdn.id,
        cdn.arn,
        cdn.domain_name,
    )
    assert listed["Origins"]["Items"][0]["DomainName"] == f"{outputs}.s3.{REGION}.amazonaws.com"
    assert listed["DefaultCacheBehavior"]["ViewerProtocolPolicy"] == "https-only"
    # its response headers policy's CORS, kept for the stand-in (moto has no such policies)
    assert cdn.cors is not None
    assert (cdn.cors.allow_origins, cdn.cors.allow_methods) == (("*",), ("GET", "HEAD"))
    assert not cdn.cors.allow_credentials
    (oac,) = cloudfront.list_origin_access_controls()["OriginAccessControlList"]["Items"]
    assert stack.other_resources["OutputsOriginAccessControl"] == oac["Id"]
    assert oac["SigningBehavior"] == "always" and oac["OriginAccessControlOriginType"] == "s3"
    # the functions link to the distribution (the emulator points that at its stand-in)
    assert stack.environment["PUBLIC_BASE_URL"] == f"https://{cdn.domain_name}"
    # the bucket policy names the distribution, and is kept out of moto (see bucket_policy.py)
    policy = stack.bucket_policies[outputs]
    allow = next(s for s in policy["Statement"] if s["Effect"] == "Allow")
    assert allow["Condition"]["StringEquals"]["AWS:SourceArn"] == cdn.arn
    assert allow["Resource"] == f"arn:aws:s3:::{outputs}/outputs/*"
    with pytest.raises(ClientError):
        session.client("s3").get_bucket_policy(Bucket=outputs)
    lines = stack.describe_extras()
    stack.storage_url = "http://127.0.0.1:4566"
    said = [line for line in stack.describe_extras() if line.startswith("cdn ")]
    assert said == [
        f"cdn OutputsDistribution: distribution {cdn.id} ({cdn.domain_name}) created in moto; "
        f"its domain does not resolve locally, so its stand-in serves {outputs} at "
        f"http://127.0.0.1:4566/{outputs}: GETs without credentials of what the bucket's "
        "policy lets the distribution read, nothing else (plain HTTP, no edge cache); CORS "
        "reads from origins * (GET, HEAD), as its response headers policy says"
    ]
    assert stack.public_base_url(cdn) == f"http://127.0.0.1:4566/{outputs}"
    assert any(line.startswith(f"bucket policy {outputs}: kept by the emulator") for line in lines)
    assert (
        "not emulated: OutputsCachePolicy (AWS::CloudFront::CachePolicy): moto has no cache "
        "policies and the CDN's stand-in no cache: each GET reads the bucket and passes on the "
        "object's own Cache-Control"
    ) in lines


def test_lifecycle_rules_are_in_moto_and_said_not_to_apply(
    session: boto3.session.Session,
) -> None:
    stack = _provision(
        session, parameter_overrides={"UploadRetentionDays": "7", "OutputRetentionDays": "90"}
    )
    s3 = session.client("s3")
    uploads, outputs = stack.buckets["UploadsBucket"].name, stack.buckets["OutputsBucket"].name
    rules = {
        bucket: {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
        for bucket in (uploads, outputs)
    }
    assert rules[uploads]["ExpireIncomingCsv"]["Expiration"] == {"Days": 7}
    assert rules[uploads]["ExpireIncomingCsv"]["Filter"] == {"Prefix": "incoming/"}
    assert rules[outputs]["ExpireOutputs"]["Expiration"] == {"Days": 90}
    assert rules[outputs]["ExpireOutputs"]["Filter"] == {"Prefix": "outputs/"}
    lines = stack.describe_extras()
    assert (
        f"lifecycle {outputs}: ExpireOutputs expire outputs/ after 90 days; "
        "AbortIncompleteUploads abort incomplete uploads after 1 day (moto keeps the rules but "
        "applies none: nothing expires locally)"
    ) in lines
    assert stack.environment["OUTPUT_RETENTION_DAYS"] == "90"


def test_outputs_kept_for_ever_have_no_expiration_rule(session: boto3.session.Session) -> None:
    stack = _provision(session, parameter_overrides={"OutputRetentionDays": "0"})
    outputs = stack.buckets["OutputsBucket"].name
    rules = session.client("s3").get_bucket_lifecycle_configuration(Bucket=outputs)["Rules"]
    assert [r["ID"] for r in rules] == ["AbortIncompleteUploads"]
    assert stack.environment["OUTPUT_RETENTION_DAYS"] == "0"


def test_versions_snapstart_and_bundles_are_said_not_emulated(
    session: boto3.session.Session, tmp_path: Path
) -> None:
    """Every function publishes versions under the alias `live` with SnapStart, built by
    functions/Makefile: none of it runs locally, and the emulator says so, once each."""
    stack = _provision(session)
    functions = stack.functions.values()
    assert {(f.alias, f.snap_start, f.build_method) for f in functions} == {
        ("live", True, "makefile")
    }
    count = len(stack.functions)
    lines = [line for line in stack.describe_extras() if f"all {count} functions" in line]
    assert [line.split(" (")[0] for line in lines] == [
        f"not emulated: versions and alias live of all {count} functions",
        f"not emulated: SnapStart of all {count} functions",
        f"not emulated: the bundles of all {count} functions",
    ]
    assert "runs its runtime hooks after init as on a restore" in lines[1]
    # SAM's reference to the alias resolves to the alias's ARN
    authorizer = stack.functions["AuthorizerFunction"]
    provisioner = Provisioner(TEMPLATE, session, warn=lambda _: None, stack_name="again")
    provisioner.provision()
    alias = provisioner.resolver.resolve({"Ref": "AuthorizerFunction.Alias"})
    assert alias == authorizer.arn.replace(stack.stack_name, "again") + ":live"

    plain = tmp_path / "template.yaml"
    plain.write_text(
        "Resources:\n"
        "  Plain:\n"
        "    Type: AWS::Serverless::Function\n"
        "    Properties: {Handler: app.app, CodeUri: functions/, Runtime: python3.13}\n"
        "  Snapped:\n"
        "    Type: AWS::Serverless::Function\n"
        "    Properties: {Handler: app.app, CodeUri: functions/, Runtime: python3.13,\n"
        "      AutoPublishAlias: v, SnapStart: {ApplyOn: PublishedVersions}}\n"
        "  Shared:\n"
        "    Type: AWS::Serverless::LayerVersion\n"
        "    Properties: {ContentUri: layer/}\n",
        encoding="utf-8",
    )
    other = _provision(session, plain, stack_name="plain")
    function = other.functions["Plain"]
    assert (function.alias, function.snap_start, function.build_method) == (None, False, None)
    assert not [line for line in other.describe_extras() if "Plain" in line]
    said = [line.split(" (")[0] for line in other.describe_extras() if "Snapped" in line]
    assert said == [
        "not emulated: versions and alias v of Snapped",
        "not emulated: SnapStart of Snapped",
    ]
    assert (
        "not emulated: Shared (AWS::Serverless::LayerVersion): locally every function imports "
        "from this environment, which has every layer's packages"
    ) in other.describe_extras()
