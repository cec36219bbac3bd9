"""Tenants and their API keys: names, key format, hashing. Plain data and pure functions.

A key is `ipk_<id>_<secret>`: the id (12 characters) finds the stored record through an
index; only the SHA-256 of the whole key is stored, and it is compared in constant time. A
key of another form (one given to `serve --tenant NAME=KEY`) gets an id derived from its
hash. Keys are 256-bit random strings, so a fast hash is enough (as GitHub's and Stripe's
tokens are kept): there is nothing to brute-force that a slow hash would protect."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

TENANT_NAME = re.compile(r"^[a-z0-9-]{1,40}$")
KEY_PREFIX = "ipk_"
_KEY_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_KEY_ID_LENGTH = 12
_OURS = re.compile(rf"^{KEY_PREFIX}([a-z0-9]{{{_KEY_ID_LENGTH}}})_[A-Za-z0-9_-]{{20,}}$")
MAX_KEY_LENGTH = 200
# What the Authorization header may carry (the template's ValidationExpression is the same)
BEARER = re.compile(r"^Bearer ([A-Za-z0-9._~+/=-]{1,200})$")


def is_tenant_name(name: str) -> bool:
    return bool(TENANT_NAME.match(name))


def new_api_key() -> str:
    """A fresh key: `ipk_` + a 12-character id + `_` + 32 random bytes, base64url."""
    key_id = "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(_KEY_ID_LENGTH))
    return f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def new_webhook_secret() -> str:
    """A Standard Webhooks signing secret: `whsec_` + 24 random bytes, base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode("ascii")


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_id(key: str) -> str:
    """The id that finds a key's record: its own for our keys, from its hash for others."""
    match = _OURS.match(key)
    if match:
        return match.group(1)
    return "h" + key_hash(key)[:23]


def bearer_token(header: str | None) -> str | None:
    """The key in an `Authorization: Bearer <key>` header, or None."""
    match = BEARER.match((header or "").strip())
    return match.group(1) if match else None


@dataclass(frozen=True)
class Tenant:
    """One customer: its jobs, keys and signing secret are its own."""

    name: str
    created_at: str = ""
    webhook_url: str = ""  # its default webhook, for jobs submitted without one
    # The API Gateway API key value its requests are counted and throttled under (the
    # authorizer returns it as usageIdentifierKey); "" when the stack has no usage plan.
    usage_key: str = ""


@dataclass(frozen=True)
class ApiKeyRecord:
    """A key as stored: never the key itself, only its hash."""

    key_id: str
    tenant: str
    key_hash: str
    created_at: str
    label: str = ""
    revoked_at: str = ""

    @property
    def active(self) -> bool:
        return not self.revoked_at

    def matches(self, key: str) -> bool:
        """Whether `key` is this record's key (constant time)."""
        return hmac.compare_digest(self.key_hash, key_hash(key))

    def to_view(self) -> dict[str, object]:
        """What a listing shows: never the hash."""
        return {
            "keyId": self.key_id,
            "tenant": self.tenant,
            "label": self.label,
            "createdAt": self.created_at,
            "revokedAt": self.revoked_at or None,
        }
