"""The local stack's tenants: `serve --tenant NAME[=KEY]`, created as the operator's command
creates them (chalicelib.services.tenant_admin.create_tenant), with their keys' hashes in the
stack's MongoDB, their signing secrets in moto's Secrets Manager and their usage keys in
moto's API Gateway usage plan.

The app's code (chalicelib) is imported from the repository's functions/ directory, which is
put on the path for that when it is not there already (`python -m local_emulator` from the
repository's root)."""

from __future__ import annotations

import importlib.util
import secrets
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from local_emulator.data_dir import DataDirError

if TYPE_CHECKING:
    from chalicelib.services.tenant_admin import Admin

FUNCTIONS_DIR = Path(__file__).resolve().parent.parent / "functions"
DEFAULT_TENANTS = ("local",)
TENANT_RULE = "a tenant name is 1-40 characters of a-z, 0-9 and -"


def ensure_app_code() -> None:
    """chalicelib importable: the repository's functions/ on the path unless it is already."""
    if importlib.util.find_spec("chalicelib") is None:
        sys.path.append(str(FUNCTIONS_DIR))


@dataclass(frozen=True)
class TenantSpec:
    """One `--tenant NAME[=KEY]`: a key given is used as is, else a new one each start."""

    name: str
    key: str | None = None


@dataclass(frozen=True)
class LocalTenant:
    name: str
    api_key: str  # "" for a tenant kept by --data-dir that was given no key: none is made
    webhook_secret: str
    new_key: bool = True  # made at this start (printed), not kept from an earlier one
    new_secret: bool = True


def parse_tenant(text: str) -> TenantSpec:
    """`NAME` or `NAME=KEY`; ValueError saying what is wrong."""
    ensure_app_code()
    from chalicelib.domain.tenancy import MAX_KEY_LENGTH, bearer_token, is_tenant_name

    name, has_key, key = text.partition("=")
    if not is_tenant_name(name):
        raise ValueError(f"{name!r}: {TENANT_RULE}")
    if not has_key:
        return TenantSpec(name)
    if len(key) > MAX_KEY_LENGTH or bearer_token(f"Bearer {key}") != key:
        raise ValueError(
            f"tenant {name}: a key is 1-{MAX_KEY_LENGTH} characters of A-Z a-z 0-9 . _ ~ + / = - "
            "(what an Authorization: Bearer header may carry)"
        )
    return TenantSpec(name, key)


def parse_tenants(texts: Iterable[str]) -> list[TenantSpec]:
    """Every `--tenant`, in order; at least one, each name once."""
    specs = [parse_tenant(text) for text in texts]
    if not specs:
        raise ValueError("at least one tenant is needed")
    names = [spec.name for spec in specs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"tenant {', '.join(repeated)} given more than once")
    return specs


class ReportedUsageKeys:
    """A UsageKeys that, should moto's usage plan refuse a key, says so once and makes the
    tenants local usage keys instead: the emulator's gateway (gateway_auth.py) throttles per
    key and needs one, but does not look keys up in the plan, so the stack still starts and
    behaves as it would."""

    def __init__(self, usage: Any, log: Callable[[str], None]) -> None:
        self._usage = usage
        self._log = log
        self._failed = False

    def create(self, tenant: str) -> str:
        if not self._failed:
            try:
                return str(self._usage.create(tenant))
            except Exception as exc:
                self._failed = True
                self._log(
                    f"warning: the usage plan refused a key ({exc}); tenants get local usage "
                    "keys that moto does not hold"
                )
        return f"local-{tenant}-{secrets.token_hex(8)}"


def make_admin(
    db: Any,
    secrets_client: Any,
    *,
    secrets_prefix: str,
    apigateway_client: Any | None = None,
    usage_plan_id: str = "",
    log: Callable[[str], None] = lambda _: None,
) -> Admin:
    """What create_tenant needs, over these clients (the operator's command builds the same)."""
    ensure_app_code()
    from chalicelib.adapters.mongo_tenants import MongoTenantStore
    from chalicelib.adapters.secrets_manager import SecretsManagerWriter
    from chalicelib.adapters.usage_plan import ApiGatewayUsageKeys
    from chalicelib.bootstrap import SystemClock
    from chalicelib.services.tenant_admin import Admin

    usage = (
        ReportedUsageKeys(ApiGatewayUsageKeys(apigateway_client, usage_plan_id), log)
        if apigateway_client is not None and usage_plan_id
        else None
    )
    return Admin(
        tenants=MongoTenantStore(db),
        secrets=SecretsManagerWriter(secrets_client),
        usage=usage,
        secrets_prefix=secrets_prefix,
        clock=SystemClock(),
    )


