"""Secrets Manager behind the SecretSource and SecretWriter ports.

The functions read secrets at runtime, not from their configuration: on first use (never at
import), then from a per-container cache for `ttl` seconds, so a rotated secret reaches
every container within that time without a redeploy (AWS's own caching clients work the same
way). The client is built on the first read."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

NOT_FOUND = "ResourceNotFoundException"


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class SecretsManagerSource:
    """Cached reads of current secret values."""

    def __init__(
        self,
        client_factory: Callable[[], Any],
        ttl: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = client_factory
        self._client: Any = None
        self._ttl = ttl
        self._monotonic = monotonic
        self._cache: dict[str, tuple[str | None, float]] = {}
        self._lock = threading.Lock()

    def _secrets(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._factory()
            return self._client

    def get(self, secret_id: str) -> str | None:
        now = self._monotonic()
        with self._lock:
            cached = self._cache.get(secret_id)
        if cached is not None and now - cached[1] < self._ttl:
            return cached[0]
        value = read_secret(self._secrets(), secret_id)
        with self._lock:
            self._cache[secret_id] = (value, now)
        return value


def read_secret(client: Any, secret_id: str) -> str | None:
    """The secret's current SecretString, None when there is no such secret."""
    try:
        answer = client.get_secret_value(SecretId=secret_id)
    except Exception as exc:
        if _error_code(exc) == NOT_FOUND:
            return None
        raise
    return str(answer.get("SecretString", ""))


class SecretsManagerWriter:
    """The operator's commands: create a secret or put a new current version."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def read(self, secret_id: str) -> str | None:
        return read_secret(self._client, secret_id)

    def put(self, secret_id: str, value: str) -> None:
        try:
            self._client.put_secret_value(SecretId=secret_id, SecretString=value)
        except Exception as exc:
            if _error_code(exc) != NOT_FOUND:
                raise
            self._client.create_secret(Name=secret_id, SecretString=value)
