"""SnapStart's runtime hooks (chalicelib/snapshot_hooks.py), with a stand-in for Lambda's
`snapshot_restore_py` (only the Lambda runtime has the real one)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from chalicelib import bootstrap, snapshot_hooks
from chalicelib.adapters.secrets_manager import SecretsManagerSource
from chalicelib.domain.tenancy import Tenant
from chalicelib.imaging import CompressOptions
from chalicelib.services import reuse

from tests.fakes import FakeWorld, InMemoryJobStore, make_world

ROOT = Path(__file__).resolve().parents[2]

FAKE_RUNTIME_HOOKS = """
before, after = [], []
def register_before_snapshot(func, *args, **kwargs):
    before.append(func)
    return func
def register_after_restore(func, *args, **kwargs):
    after.append(func)
    return func
"""


class FakeRuntimeHooks(types.ModuleType):
    def __init__(self) -> None:
        super().__init__(snapshot_hooks.RUNTIME_HOOKS)
        self.before: list[Callable[..., Any]] = []
        self.after: list[Callable[..., Any]] = []

    def register_before_snapshot(self, func: Callable[..., Any]) -> Callable[..., Any]:
        self.before.append(func)
        return func

    def register_after_restore(self, func: Callable[..., Any]) -> Callable[..., Any]:
        self.after.append(func)
        return func

    def snapshot(self) -> None:
        for hook in reversed(self.before):  # Lambda runs them in reverse order
            hook()

    def restore(self) -> None:
        for hook in self.after:
            hook()


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> FakeRuntimeHooks:
    hooks = FakeRuntimeHooks()
    monkeypatch.setitem(sys.modules, snapshot_hooks.RUNTIME_HOOKS, hooks)
    assert snapshot_hooks.register()
    return hooks


def test_the_hooks_are_registered_where_the_runtime_offers_them(
    runtime: FakeRuntimeHooks,
) -> None:
    assert runtime.before == [snapshot_hooks.before_snapshot]
    assert runtime.after == [snapshot_hooks.after_restore]


def test_nothing_is_registered_outside_lambda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, snapshot_hooks.RUNTIME_HOOKS, None)  # import fails
    assert snapshot_hooks.runtime_hooks() is None
    assert snapshot_hooks.register() is False


@pytest.mark.parametrize("handler", ["app.app", "handlers.worker.process_rows"])
def test_every_handler_module_registers_the_hooks(tmp_path: Path, handler: str) -> None:
    """Lambda runs only hooks registered by the handler's imports: app.py registers them, and
    the worker's handler module imports app."""
    (tmp_path / f"{snapshot_hooks.RUNTIME_HOOKS}.py").write_text(FAKE_RUNTIME_HOOKS)
    probe = (
        "import importlib, json, sys\n"
        f"sys.path[:0] = [{str(ROOT / 'functions')!r}, {str(tmp_path)!r}]\n"
        f"importlib.import_module({handler.rpartition('.')[0]!r})\n"
        f"import {snapshot_hooks.RUNTIME_HOOKS} as hooks\n"
        "print(json.dumps([[f.__qualname__ for f in hooks.before],"
        " [f.__qualname__ for f in hooks.after]]))\n"
    )
    answer = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == [["before_snapshot"], ["after_restore"]]


