"""Delete a deployed stack and what was made for it outside the stack, after listing exactly
what goes and asking for the stack's name.

    python -m infra.teardown --stack image-pipeline            # lists, asks, deletes
    python -m infra.teardown --stack image-pipeline --dry-run  # lists only

In order: every object version in the stack's buckets (CloudFormation cannot delete a bucket
that is not empty), the tenants' webhook signing secrets under the stack's
TenantSecretsPrefix (made by infra.tenants; deleted without a recovery window), the tenants'
API Gateway keys in its usage plan (made by infra.tenants), then the stack itself, waited
for. The MongoDB URI secret, the database, the retained API Gateway logging role and the log
groups Lambda made before the stack declared its own are listed as kept, never deleted.

Exit status: 0 deleted (or listed, --dry-run), 1 refused at the prompt or failed, 2 a usage
error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import boto3
from botocore.exceptions import BotoCoreError, ClientError

# Outputs that name what links and integrations point at: deleting them breaks those links.
LINKED_OUTPUTS = ("ApiUrl", "PublicBaseUrl", "OutputsDistributionDomain")
BATCH = 1000  # S3 DeleteObjects' most keys per call


@dataclass
class Plan:
    """What a teardown deletes and what it leaves, as listed before asking."""

    stack: str
    buckets: dict[str, int] = field(default_factory=dict)  # name -> object versions
    secrets: list[str] = field(default_factory=list)
    api_keys: list[tuple[str, str]] = field(default_factory=list)  # (id, name)
    resources: list[tuple[str, str, str]] = field(default_factory=list)  # type, id, physical
    links: list[tuple[str, str]] = field(default_factory=list)  # output, value
    kept: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"stack {self.stack}: this deletes"]
        for name, count in self.buckets.items():
            out.append(f"  bucket {name}: {count} object version(s), then the bucket")
        for name in self.secrets:
            out.append(f"  secret {name} (no recovery window)")
        for key_id, name in self.api_keys:
            out.append(f"  API key {key_id} ({name})")
        for kind, logical_id, physical in self.resources:
            out.append(f"  {kind} {logical_id} {physical}")
        for output, value in self.links:
            out.append(f"  output {output} {value}: every link to it stops working")
        out.append("and keeps")
        out.extend(f"  {line}" for line in self.kept)
        return out


class Refused(Exception):
    """The prompt was not answered with the stack's name."""


def _outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    (found,) = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    return {str(o["OutputKey"]): str(o.get("OutputValue", "")) for o in found.get("Outputs", [])}


def _versions(s3: Any, bucket: str) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            found.append({"Key": item["Key"], "VersionId": item.get("VersionId") or "null"})
    return found


def plan(client: Callable[[str], Any], stack: str) -> Plan:
    cloudformation = client("cloudformation")
    outputs = _outputs(cloudformation, stack)
    result = Plan(stack)
    for output in ("UploadsBucketName", "OutputsBucketName"):
        bucket = outputs.get(output)
        if bucket:
            result.buckets[bucket] = len(_versions(client("s3"), bucket))
    prefix = outputs.get("TenantSecretsPrefix", "")
    if prefix:
        pages = client("secretsmanager").get_paginator("list_secrets")
        for page in pages.paginate(Filters=[{"Key": "name", "Values": [prefix]}]):
            result.secrets += [
                s["Name"] for s in page["SecretList"] if str(s["Name"]).startswith(prefix)
            ]
    plan_id = outputs.get("TenantUsagePlanId", "")
    if plan_id:
        keys = client("apigateway").get_usage_plan_keys(usagePlanId=plan_id, limit=500)
        result.api_keys = [(str(k["id"]), str(k.get("name", ""))) for k in keys.get("items", [])]
    retained = []
    for page in cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack):
        for resource in page["StackResourceSummaries"]:
            kind, logical_id = resource["ResourceType"], resource["LogicalResourceId"]
            physical = str(resource.get("PhysicalResourceId", ""))
            if logical_id == "ApiGatewayLogRole":  # DeletionPolicy: Retain
                retained.append(f"{kind} {logical_id} {physical} (the region's APIs log with it)")
                continue
            result.resources.append((kind, logical_id, physical))
    result.links = [(o, outputs[o]) for o in LINKED_OUTPUTS if outputs.get(o)]
    mongo_secret = outputs.get("MongoUriSecretName", "")
    result.kept = [
        *([f"secret {mongo_secret} (the MongoDB URI: yours)"] if mongo_secret else []),
        "the MongoDB database and its users (outside AWS's stack)",
        *retained,
    ]
    logs = client("logs").get_paginator("describe_log_groups")
    for page in logs.paginate(logGroupNamePrefix=f"/aws/lambda/{stack}-"):
        result.kept += [
            f"log group {g['logGroupName']} (made by Lambda before the stack's own: "
            "aws logs delete-log-group)"
            for g in page["logGroups"]
        ]
    return result


def execute(client: Callable[[str], Any], target: Plan, say: Callable[[str], None]) -> None:
    s3 = client("s3")
    for bucket in target.buckets:
        versions = _versions(s3, bucket)
        for start in range(0, len(versions), BATCH):
            s3.delete_objects(
                Bucket=bucket, Delete={"Objects": versions[start : start + BATCH], "Quiet": True}
            )
        say(f"emptied {bucket} ({len(versions)} object version(s))")
    for name in target.secrets:
        client("secretsmanager").delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
        say(f"deleted secret {name}")
    for key_id, _ in target.api_keys:
        client("apigateway").delete_api_key(apiKey=key_id)
        say(f"deleted API key {key_id}")
    cloudformation = client("cloudformation")
    cloudformation.delete_stack(StackName=target.stack)
    say(f"deleting stack {target.stack} ...")
    cloudformation.get_waiter("stack_delete_complete").wait(StackName=target.stack)
    say(f"deleted stack {target.stack}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.teardown",
        description="Delete a stack and what infra.tenants made for it, after listing it all.",
    )
    parser.add_argument("--stack", required=True)
    parser.add_argument("--region", help="AWS region (default: the environment's)")
    parser.add_argument("--endpoint-url", help="AWS endpoint (e.g. the local emulator's)")
    parser.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    ask: Callable[[str], str] = input,
    session: boto3.session.Session | None = None,
) -> int:
    args = build_parser().parse_args(argv)
    out, err = stdout or sys.stdout, stderr or sys.stderr
    aws = session or boto3.session.Session(region_name=args.region)

    def client(name: str) -> Any:
        return aws.client(name, endpoint_url=args.endpoint_url)  # type: ignore[call-overload]

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    try:
        target = plan(client, args.stack)
        for line in target.lines():
            say(line)
        if args.dry_run:
            return 0
        answer = ask(f"type the stack's name ({args.stack}) to delete all of the above: ")
        if answer.strip() != args.stack:
            raise Refused("not confirmed: nothing deleted")
        execute(client, target, say)
    except Refused as exc:
        print(str(exc), file=err)
        return 1
    except (ClientError, BotoCoreError, ValueError) as exc:
        print(f"error: {exc}", file=err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
