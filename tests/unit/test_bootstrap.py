"""Process start-up settings applied by the wiring module."""

from __future__ import annotations

import inspect
import re
import socket
from collections.abc import Iterator
from typing import Any

import botocore.session
import pytest
from botocore.loaders import JSONFileLoader, Loader, create_loader
from chalicelib import bootstrap
from chalicelib.bootstrap import tune_pillow
from PIL import Image

from tests.fakes import InMemoryJobStore, make_world


@pytest.fixture
def blocks() -> Iterator[None]:
    saved = Image.core.get_blocks_max()
    yield
    Image.core.set_blocks_max(saved)


def test_pillow_block_reuse_comes_from_the_environment(blocks: None) -> None:
    Image.core.set_blocks_max(0)
    tune_pillow({"PILLOW_BLOCKS_MAX": "16"})
    assert Image.core.get_blocks_max() == 16


@pytest.mark.parametrize("value", ["", "lots", "-1"])
def test_an_unusable_value_changes_nothing(blocks: None, value: str) -> None:
    Image.core.set_blocks_max(3)
    tune_pillow({"PILLOW_BLOCKS_MAX": value})
    assert Image.core.get_blocks_max() == 3


class ClosingStore(InMemoryJobStore):
    def __init__(self) -> None:
        super().__init__()
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_dependencies_built_here_are_closed_when_the_wiring_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An emulator that stops takes its adapters back: the store the wiring built is closed
    (a pymongo client left open knocks at the stopped server for the rest of the process).
    Dependencies a test handed over are the test's to close."""
    built = make_world()
    store = ClosingStore()
    built.deps.store = store
    monkeypatch.setattr(bootstrap, "build", lambda settings, local_aws=None: built.deps)
    bootstrap.reset()
    try:
        assert bootstrap.dependencies() is built.deps
        bootstrap.use_local_aws(None)
        assert store.closed == 1
        handed = make_world()
        handed_store = ClosingStore()
        handed.deps.store = handed_store
        bootstrap.override(handed.deps)
        bootstrap.reset()
        assert handed_store.closed == 0
    finally:
        bootstrap.reset()


@pytest.fixture
def fresh_models(monkeypatch: pytest.MonkeyPatch) -> Loader:
    """An empty shared loader, as in a new container (another test may have primed the real
    one already)."""
    loader = create_loader()
    monkeypatch.setattr(bootstrap, "AWS_MODELS", loader)
    return loader


def model_files_read(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    read: list[str] = []
    original = JSONFileLoader.load_file

    def counting(self: JSONFileLoader, file_path: str) -> Any:
        read.append(file_path)
        return original(self, file_path)

    monkeypatch.setattr(JSONFileLoader, "load_file", counting)
    return read


def test_after_priming_the_wirings_clients_read_no_model_file(
    fresh_models: Loader, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = model_files_read(monkeypatch)
    bootstrap.prime_aws_models()
    assert read  # the models were read at init...
    read.clear()
    session = bootstrap.aws_session()
    for name in bootstrap.AWS_SERVICES:
        session.client(name, region_name="eu-west-1")  # type: ignore[call-overload]
    assert read == []  # ...and not on the first invocation, in the function's own region


def test_every_client_the_wiring_makes_is_primed() -> None:
    made = set(re.findall(r'client\(\s*"([a-z0-9-]+)"', inspect.getsource(bootstrap.build)))
    assert made and made == set(bootstrap.AWS_SERVICES)


def test_priming_resolves_no_credentials_and_opens_no_connection(
    fresh_models: Loader, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("priming must not resolve credentials or connect")

    monkeypatch.setattr(botocore.session.Session, "get_credentials", refused)
    monkeypatch.setattr(socket.socket, "connect", refused)
    bootstrap.prime_aws_models()


def test_sessions_share_the_models_without_growing_their_search_path(fresh_models: Loader) -> None:
    for _ in range(5):
        bootstrap.aws_session()
    assert len(fresh_models.search_paths) == len(set(fresh_models.search_paths))
    assert bootstrap.aws_session()._session.get_component("data_loader") is fresh_models
