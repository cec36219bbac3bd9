"""Waiting for something to happen, within a bound (tests never sleep and hope)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, step: float = 0.1) -> bool:
    """Whether `condition` held within `timeout` seconds (looked at every `step`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()
