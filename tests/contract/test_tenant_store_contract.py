"""The TenantStore contract, run against every store: the in-memory fake the unit tier uses,
MongoTenantStore on the embedded server, and on `MONGO_URI` when it is set (the kinds of
tests/support/stores.py). And the other adapters of tenancy on moto: SecretsManagerSource
(cached reads), SecretsManagerWriter (create, then new versions) and ApiGatewayUsageKeys."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from chalicelib.adapters.mongo_tenants import MongoTenantStore
from chalicelib.adapters.secrets_manager import SecretsManagerSource, SecretsManagerWriter
from chalicelib.adapters.usage_plan import ApiGatewayUsageKeys, UsagePlanNotFound
from chalicelib.domain.tenancy import ApiKeyRecord, Tenant, key_hash, key_id, new_api_key
from chalicelib.domain.timefmt import iso
from chalicelib.ports import SecretSource, SecretWriter, TenantStore, UsageKeys
from moto import mock_aws
from pymongo import MongoClient
from pymongo.database import Database

from tests.fakes import InMemoryTenantStore
from tests.support.stores import STORE_KINDS

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
REGION = "us-east-1"


@pytest.fixture(params=STORE_KINDS)
def tenant_store(
    request: pytest.FixtureRequest, new_database: Callable[[MongoClient[Any]], Database[Any]]
) -> TenantStore:
    kind = str(request.param)
    if kind == "memory":
        return InMemoryTenantStore()
    server = "embedded_mongo_client" if kind == "mongoeco" else "external_mongo_client"
    return MongoTenantStore(new_database(request.getfixturevalue(server)))


def record(tenant: str, key: str | None = None, label: str = "", at: int = 0) -> ApiKeyRecord:
    value = key or new_api_key()
    return ApiKeyRecord(
        key_id(value), tenant, key_hash(value), iso(NOW + timedelta(seconds=at)), label
    )


# ---------------------------------------------------------------- tenants


def test_tenants_are_put_got_and_listed_by_name(tenant_store: TenantStore) -> None:
    assert tenant_store.get_tenant("acme") is None
    assert tenant_store.list_tenants() == []
    acme = Tenant("acme", iso(NOW), "https://acme.example/h", "usage-1")
    tenant_store.put_tenant(Tenant("zeta", iso(NOW)))
    tenant_store.put_tenant(acme)
    assert tenant_store.get_tenant("acme") == acme
    assert [t.name for t in tenant_store.list_tenants()] == ["acme", "zeta"]
    # put replaces
    moved = Tenant("acme", iso(NOW), "https://acme.example/new", "usage-1")
    tenant_store.put_tenant(moved)
    assert tenant_store.get_tenant("acme") == moved
    assert len(tenant_store.list_tenants()) == 2


# ---------------------------------------------------------------- keys


def test_keys_are_added_found_by_id_and_listed(tenant_store: TenantStore) -> None:
    first, second = record("acme", label="first", at=1), record("acme", label="ci", at=2)
    other = record("beta", at=0)
    for each in (second, other, first):
        tenant_store.add_api_key(each)
    assert tenant_store.find_api_key(first.key_id) == first
    assert tenant_store.find_api_key("nosuchkey000") is None
    assert tenant_store.list_api_keys("acme") == [first, second]  # by creation
    assert tenant_store.list_api_keys("beta") == [other]
    assert tenant_store.list_api_keys("nobody") == []
    assert tenant_store.list_api_keys() == [first, second, other]  # by tenant, then creation


def test_a_key_given_as_is_is_found_by_its_derived_id(tenant_store: TenantStore) -> None:
    given = record("acme", key="my-own-key_123")
    tenant_store.add_api_key(given)
    found = tenant_store.find_api_key(key_id("my-own-key_123"))
    assert found is not None and found.matches("my-own-key_123")
    assert not found.matches("my-own-key_124")


def test_an_active_id_is_not_added_twice(tenant_store: TenantStore) -> None:
    first = record("acme")
    tenant_store.add_api_key(first)
    thief = ApiKeyRecord(first.key_id, "beta", key_hash("another"), iso(NOW))
    with pytest.raises(ValueError, match="taken"):
        tenant_store.add_api_key(thief)
    assert tenant_store.find_api_key(first.key_id) == first


def test_revoking_marks_once_and_frees_the_id(tenant_store: TenantStore) -> None:
    key = record("acme")
    tenant_store.add_api_key(key)
    assert tenant_store.revoke_api_key(key.key_id, NOW) is True
    revoked = tenant_store.find_api_key(key.key_id)
    assert revoked is not None and not revoked.active and revoked.revoked_at == iso(NOW)
    assert tenant_store.revoke_api_key(key.key_id, NOW + timedelta(seconds=1)) is False
    assert tenant_store.revoke_api_key("nosuchkey000", NOW) is False
    again = tenant_store.find_api_key(key.key_id)
    assert again is not None and again.revoked_at == iso(NOW)  # the first revocation stays
    # a revoked id may be added again (a key given again on the command line)
    renewed = ApiKeyRecord(key.key_id, "acme", key.key_hash, iso(NOW + timedelta(1)), "again")
    tenant_store.add_api_key(renewed)
    assert tenant_store.find_api_key(key.key_id) == renewed
    assert tenant_store.list_api_keys("acme") == [renewed]


# ---------------------------------------------------------------- Secrets Manager


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield


@pytest.fixture
def secretsmanager(aws: None) -> Any:
    return boto3.client("secretsmanager", region_name=REGION)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_secret_is_read_once_per_ttl(secretsmanager: Any) -> None:
    secretsmanager.create_secret(Name="t/acme/webhook", SecretString="whsec_one")
    clock, built = Clock(), []

    def factory() -> Any:
        built.append(1)
        return secretsmanager

    source: SecretSource = SecretsManagerSource(factory, ttl=300, monotonic=clock)
    assert built == []  # no client until the first read
    assert source.get("t/acme/webhook") == "whsec_one"
    secretsmanager.put_secret_value(SecretId="t/acme/webhook", SecretString="whsec_two")
    clock.now += 299
    assert source.get("t/acme/webhook") == "whsec_one"  # still cached
    clock.now += 1
    assert source.get("t/acme/webhook") == "whsec_two"  # the ttl has passed
    assert built == [1]


def test_a_missing_secret_is_none_and_cached_too(secretsmanager: Any) -> None:
    clock = Clock()
    source = SecretsManagerSource(lambda: secretsmanager, ttl=60, monotonic=clock)
    assert source.get("t/nobody/webhook") is None
    secretsmanager.create_secret(Name="t/nobody/webhook", SecretString="whsec_late")
    assert source.get("t/nobody/webhook") is None
    clock.now += 60
    assert source.get("t/nobody/webhook") == "whsec_late"


def test_other_errors_are_raised_not_taken_for_missing() -> None:
    class Broken:
        def get_secret_value(self, **_: Any) -> Any:
            raise RuntimeError("throttled")

    source = SecretsManagerSource(Broken, ttl=60)
    with pytest.raises(RuntimeError, match="throttled"):
        source.get("x")


def test_the_writer_creates_then_puts_new_versions(secretsmanager: Any) -> None:
    writer: SecretWriter = SecretsManagerWriter(secretsmanager)
    assert writer.read("t/acme/webhook") is None
    writer.put("t/acme/webhook", "whsec_one")
    assert writer.read("t/acme/webhook") == "whsec_one"
    writer.put("t/acme/webhook", "whsec_two")
    assert writer.read("t/acme/webhook") == "whsec_two"
    versions = secretsmanager.list_secret_version_ids(SecretId="t/acme/webhook")["Versions"]
    assert len(versions) == 2
    assert len(secretsmanager.list_secrets()["SecretList"]) == 1


# ---------------------------------------------------------------- API Gateway


def test_usage_keys_join_the_usage_plan(aws: None) -> None:
    gateway = boto3.client("apigateway", region_name=REGION)
    plan = gateway.create_usage_plan(name="tenants")["id"]
    usage: UsageKeys = ApiGatewayUsageKeys(gateway, plan)
    acme, beta = usage.create("acme"), usage.create("beta")
    assert acme != beta
    attached = gateway.get_usage_plan_keys(usagePlanId=plan)["items"]
    assert sorted((k["name"], k["value"]) for k in attached) == [("acme", acme), ("beta", beta)]
    keys = gateway.get_api_keys(includeValues=True)["items"]
    assert all(k["enabled"] for k in keys) and len(keys) == 2

    with pytest.raises(UsagePlanNotFound, match="no usage plan nosuchplan"):
        ApiGatewayUsageKeys(gateway, "nosuchplan").create("gamma")
    assert len(gateway.get_api_keys()["items"]) == 2  # none made for a plan not there


def test_a_key_the_plan_refuses_is_not_left_behind() -> None:
    class Gateway:
        def __init__(self) -> None:
            self.deleted: list[str] = []

        def get_usage_plan(self, **_: Any) -> Any:
            return {"id": "plan"}

        def create_api_key(self, **_: Any) -> Any:
            return {"id": "k1", "value": "v1"}

        def create_usage_plan_key(self, **_: Any) -> Any:
            raise RuntimeError("LimitExceededException")

        def delete_api_key(self, apiKey: str) -> None:
            self.deleted.append(apiKey)

    gateway = Gateway()
    with pytest.raises(RuntimeError, match="LimitExceeded"):
        ApiGatewayUsageKeys(gateway, "plan").create("acme")
    assert gateway.deleted == ["k1"]
