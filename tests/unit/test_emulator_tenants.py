"""`serve --tenant NAME[=KEY]` and EmulatorOptions.tenants: what is accepted, and the error
for what is not (before anything starts)."""

from __future__ import annotations

import re

import pytest

from local_emulator.cli import main
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
