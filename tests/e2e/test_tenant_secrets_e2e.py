"""The emulator's tenants and secrets: created as the operator's command creates them, kept
where a deployed stack keeps them (keys' hashes in MongoDB, the MongoDB URI and the signing
secrets in Secrets Manager), and read from there by the functions at runtime: while the
emulator runs, neither MONGO_URI nor WEBHOOK_SECRET is in their environment.

The stack runs without its API and dispatchers: what the functions build is what
chalicelib.bootstrap.dependencies() builds, called here in the emulator's process, as the
API and the pollers call it. Its own module: one emulator per process at a time."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from chalicelib import bootstrap
from chalicelib.config import Settings
from chalicelib.services.tenants import authenticate, signing_secrets

from local_emulator.stack import Emulator, EmulatorOptions
from tests.support.emulator import environment
from tests.support.mongo import embedded_mongo

pytestmark = pytest.mark.e2e

GIVEN_KEY = "acme-given-key_0123456789"
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MONGO_SECRET = "image-pipeline/mongo-uri"


@pytest.fixture(scope="module")
def mongo_uri() -> Iterator[str]:
    """A MongoDB of the user's (MONGO_URI), which outlives each emulator."""
    with embedded_mongo() as uri:
        yield uri


def _emulator() -> Emulator:
    return Emulator(
        EmulatorOptions(
            port=0,
            quiet=True,
            start_api=False,
            start_dispatchers=False,
            tenants=(f"acme={GIVEN_KEY}", "beta"),
        )
    )


def _secret(emu: Emulator, secret_id: str) -> str:
    client: Any = emu.session().client("secretsmanager", endpoint_url=emu.storage_url)
    return str(client.get_secret_value(SecretId=secret_id)["SecretString"])


def _tenant_of(key: str) -> str | None:
    caller = authenticate(bootstrap.dependencies(), f"Bearer {key}")
    return caller.tenant if caller else None


def test_tenants_and_secrets_are_provisioned_and_read_at_runtime(mongo_uri: str) -> None:
    outside = {"MONGO_URI": mongo_uri, "WEBHOOK_SECRET": SECRET}
    with environment(outside):
        first_beta_key = _first_start(mongo_uri)
        assert os.environ["MONGO_URI"] == mongo_uri  # given back at stop
        assert os.environ["WEBHOOK_SECRET"] == SECRET
        _second_start(first_beta_key)


def _first_start(mongo_uri: str) -> str:
    with _emulator() as emu:
        # the functions' environment has the secrets' names, not the secrets
        assert "MONGO_URI" not in os.environ and "WEBHOOK_SECRET" not in os.environ
        assert os.environ["MONGO_URI_SECRET_ID"] == MONGO_SECRET
        assert os.environ["TENANT_SECRETS_PREFIX"] == "image-pipeline/tenants/"
        assert os.environ["DEFAULT_TENANT"] == "acme"
        # which Secrets Manager holds
        assert _secret(emu, MONGO_SECRET) == mongo_uri
        acme, beta = emu.tenants
        assert (acme.name, acme.api_key, acme.webhook_secret) == ("acme", GIVEN_KEY, SECRET)
        assert (emu.api_key, emu.webhook_secret) == (GIVEN_KEY, SECRET)
        assert beta.name == "beta" and beta.api_key.startswith("ipk_")
        assert beta.webhook_secret.startswith("whsec_") and beta.webhook_secret != SECRET
        for tenant in emu.tenants:
            stored = json.loads(_secret(emu, f"image-pipeline/tenants/{tenant.name}/webhook"))
            assert stored == {"current": tenant.webhook_secret, "previous": []}

        # the functions: the URI from the secret (none from the environment), then the keys
        deps = bootstrap.dependencies()
        assert deps.settings.mongo_uri == Settings.mongo_uri  # the default: MONGO_URI unseen
        assert deps.settings.mongo_uri_secret_id == MONGO_SECRET
        deps.store.ping()
        assert _tenant_of(GIVEN_KEY) == "acme"
        assert _tenant_of(beta.api_key) == "beta"
        assert _tenant_of(beta.api_key + "x") is None
        assert signing_secrets(deps, "acme") == [SECRET]
        assert signing_secrets(deps, "beta") == [beta.webhook_secret]
        # each tenant has a usage key in the template's usage plan
        gateway: Any = emu.session().client("apigateway", endpoint_url=emu.storage_url)
        (plan,) = emu.stack.usage_plans.values()
        attached = gateway.get_usage_plan_keys(usagePlanId=plan.id)["items"]
        assert sorted(k["name"] for k in attached) == ["acme", "beta"]
        assert any("MONGO_URI is hidden" in line for line in emu.describe())
        return beta.api_key


def _second_start(first_beta_key: str) -> None:
    """MONGO_URI's database outlives the emulator: the tenants are there the next time, each
    keeping its record; a given key stays, others are new (and the old ones still work)."""
    with _emulator() as emu:
        acme, beta = emu.tenants
        assert acme.api_key == GIVEN_KEY and beta.api_key != first_beta_key
        assert _tenant_of(GIVEN_KEY) == "acme"
        assert _tenant_of(first_beta_key) == "beta"
        assert _tenant_of(beta.api_key) == "beta"
        deps = bootstrap.dependencies()
        assert len(deps.tenants.list_api_keys("acme")) == 1
        assert len(deps.tenants.list_api_keys("beta")) == 2
        assert signing_secrets(deps, "acme") == [SECRET]


def test_without_mongo_uri_the_embedded_server_is_in_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MONGO_URI", raising=False)
    monkeypatch.delenv("WEBHOOK_SECRET", raising=False)
    options = EmulatorOptions(port=0, quiet=True, start_api=False, start_dispatchers=False)
    with Emulator(options) as emu:
        assert emu.embedded_mongo and "MONGO_URI" not in os.environ
        assert _secret(emu, MONGO_SECRET) == emu.mongo_uri
        (local,) = emu.tenants
        assert local.name == "local" and os.environ["DEFAULT_TENANT"] == "local"
        assert _tenant_of(local.api_key) == "local"
        assert signing_secrets(bootstrap.dependencies(), "local") == [local.webhook_secret]
