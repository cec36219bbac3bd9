"""Tenants of a deployed stack: create one, issue, list and revoke its API keys, rotate its
webhook signing secret.

    python -m infra.tenants --stack image-pipeline create acme --webhook-url https://acme.example/hooks
    python -m infra.tenants --stack image-pipeline list
    python -m infra.tenants --stack image-pipeline keys acme
    python -m infra.tenants --stack image-pipeline add-key acme --label ci
    python -m infra.tenants --stack image-pipeline revoke k1a2b3c4d5e6
    python -m infra.tenants --stack image-pipeline rotate-secret acme
    python -m infra.tenants --stack image-pipeline finish-rotation acme

`--stack` reads the stack's Outputs (MongoUriSecretName, TenantSecretsPrefix,
TenantUsagePlanId) and the MongoDB URI from Secrets Manager. Without it: `--mongo-uri` (or
MONGO_URI), `--secrets-prefix` and, to give new tenants the usage key API Gateway requires,
`--usage-plan-id`; each also overrides what the stack says.

An API key and a signing secret are printed once, on stdout (`api-key <tenant> <key>`,
`webhook-secret <tenant> <secret>`, the lines `serve` prints); only the key's hash is kept,
so a lost key is revoked and replaced, never shown again. A rotated secret signs beside the
previous one (two signatures per webhook) until `finish-rotation`, so receivers switch when
they are ready. A revoked key is refused once the authorizer's cache of it expires (60 s).

Exit status: 0 done, 2 a usage error (options, names), 1 anything else (one line on stderr).
The same code (chalicelib.services.tenant_admin) creates the local emulator's tenants.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from pymongo import MongoClient
from pymongo.errors import PyMongoError

FUNCTIONS = Path(__file__).resolve().parent.parent / "functions"
if str(FUNCTIONS) not in sys.path:
    sys.path.insert(0, str(FUNCTIONS))

from chalicelib.adapters.mongo_tenants import MongoTenantStore  # noqa: E402
from chalicelib.adapters.secrets_manager import SecretsManagerWriter, read_secret  # noqa: E402
from chalicelib.adapters.usage_plan import ApiGatewayUsageKeys, UsagePlanNotFound  # noqa: E402
from chalicelib.bootstrap import SystemClock  # noqa: E402
from chalicelib.config import Settings  # noqa: E402
from chalicelib.domain.netguard import check_url_syntax  # noqa: E402
from chalicelib.domain.tenancy import is_tenant_name  # noqa: E402
from chalicelib.errors import PipelineError  # noqa: E402
from chalicelib.services import tenant_admin  # noqa: E402
from chalicelib.services.tenant_admin import Admin  # noqa: E402

STACK_OUTPUTS = ("MongoUriSecretName", "TenantSecretsPrefix", "TenantUsagePlanId")
MONGO_TIMEOUT_MS = 10_000


class UsageError(Exception):
    """What was asked cannot be understood (exit status 2)."""


class CommandError(Exception):
    """What was asked cannot be done (exit status 1)."""


@dataclass(frozen=True)
class Connection:
    """Where a stack keeps its tenants."""

    mongo_uri: str
    mongo_db: str
    secrets_prefix: str
    usage_plan_id: str  # "": new tenants get no usage key


# ---------------------------------------------------------------- where


def stack_outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    try:
        (found,) = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as exc:
        raise CommandError(f"stack {stack}: {_short(exc)}") from exc
    return {str(o["OutputKey"]): str(o.get("OutputValue", "")) for o in found.get("Outputs", [])}


def connection(
    args: argparse.Namespace,
    env: Mapping[str, str],
    cloudformation: Callable[[], Any],
    secrets: Callable[[], Any],
) -> Connection:
    """The options', else the stack's (`--stack`), else the environment's."""
    outputs: dict[str, str] = {}
    if args.stack:
        outputs = stack_outputs(cloudformation(), args.stack)
    mongo_uri = args.mongo_uri or ""
    if not mongo_uri and outputs.get("MongoUriSecretName"):
        secret = outputs["MongoUriSecretName"]
        mongo_uri = (read_secret(secrets(), secret) or "").strip()
        if not mongo_uri:
            raise CommandError(f"the secret {secret} (stack {args.stack}) has no MongoDB URI")
    mongo_uri = mongo_uri or env.get("MONGO_URI", "").strip()
    prefix = args.secrets_prefix or outputs.get("TenantSecretsPrefix", "")
    missing = [
        option
        for option, value in (
            ("--mongo-uri (or MONGO_URI)", mongo_uri),
            ("--secrets-prefix", prefix),
        )
        if not value
    ]
    if missing:
        where = (
            f"stack {args.stack} has no such output; pass " if args.stack else "pass --stack or "
        )
        raise UsageError(f"where are the tenants? {where}{' and '.join(missing)}")
    return Connection(
        mongo_uri=mongo_uri,
        mongo_db=args.mongo_db or env.get("MONGO_DB", "") or Settings.mongo_db,
        secrets_prefix=prefix,
        usage_plan_id=args.usage_plan_id or outputs.get("TenantUsagePlanId", ""),
    )


