"""The EMF metrics the in-process functions flush, recorded as they are flushed.

Reading them back from captured stderr (`capfd.readouterr()`) loses lines: pytest reads the
capture file, then truncates it, and a line another thread writes in between is gone (a
CI run lost `DropsHeld` that way while the emulator's threads logged around it). Here the
process's metrics buffer is swapped for one whose sink records each document, then prints
it as before."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from chalicelib import observability

from local_emulator.stack import Emulator
from tests.support.waiting import wait_until


class EmittedMetrics:
    """Every EMF document flushed since `emitted_metrics` began, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._documents: list[dict[str, Any]] = []

    def __call__(self, line: str) -> None:
        with self._lock:
            self._documents.append(json.loads(line))
        observability._print_line(line)

    def total(self, name: str) -> float:
        """`name` summed over the documents flushed so far."""
        with self._lock:
            return sum(float(d.get(name, 0)) for d in self._documents if "_aws" in d)

    def wait_total(self, name: str, at_least: float, timeout: float = 30) -> float:
        """The total once it reaches `at_least` (functions flush as their invocation ends,
        which may be just after what the test waited for), else what it is at `timeout`."""
        wait_until(lambda: self.total(name) >= at_least, timeout=timeout)
        return self.total(name)


@contextmanager
def emitted_metrics(emulator: Emulator) -> Iterator[EmittedMetrics]:
    """Records what `emulator`'s functions flush from now on. Only functions on this
    process's threads are seen: not a worker in processes of its own (LOCAL_WORKER_PROCESSES)."""
    if emulator.worker_processes:
        raise RuntimeError("emitted_metrics sees this process only; the worker runs in others")
    recorder = EmittedMetrics()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(observability, "_buffer", observability.MetricsBuffer(sink=recorder))
        yield recorder
