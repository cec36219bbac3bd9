"""`serve --tenant NAME[=KEY]` and EmulatorOptions.tenants: what is accepted, and the error
for what is not (before anything starts)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from local_emulator.cli import TENANTS_ENV, build_parser, main, tenants_given
from local_emulator.stack import Emulator, EmulatorOptions
from local_emulator.tenants import ReportedUsageKeys, TenantSpec, parse_tenant, parse_tenants


def test_names_and_keys_are_parsed() -> None:
    assert parse_tenant("acme") == TenantSpec("acme")
    assert parse_tenant("a-1") == TenantSpec("a-1")
    assert parse_tenant("x" * 40) == TenantSpec("x" * 40)
    assert parse_tenant("acme=k.e_y~+/=-9") == TenantSpec("acme", "k.e_y~+/=-9")
    assert parse_tenants(["acme", "beta=key"]) == [TenantSpec("acme"), TenantSpec("beta", "key")]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("Acme", "'Acme': a tenant name is 1-40 characters of a-z, 0-9 and -"),
        ("", "'': a tenant name is 1-40"),
        ("x" * 41, f"'{'x' * 41}': a tenant name is 1-40"),
        ("ac me", "'ac me': a tenant name is 1-40"),
        ("acme=", "tenant acme: a key is 1-200 characters"),
        ("acme=has space", "tenant acme: a key is 1-200 characters"),
        ("acme=" + "k" * 201, "tenant acme: a key is 1-200 characters"),
    ],
)
def test_what_is_refused_says_why(text: str, error: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(error)):
        parse_tenant(text)


def test_each_name_once_and_at_least_one() -> None:
    with pytest.raises(ValueError, match=r"^tenant acme given more than once$"):
        parse_tenants(["acme", "beta", "acme=key"])
    with pytest.raises(ValueError, match="at least one tenant"):
        parse_tenants([])
    with pytest.raises(ValueError, match="more than once"):
        Emulator(EmulatorOptions(tenants=("a", "a")))


def test_the_command_line_refuses_them_as_usage_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (["serve", "--tenant", "Acme"], ["demo", "--tenant", "a", "--tenant", "a"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --tenant: 'Acme': a tenant name is 1-40 characters of a-z, 0-9 and -" in err
    assert "error: tenant a given more than once" in err


def test_a_usage_plan_that_refuses_keys_is_said_once_and_the_tenants_go_on() -> None:
    class Refusing:
        calls = 0

        def create(self, tenant: str) -> str:
            self.calls += 1
            raise RuntimeError("NotImplemented")

    class Working:
        def create(self, tenant: str) -> str:
            return f"usage-{tenant}"

    said: list[str] = []
    refusing = Refusing()
    usage = ReportedUsageKeys(refusing, said.append)
    made = [usage.create("a"), usage.create("b"), usage.create("a")]
    assert [key.rsplit("-", 1)[0] for key in made] == ["local-a", "local-b", "local-a"]
    assert len(set(made)) == 3  # one each: the gateway throttles each key on its own
    assert refusing.calls == 1
    assert said == [
        "warning: the usage plan refused a key (NotImplemented); tenants get local usage keys "
        "that moto does not hold"
    ]
    assert ReportedUsageKeys(Working(), said.append).create("a") == "usage-a"


def given(argv: list[str], environ: dict[str, str] | None = None) -> list[str]:
    return tenants_given(build_parser().parse_args(["serve", *argv]), environ or {})


def test_tenants_and_their_keys_come_from_a_file_or_the_environment_too(tmp_path: Path) -> None:
    """Keys kept out of the command line, which anyone on the machine reads with `ps`."""
    listed = tmp_path / "tenants"
    listed.write_text("# the shop's tenants\nalpha=ka.1\n\n  beta=kb/2=  \ngamma\n")
    env = {TENANTS_ENV: "delta=kd, eps  zeta=kz"}
    assert given(["--tenant-file", str(listed)]) == ["alpha=ka.1", "beta=kb/2=", "gamma"]
    assert given(["--tenant", "one", "--tenant-file", str(listed)])[:2] == ["one", "alpha=ka.1"]
    assert given([], env) == ["delta=kd", "eps", "zeta=kz"]
    assert given(["--tenant", "one"], env) == ["one"]  # the flags win over the environment
    assert given([], {}) == []  # then the default tenant, local
    specs = parse_tenants(given(["--tenant-file", str(listed)]))
    assert specs[1] == TenantSpec("beta", "kb/2=")


def test_a_tenant_file_that_cannot_be_read_or_holds_a_bad_line_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad"
    bad.write_text("alpha=has space\n")
    monkeypatch.setenv(TENANTS_ENV, "Nope")
    for argv in (
        ["serve", "--tenant-file", str(tmp_path / "missing")],
        ["serve", "--tenant-file", str(bad)],
        ["serve"],
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--tenant-file: No such file or directory" in err
    assert "tenant alpha: a key is 1-200 characters" in err
    assert "'Nope': a tenant name is 1-40" in err
