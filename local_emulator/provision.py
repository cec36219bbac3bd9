"""template.yaml -> resources on the moto server, and what the dispatchers need to know.

Nothing here is a second list of the stack: every bucket, queue, notification, event
source, schedule and environment variable comes from the template.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from local_emulator.cdn import CdnCors, cdn_cors, distribution_config, origin_bucket
from local_emulator.intrinsics import NO_VALUE, Resolver, TemplateError, references
from local_emulator.timescale import scaled_timeout, scaled_visibility

if TYPE_CHECKING:
    from boto3.session import Session
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

STACK_NAME = "image-pipeline"
ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
LAMBDA_DEFAULT_TIMEOUT = 3
LAMBDA_DEFAULT_MEMORY = 128
SQS_DEFAULT_VISIBILITY = 30

EnvSource = Literal["resource", "setting", "dynamic"]
Warn = Callable[[str], None]


@dataclass(frozen=True)
class BucketInfo:
    logical_id: str
    name: str
    arn: str


@dataclass(frozen=True)
class QueueInfo:
    logical_id: str
    name: str
    url: str
    arn: str
    visibility_timeout: int
    template_visibility_timeout: int
    dead_letter_target: str | None = None
    max_receive_count: int | None = None


@dataclass(frozen=True)
class SqsEventSource:
    event_name: str
    queue: QueueInfo
    batch_size: int
    report_batch_item_failures: bool
    maximum_concurrency: int | None = None
    batching_window: float = 0.0


@dataclass(frozen=True)
class AlarmInfo:
    logical_id: str
    name: str
    arn: str
    condition: str  # e.g. "AWS/SQS ApproximateNumberOfMessagesVisible QueueName=x > 0"
    actions: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScheduleSource:
    event_name: str
    expression: str
    period_seconds: float
    input: Any = None


@dataclass(frozen=True)
class FunctionInfo:
    logical_id: str
    name: str
    handler: str
    code_dir: Path
    timeout: float  # seconds, locally (the template's, times the time scale)
    memory_size: int
    arn: str
    sqs_sources: tuple[SqsEventSource, ...] = ()
    schedules: tuple[ScheduleSource, ...] = ()
    serves_api: bool = False
    template_timeout: int = 0  # the template's Timeout (0: the same as `timeout`)
    # Deployment settings the emulator knows and does not emulate (describe_extras says so):
    alias: str | None = None  # AutoPublishAlias: on AWS every invocation goes to this alias
    snap_start: bool = False  # SnapStart ApplyOn PublishedVersions
    build_method: str | None = None  # Metadata BuildMethod (functions/Makefile's bundles)
    vpc_subnets: tuple[str, ...] = ()  # VpcConfig's SubnetIds (VPC mode): not emulated
    # ReservedConcurrentExecutions: the most invocations at once (None: the account's)
    reserved_concurrency: int | None = None


@dataclass(frozen=True)
class CdnInfo:
    """A CloudFront distribution of the template, created in moto, and the stack's buckets
    it serves (its S3 origins)."""

    logical_id: str
    id: str
    arn: str
    domain_name: str
    buckets: tuple[str, ...]
    in_moto: bool = True
    # the CORS of its default behaviour's response headers policy (None: no CORS answered)
    cors: CdnCors | None = None


@dataclass(frozen=True)
class UsagePlanInfo:
    logical_id: str
    name: str
    id: str
    throttle: str  # e.g. "20/s, burst 40" ("" when the plan has no throttle)


@dataclass
class ProvisionedStack:
    stack_name: str
    template_path: Path
    buckets: dict[str, BucketInfo] = field(default_factory=dict)
    queues: dict[str, QueueInfo] = field(default_factory=dict)
    functions: dict[str, FunctionInfo] = field(default_factory=dict)
    other_resources: dict[str, str] = field(default_factory=dict)
    alarms: dict[str, AlarmInfo] = field(default_factory=dict)
    usage_plans: dict[str, UsagePlanInfo] = field(default_factory=dict)
    cdns: dict[str, CdnInfo] = field(default_factory=dict)
    # bucket name -> its policy (resolved): kept here, not in moto (see bucket_policy.py)
    bucket_policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    # bucket name -> its lifecycle rules, as PutBucketLifecycleConfiguration took them
    lifecycles: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    storage_url: str = ""  # the storage endpoint (set by the emulator once it runs)
    # logical id -> type of each resource the emulator knowingly does not create
    not_emulated: dict[str, str] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    environment_sources: dict[str, EnvSource] = field(default_factory=dict)

    def queue_by_url(self, url: str) -> QueueInfo | None:
        return next((q for q in self.queues.values() if q.url == url), None)

    def dead_letter_queue_ids(self) -> set[str]:
        return {q.dead_letter_target for q in self.queues.values() if q.dead_letter_target}

    def describe_extras(self) -> list[str]:
        """Lines about the alarms and the resources left out (for `Emulator.describe`)."""
        lines = []
        for alarm in self.alarms.values():
            actions = f"notifies {', '.join(alarm.actions)}" if alarm.actions else "no actions"
            lines.append(f"alarm {alarm.name} ({alarm.condition}; {actions}; not evaluated)")
        for plan in self.usage_plans.values():
            throttle = f"throttle {plan.throttle}; " if plan.throttle else ""
            lines.append(
                f"usage plan {plan.name} (id {plan.id}; {throttle}tenants' keys join it; "
                "moto neither meters nor throttles)"
            )
        for bucket, rules in self.lifecycles.items():
            described = "; ".join(_describe_rule(rule) for rule in rules)
            lines.append(
                f"lifecycle {bucket}: {described} (moto keeps the rules but applies none: "
                "nothing expires locally)"
            )
        for bucket in self.bucket_policies:
            lines.append(
                f"bucket policy {bucket}: kept by the emulator, not given to moto (which "
                "ignores conditions); the storage endpoint applies it to what a CDN reads"
            )
        for cdn in self.cdns.values():
            lines.append(self.describe_cdn(cdn))
        for logical_id, kind in self.not_emulated.items():
            why = _NOT_EMULATED_BECAUSE.get(kind)
            lines.append(f"not emulated: {logical_id} ({kind})" + (f": {why}" if why else ""))
        lines += self.describe_deployment()
        return lines

    def describe_deployment(self) -> list[str]:
        """A line per deployment setting of the functions that runs nothing locally: the
        versions and aliases SAM publishes, SnapStart, and how the bundles are built."""
        lines = []
        total = len(self.functions)
        aliases: dict[str, list[str]] = {}
        for function in self.functions.values():
            if function.alias:
                aliases.setdefault(function.alias, []).append(function.logical_id)
        for alias, names in aliases.items():
            lines.append(
                f"not emulated: versions and alias {alias} of {_listed(names, total)} "
                "(AutoPublishAlias; on AWS each deploy publishes a version and every event "
                "source, API route and authorizer invokes the alias): locally every invocation "
                "runs the code in functions/ as it is now"
            )
        snap = [f.logical_id for f in self.functions.values() if f.snap_start]
        if snap:
            lines.append(
                f"not emulated: SnapStart of {_listed(snap, total)} (on AWS each published version "
                "is initialised once, snapshotted, and new environments resume from the "
                "snapshot): nothing is snapshotted; a container process "
                "(LOCAL_WORKER_PROCESSES) runs its runtime hooks after init as on a restore "
                "(local_emulator/snapstart_runtime.py), while in this process they are not called"
            )
        in_vpc = [f.logical_id for f in self.functions.values() if f.vpc_subnets]
        if in_vpc:
            subnets = sorted({s for f in self.functions.values() for s in f.vpc_subnets})
            lines.append(
                f"not emulated: VpcConfig of {_listed(in_vpc, total)} (subnets "
                f"{', '.join(subnets)}; on AWS they reach the internet and AWS's APIs only "
                "through the subnets' NAT or endpoints): locally they use this machine's network"
            )
        built: dict[str, list[str]] = {}
        for function in self.functions.values():
            if function.build_method:
                built.setdefault(function.build_method, []).append(function.logical_id)
        for method, names in built.items():
            lines.append(
                f"not emulated: the bundles of {_listed(names, total)} (BuildMethod {method}: "
                "functions/Makefile gives each function only what it uses): locally every "
                "function imports from functions/ with this environment's packages, all of "
                "them (`make deploy-check` builds the bundles; benchmarks.cold_start imports "
                "each function from its own)"
            )
        return lines

    def public_base_url(self, cdn: CdnInfo) -> str:
        """Where the stand-in of `cdn` serves its (first) bucket."""
        if not self.storage_url or not cdn.buckets:
            return ""
        return f"{self.storage_url}/{cdn.buckets[0]}"

    def describe_cdn(self, cdn: CdnInfo) -> str:
        where = self.public_base_url(cdn) or "<storage endpoint>/<bucket>"
        created = (
            f"distribution {cdn.id} ({cdn.domain_name}) created in moto"
            if cdn.in_moto
            else f"distribution not created in moto (local id {cdn.id})"
        )
        cors = (
            f"; CORS reads from origins {', '.join(cdn.cors.allow_origins)} "
            f"({', '.join(cdn.cors.allow_methods)}), as its response headers policy says"
            if cdn.cors is not None
            else ""
        )
        return (
            f"cdn {cdn.logical_id}: {created}; its domain does not resolve locally, so its "
            f"stand-in serves {', '.join(cdn.buckets) or 'no bucket'} at {where}: GETs "
            "without credentials of what the bucket's policy lets the distribution read, "
            f"nothing else (plain HTTP, no edge cache){cors}"
        )


def _listed(names: list[str], total: int) -> str:
    """`all 8 functions`, or the functions by name when not all of them."""
    return f"all {total} functions" if len(names) == total > 1 else ", ".join(names)


def _describe_rule(rule: Mapping[str, Any]) -> str:
    prefix = (rule.get("Filter") or {}).get("Prefix", "")
    if "Expiration" in rule:
        action = f"expire {prefix or 'everything'} after {rule['Expiration'].get('Days')} days"
    elif "AbortIncompleteMultipartUpload" in rule:
        days = rule["AbortIncompleteMultipartUpload"].get("DaysAfterInitiation")
        action = f"abort incomplete uploads after {days} day{'' if days == 1 else 's'}"
    else:
        action = "other actions"
    return f"{rule.get('ID', '?')} {action}" + ("" if rule.get("Status") == "Enabled" else " (off)")


def load_template(path: Path) -> dict[str, Any]:
    """The template in long form, through the repository's own loader."""
    repo_root = str(Path(__file__).resolve().parent.parent)
    if repo_root not in sys.path:
        sys.path.insert(0, repo_root)
    from infra.cfn_yaml import load_template as load

    template: dict[str, Any] = load(path)
    return template


