"""Process start-up settings applied by the wiring module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
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
