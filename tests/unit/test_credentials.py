"""The stack's credentials (local_emulator/credentials.py): new per stack, given by flag or
environment, kept under a data directory (mode 0600) and refused when a flag contradicts
what is kept."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from local_emulator.credentials import (
    ACCESS_KEY_ENV,
    SECRET_KEY_ENV,
    CredentialsError,
    parse_storage_credentials,
    resolve,
)

GIVEN = parse_storage_credentials("AKIAGIVEN0000000001:given-secret-key")


def test_each_stack_makes_its_own() -> None:
    first, made = resolve(None, {}, None)
    second, _ = resolve(None, {}, None)
    assert made
    assert first.storage != second.storage and first.mongo != second.mongo
    assert first.storage.access_key_id.startswith("AKIA")
    assert len(first.storage.access_key_id) == 20 and len(first.storage.secret_access_key) == 40
    assert first.storage.secret_access_key not in repr(first)


def test_a_flag_or_the_environment_sets_them() -> None:
    assert resolve(GIVEN, {}, None)[0].storage == GIVEN
    env = {ACCESS_KEY_ENV: "AKIAFROMENV", SECRET_KEY_ENV: "from-the-environment"}
    assert resolve(None, env, None)[0].storage.access_key_id == "AKIAFROMENV"
    assert resolve(GIVEN, env, None)[0].storage == GIVEN  # the flag first
    with pytest.raises(CredentialsError, match="both"):
        resolve(None, {ACCESS_KEY_ENV: "AKIAONLY"}, None)
    for bad in ("no-colon", "lower:secret-key", "AKIA/SLASH:secret-key", "AKIAX:short"):
        with pytest.raises(CredentialsError):
            parse_storage_credentials(bad)


def test_a_data_dir_keeps_them_private_and_a_contradicting_flag_is_an_error(
    tmp_path: Path,
) -> None:
    made, new = resolve(None, {}, tmp_path)
    path = tmp_path / "credentials.json"
    assert new and stat.S_IMODE(path.stat().st_mode) == 0o600
    kept, new_again = resolve(None, {}, tmp_path)
    assert kept == made and not new_again
    assert resolve(made.storage, {}, tmp_path)[0] == made  # the same pair given: fine
    with pytest.raises(CredentialsError, match="keeps other storage credentials"):
        resolve(GIVEN, {}, tmp_path)
    path.write_text("{not json")
    with pytest.raises(CredentialsError, match="cannot be read"):
        resolve(None, {}, tmp_path)
