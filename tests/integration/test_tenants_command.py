"""`python -m infra.tenants` against moto (Secrets Manager, API Gateway, CloudFormation, in
this process) and a MongoDB (the embedded server, or MONGO_URI's): what it creates is what
the functions then find, through `authenticate` and `signing_secrets` with a MongoTenantStore
and a SecretsManagerSource over the same MongoDB and Secrets Manager."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalicelib.adapters.mongo_tenants import MongoTenantStore
from chalicelib.adapters.secrets_manager import SecretsManagerSource
from chalicelib.config import Settings
from chalicelib.domain.tenancy import key_hash, key_id
from chalicelib.services.deps import Dependencies
from chalicelib.services.tenants import authenticate, signing_secrets
from moto import mock_aws
from pymongo.database import Database

from infra import tenants as command
from tests.fakes import make_world

REGION = "us-east-1"
PREFIX = "shop/tenants/"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    code: int
    out: str
    err: str

    def value(self, word: str, tenant: str) -> str:
        """The secret of the `<word> <tenant> <secret>` line."""
        (line,) = [x for x in self.out.splitlines() if x.startswith(f"{word} {tenant} ")]
        return line.split(" ", 2)[2]


@dataclass
class World:
    db: Database[Any]
    uri: str
    plan_id: str

    def run(self, *argv: str, where: tuple[str, ...] | None = None) -> Run:
        out, err = io.StringIO(), io.StringIO()
        options = where if where is not None else self.options()
        code = command.main([*options, *argv], stdout=out, stderr=err, env={})
        return Run(code, out.getvalue(), err.getvalue())

    def options(self, *, usage: bool = True) -> tuple[str, ...]:
        plan = ("--usage-plan-id", self.plan_id) if usage else ()
        return (
            "--mongo-uri",
            self.uri,
            "--mongo-db",
            self.db.name,
            "--secrets-prefix",
            PREFIX,
            *plan,
        )

    def deps(self) -> Dependencies:
        """The functions' view: MongoDB's tenants, Secrets Manager read with no cache."""
        source = SecretsManagerSource(lambda: boto3.client("secretsmanager", region_name=REGION), 0)
        settings = Settings(tenant_secrets_prefix=PREFIX, default_tenant="someone-else")
        return make_world(settings, tenants=MongoTenantStore(self.db), secrets=source).deps

    def secret(self, tenant: str) -> dict[str, Any]:
        client = boto3.client("secretsmanager", region_name=REGION)
        raw = client.get_secret_value(SecretId=f"{PREFIX}{tenant}/webhook")["SecretString"]
        value: dict[str, Any] = json.loads(raw)
        return value


def _uri(db: Database[Any]) -> str:
    if os.environ.get("MONGO_URI", "").strip():
        return os.environ["MONGO_URI"].strip()
    host, port = db.client.address or ("127.0.0.1", 27017)
    return f"mongodb://{host}:{port}/?directConnection=true"


@pytest.fixture
def world(mongo_db: Database[Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    mongo_db.command("ping")  # the client knows its server's address
    with mock_aws():
        plan = boto3.client("apigateway", region_name=REGION).create_usage_plan(name="tenants")
        yield World(mongo_db, _uri(mongo_db), plan["id"])


def _caller(world: World, key: str) -> str | None:
    found = authenticate(world.deps(), f"Bearer {key}")
    return found.tenant if found else None


def test_create_prints_a_key_that_authenticates_and_a_secret_that_signs(world: World) -> None:
    run = world.run("create", "acme", "--webhook-url", "https://acme.example/hooks")
    assert run.code == 0, run.err
    key, secret = run.value("api-key", "acme"), run.value("webhook-secret", "acme")
    assert key.startswith("ipk_") and secret.startswith("whsec_")
    assert _caller(world, key) == "acme"
    assert _caller(world, key + "x") is None
    assert signing_secrets(world.deps(), "acme") == [secret]
    tenant = MongoTenantStore(world.db).get_tenant("acme")
    assert tenant is not None and tenant.webhook_url == "https://acme.example/hooks"
    # its usage key is the API Gateway key attached to the usage plan
    gateway = boto3.client("apigateway", region_name=REGION)
    (attached,) = gateway.get_usage_plan_keys(usagePlanId=world.plan_id)["items"]
    assert attached["value"] == tenant.usage_key and attached["name"] == "acme"
    # the key is nowhere in MongoDB, only its hash
    (stored,) = world.db["api_keys"].find()
    assert stored["_id"] == key_id(key) and stored["hash"] == key_hash(key)
    assert key not in json.dumps(stored, default=str)

    again = world.run("create", "acme")
    assert again.code == 1 and again.out == ""
    assert again.err == "error: tenant acme exists (add-key acme issues another key)\n"


def test_revoked_keys_no_longer_authenticate(world: World) -> None:
    first = world.run("create", "acme").value("api-key", "acme")
    added = world.run("add-key", "acme", "--label", "ci")
    assert added.code == 0, added.err
    second = added.value("api-key", "acme")
    assert {_caller(world, first), _caller(world, second)} == {"acme"}

    revoked = world.run("revoke", key_id(first))
    assert revoked.code == 0, revoked.err
    assert _caller(world, first) is None
    assert _caller(world, second) == "acme"

    twice = world.run("revoke", key_id(first))
    assert (twice.code, twice.err) == (1, f"error: key {key_id(first)} was revoked already\n")
    unknown = world.run("revoke", "nosuchkey000")
    assert (unknown.code, unknown.err) == (1, "error: no key nosuchkey000\n")

    listed = world.run("keys", "acme")
    assert listed.code == 0, listed.err
    header, *rows = listed.out.splitlines()
    assert header.split() == ["KEY", "ID", "LABEL", "CREATED", "REVOKED"]
    by_id = {row.split()[0]: row.split() for row in rows}
    assert by_id[key_id(first)][1] == "first" and by_id[key_id(first)][3] != "-"
    assert by_id[key_id(second)][1] == "ci" and by_id[key_id(second)][3] == "-"
    for secret in (first, second, key_hash(first), key_hash(second)):
        assert secret not in listed.out


def test_a_rotation_signs_with_both_secrets_until_it_is_finished(world: World) -> None:
    old = world.run("create", "acme").value("webhook-secret", "acme")
    rotated = world.run("rotate-secret", "acme")
    assert rotated.code == 0, rotated.err
    new = rotated.value("webhook-secret", "acme")
    assert new != old
    assert signing_secrets(world.deps(), "acme") == [new, old]
    assert world.secret("acme") == {"current": new, "previous": [old]}

    finished = world.run("finish-rotation", "acme")
    assert finished.code == 0, finished.err
    assert signing_secrets(world.deps(), "acme") == [new]

    assert world.run("rotate-secret", "nobody").code == 1
    assert world.run("finish-rotation", "nobody").err == "error: no tenant nobody\n"


def test_list_shows_tenants_never_a_key_a_hash_or_a_usage_key(world: World) -> None:
    acme = world.run("create", "acme", "--webhook-url", "https://acme.example/h")
    beta = world.run("create", "beta")
    keys = [acme.value("api-key", "acme"), beta.value("api-key", "beta")]
    keys.append(world.run("add-key", "beta").value("api-key", "beta"))
    listed = world.run("list")
    assert listed.code == 0, listed.err
    header, *rows = listed.out.splitlines()
    assert header.split()[:2] == ["TENANT", "CREATED"]
    assert [row.split()[0] for row in rows] == ["acme", "beta"]
    assert rows[0].split()[2:] == ["1", "yes", "https://acme.example/h"]
    assert rows[1].split()[2:] == ["2", "yes", "-"]
    usage_keys = [t.usage_key for t in MongoTenantStore(world.db).list_tenants()]
    for secret in [*keys, *map(key_hash, keys), *usage_keys]:
        assert secret not in listed.out + listed.err


def test_without_a_usage_plan_the_tenant_is_warned_of(world: World) -> None:
    run = world.run("create", "acme", where=world.options(usage=False))
    assert run.code == 0
    assert "warning: no usage plan (--usage-plan-id): acme gets no usage key" in run.err
    assert "ApiKeyRequired" in run.err
    tenant = MongoTenantStore(world.db).get_tenant("acme")
    assert tenant is not None and tenant.usage_key == ""
    assert _caller(world, run.value("api-key", "acme")) == "acme"


def test_an_unknown_usage_plan_is_an_error_and_creates_nothing(world: World) -> None:
    where = (*world.options(usage=False), "--usage-plan-id", "nosuchplan")
    run = world.run("create", "acme", where=where)
    assert (run.code, run.out, run.err) == (1, "", "error: no usage plan nosuchplan\n")
    assert MongoTenantStore(world.db).get_tenant("acme") is None
    assert boto3.client("apigateway", region_name=REGION).get_api_keys()["items"] == []


def test_the_stack_says_where_the_tenants_are(world: World) -> None:
    """A stack whose Outputs are those of template.yaml (literals: moto's CloudFormation
    creates no usage plan), the MongoDB URI in the secret its output names."""
    boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="shop/mongo-uri", SecretString=world.uri
    )
    outputs = {
        "MongoUriSecretName": "shop/mongo-uri",
        "TenantSecretsPrefix": PREFIX,
        "TenantUsagePlanId": world.plan_id,
    }
    template = {
        "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {name: {"Value": value} for name, value in outputs.items()},
    }
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    cloudformation.create_stack(StackName="shop", TemplateBody=json.dumps(template))

    stack = ("--stack", "shop", "--mongo-db", world.db.name)
    run = world.run("create", "acme", where=stack)
    assert run.code == 0, run.err
    assert _caller(world, run.value("api-key", "acme")) == "acme"
    assert world.secret("acme")["current"] == run.value("webhook-secret", "acme")
    gateway = boto3.client("apigateway", region_name=REGION)
    assert len(gateway.get_usage_plan_keys(usagePlanId=world.plan_id)["items"]) == 1

    missing = world.run("list", where=("--stack", "nope"))
    assert missing.code == 1
    assert missing.err.startswith("error: stack nope: ValidationError")
    assert len(missing.err.splitlines()) == 1


def test_usage_errors_exit_2(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    no_prefix = world.run("list", where=("--mongo-uri", world.uri))
    assert no_prefix.code == 2
    assert no_prefix.err == "error: where are the tenants? pass --stack or --secrets-prefix\n"
    for argv in (
        ["create", "Acme"],
        ["create", "acme", "--webhook-url", "ftp://x"],
        ["rotate"],
        [],
    ):
        with pytest.raises(SystemExit) as exited:
            command.main([*world.options(), *argv], env={})
        assert exited.value.code == 2, argv
    assert "a tenant name is 1-40 of a-z, 0-9 and -" in capsys.readouterr().err


def test_the_module_runs_from_the_repository_root() -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"MONGO_URI", "PYTHONPATH"}}
    done = subprocess.run(
        [sys.executable, "-m", "infra.tenants", "list"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "error: where are the tenants? pass --stack or --mongo-uri (or MONGO_URI) and "
        "--secrets-prefix\n"
    )
