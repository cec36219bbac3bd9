"""The client's config file on its own: where it lives, what it keeps, what it refuses; the
key's printable prefix; the version it names."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pipeline_cli import __version__
from pipeline_cli.config import (
    ConfigError,
    Profile,
    config_path,
    load_profiles,
    read_profile,
    write_profile,
)
from pipeline_cli.render import key_label

REPO = Path(__file__).resolve().parents[2]


def test_the_path_follows_xdg_config_home_and_ignores_a_relative_one() -> None:
    assert config_path({"XDG_CONFIG_HOME": "/cfg", "HOME": "/h"}) == Path(
        "/cfg/image-pipeline/config.toml"
    )
    assert config_path({"XDG_CONFIG_HOME": "rel", "HOME": "/h"}) == Path(
        "/h/.config/image-pipeline/config.toml"
    )
    assert config_path({"HOME": "/h"}) == Path("/h/.config/image-pipeline/config.toml")


def test_writing_keeps_other_profiles_and_round_trips_any_string(tmp_path: Path) -> None:
    path = tmp_path / "image-pipeline" / "config.toml"
    odd = 'a "quoted" \\ key\twith é'
    write_profile(path, Profile("one", "http://a", odd))
    write_profile(path, Profile("two", "http://b", "k2"))
    write_profile(path, Profile("one", None, "k1"))  # the api it had is kept
    assert tomllib.loads(path.read_text()) == {
        "profiles": {
            "one": {"api": "http://a", "api_key": "k1"},
            "two": {"api": "http://b", "api_key": "k2"},
        }
    }
    write_profile(path, Profile("one", "http://a", odd))
    assert read_profile(path, "one", required=True) == Profile("one", "http://a", odd)
    assert read_profile(path, "absent", required=False) == Profile("absent")
    with pytest.raises(ConfigError, match="no profile 'absent'"):
        read_profile(path, "absent", required=True)
    with pytest.raises(ConfigError, match="a profile name is"):
        write_profile(path, Profile("bad name]", "http://x", "k"))


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o660, 0o601])
def test_a_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[profiles.default]\napi_key = "k"\n')
    path.chmod(mode)
    with pytest.raises(ConfigError, match=f"mode {mode:04o}.*chmod 600"):
        load_profiles(path)
    path.chmod(0o600)
    assert load_profiles(path) == {"default": {"api_key": "k"}}


def test_a_malformed_file_is_named_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[profiles.default\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="cannot read"):
        load_profiles(path)
    path.write_text("[profiles.default]\napi_key = 5\n")
    with pytest.raises(ConfigError, match="api_key must be a string"):
        load_profiles(path)


def test_a_key_is_shown_by_its_public_prefix_only() -> None:
    assert key_label("ipk_abcdefabcdef_secretsecretsecret") == "ipk_abcdefabcdef_…"
    assert key_label("not-an-ipk-key-0123456789") == "not-…"
    assert key_label("short") == "s…"
    assert key_label("") == "…"


def test_the_version_is_the_projects() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert __version__ == project["version"]