def create_tenants(
    admin: Admin, specs: Sequence[TenantSpec], first_webhook_secret: str = ""
) -> list[LocalTenant]:
    """Each tenant with a key (the one given, else a new one) and its signing secret (the
    first tenant's is `first_webhook_secret` when given). On a MongoDB that outlives the
    emulator (MONGO_URI, --data-dir) a tenant that exists keeps its record and gets one more
    key."""
    from chalicelib.errors import PipelineError
    from chalicelib.services.tenant_admin import create_tenant

    created = []
    for n, spec in enumerate(specs):
        secret = first_webhook_secret if n == 0 and first_webhook_secret else None
        try:
            made = create_tenant(admin, spec.name, api_key=spec.key, webhook_secret=secret)
        except PipelineError as exc:
            raise RuntimeError(f"tenant {spec.name}: {exc}") from exc
        created.append(LocalTenant(spec.name, made.api_key, made.webhook_secret))
    return created


class KeptTenantConflict(DataDirError):
    """A flag contradicts a tenant the data directory keeps."""


def resume_tenants(
    admin: Admin, specs: Sequence[TenantSpec], first_webhook_secret: str, where: str
) -> list[LocalTenant]:
    """`serve --data-dir`: a tenant the directory keeps goes on with its keys and its signing
    secret (no key is made; one given must be one of its keys, and WEBHOOK_SECRET, for the
    first tenant, its secret: anything else is a KeptTenantConflict naming `where`); a tenant
    it lacks is made as `create_tenants` makes it. A kept tenant without a secret (a directory
    of an earlier version, which did not keep them) gets a new one."""
    from chalicelib.domain.tenancy import key_id, new_webhook_secret
    from chalicelib.services.tenants import parse_signing_secrets, rotated_secrets

    out: list[LocalTenant] = []
    for n, spec in enumerate(specs):
        wanted = first_webhook_secret if n == 0 else ""
        if admin.tenants.get_tenant(spec.name) is None:
            out += create_tenants(admin, [spec], wanted)
            continue
        current = admin.secrets.read(admin.secret_id(spec.name))
        kept = parse_signing_secrets(current)[0] if current else ""
        if wanted and kept and wanted != kept:
            raise KeptTenantConflict(
                f"WEBHOOK_SECRET is not the signing secret of tenant {spec.name} kept in "
                f"{where}; unset it (the kept one goes on), or give another --data-dir"
            )
        secret = kept or wanted or new_webhook_secret()
        if not kept:
            admin.secrets.put(admin.secret_id(spec.name), rotated_secrets(None, secret))
        if spec.key is not None:
            found = admin.tenants.find_api_key(key_id(spec.key))
            if (
                found is None
                or found.tenant != spec.name
                or not found.active
                or not found.matches(spec.key)
            ):
                raise KeptTenantConflict(
                    f"tenant {spec.name} is kept in {where} with its own API keys, and the key "
                    f"given is not one of them; give one of its keys, or none (they still "
                    f"work), or give another --data-dir"
                )
        out.append(
            LocalTenant(spec.name, spec.key or "", secret, new_key=False, new_secret=not kept)
        )
    return out


def tenant_order(given: Sequence[TenantSpec], kept: Sequence[str]) -> list[TenantSpec]:
    """The stack's tenants: those given (in their order), then the kept ones not given; none
    given: the kept ones in their order, else the default."""
    if not given:
        return [TenantSpec(name) for name in kept] or parse_tenants(DEFAULT_TENANTS)
    names = {spec.name for spec in given}
    return [*given, *(TenantSpec(name) for name in kept if name not in names)]
