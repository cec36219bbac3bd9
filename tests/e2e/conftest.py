"""Fixtures the end-to-end modules share. `emulator` is a stack with the default options and
private hosts allowed, one per module; a module that needs other options defines its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local_emulator.stack import Emulator, EmulatorOptions
from tests.e2e.emulator_support import SAMPLES
from tests.support.servers import WebhookReceiver, image_host, webhook_receiver


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(
        EmulatorOptions(host="127.0.0.1", port=0, allow_private_hosts=True, quiet=True)
    ) as emu:
        yield emu


@pytest.fixture(scope="module")
def images() -> Iterator[str]:
    """The bundled sample images over HTTP."""
    with image_host(SAMPLES / "images") as url:
        yield url


@pytest.fixture
def receiver(emulator: Emulator) -> Iterator[WebhookReceiver]:
    """A webhook receiver verifying with the emulator's secret."""
    with webhook_receiver(emulator.webhook_secret) as hook:
        yield hook
