"""Fixtures the end-to-end modules share. `emulator` is a stack with the default options and
private hosts allowed, one per module; a module that needs other options defines its own.
`page` is a headless Chromium's page on a desktop's screen (tests/support/chromium.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local_emulator.stack import Emulator
from tests.e2e.emulator_support import SAMPLES
from tests.support.chromium import chromium_page
from tests.support.emulator import running_emulator
from tests.support.servers import WebhookReceiver, image_host, webhook_receiver


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with running_emulator() as emu:
        yield emu


@pytest.fixture(scope="module")
def images() -> Iterator[str]:
    """The bundled sample images over HTTP (readable by a page's script too)."""
    with image_host(SAMPLES / "images") as url:
        yield url


@pytest.fixture
def receiver(emulator: Emulator) -> Iterator[WebhookReceiver]:
    """A webhook receiver verifying with the emulator's secret."""
    with webhook_receiver(emulator.webhook_secret) as hook:
        yield hook


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    with chromium_page(tmp_path / "profile") as opened:
        yield opened
