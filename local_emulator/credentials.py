"""The credentials a local stack makes for its doors: the storage endpoint's access key and
the embedded MongoDB's user.

The storage endpoint (moto: S3, SQS, Secrets Manager...) accepts one access key, the one
`serve` prints as `storage-credentials <access key id> <secret key>`. It is, in order:

- given by flag (`serve --storage-credentials ID:SECRET`) or by environment
  (`STORAGE_ACCESS_KEY_ID` and `STORAGE_SECRET_ACCESS_KEY`, both or neither);
- kept from an earlier run in `<data dir>/credentials.json`;
- new: `AKIA` and 16 characters of base32, a 40-character secret (the shape of AWS's).

With `--data-dir` the pair (and the MongoDB user) is written to `<data dir>/credentials.json`,
mode 0600, and read back at the next start, so that clients configured once keep working. A
pair given that differs from the kept one is an error (delete the file to change it), as a
flag that contradicts what a data directory keeps is everywhere else.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY_ENV = "STORAGE_ACCESS_KEY_ID"
SECRET_KEY_ENV = "STORAGE_SECRET_ACCESS_KEY"  # noqa: S105 (a variable's name)
FILE_NAME = "credentials.json"
_ID_CHARACTERS = frozenset(string.ascii_uppercase + string.digits)
_SECRET_CHARACTERS = frozenset(string.ascii_letters + string.digits + "+/=._-")


class CredentialsError(ValueError):
    """Credentials given that cannot be used (malformed, or not those a data dir keeps)."""


@dataclass(frozen=True)
class StorageCredentials:
    access_key_id: str
    secret_access_key: str

    def __repr__(self) -> str:  # never the secret in a log or a traceback
        return f"StorageCredentials({self.access_key_id!r}, ...)"


@dataclass(frozen=True)
class MongoCredentials:
    username: str
    password: str

    def __repr__(self) -> str:
        return f"MongoCredentials({self.username!r}, ...)"


@dataclass(frozen=True)
class StackCredentials:
    storage: StorageCredentials
    mongo: MongoCredentials


def new_storage_credentials() -> StorageCredentials:
    key_id = "AKIA" + base64.b32encode(secrets.token_bytes(10)).decode()[:16]
    secret = base64.b64encode(secrets.token_bytes(30)).decode()  # 40 characters
    return StorageCredentials(key_id, secret)


def new_mongo_credentials() -> MongoCredentials:
    return MongoCredentials("emulator", secrets.token_urlsafe(24))


def storage_credentials(access_key_id: str, secret_access_key: str) -> StorageCredentials:
    """A pair checked for what SigV4 can carry (an id in a credential scope: no `/`)."""
    if not access_key_id or not set(access_key_id) <= _ID_CHARACTERS:
        raise CredentialsError("the access key id must be upper-case letters and digits")
    if len(secret_access_key) < 8 or not set(secret_access_key) <= _SECRET_CHARACTERS:
        raise CredentialsError(
            "the secret key must be at least 8 letters, digits or + / = . _ - characters"
        )
    return StorageCredentials(access_key_id, secret_access_key)


def parse_storage_credentials(text: str) -> StorageCredentials:
    """`ID:SECRET` (serve --storage-credentials)."""
    access_key_id, colon, secret = text.partition(":")
    if not colon:
        raise CredentialsError("expected ACCESS_KEY_ID:SECRET_ACCESS_KEY")
    return storage_credentials(access_key_id, secret)


def from_environment(env: Mapping[str, str]) -> StorageCredentials | None:
    access_key_id, secret = env.get(ACCESS_KEY_ENV, ""), env.get(SECRET_KEY_ENV, "")
    if not access_key_id and not secret:
        return None
    if not (access_key_id and secret):
        raise CredentialsError(f"set both {ACCESS_KEY_ENV} and {SECRET_KEY_ENV}, or neither")
    return storage_credentials(access_key_id, secret)


def _read(path: Path) -> StackCredentials | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        storage, mongo = data["storage"], data["mongo"]
        return StackCredentials(
            storage_credentials(storage["accessKeyId"], storage["secretAccessKey"]),
            MongoCredentials(str(mongo["username"]), str(mongo["password"])),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CredentialsError(f"{path} cannot be read: {exc}") from None


def _write(path: Path, credentials: StackCredentials) -> None:
    """Written whole to a file of its own (mode 0600 from the start), then renamed."""
    data = {
        "storage": {
            "accessKeyId": credentials.storage.access_key_id,
            "secretAccessKey": credentials.storage.secret_access_key,
        },
        "mongo": {"username": credentials.mongo.username, "password": credentials.mongo.password},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as out:
            json.dump(data, out, indent=2)
            out.flush()
            os.fsync(out.fileno())
        os.replace(scratch, path)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise


def resolve(
    given: StorageCredentials | None,
    env: Mapping[str, str],
    data_dir: Path | None,
) -> tuple[StackCredentials, bool]:
    """The stack's credentials, and whether they were made new (or newly given) now."""
    wanted = given or from_environment(env)
    path = data_dir / FILE_NAME if data_dir is not None else None
    kept = _read(path) if path is not None else None
    if kept is not None:
        if wanted is not None and wanted != kept.storage:
            raise CredentialsError(
                f"{path} keeps other storage credentials ({kept.storage.access_key_id}); "
                "use those, or delete the file to change them"
            )
        return kept, False
    made = StackCredentials(wanted or new_storage_credentials(), new_mongo_credentials())
    if path is not None:
        _write(path, made)
    return made, True
