"""Who is calling and what is theirs: an API key's tenant, a tenant's webhook and signing
secrets. (The operator's side, creating tenants and keys, is tenant_admin.)"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from chalicelib.config import Settings
from chalicelib.domain.tenancy import MAX_KEY_LENGTH, bearer_token, key_id
from chalicelib.services.deps import Dependencies

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    """A request's authenticated tenant (what the authorizer found)."""

    tenant: str
    key_id: str
    usage_key: str = ""


def authenticate(deps: Dependencies, authorization: str | None) -> Caller | None:
    """The tenant of an `Authorization: Bearer <key>` header; None for a missing, malformed,
    unknown or revoked key (one indexed read, one constant-time comparison)."""
    token = bearer_token(authorization)
    if token is None or len(token) > MAX_KEY_LENGTH:
        return None
    record = deps.tenants.find_api_key(key_id(token))
    if record is None or not record.matches(token) or not record.active:
        return None
    tenant = deps.tenants.get_tenant(record.tenant)
    return Caller(record.tenant, record.key_id, tenant.usage_key if tenant else "")


def default_webhook_url(deps: Dependencies, tenant: str) -> str:
    """Where a job's webhook goes when it was submitted without one: the tenant's default
    (`WEBHOOK_URL` is the default tenant's, and no other's)."""
    if tenant == deps.settings.default_tenant and deps.settings.webhook_url:
        return deps.settings.webhook_url
    record = deps.tenants.get_tenant(tenant)
    return record.webhook_url if record else ""


def webhook_secret_id(settings: Settings, tenant: str) -> str:
    """Where a tenant's signing secrets live in Secrets Manager ("" when not configured)."""
    prefix = settings.tenant_secrets_prefix
    return f"{prefix}{tenant}/webhook" if prefix else ""


def parse_signing_secrets(raw: str) -> list[str]:
    """A secret's value: `{"current": "whsec_…", "previous": ["whsec_…"]}` while a secret
    rotates (both sign, so receivers can switch), or one `whsec_…` string."""
    text = raw.strip()
    if not text.startswith("{"):
        return [text] if text else []
    value = json.loads(text)
    current = [str(value["current"])] if value.get("current") else []
    return current + [str(s) for s in value.get("previous", []) if s]


def rotated_secrets(raw: str | None, new_secret: str, *, keep_previous: bool = True) -> str:
    """The value after a rotation: `new_secret` current, the old current kept as previous
    (until the rotation is finished with keep_previous=False)."""
    old = parse_signing_secrets(raw) if raw else []
    previous = old[:1] if keep_previous else []
    return json.dumps({"current": new_secret, "previous": previous})


def signing_secrets(deps: Dependencies, tenant: str) -> list[str]:
    """The secrets a tenant's webhooks are signed with, current first; [] when it has none."""
    settings = deps.settings
    for secret_id in (webhook_secret_id(settings, tenant), _fallback_id(settings, tenant)):
        if not secret_id:
            continue
        raw = deps.secrets.get(secret_id)
        if raw:
            return parse_signing_secrets(raw)
    if tenant == settings.default_tenant and settings.webhook_secret:
        return [settings.webhook_secret]
    return []


def _fallback_id(settings: Settings, tenant: str) -> str:
    return settings.default_webhook_secret_id if tenant == settings.default_tenant else ""
