"""`python -m infra.teardown` against moto: it lists exactly what it deletes (and what it
keeps), deletes nothing unless the stack's name is typed, and then leaves nothing of the
stack's behind but what it said it keeps."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra import teardown

STACK = "shop-images"
TEMPLATE = {
    "Parameters": {"PlanId": {"Type": "String"}},
    "Resources": {
        "UploadsBucket": {"Type": "AWS::S3::Bucket"},
        "OutputsBucket": {"Type": "AWS::S3::Bucket"},
    },
    "Outputs": {
        "UploadsBucketName": {"Value": {"Ref": "UploadsBucket"}},
        "OutputsBucketName": {"Value": {"Ref": "OutputsBucket"}},
        "TenantSecretsPrefix": {"Value": f"{STACK}/tenants/"},
        "TenantUsagePlanId": {"Value": {"Ref": "PlanId"}},
        "MongoUriSecretName": {"Value": f"{STACK}/mongo-uri"},
        "PublicBaseUrl": {"Value": "https://images.example.com"},
    },
}


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch) -> Iterator[boto3.session.Session]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield boto3.session.Session(region_name="us-east-1")


def deployed(session: boto3.session.Session) -> dict[str, Any]:
    apigateway = session.client("apigateway")
    plan_id = apigateway.create_usage_plan(name=f"{STACK}-tenants")["id"]
    key = apigateway.create_api_key(name="acme", enabled=True)
    apigateway.create_usage_plan_key(usagePlanId=plan_id, keyId=key["id"], keyType="API_KEY")
    cloudformation = session.client("cloudformation")
    cloudformation.create_stack(
        StackName=STACK,
        TemplateBody=json.dumps(TEMPLATE),
        Parameters=[{"ParameterKey": "PlanId", "ParameterValue": plan_id}],
    )
    outputs = teardown._outputs(cloudformation, STACK)
    s3 = session.client("s3")
    for i in range(3):
        s3.put_object(Bucket=outputs["OutputsBucketName"], Key=f"outputs/j/{i}.jpg", Body=b"x")
    s3.put_object(Bucket=outputs["UploadsBucketName"], Key="incoming/j.csv", Body=b"a,b")
    secrets = session.client("secretsmanager")
    secrets.create_secret(Name=f"{STACK}/mongo-uri", SecretString="mongodb://db/x")
    secrets.create_secret(Name=f"{STACK}/tenants/acme/webhook", SecretString="whsec_x")
    secrets.create_secret(Name="another-stack/tenants/acme/webhook", SecretString="whsec_y")
    session.client("logs").create_log_group(logGroupName=f"/aws/lambda/{STACK}-ApiFunction-x1")
    return {**outputs, "key": key["id"]}


def run(session: boto3.session.Session, answer: str, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return answer

    code = teardown.main(
        ["--stack", STACK, *argv], stdout=out, stderr=err, ask=ask, session=session
    )
    return code, out.getvalue(), err.getvalue() + "".join(asked)


def test_it_lists_what_it_deletes_and_keeps(session: boto3.session.Session) -> None:
    made = deployed(session)
    code, out, _ = run(session, "", "--dry-run")
    assert code == 0
    assert f"  bucket {made['OutputsBucketName']}: 3 object version(s), then the bucket" in out
    assert f"  bucket {made['UploadsBucketName']}: 1 object version(s), then the bucket" in out
    assert f"  secret {STACK}/tenants/acme/webhook (no recovery window)" in out
    assert "another-stack" not in out
    assert f"  API key {made['key']} (acme)" in out
    assert "  output PublicBaseUrl https://images.example.com: every link to it stops" in out
    kept = out.split("and keeps\n", 1)[1]
    assert f"secret {STACK}/mongo-uri" in kept and "MongoDB database" in kept
    assert f"log group /aws/lambda/{STACK}-ApiFunction-x1" in kept


def test_nothing_is_deleted_without_the_stacks_name(session: boto3.session.Session) -> None:
    made = deployed(session)
    code, _, err = run(session, "yes")
    assert code == 1
    assert f"type the stack's name ({STACK})" in err and "nothing deleted" in err
    assert session.client("cloudformation").describe_stacks(StackName=STACK)["Stacks"]
    objects = session.client("s3").list_objects_v2(Bucket=made["OutputsBucketName"])
    assert objects["KeyCount"] == 3


def test_confirmed_it_deletes_what_it_listed_and_keeps_the_rest(
    session: boto3.session.Session,
) -> None:
    made = deployed(session)
    code, out, _ = run(session, STACK)
    assert code == 0, out
    names = {b["Name"] for b in session.client("s3").list_buckets()["Buckets"]}
    assert not {made["OutputsBucketName"], made["UploadsBucketName"]} & names
    left = {s["Name"] for s in session.client("secretsmanager").list_secrets()["SecretList"]}
    assert left == {f"{STACK}/mongo-uri", "another-stack/tenants/acme/webhook"}
    assert session.client("apigateway").get_api_keys()["items"] == []
    stacks = session.client("cloudformation").list_stacks()["StackSummaries"]
    assert [s["StackStatus"] for s in stacks if s["StackName"] == STACK] == ["DELETE_COMPLETE"]