# ---------------------------------------------------------------- what


@dataclass
class Output:
    out: TextIO
    err: TextIO

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        print(text, file=self.err, flush=True)


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _tenant(admin: Admin, name: str) -> None:
    if admin.tenants.get_tenant(name) is None:
        raise CommandError(f"no tenant {name}")


def create(admin: Admin, args: argparse.Namespace, show: Output) -> None:
    if admin.tenants.get_tenant(args.name) is not None:
        raise CommandError(f"tenant {args.name} exists (add-key {args.name} issues another key)")
    if admin.usage is None:
        show.note(
            f"warning: no usage plan (--usage-plan-id): {args.name} gets no usage key, and API "
            "Gateway refuses its requests (ApiKeyRequired) until it has one"
        )
    made = tenant_admin.create_tenant(admin, args.name, webhook_url=args.webhook_url or "")
    show.note(f"tenant {args.name} created; its key and signing secret are shown this once")
    show.line(f"api-key {args.name} {made.api_key}")
    show.line(f"webhook-secret {args.name} {made.webhook_secret}")


def list_tenants(admin: Admin, args: argparse.Namespace, show: Output) -> None:
    keys = tenant_admin.list_keys(admin)
    rows = [["TENANT", "CREATED", "ACTIVE KEYS", "USAGE KEY", "WEBHOOK URL"]]
    for tenant in admin.tenants.list_tenants():
        active = sum(1 for k in keys if k.tenant == tenant.name and k.active)
        usage = "yes" if tenant.usage_key else "no"
        rows.append([tenant.name, tenant.created_at, str(active), usage, tenant.webhook_url or "-"])
    for row in _table(rows):
        show.line(row)


def list_keys(admin: Admin, args: argparse.Namespace, show: Output) -> None:
    _tenant(admin, args.name)
    rows = [["KEY ID", "LABEL", "CREATED", "REVOKED"]]
    for key in tenant_admin.list_keys(admin, args.name):
        rows.append([key.key_id, key.label or "-", key.created_at, key.revoked_at or "-"])
    for row in _table(rows):
        show.line(row)


def add_key(admin: Admin, args: argparse.Namespace, show: Output) -> None:
    key = tenant_admin.add_key(admin, args.name, label=args.label or "")
    show.note(f"a new key for {args.name}; it is shown this once")
    show.line(f"api-key {args.name} {key}")


def revoke(admin: Admin, args: argparse.Namespace, show: Output) -> None:
    found = admin.tenants.find_api_key(args.key_id)
    if found is None:
        raise CommandError(f"no key {args.key_id}")
    if not tenant_admin.revoke_key(admin, args.key_id):
        raise CommandError(f"key {args.key_id} was revoked already")
    show.line(f"revoked {args.key_id} ({found.tenant}); refused within 60 s (authorizer cache)")


def rotate_secret(admin: Admin, args: argparse.Namespace, show: Output) -> None:
    secret = tenant_admin.rotate_webhook_secret(admin, args.name)
    show.note(
        f"{args.name}'s webhooks now carry two signatures, the new secret's and the previous "
        f"one's, until `finish-rotation {args.name}`"
    )
    show.line(f"webhook-secret {args.name} {secret}")


def finish_rotation(admin: Admin, args: argparse.Namespace, show: Output) -> None:
    _tenant(admin, args.name)
    tenant_admin.finish_rotation(admin, args.name)
    show.line(f"{args.name}'s webhooks are signed with its current secret only")


