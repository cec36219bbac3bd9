"""MongoDB behind the TenantStore port: `tenants` (`_id` = name) and `api_keys` (`_id` = the
key's id, so finding a key is one indexed read; the document holds the key's SHA-256, never
the key)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from chalicelib.domain.tenancy import ApiKeyRecord, Tenant
from chalicelib.domain.timefmt import iso

Document = dict[str, Any]

TENANTS = "tenants"
API_KEYS = "api_keys"


def _tenant_from(doc: Mapping[str, Any]) -> Tenant:
    return Tenant(
        name=str(doc["_id"]),
        created_at=str(doc.get("createdAt", "")),
        webhook_url=str(doc.get("webhookUrl", "")),
        usage_key=str(doc.get("usageKey", "")),
    )


def _key_from(doc: Mapping[str, Any]) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=str(doc["_id"]),
        tenant=str(doc["tenant"]),
        key_hash=str(doc["hash"]),
        created_at=str(doc.get("createdAt", "")),
        label=str(doc.get("label", "")),
        revoked_at=str(doc.get("revokedAt", "")),
    )


class MongoTenantStore:
    """TenantStore over pymongo; shares the job store's database (and client)."""

    def __init__(self, db: Database[Document]) -> None:
        self._tenants: Collection[Document] = db[TENANTS]
        self._keys: Collection[Document] = db[API_KEYS]
        self._indexed = False

    def _ensure_indexes(self) -> None:
        if not self._indexed:
            self._keys.create_index("tenant", name="tenant")
            self._indexed = True

    def put_tenant(self, tenant: Tenant) -> None:
        # $set, not a replacement: fields other parts keep here (the reuse key) stay
        self._tenants.update_one(
            {"_id": tenant.name},
            {
                "$set": {
                    "createdAt": tenant.created_at,
                    "webhookUrl": tenant.webhook_url,
                    "usageKey": tenant.usage_key,
                }
            },
            upsert=True,
        )

    def get_tenant(self, name: str) -> Tenant | None:
        doc = self._tenants.find_one({"_id": name})
        return None if doc is None else _tenant_from(doc)

    def list_tenants(self) -> list[Tenant]:
        return [_tenant_from(doc) for doc in self._tenants.find().sort("_id", 1)]

    def add_api_key(self, record: ApiKeyRecord) -> None:
        self._ensure_indexes()
        doc: Document = {
            "_id": record.key_id,
            "tenant": record.tenant,
            "hash": record.key_hash,
            "createdAt": record.created_at,
            "label": record.label,
        }
        # a revoked record under the same id may be replaced (a key given again)
        replaced = self._keys.replace_one(
            {"_id": record.key_id, "revokedAt": {"$exists": True}}, doc
        )
        if replaced.matched_count:
            return
        try:
            self._keys.insert_one(doc)
        except DuplicateKeyError as exc:
            raise ValueError(f"key id {record.key_id} is taken") from exc

    def find_api_key(self, key_id: str) -> ApiKeyRecord | None:
        doc = self._keys.find_one({"_id": key_id})
        return None if doc is None else _key_from(doc)

    def list_api_keys(self, tenant: str | None = None) -> list[ApiKeyRecord]:
        self._ensure_indexes()
        query: Document = {} if tenant is None else {"tenant": tenant}
        found = [_key_from(doc) for doc in self._keys.find(query)]
        return sorted(found, key=lambda k: (k.tenant, k.created_at, k.key_id))

    def revoke_api_key(self, key_id: str, now: datetime) -> bool:
        result = self._keys.update_one(
            {"_id": key_id, "revokedAt": {"$exists": False}}, {"$set": {"revokedAt": iso(now)}}
        )
        return result.modified_count == 1
