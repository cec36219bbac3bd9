"""Process start-up settings applied by the wiring module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from chalicelib.bootstrap import tune_pillow
from PIL import Image


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
