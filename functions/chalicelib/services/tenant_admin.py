"""The operator's side of tenants: create one, issue, list and revoke its API keys, rotate
its webhook signing secret. Used by `python -m infra.tenants` against a deployed stack and by
the local emulator's `serve --tenant`; the keys themselves are shown once and never stored."""

from __future__ import annotations

from dataclasses import dataclass

from chalicelib.domain.tenancy import (
    ApiKeyRecord,
    Tenant,
    is_tenant_name,
    key_hash,
    key_id,
    new_api_key,
    new_webhook_secret,
)
from chalicelib.domain.timefmt import iso
from chalicelib.errors import Conflict, InvalidRequest, NotFound
from chalicelib.ports import Clock, SecretWriter, TenantStore, UsageKeys
from chalicelib.services.tenants import parse_signing_secrets, rotated_secrets


@dataclass(frozen=True)
class Admin:
    """What the operator's commands need."""

    tenants: TenantStore
    secrets: SecretWriter
    usage: UsageKeys | None
    secrets_prefix: str  # where tenants' signing secrets live: <prefix><tenant>/webhook
    clock: Clock

    def secret_id(self, tenant: str) -> str:
        return f"{self.secrets_prefix}{tenant}/webhook"


@dataclass(frozen=True)
class NewTenant:
    tenant: Tenant
    api_key: str
    webhook_secret: str


def create_tenant(
    admin: Admin,
    name: str,
    *,
    webhook_url: str = "",
    api_key: str | None = None,
    webhook_secret: str | None = None,
) -> NewTenant:
    """A tenant with its first API key and its signing secret. An existing tenant keeps
    its record, usage key and secret (a given secret replaces it) and gets one more key."""
    if not is_tenant_name(name):
        raise InvalidRequest("a tenant name is 1-40 of a-z, 0-9 and -", [{"field": "name"}])
    existing = admin.tenants.get_tenant(name)
    if existing is None:
        usage_key = admin.usage.create(name) if admin.usage is not None else ""
        tenant = Tenant(name, iso(admin.clock.now()), webhook_url, usage_key)
        admin.tenants.put_tenant(tenant)
    else:
        tenant = existing
        if webhook_url and webhook_url != existing.webhook_url:
            tenant = Tenant(name, existing.created_at, webhook_url, existing.usage_key)
            admin.tenants.put_tenant(tenant)
    current = admin.secrets.read(admin.secret_id(name))
    if webhook_secret is not None or not current:
        secret = webhook_secret or new_webhook_secret()
        admin.secrets.put(admin.secret_id(name), rotated_secrets(None, secret))
    else:
        secret = parse_signing_secrets(current)[0]
    return NewTenant(tenant, add_key(admin, name, key=api_key, label="first"), secret)


def add_key(admin: Admin, tenant: str, *, key: str | None = None, label: str = "") -> str:
    """A new API key for the tenant (or `key` as given, once), returned in full once."""
    if admin.tenants.get_tenant(tenant) is None:
        raise NotFound(f"no tenant {tenant}")
    value = key or new_api_key()
    found = admin.tenants.find_api_key(key_id(value))
    if found is not None:
        if found.tenant != tenant or not found.matches(value):
            raise Conflict("that key is already in use")
        if found.active:
            return value
    record = ApiKeyRecord(key_id(value), tenant, key_hash(value), iso(admin.clock.now()), label)
    if found is not None:  # a revoked key given again: a new record replaces it
        admin.tenants.revoke_api_key(found.key_id, admin.clock.now())
    admin.tenants.add_api_key(record)
    return value


def list_keys(admin: Admin, tenant: str | None = None) -> list[ApiKeyRecord]:
    return admin.tenants.list_api_keys(tenant)


def revoke_key(admin: Admin, key_id_: str) -> bool:
    """Revoke one key; requests with it are refused within the authorizer's cache (60 s)."""
    return admin.tenants.revoke_api_key(key_id_, admin.clock.now())


def rotate_webhook_secret(admin: Admin, tenant: str) -> str:
    """A new signing secret; the old one keeps signing beside it (two signatures per
    webhook) until finish_rotation, so receivers switch whenever they are ready."""
    if admin.tenants.get_tenant(tenant) is None:
        raise NotFound(f"no tenant {tenant}")
    secret = new_webhook_secret()
    old = admin.secrets.read(admin.secret_id(tenant))
    admin.secrets.put(admin.secret_id(tenant), rotated_secrets(old, secret))
    return secret


def finish_rotation(admin: Admin, tenant: str) -> None:
    """Stop signing with the previous secret."""
    old = admin.secrets.read(admin.secret_id(tenant))
    if not old:
        raise NotFound(f"tenant {tenant} has no signing secret")
    current = parse_signing_secrets(old)[0]
    admin.secrets.put(admin.secret_id(tenant), rotated_secrets(None, current, keep_previous=False))
