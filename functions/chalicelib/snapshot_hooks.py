"""What a function does around a Lambda SnapStart snapshot (the hooks it registers with the
runtime): nothing that must not be frozen goes into a snapshot, and nothing per environment
comes out of one.

With SnapStart, Lambda runs a function's init once, when a version is published, snapshots the
memory and disk, and resumes every new execution environment from that snapshot (however many,
however much later). Init here imports libraries and builds nothing (bootstrap.py), so the
snapshot holds code, not state. These hooks keep it so:

- before the snapshot and after each restore, everything cached per container is dropped: the
  wiring (boto3 clients, the Secrets Manager cache, the MongoDB client, the HTTP sessions and
  their connection pools, the image thread pool) and each tenant's reuse key. They are built
  again on first use, so a rotated secret, a revoked key or a dead socket is never served
  from a snapshot;
- after each restore, `random` is reseeded from the operating system (botocore's retry jitter
  and the worker's download backoff use it: otherwise every environment restored from one
  snapshot would draw the same numbers), and so are tempfile's name generator and numpy's
  global generator where they are loaded. Request ids (uuid4), idempotency keys and secrets
  come from os.urandom, which a snapshot does not repeat.

The hooks are registered only where Lambda's `snapshot_restore_py` module is importable (the
Python managed runtimes have it; it is not a dependency of ours); app.py registers them at
import, so every function's handler module does (Lambda ignores hooks in modules the handler
does not import)."""

from __future__ import annotations

import importlib
import logging
import random
import sys
import tempfile
from collections.abc import Callable
from typing import Any, Protocol, cast

from chalicelib import bootstrap
from chalicelib.services import reuse

RUNTIME_HOOKS = "snapshot_restore_py"

log = logging.getLogger(__name__)


class RuntimeHooks(Protocol):
    """What `snapshot_restore_py` offers (https://github.com/aws/snapshot-restore-py)."""

    def register_before_snapshot(
        self, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Callable[..., Any]: ...

    def register_after_restore(
        self, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Callable[..., Any]: ...


def runtime_hooks() -> RuntimeHooks | None:
    """Lambda's hooks module, None outside Lambda (tests, the emulator, the CLI)."""
    try:
        return cast(RuntimeHooks, importlib.import_module(RUNTIME_HOOKS))
    except ImportError:
        return None


def register(hooks: RuntimeHooks | None = None) -> bool:
    """Hand `before_snapshot` and `after_restore` to Lambda's runtime (or to `hooks`); False
    where there is no runtime to hand them to."""
    hooks = hooks or runtime_hooks()
    if hooks is None:
        return False
    hooks.register_before_snapshot(before_snapshot)
    hooks.register_after_restore(after_restore)
    return True


def before_snapshot() -> None:
    """Nothing built goes into the snapshot (init builds nothing; this keeps it so)."""
    forget_container_state()


def after_restore() -> None:
    """A restored environment starts as if new: no state from the snapshot's, its own
    random numbers."""
    forget_container_state()
    reseed()
    log.info("restored from a SnapStart snapshot: caches dropped, random reseeded")


def forget_container_state() -> None:
    """Drop what a container keeps between invocations, to be built again on first use."""
    bootstrap.reset()  # clients, secrets cache, Mongo client, HTTP pools (its store closed)
    reuse.forget_reuse_keys()


def reseed() -> None:
    """Fresh seeds from the operating system for the generators a snapshot would share."""
    random.seed()
    # tempfile's candidate names come from a generator made on first use and reseeded only
    # when the process id changes, which a restore does not do: make a new one.
    vars(tempfile)["_name_sequence"] = None
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()