_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> float | None:
    """Seconds between runs for `rate(N unit)`; None for cron() and anything else."""
    match = _RATE.match(expression.strip())
    if match is None:
        return None
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2).rstrip("s")]


def _bucket_name(logical_id: str, props: Mapping[str, Any], resolver: Resolver) -> str:
    if "BucketName" in props:
        name = resolver.resolve(props["BucketName"])
        if name is not NO_VALUE and name:
            return str(name)
    return f"{resolver.stack_name}-{logical_id.lower()}"


def _cors_rules(cors: Mapping[str, Any]) -> list[dict[str, Any]]:
    renames = {"ExposedHeaders": "ExposeHeaders", "Id": "ID", "MaxAge": "MaxAgeSeconds"}
    rules = []
    for rule in cors.get("CorsRules", []):
        rules.append({renames.get(k, k): v for k, v in rule.items()})
    return rules


def _lifecycle_rules(cfn: Mapping[str, Any], bucket: str, warn: Warn) -> list[dict[str, Any]]:
    """An AWS::S3::Bucket's LifecycleConfiguration as PutBucketLifecycleConfiguration takes it
    (the actions the template uses; any other is left out, with a warning)."""
    rules = []
    for rule in cfn.get("Rules", []):
        out: dict[str, Any] = {"Status": str(rule.get("Status", "Enabled"))}
        if "Id" in rule:
            out["ID"] = str(rule["Id"])
        out["Filter"] = {"Prefix": str(rule.get("Prefix", ""))}
        if "ExpirationInDays" in rule:
            out["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
        if "AbortIncompleteMultipartUpload" in rule:
            days = int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
            out["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": days}
        known = {"Id", "Status", "Prefix", "ExpirationInDays", "AbortIncompleteMultipartUpload"}
        if set(rule) - known:
            warn(f"bucket {bucket}: lifecycle {sorted(set(rule) - known)} not emulated")
        rules.append(out)
    return rules


def _notification_filter(cfn_filter: Mapping[str, Any] | None) -> dict[str, Any]:
    if not cfn_filter:
        return {}
    rules = cfn_filter.get("S3Key", {}).get("Rules", [])
    return {
        "Filter": {
            "Key": {
                "FilterRules": [
                    {"Name": str(r["Name"]).lower(), "Value": str(r["Value"])} for r in rules
                ]
            }
        }
    }


def _notification_configuration(cfn: Mapping[str, Any], bucket: str, warn: Warn) -> dict[str, Any]:
    config: dict[str, Any] = {}
    queues = [
        {"QueueArn": q["Queue"], "Events": [q["Event"]], **_notification_filter(q.get("Filter"))}
        for q in cfn.get("QueueConfigurations", [])
    ]
    if queues:
        config["QueueConfigurations"] = queues
    topics = [
        {"TopicArn": t["Topic"], "Events": [t["Event"]], **_notification_filter(t.get("Filter"))}
        for t in cfn.get("TopicConfigurations", [])
    ]
    if topics:
        config["TopicConfigurations"] = topics
    if cfn.get("LambdaConfigurations"):
        warn(f"bucket {bucket}: LambdaConfigurations are not emulated (use an SQS queue)")
    if str(cfn.get("EventBridgeConfiguration", {}).get("EventBridgeEnabled", "")).lower() in {
        "true",
        "1",
    }:
        config["EventBridgeConfiguration"] = {}
    return config


# Served otherwise: the API server stands in for API Gateway.
_EMULATED_ELSEWHERE = {"AWS::Serverless::Api", "AWS::Serverless::HttpApi"}
EVENT_SOURCE_MAPPING = "AWS::Lambda::EventSourceMapping"

# Types left out on purpose, and what that means locally.
_NOT_EMULATED_BECAUSE = {
    "AWS::IAM::ManagedPolicy": "moto enforces no IAM, so locally every function may read "
    "every secret (on AWS each reads only what its policies allow)",
    "AWS::IAM::Role": "moto enforces no IAM, so locally a function may do what no role of "
    "the template allows (on AWS each function does only what its role allows)",
    "AWS::CloudFront::CachePolicy": "moto has no cache policies and the CDN's stand-in no "
    "cache: each GET reads the bucket and passes on the object's own Cache-Control",
    "AWS::Serverless::LayerVersion": "locally every function imports from this environment, "
    "which has every layer's packages",
    "AWS::Lambda::LayerVersion": "locally every function imports from this environment, "
    "which has every layer's packages",
    "AWS::Lambda::Version": "locally every invocation runs the code in functions/ as it is now",
    "AWS::Lambda::Alias": "locally every invocation runs the code in functions/ as it is now",
}
_CDN_TYPES = {
    "AWS::CloudFront::Distribution",
    "AWS::CloudFront::OriginAccessControl",
    "AWS::CloudFront::CachePolicy",
    "AWS::CloudFront::ResponseHeadersPolicy",
}

# AWS::CloudWatch::Alarm properties that PutMetricAlarm takes under the same name.
_ALARM_PARAMETERS = (
    "AlarmDescription",
    "ActionsEnabled",
    "AlarmActions",
    "OKActions",
    "InsufficientDataActions",
    "Namespace",
    "MetricName",
    "Dimensions",
    "Statistic",
    "ExtendedStatistic",
    "Unit",
    "ComparisonOperator",
    "TreatMissingData",
    "EvaluateLowSampleCountPercentile",
    "Metrics",
    "ThresholdMetricId",
)
_ALARM_INTEGERS = ("Period", "EvaluationPeriods", "DatapointsToAlarm")
_COMPARISONS = {
    "GreaterThanThreshold": ">",
    "GreaterThanOrEqualToThreshold": ">=",
    "LessThanThreshold": "<",
    "LessThanOrEqualToThreshold": "<=",
}


def _alarm_parameters(name: str, props: Mapping[str, Any]) -> dict[str, Any]:
    """An AWS::CloudWatch::Alarm's resolved properties as PutMetricAlarm's arguments."""
    params: dict[str, Any] = {"AlarmName": name}
    params.update({k: props[k] for k in _ALARM_PARAMETERS if k in props})
    params.update({k: int(props[k]) for k in _ALARM_INTEGERS if k in props})
    if "Threshold" in props:
        params["Threshold"] = float(props["Threshold"])
    if "ActionsEnabled" in params:
        params["ActionsEnabled"] = str(params["ActionsEnabled"]).lower() == "true"
    return params


def _alarm_condition(params: Mapping[str, Any]) -> str:
    dimensions = " ".join(f"{d['Name']}={d['Value']}" for d in params.get("Dimensions", []))
    metric = " ".join(
        part for part in (params.get("Namespace"), params.get("MetricName"), dimensions) if part
    )
    operator = _COMPARISONS.get(str(params.get("ComparisonOperator")), "?")
    return f"{metric or 'metric math'} {operator} {params.get('Threshold', 0):g}"


_QUEUE_ATTRIBUTES = (
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "FifoQueue",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
)


def _usage_plan_throttle(throttle: Mapping[str, Any]) -> dict[str, Any]:
    """An AWS::ApiGateway::UsagePlan's Throttle as CreateUsagePlan takes it."""
    out: dict[str, Any] = {}
    if "RateLimit" in throttle:
        out["rateLimit"] = float(throttle["RateLimit"])
    if "BurstLimit" in throttle:
        out["burstLimit"] = int(throttle["BurstLimit"])
    return out


def _as_attribute(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _as_env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Provisioner:
    """Creates a template's resources on the (moto) endpoint the session points at."""

    def __init__(
        self,
        template_path: Path,
        session: Session,
        *,
        time_scale: float = 1.0,
        stack_name: str = STACK_NAME,
        parameter_overrides: Mapping[str, str] | None = None,
        warn: Warn | None = None,
    ) -> None:
        self._path = template_path.resolve()
        self._template = load_template(self._path)
        self._session = session
        self._s3: S3Client = session.client("s3")
        self._sqs: SQSClient = session.client("sqs")
        self._scale = time_scale
        self._warn: Warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
        self.resolver = Resolver(
            self._template,
            stack_name=stack_name,
            region=session.region_name or REGION,
            account_id=ACCOUNT_ID,
            parameter_overrides=parameter_overrides,
        )
        self.stack = ProvisionedStack(stack_name=stack_name, template_path=self._path)
        # response headers policy id (local) -> its CORS, for the distributions that use it
        self._header_policies: dict[str, CdnCors | None] = {}

    @property
    def template(self) -> Mapping[str, Any]:
        return self._template

    def _resources(self, *types: str) -> list[tuple[str, Mapping[str, Any]]]:
        out = []
        for logical_id, resource in (self._template.get("Resources") or {}).items():
            if resource.get("Type") in types and self.resolver.resource_enabled(resource):
                out.append((logical_id, resource))
        return out

    def provision(self) -> ProvisionedStack:
        self._queues()
        buckets = self._buckets()
        self._register_functions()  # before the others: an alarm may name a function
        self._cdn()  # before the others: a bucket policy names its distribution
        self._others()
        for logical_id, name, props in buckets:
            self._bucket_notifications(logical_id, name, props)
        self._functions()
        self._environment()
        return self.stack

    # -- SQS ----------------------------------------------------------------------
    def _queues(self) -> None:
        pending = dict(self._resources("AWS::SQS::Queue"))
        while pending:
            ready = [
                logical_id
                for logical_id, resource in pending.items()
                if not (references(resource.get("Properties", {})) & pending.keys())
            ]
            if not ready:
                raise TemplateError(f"queues refer to each other in a cycle: {sorted(pending)}")
            for logical_id in sorted(ready):
                self._create_queue(logical_id, pending.pop(logical_id).get("Properties", {}))

    def _create_queue(self, logical_id: str, raw_props: Mapping[str, Any]) -> None:
        props = self.resolver.resolve(raw_props)
        fifo = str(props.get("FifoQueue", "")).lower() == "true"
        name = str(props.get("QueueName") or f"{self.resolver.stack_name}-{logical_id}")
        if fifo and not name.endswith(".fifo"):
            name += ".fifo"
        attributes = {k: _as_attribute(props[k]) for k in _QUEUE_ATTRIBUTES if k in props}
        template_visibility = int(props.get("VisibilityTimeout", SQS_DEFAULT_VISIBILITY))
        visibility = scaled_visibility(template_visibility, self._scale)
        attributes["VisibilityTimeout"] = str(visibility)
        dlq_logical: str | None = None
        max_receive: int | None = None
        if "RedrivePolicy" in props:
            policy = props["RedrivePolicy"]
            if isinstance(policy, str):
                policy = json.loads(policy)
            max_receive = int(policy["maxReceiveCount"])
            attributes["RedrivePolicy"] = json.dumps(
                {
                    "deadLetterTargetArn": policy["deadLetterTargetArn"],
                    "maxReceiveCount": max_receive,
                }
            )
            dlq_logical = next(
                (
                    q.logical_id
                    for q in self.stack.queues.values()
                    if q.arn == policy["deadLetterTargetArn"]
                ),
                None,
            )
        url = self._sqs.create_queue(
            QueueName=name,
            Attributes=attributes,  # type: ignore[arg-type]
        )["QueueUrl"]
        arn = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.stack.queues[logical_id] = QueueInfo(
            logical_id=logical_id,
            name=name,
            url=url,
            arn=arn,
            visibility_timeout=visibility,
            template_visibility_timeout=template_visibility,
            dead_letter_target=dlq_logical,
            max_receive_count=max_receive,
        )
        self.resolver.register(logical_id, url, {"Arn": arn, "QueueName": name, "QueueUrl": url})

    # -- S3 -------------------------------------------------------------------------
    def _buckets(self) -> list[tuple[str, str, Mapping[str, Any]]]:
        created = []
        for logical_id, resource in self._resources("AWS::S3::Bucket"):
            raw_props = resource.get("Properties", {}) or {}
            name = _bucket_name(logical_id, raw_props, self.resolver)
            self._s3.create_bucket(Bucket=name)
            arn = f"arn:aws:s3:::{name}"
            self.stack.buckets[logical_id] = BucketInfo(logical_id=logical_id, name=name, arn=arn)
            self.resolver.register(
                logical_id,
                name,
                {
                    "Arn": arn,
                    "DomainName": f"{name}.s3.amazonaws.com",
                    "RegionalDomainName": f"{name}.s3.{self.resolver.region}.amazonaws.com",
                    "WebsiteURL": f"http://{name}.s3-website-{self.resolver.region}.amazonaws.com",
                },
            )
            created.append((logical_id, name, raw_props))
            if "CorsConfiguration" in raw_props:
                cors = self.resolver.resolve(raw_props["CorsConfiguration"])
                self._s3.put_bucket_cors(
                    Bucket=name,
                    CORSConfiguration={"CORSRules": _cors_rules(cors)},  # type: ignore[typeddict-item]
                )
            if "VersioningConfiguration" in raw_props:
                status = self.resolver.resolve(raw_props["VersioningConfiguration"])["Status"]
                self._s3.put_bucket_versioning(
                    Bucket=name, VersioningConfiguration={"Status": status}
                )
            if "LifecycleConfiguration" in raw_props:
                cfn = self.resolver.resolve(raw_props["LifecycleConfiguration"])
                rules = _lifecycle_rules(cfn, name, self._warn)
                if rules:  # kept by moto, which never applies them
                    self._s3.put_bucket_lifecycle_configuration(
                        Bucket=name,
                        LifecycleConfiguration={"Rules": rules},  # type: ignore[typeddict-item]
                    )
                    self.stack.lifecycles[name] = rules
        return created

    def _bucket_notifications(self, logical_id: str, name: str, props: Mapping[str, Any]) -> None:
        if "NotificationConfiguration" not in props:
            return
        cfn = self.resolver.resolve(props["NotificationConfiguration"])
        config = _notification_configuration(cfn, name, self._warn)
        if config:
            # moto delivers matching events to the queues in-process, after an s3:TestEvent.
            self._s3.put_bucket_notification_configuration(
                Bucket=name,
                NotificationConfiguration=config,  # type: ignore[arg-type]
            )

    # -- CDN ------------------------------------------------------------------------
    def _cdn(self) -> None:
        """Origin access controls and distributions are created in moto (cache policies
        are not: moto has none); the storage endpoint stands in for each distribution's
        domain (cdn.py)."""
        cloudfront: Any = self._session.client("cloudfront")
        for logical_id, resource in self._resources("AWS::CloudFront::OriginAccessControl"):
            config = self.resolver.resolve(resource.get("Properties", {}))
            created = cloudfront.create_origin_access_control(
                OriginAccessControlConfig=config["OriginAccessControlConfig"]
            )["OriginAccessControl"]
            self.resolver.register(logical_id, created["Id"], {"Id": created["Id"]})
            self.stack.other_resources[logical_id] = str(created["Id"])
        for logical_id, _resource in self._resources("AWS::CloudFront::CachePolicy"):
            local_id = f"local-{logical_id}"
            self.resolver.register(logical_id, local_id, {"Id": local_id})
            self.stack.not_emulated[logical_id] = "AWS::CloudFront::CachePolicy"
        for logical_id, resource in self._resources("AWS::CloudFront::ResponseHeadersPolicy"):
            # kept for the stand-in to apply (its CORS), as cache policies not made in moto
            local_id = f"local-{logical_id}"
            config = self.resolver.resolve(resource.get("Properties", {}))
            config = config.get("ResponseHeadersPolicyConfig") or {}
            left_out = sorted(k for k in config if k not in {"Name", "Comment", "CorsConfig"})
            if left_out:
                self._warn(
                    f"response headers policy {logical_id}: {', '.join(left_out)} not emulated"
                )
            self._header_policies[local_id] = cdn_cors(config)
            self.resolver.register(logical_id, local_id, {"Id": local_id})
            self.stack.other_resources[logical_id] = local_id
        for logical_id, resource in self._resources("AWS::CloudFront::Distribution"):
            self._distribution(cloudfront, logical_id, resource.get("Properties", {}))

    def _distribution(self, cloudfront: Any, logical_id: str, raw: Mapping[str, Any]) -> None:
        cfn = self.resolver.resolve(raw)["DistributionConfig"]
        domains = [str(o.get("DomainName", "")) for o in cfn.get("Origins", [])]
        names = [b.name for b in self.stack.buckets.values()]
        buckets = tuple(b for d in domains if (b := origin_bucket(d, names)) is not None)
        reference = f"{self.resolver.stack_name}-{logical_id}"
        try:
            created = cloudfront.create_distribution(
                DistributionConfig=distribution_config(cfn, reference)
            )["Distribution"]
            dist_id, domain, in_moto = str(created["Id"]), str(created["DomainName"]), True
        except Exception as exc:  # moto or botocore refused the config: still stood in for
            self._warn(f"distribution {logical_id}: {exc}; not created in moto")
            dist_id, in_moto = f"LOCAL{logical_id.upper()}"[:14], False
            domain = f"{dist_id.lower()}.cloudfront.net"
        arn = f"arn:aws:cloudfront::{ACCOUNT_ID}:distribution/{dist_id}"
        self.resolver.register(logical_id, dist_id, {"DomainName": domain, "Id": dist_id})
        policy = str(cfn["DefaultCacheBehavior"].get("ResponseHeadersPolicyId", ""))
        if any(b.get("ResponseHeadersPolicyId") for b in cfn.get("CacheBehaviors", [])):
            self._warn(
                f"distribution {logical_id}: per-path response headers policies not emulated"
            )
        cors = self._header_policies.get(policy)
        self.stack.cdns[logical_id] = CdnInfo(
            logical_id, dist_id, arn, domain, buckets, in_moto, cors
        )
        self.stack.other_resources[logical_id] = dist_id

    def _bucket_policy(self, logical_id: str, raw: Mapping[str, Any]) -> None:
        """Kept for the storage endpoint to apply, not given to moto: moto evaluates bucket
        policies on object requests with conditions ignored (a Deny of plain HTTP would
        refuse every request)."""
        props = self.resolver.resolve(raw)
        bucket = str(props["Bucket"])
        document = props["PolicyDocument"]
        self.stack.bucket_policies[bucket] = (
            json.loads(document) if isinstance(document, str) else dict(document)
        )
        self.resolver.register(logical_id, bucket)
        self.stack.other_resources[logical_id] = bucket

    # -- everything else -------------------------------------------------------
    def _others(self) -> None:
        handled = {"AWS::SQS::Queue", "AWS::S3::Bucket", "AWS::Serverless::Function"}
        handled.add(EVENT_SOURCE_MAPPING)  # delivered by the dispatcher (_functions)
        handled |= _CDN_TYPES
        for logical_id, resource in (self._template.get("Resources") or {}).items():
            kind = str(resource.get("Type", ""))
            if kind in handled or not self.resolver.resource_enabled(resource):
                continue
            props = resource.get("Properties", {}) or {}
            default_name = f"{self.resolver.stack_name}-{logical_id}"
            arn = f"arn:aws:local:{self.resolver.region}:{ACCOUNT_ID}:{logical_id}"
            if kind == "AWS::Events::EventBus":
                name = str(self.resolver.resolve(props.get("Name", default_name)))
                events: Any = self._session.client("events")
                arn = events.create_event_bus(Name=name)["EventBusArn"]
                self.resolver.register(logical_id, name, {"Arn": arn, "Name": name})
                self.stack.other_resources[logical_id] = name
            elif kind == "AWS::SNS::Topic":
                name = str(self.resolver.resolve(props.get("TopicName", default_name)))
                sns: Any = self._session.client("sns")
                arn = sns.create_topic(Name=name)["TopicArn"]
                self.resolver.register(logical_id, arn, {"TopicName": name, "TopicArn": arn})
                self.stack.other_resources[logical_id] = arn
            elif kind == "AWS::CloudWatch::Alarm":
                self._alarm(logical_id, props, default_name)
            elif kind == "AWS::ApiGateway::UsagePlan":
                self._usage_plan(logical_id, props, default_name)
            elif kind == "AWS::S3::BucketPolicy":
                self._bucket_policy(logical_id, props)
            elif kind == "AWS::IAM::ManagedPolicy":
                name = str(self.resolver.resolve(props.get("ManagedPolicyName", default_name)))
                self.resolver.register(logical_id, f"arn:aws:iam::{ACCOUNT_ID}:policy/{name}")
                self.stack.not_emulated[logical_id] = kind
            else:
                # IAM roles, log groups, queue policies...: nothing to run locally; said so.
                self.resolver.register(logical_id, default_name, {"Arn": arn})
                if kind not in _EMULATED_ELSEWHERE:
                    self.stack.not_emulated[logical_id] = kind

    def _alarm(self, logical_id: str, raw_props: Mapping[str, Any], default_name: str) -> None:
        """Created in moto, which keeps but never evaluates it: the alarm is there to be
        listed (`describe-alarms`), not to fire locally."""
        try:
            props = self.resolver.resolve(raw_props)
        except TemplateError as exc:
            self._warn(f"alarm {logical_id}: {exc}; not created")
            self.resolver.register(logical_id, default_name)
            self.stack.not_emulated[logical_id] = "AWS::CloudWatch::Alarm"
            return
        name = str(props.get("AlarmName") or default_name)
        params = _alarm_parameters(name, props)
        cloudwatch: Any = self._session.client("cloudwatch")
        cloudwatch.put_metric_alarm(**params)
        (created,) = cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"]
        arn = str(created["AlarmArn"])
        self.resolver.register(logical_id, name, {"Arn": arn})
        self.stack.alarms[logical_id] = AlarmInfo(
            logical_id=logical_id,
            name=name,
            arn=arn,
            condition=_alarm_condition(params),
            actions=tuple(str(a) for a in params.get("AlarmActions", [])),
        )

    def _usage_plan(self, logical_id: str, raw_props: Mapping[str, Any], default_name: str) -> None:
        """Created in moto (throttle and quota as the template has them) for the tenants' usage
        keys to join. Its ApiStages are left out: the API is not in moto (the API server
        stands in for it)."""
        try:
            props = self.resolver.resolve({k: v for k, v in raw_props.items() if k != "ApiStages"})
        except TemplateError as exc:
            self._warn(f"usage plan {logical_id}: {exc}; not created")
            self.resolver.register(logical_id, default_name)
            self.stack.not_emulated[logical_id] = "AWS::ApiGateway::UsagePlan"
            return
        name = str(props.get("UsagePlanName") or default_name)
        params: dict[str, Any] = {"name": name, "description": str(props.get("Description", ""))}
        throttle = _usage_plan_throttle(props.get("Throttle") or {})
        if throttle:
            params["throttle"] = throttle
        quota = props.get("Quota") or {}
        if quota:
            params["quota"] = {"limit": int(quota["Limit"]), "period": str(quota["Period"])}
            params["quota"] |= {"offset": int(quota["Offset"])} if "Offset" in quota else {}
        apigateway: Any = self._session.client("apigateway")
        plan_id = str(apigateway.create_usage_plan(**params)["id"])
        self.resolver.register(logical_id, plan_id)
        described = []
        if "rateLimit" in throttle:
            described.append(f"{throttle['rateLimit']:g}/s")
        if "burstLimit" in throttle:
            described.append(f"burst {throttle['burstLimit']}")
        self.stack.usage_plans[logical_id] = UsagePlanInfo(
            logical_id, name, plan_id, ", ".join(described)
        )

    # -- functions ------------------------------------------------------------------
    def _globals(self) -> Mapping[str, Any]:
        return (self._template.get("Globals") or {}).get("Function") or {}

    def _function_props(self, resource: Mapping[str, Any]) -> dict[str, Any]:
        merged = {k: v for k, v in self._globals().items() if k != "Environment"}
        merged.update(resource.get("Properties", {}) or {})
        return merged

    def _register_functions(self) -> None:
        for logical_id, resource in self._resources("AWS::Serverless::Function"):
            props = self._function_props(resource)
            name = str(
                self.resolver.resolve(props.get("FunctionName"))
                or f"{self.resolver.stack_name}-{logical_id}"
            )
            arn = f"arn:aws:lambda:{self.resolver.region}:{ACCOUNT_ID}:function:{name}"
            self.resolver.register(logical_id, name, {"Arn": arn})
            alias = self.resolver.resolve(props.get("AutoPublishAlias"))
            if alias and alias is not NO_VALUE:
                # SAM's references to what AutoPublishAlias makes (the authorizer names one)
                self.resolver.register(f"{logical_id}.Alias", f"{arn}:{alias}")
                self.resolver.register(f"{logical_id}.Version", f"{arn}:1")

    def _functions(self) -> None:
        for logical_id, resource in self._resources("AWS::Serverless::Function"):
            props = self._function_props(resource)
            name = str(self.resolver.ref(logical_id))
            code_uri = self.resolver.resolve(props.get("CodeUri", "."))
            if not isinstance(code_uri, str):
                raise TemplateError(f"{logical_id}: CodeUri must be a local directory")
            sqs_sources: list[SqsEventSource] = []
            schedules: list[ScheduleSource] = []
            serves_api = False
            for event_name, event in (props.get("Events") or {}).items():
                kind = event.get("Type")
                event_props = self.resolver.resolve(event.get("Properties", {}) or {})
                if str(event_props.get("Enabled", True)).lower() == "false":
                    continue
                if kind == "SQS":
                    sqs_sources.append(self._sqs_source(logical_id, event_name, event_props))
                elif kind in {"Schedule", "ScheduleV2"}:
                    source = self._schedule(logical_id, event_name, event_props)
                    if source is not None:
                        schedules.append(source)
                elif kind in {"Api", "HttpApi"}:
                    serves_api = True
                else:
                    self._warn(f"{logical_id}: event {event_name} of type {kind} is not emulated")
            sqs_sources += self._mapped_sources(logical_id)
            timeout = int(self.resolver.resolve(props.get("Timeout", LAMBDA_DEFAULT_TIMEOUT)))
            reserved = self.resolver.resolve(props.get("ReservedConcurrentExecutions"))
            alias = self.resolver.resolve(props.get("AutoPublishAlias"))
            snap_start = self.resolver.resolve(props.get("SnapStart")) or {}
            build_method = (resource.get("Metadata") or {}).get("BuildMethod")
            vpc = self.resolver.resolve(props.get("VpcConfig"))
            vpc_subnets = vpc.get("SubnetIds", []) if isinstance(vpc, Mapping) else []
            self.stack.functions[logical_id] = FunctionInfo(
                logical_id=logical_id,
                name=name,
                handler=str(self.resolver.resolve(props.get("Handler", "app.handler"))),
                code_dir=(self._path.parent / code_uri).resolve(),
                # API Gateway's caller waits in real time: the API's Timeout is not scaled
                timeout=timeout if serves_api else scaled_timeout(timeout, self._scale),
                template_timeout=timeout,
                memory_size=int(
                    self.resolver.resolve(props.get("MemorySize", LAMBDA_DEFAULT_MEMORY))
                ),
                arn=str(self.resolver.get_att(logical_id, "Arn")),
                sqs_sources=tuple(sqs_sources),
                schedules=tuple(schedules),
                serves_api=serves_api,
                alias=str(alias) if alias and alias is not NO_VALUE else None,
                snap_start=isinstance(snap_start, Mapping)
                and snap_start.get("ApplyOn") == "PublishedVersions",
                build_method=str(build_method) if build_method else None,
                vpc_subnets=tuple(str(subnet) for subnet in vpc_subnets),
                reserved_concurrency=(
                    int(reserved) if reserved is not None and reserved is not NO_VALUE else None
                ),
            )

    def _mapped_sources(self, function_id: str) -> list[SqsEventSource]:
        """The template's own AWS::Lambda::EventSourceMapping resources that feed this
        function (FunctionName: !Ref <function>, .Alias, .Version or !GetAtt .Arn) from a
        queue of the stack, delivered as its SQS events are."""
        names = {f"{function_id}.Alias", f"{function_id}.Version", function_id}
        sources = []
        for mapping_id, resource in self._resources(EVENT_SOURCE_MAPPING):
            raw = resource.get("Properties", {}) or {}
            target = raw.get("FunctionName")
            refs = references(target)
            if not refs & names and not (
                isinstance(target, str) and target.split(":")[-1] == self.resolver.ref(function_id)
            ):
                continue
            props = self.resolver.resolve(raw)
            if str(props.get("Enabled", True)).lower() == "false":
                continue
            self.stack.other_resources[mapping_id] = f"{props['EventSourceArn']} -> {function_id}"
            sources.append(
                self._sqs_source(
                    function_id, mapping_id, {**props, "Queue": props["EventSourceArn"]}
                )
            )
        return sources

    def _sqs_source(
        self, function_id: str, event_name: str, props: Mapping[str, Any]
    ) -> SqsEventSource:
        queue_arn = str(props["Queue"])
        queue = next((q for q in self.stack.queues.values() if q.arn == queue_arn), None)
        if queue is None:
            raise TemplateError(
                f"{function_id}.{event_name}: queue {queue_arn} is not in the stack"
            )
        scaling = props.get("ScalingConfig") or {}
        return SqsEventSource(
            event_name=event_name,
            queue=queue,
            batch_size=int(props.get("BatchSize", 10)),
            report_batch_item_failures="ReportBatchItemFailures"
            in (props.get("FunctionResponseTypes") or []),
            maximum_concurrency=(
                int(scaling["MaximumConcurrency"]) if "MaximumConcurrency" in scaling else None
            ),
            batching_window=float(props.get("MaximumBatchingWindowInSeconds", 0)),
        )

    def _schedule(
        self, function_id: str, event_name: str, props: Mapping[str, Any]
    ) -> ScheduleSource | None:
        expression = str(props.get("Schedule") or props.get("ScheduleExpression") or "")
        period = rate_seconds(expression)
        if period is None:
            self._warn(f"{function_id}.{event_name}: only rate() schedules run locally")
            return None
        raw_input = props.get("Input")
        return ScheduleSource(
            event_name=event_name,
            expression=expression,
            period_seconds=period,
            input=json.loads(raw_input) if isinstance(raw_input, str) else raw_input,
        )

    # -- environment ----------------------------------------------------------------
    def _environment(self) -> None:
        """Globals' variables, then each function's own (one process runs them all)."""
        layers = [((self._globals().get("Environment") or {}).get("Variables") or {})]
        for _logical_id, resource in self._resources("AWS::Serverless::Function"):
            own = ((resource.get("Properties") or {}).get("Environment") or {}).get("Variables")
            if own:
                layers.append(own)
        parameters = set(self.resolver.parameters)
        for variables in layers:
            for name, raw in variables.items():
                try:
                    value = self.resolver.resolve(raw)
                except TemplateError as exc:
                    self._warn(f"environment {name}: {exc}; left unset")
                    continue
                if value is NO_VALUE:
                    continue
                text = _as_env_value(value)
                previous = self.stack.environment.get(name)
                if previous is not None and previous != text:
                    self._warn(f"environment {name} differs between functions; using {text!r}")
                self.stack.environment[name] = text
                if "{{resolve:" in text:
                    self.stack.environment_sources[name] = "dynamic"
                elif {r for r in references(raw) if not r.startswith("AWS::")} - parameters:
                    self.stack.environment_sources[name] = "resource"
                else:
                    self.stack.environment_sources[name] = "setting"
