"""moto's Secrets Manager kept on disk: after every change of a secret's value (create, put,
update, a stage moved, delete, restore), the current value of each secret of the stack's
region is written to `DIR/secrets.json` (whole, by a rename) before the call returns. A start
puts them back. The tenants' signing secrets live there (`<prefix><tenant>/webhook`, the
rotation's previous secret inside the same value), so webhooks after a restart are signed as
before. Only current values are kept: the app reads no other version.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from local_emulator.data_dir import write_atomically
from local_emulator.provision import ACCOUNT_ID, REGION


class _Hooks:
    """The hooks' state, one per process: installed once, active while a stack keeps."""

    active: KeptSecrets | None = None
    installed = False
    lock = threading.Lock()


CHANGES = ("_add_secret", "update_secret_version_stage", "delete_secret", "restore_secret")


def _backend() -> Any:
    from moto.secretsmanager.models import secretsmanager_backends

    return secretsmanager_backends[ACCOUNT_ID][REGION]


class KeptSecrets:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def snapshot(self, backend: Any) -> None:
        """Every live secret's current value, written whole."""
        from moto.secretsmanager.models import FakeSecret

        if backend.account_id != ACCOUNT_ID or backend.region_name != REGION:
            return
        with self._lock:
            kept: dict[str, dict[str, Any]] = {}
            for name, secret in list(backend.secrets.items()):
                if not isinstance(secret, FakeSecret) or secret.is_deleted():
                    continue
                version = secret.versions.get(secret.default_version_id or "", {})
                if "secret_string" not in version and "secret_binary" not in version:
                    continue
                kept[name] = {
                    "string": version.get("secret_string"),
                    "binary": version.get("secret_binary"),
                    "description": secret.description,
                }
            write_atomically(self.path, json.dumps(kept, indent=1).encode())

    def restore(self) -> int:
        try:
            kept: dict[str, dict[str, Any]] = json.loads(self.path.read_text())
        except FileNotFoundError:
            return 0
        backend = _backend()
        for name, secret in kept.items():
            backend._add_secret(
                name,
                secret_string=secret.get("string"),
                secret_binary=secret.get("binary"),
                description=secret.get("description"),
            )
        return len(kept)

    def activate(self) -> None:
        _install()
        _Hooks.active = self

    def deactivate(self) -> None:
        if _Hooks.active is self:
            _Hooks.active = None


def _install() -> None:
    """The hooks on moto's Secrets Manager, once per process."""
    with _Hooks.lock:
        if _Hooks.installed:
            return
        from moto.secretsmanager.models import SecretsManagerBackend

        for name in CHANGES:
            setattr(SecretsManagerBackend, name, _kept(getattr(SecretsManagerBackend, name)))
        _Hooks.installed = True


def _kept(change: Any) -> Any:
    def kept_change(backend: Any, *args: Any, **kwargs: Any) -> Any:
        answer = change(backend, *args, **kwargs)
        kept = _Hooks.active
        if kept is not None:
            kept.snapshot(backend)
        return answer

    return kept_change