Command = Callable[[Admin, argparse.Namespace, Output], None]
COMMANDS: dict[str, Command] = {
    "create": create,
    "list": list_tenants,
    "keys": list_keys,
    "add-key": add_key,
    "revoke": revoke,
    "rotate-secret": rotate_secret,
    "finish-rotation": finish_rotation,
}


# ---------------------------------------------------------------- command line


def _tenant_name(text: str) -> str:
    if not is_tenant_name(text):
        raise argparse.ArgumentTypeError(f"{text!r}: a tenant name is 1-40 of a-z, 0-9 and -")
    return text


def _webhook_url(text: str) -> str:
    problem = check_url_syntax(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.tenants",
        description="Tenants of a stack: their API keys and webhook signing secrets.",
    )
    where = parser.add_argument_group("where the tenants are")
    where.add_argument("--stack", help="read the rest from this CloudFormation stack's Outputs")
    where.add_argument("--mongo-uri", help="MongoDB URI (default: the stack's secret, MONGO_URI)")
    where.add_argument("--mongo-db", help=f"database (default: MONGO_DB or {Settings.mongo_db})")
    where.add_argument(
        "--secrets-prefix", help="e.g. image-pipeline/tenants/ (TenantSecretsPrefix)"
    )
    where.add_argument("--usage-plan-id", help="the usage plan new tenants' keys join")
    where.add_argument("--region", help="AWS region (default: the environment's)")
    where.add_argument("--endpoint-url", help="AWS endpoint (e.g. the local emulator's)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    made = commands.add_parser("create", help="a tenant, its first API key and signing secret")
    made.add_argument("name", type=_tenant_name)
    made.add_argument("--webhook-url", type=_webhook_url, help="its jobs' default webhook")
    commands.add_parser("list", help="the tenants (never a key or a hash)")
    keys = commands.add_parser("keys", help="a tenant's keys: ids, labels, created, revoked")
    keys.add_argument("name", type=_tenant_name)
    more = commands.add_parser("add-key", help="another API key for a tenant")
    more.add_argument("name", type=_tenant_name)
    more.add_argument("--label", default="", help="what the key is for")
    revoked = commands.add_parser("revoke", help="revoke an API key by its id")
    revoked.add_argument("key_id")
    rotate = commands.add_parser("rotate-secret", help="a new signing secret; the old one too")
    rotate.add_argument("name", type=_tenant_name)
    finish = commands.add_parser("finish-rotation", help="stop signing with the old secret")
    finish.add_argument("name", type=_tenant_name)
    return parser


def _short(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return " ".join(p for p in (str(error.get("Code", "")), str(error.get("Message", ""))) if p)
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def run(
    args: argparse.Namespace,
    show: Output,
    env: Mapping[str, str],
    session: boto3.session.Session,
) -> None:
    def client(name: str) -> Any:
        return session.client(name, endpoint_url=args.endpoint_url)  # type: ignore[call-overload]

    where = connection(
        args, env, lambda: client("cloudformation"), lambda: client("secretsmanager")
    )
    mongo: MongoClient[dict[str, Any]] = MongoClient(
        where.mongo_uri, serverSelectionTimeoutMS=MONGO_TIMEOUT_MS, appname="infra.tenants"
    )
    try:
        admin = Admin(
            tenants=MongoTenantStore(mongo[where.mongo_db]),
            secrets=SecretsManagerWriter(client("secretsmanager")),
            usage=(
                ApiGatewayUsageKeys(client("apigateway"), where.usage_plan_id)
                if where.usage_plan_id
                else None
            ),
            secrets_prefix=where.secrets_prefix,
            clock=SystemClock(),
        )
        COMMANDS[args.command](admin, args, show)
    finally:
        mongo.close()


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    show = Output(stdout or sys.stdout, stderr or sys.stderr)
    try:
        run(
            args,
            show,
            os.environ if env is None else env,
            boto3.session.Session(region_name=args.region),
        )
    except UsageError as exc:
        show.note(f"error: {exc}")
        return 2
    except (CommandError, PipelineError, UsagePlanNotFound) as exc:
        show.note(f"error: {exc}")
        return 1
    except (ClientError, BotoCoreError, PyMongoError) as exc:
        show.note(f"error: {_short(exc)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
