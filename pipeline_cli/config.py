"""The client's config file: named profiles, each an API URL and its key.

`$XDG_CONFIG_HOME/image-pipeline/config.toml` (default `~/.config/...`):

    [profiles.default]
    api = "https://api.example.com"
    api_key = "ipk_..."

It holds keys, so it is written with mode 0600 (its folder 0700) and refused, with the
`chmod` to run, when its group or others have any permission on it, as ssh refuses a
private key. Read with tomllib; written whole by `configure` (other profiles kept)."""

from __future__ import annotations

import json
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROFILE_ENV = "IMAGE_PIPELINE_PROFILE"
DEFAULT_PROFILE = "default"
PROFILE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SETTINGS = ("api", "api_key")


class ConfigError(Exception):
    """The config file cannot be used: what is wrong and what to do, in one line."""


@dataclass(frozen=True)
class Profile:
    name: str
    api: str | None = None
    api_key: str | None = None


def config_path(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME", "").strip()
    if not base or not os.path.isabs(base):  # the spec: a relative value is ignored
        home = environ.get("HOME", "").strip() or str(Path.home())
        base = os.path.join(home, ".config")
    return Path(base) / "image-pipeline" / "config.toml"


def check_private(path: Path) -> None:
    """Refuses a file its group or others may read or write (the key would be theirs)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"{path} is open to others (mode {mode:04o}) and holds API keys: "
            f"run 'chmod 600 {path}', and replace any key others could have read"
        )


def load_profiles(path: Path) -> dict[str, dict[str, str]]:
    """Every profile of the file (name -> its string settings); {} when there is no file."""
    try:
        check_private(path)
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: 'profiles' must be a table of [profiles.NAME] tables")
    found: dict[str, dict[str, str]] = {}
    for name, table in profiles.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [profiles.{name}] must be a table")
        for key in SETTINGS:
            if key in table and not isinstance(table[key], str):
                raise ConfigError(f"{path}: [profiles.{name}] {key} must be a string")
        found[str(name)] = {str(k): v for k, v in table.items() if isinstance(v, str)}
    return found


def read_profile(path: Path, name: str, *, required: bool) -> Profile:
    """The profile `name` of the file; an empty one when it is absent and not `required`
    (the implicit `default`), else a ConfigError saying how to make it."""
    profiles = load_profiles(path)
    if name not in profiles:
        if required:
            where = f"no profile '{name}' in {path}" if profiles else f"no profiles in {path}"
            raise ConfigError(
                f"{where}: create it with 'image-pipeline configure --profile {name}'"
            )
        return Profile(name)
    table = profiles[name]
    return Profile(name, table.get("api") or None, table.get("api_key") or None)


def _toml_string(value: str) -> str:
    return json.dumps(value)  # JSON's escapes (ASCII only) are valid TOML basic strings


def render(profiles: Mapping[str, Mapping[str, str]]) -> str:
    lines = [
        "# image-pipeline's client profiles: written by 'image-pipeline configure'.",
        "# It holds API keys: keep it private (mode 0600).",
    ]
    for name in sorted(profiles):
        lines += ["", f"[profiles.{name}]"]
        table = profiles[name]
        ordered = [k for k in SETTINGS if k in table] + sorted(
            k for k in table if k not in SETTINGS
        )
        lines += [
            f"{key} = {_toml_string(table[key])}" for key in ordered if PROFILE_NAME.match(key)
        ]
    return "\n".join(lines) + "\n"


def write_profile(path: Path, profile: Profile) -> None:
    """Adds or replaces one profile, the others kept: a new file of mode 0600 put in place
    in one rename, so no reader sees it half written or readable by others."""
    if not PROFILE_NAME.match(profile.name):
        raise ConfigError(
            f"a profile name is 1-64 letters, digits, '_' or '-', not {profile.name!r}"
        )
    profiles = load_profiles(path)
    table = dict(profiles.get(profile.name, {}))
    for key, value in (("api", profile.api), ("api_key", profile.api_key)):
        if value:
            table[key] = value
    profiles[profile.name] = table
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(render(profiles))
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o600)  # whatever the umask
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
