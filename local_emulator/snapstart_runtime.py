"""The emulator's stand-in for Lambda's SnapStart runtime: it takes the hooks a function
registers and runs them, in Lambda's order and within its limit, in the emulator's execution
environments.

On AWS a SnapStart function's init runs once per published version; Lambda then calls the
hooks registered through its `snapshot_restore_py` module, before-snapshot ones in the
reverse order of their registration, takes the snapshot, and in each environment it resumes
from it calls the after-restore ones in order, which must be done within 10 seconds
(`SnapStartTimeoutException`). No snapshot is taken here, but a container process
(`LOCAL_WORKER_PROCESSES`, local_emulator/containers.py) of a SnapStart function goes through
the same calls: a stand-in `snapshot_restore_py` is installed before its handler module is
imported, and once it is, the before-snapshot hooks run and then the after-restore ones, as if
the environment had been restored; so code that only works without its hooks, or hooks that
break the code, fail locally as they would on AWS. Functions that run in the emulator's own
process share it (and may have been imported before the emulator started), so there the hooks
are not called, as the emulator's start-up line says.
"""

from __future__ import annotations

import sys
import time
import types
from collections.abc import Callable
from typing import Any

MODULE = "snapshot_restore_py"
RESTORE_LIMIT_SECONDS = 10.0  # Lambda's limit for loading the runtime and the restore hooks

Hook = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class SnapStartTimeout(RuntimeError):
    """The after-restore hooks took longer than Lambda allows (SnapStartTimeoutException)."""


class RuntimeHooks:
    """What the stand-in module registers, and the two moments Lambda runs them at."""

    def __init__(self, restore_limit: float = RESTORE_LIMIT_SECONDS) -> None:
        self.before: list[Hook] = []
        self.after: list[Hook] = []
        self.restore_limit = restore_limit

    def register_before_snapshot(
        self, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Callable[..., Any]:
        self.before.append((func, args, kwargs))
        return func  # the decorator form returns the function unchanged

    def register_after_restore(
        self, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Callable[..., Any]:
        self.after.append((func, args, kwargs))
        return func

    def module(self) -> types.ModuleType:
        stand_in = types.ModuleType(MODULE, "The emulator's stand-in for Lambda's hooks module.")
        stand_in.register_before_snapshot = self.register_before_snapshot  # type: ignore[attr-defined]
        stand_in.register_after_restore = self.register_after_restore  # type: ignore[attr-defined]
        return stand_in

    def snapshot(self) -> None:
        """Before the snapshot: the hooks in the reverse order of their registration."""
        for func, args, kwargs in reversed(self.before):
            func(*args, **kwargs)

    def restore(self) -> float:
        """After a restore: the hooks in order, within Lambda's limit. Their seconds."""
        started = time.monotonic()
        for func, args, kwargs in self.after:
            func(*args, **kwargs)
        took = time.monotonic() - started
        if took > self.restore_limit:
            raise SnapStartTimeout(
                f"after-restore hooks took {took:.1f} s, over Lambda's {self.restore_limit:g} s"
            )
        return took


def install() -> RuntimeHooks:
    """Put the stand-in module where the handler's imports will find it (a container
    process, before it imports its handler)."""
    hooks = RuntimeHooks()
    sys.modules[MODULE] = hooks.module()
    return hooks