class CountingSecretsClient:
    """Secrets Manager's GetSecretValue over a dict, counted."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.reads = 0

    def get_secret_value(self, SecretId: str) -> dict[str, str]:
        self.reads += 1
        return {"SecretString": self.values[SecretId]}


class ClosingStore(InMemoryJobStore):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def close(self) -> None:
        self.closed = True


@dataclass
class Wiring:
    """What `bootstrap.build` made: a world of fakes each time, each with the real Secrets
    Manager adapter (and its cache) over one counted client."""

    secrets_client: CountingSecretsClient
    built: list[FakeWorld[ClosingStore]] = field(default_factory=list)


@pytest.fixture
def wiring(monkeypatch: pytest.MonkeyPatch) -> Iterator[Wiring]:
    wiring = Wiring(CountingSecretsClient({"tenants/acme/webhook": "whsec_old"}))

    def build(settings: Any, local_aws: Any = None) -> Any:
        world = make_world(
            store=ClosingStore(),
            secrets=SecretsManagerSource(lambda: wiring.secrets_client, ttl=300),
        )
        world.tenants.put_tenant(Tenant("acme"))
        wiring.built.append(world)
        return world.deps

    monkeypatch.setattr(bootstrap, "build", build)
    bootstrap.reset()
    yield wiring
    bootstrap.reset()
    reuse.forget_reuse_keys()


def test_a_restore_drops_the_wiring_and_its_caches(
    runtime: FakeRuntimeHooks, wiring: Wiring
) -> None:
    """After a restore nothing built before is used: the next invocation builds its clients
    again (the old store's connections closed) and reads its secrets afresh, so a secret
    rotated since the snapshot is the one used."""
    deps = bootstrap.dependencies()
    client = wiring.secrets_client
    assert deps.secrets.get("tenants/acme/webhook") == "whsec_old"
    client.values["tenants/acme/webhook"] = "whsec_rotated"
    assert deps.secrets.get("tenants/acme/webhook") == "whsec_old"  # cached for the TTL
    assert client.reads == 1

    runtime.restore()

    assert wiring.built[0].store.closed
    fresh = bootstrap.dependencies()
    assert fresh is not deps and len(wiring.built) == 2
    assert fresh.secrets.get("tenants/acme/webhook") == "whsec_rotated"
    assert client.reads == 2


def test_a_restore_forgets_the_tenants_reuse_keys(
    runtime: FakeRuntimeHooks, wiring: Wiring
) -> None:
    deps = bootstrap.dependencies()
    asked: list[str] = []
    read_key = deps.reuse.reuse_key

    def counted(tenant: str) -> str | None:
        asked.append(tenant)
        return read_key(tenant)

    deps.reuse.reuse_key = counted  # type: ignore[method-assign]
    reuse.address(deps, "acme", CompressOptions(), b"image")
    reuse.address(deps, "acme", CompressOptions(), b"image")
    assert asked == ["acme"]  # read once per container

    runtime.restore()

    reuse.address(deps, "acme", CompressOptions(), b"image")
    assert asked == ["acme", "acme"]


def test_a_snapshot_holds_no_wiring(runtime: FakeRuntimeHooks, wiring: Wiring) -> None:
    """Should init ever build the wiring, the snapshot would not keep it (nor its sockets)."""
    deps = bootstrap.dependencies()
    runtime.snapshot()
    assert wiring.built[0].store.closed
    assert bootstrap.dependencies() is not deps


def _draws() -> list[float]:
    return [random.random() for _ in range(4)]


def test_environments_restored_from_one_snapshot_draw_their_own_random_numbers(
    runtime: FakeRuntimeHooks,
) -> None:
    """Two environments resume from the same memory: the same generator state. After the
    restore hook each has its own (a retry's jitter, botocore's backoff)."""
    frozen = random.getstate()
    runtime.restore()
    first = _draws()
    random.setstate(frozen)
    runtime.restore()
    second = _draws()
    random.setstate(frozen)
    without_hook = _draws()
    assert first != second
    assert without_hook not in (first, second)


def test_environments_restored_from_one_snapshot_make_their_own_temporary_names(
    runtime: FakeRuntimeHooks,
) -> None:
    names = tempfile._get_candidate_names()  # type: ignore[attr-defined]
    frozen = names.rng.getstate()
    runtime.restore()
    first = next(tempfile._get_candidate_names())  # type: ignore[attr-defined]
    vars(tempfile)["_name_sequence"] = names
    names.rng.setstate(frozen)
    runtime.restore()
    second = next(tempfile._get_candidate_names())  # type: ignore[attr-defined]
    assert first != second


def test_numpys_generator_is_reseeded_where_numpy_is_loaded(runtime: FakeRuntimeHooks) -> None:
    np_random = pytest.importorskip("numpy.random")
    frozen = np_random.get_state()
    runtime.restore()
    first = np_random.random_sample(4).tolist()
    np_random.set_state(frozen)
    runtime.restore()
    assert np_random.random_sample(4).tolist() != first


def test_request_ids_owe_nothing_to_the_random_module() -> None:
    """Job ids (and the CDN's caller references) are uuid4, from os.urandom: two environments
    with the same `random` state still make different ones."""
    saved = random.getstate()
    try:
        random.seed(17)
        first = bootstrap.new_request_id()
        random.seed(17)
        second = bootstrap.new_request_id()
    finally:
        random.setstate(saved)
    assert first != second
    assert uuid.UUID(first).version == 4
