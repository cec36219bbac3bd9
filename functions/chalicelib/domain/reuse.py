"""Work not done twice: an image already produced for a tenant from the same source bytes,
options and encoder is copied, not compressed again.

Its address is a keyed hash (HMAC-SHA256 under the tenant's own reuse key) of the encoder's
version, the options and the bytes: the same image submitted by another tenant has another
address, so nobody can probe what another tenant processed."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass


def new_reuse_key() -> str:
    return secrets.token_hex(32)


def content_address(
    tenant_key: str, encoder: str, encoding: Mapping[str, object], data: bytes
) -> str:
    """The image's address among the tenant's outputs: `encoding` is everything the encoder
    is asked (format, quality, box, ...), as used, not as the job named it."""
    mac = hmac.new(bytes.fromhex(tenant_key), digestmod=hashlib.sha256)
    mac.update(encoder.encode("utf-8") + b"\x00")
    mac.update(json.dumps(dict(encoding), sort_keys=True).encode("utf-8") + b"\x00")
    mac.update(data)
    return mac.hexdigest()


@dataclass(frozen=True)
class ReusableOutput:
    """Where the newest copy of an output is, and what it weighs; for an output made by
    `quality: "auto"`, the quality it was made at and the score it reached (a copy reports
    them as its own)."""

    key: str
    bytes_out: int
    quality: int | None = None
    score: float | None = None
