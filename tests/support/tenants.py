"""Tenants and API keys for tests: a tenant made the way the operator's command makes one,
a Chalice test client whose requests carry a key, and the API over a world's fakes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from chalice.test import Client
from chalicelib import bootstrap
from chalicelib.services import tenant_admin

from tests.fakes import FakeUsageKeys, FakeWorld

SECRETS_PREFIX = "stack/tenants/"


def admin_of(world: FakeWorld) -> tenant_admin.Admin:
    return tenant_admin.Admin(
        tenants=world.tenants,
        secrets=world.secrets,
        usage=FakeUsageKeys(),
        secrets_prefix=world.deps.settings.tenant_secrets_prefix or SECRETS_PREFIX,
        clock=world.clock,
    )


def add_tenant(world: FakeWorld, name: str | None = None, **options: Any) -> str:
    """Create a tenant (the default tenant when no name is given); returns its API key."""
    tenant = name or world.deps.settings.default_tenant
    return tenant_admin.create_tenant(admin_of(world), tenant, **options).api_key


def with_api_key(client: Client, key: str) -> Client:
    """Every request of `client` carries `Authorization: Bearer <key>` unless it sets one."""
    http: Any = client.http
    send = http.request

    def request(
        method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> Any:
        return send(
            method, path, headers={"Authorization": f"Bearer {key}", **(headers or {})}, body=body
        )

    http.request = request
    return client


@contextmanager
def api_client(world: FakeWorld) -> Iterator[Client]:
    """The API (functions/app.py) wired to `world`'s fakes, called with the API key of a new
    default tenant; the wiring is put back after."""
    import app as app_module  # the Chalice app: imported by the tests that call the API

    bootstrap.override(world.deps)
    try:
        key = add_tenant(world)
        with Client(app_module.app) as client:
            yield with_api_key(client, key)
    finally:
        bootstrap.reset()
