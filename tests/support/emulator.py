"""The whole stack on loopback for the end-to-end tests: the emulator with the tests' usual
options (loopback, a free port, quiet, private hosts allowed so the tests' image hosts and
webhook receivers on 127.0.0.1 are reachable), each overridable, under environment variables
set for its life."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from local_emulator.stack import Emulator, EmulatorOptions


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set these variables in `os.environ` (the emulator reads them at start); restore after."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# Deployed with a tenant burst of 40, as an operator may: the tests call the API one call
# after another as fast as loopback answers, past the default burst (5 at the default
# DatabaseConnections; on AWS, tens of milliseconds a call, they would stay near the rate).
# The default is the subject of tests/e2e/test_tenant_burst_e2e.py and test_tenants_e2e.py,
# which ask for it (`parameter_overrides={"TenantBurstLimit": "0"}`: from the connections).
TEST_PARAMETERS = {"TenantBurstLimit": "40"}


@contextmanager
def running_emulator(
    environ: Mapping[str, str] | None = None, **options: Any
) -> Iterator[Emulator]:
    """A started emulator, stopped on exit. `options` are EmulatorOptions' fields (tenants,
    workers, time_scale...) over the tests' usual ones; `environ`, variables set meanwhile."""
    usual: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "allow_private_hosts": True,
        "quiet": True,
    }
    parameters = {**TEST_PARAMETERS, **options.pop("parameter_overrides", {})}
    chosen = EmulatorOptions(**{**usual, **options, "parameter_overrides": parameters})
    with environment(environ or {}), Emulator(chosen) as emu:
        yield emu
