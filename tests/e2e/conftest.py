"""Fixtures the end-to-end modules share; each module starts its own `emulator`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local_emulator.stack import Emulator
from tests.e2e.emulator_support import SAMPLES
from tests.support.servers import WebhookReceiver, image_host, webhook_receiver


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
