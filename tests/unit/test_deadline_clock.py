"""The downloads' deadlines share one thread (`guarded_http.DeadlineClock`): each fires once,
in order, on that thread; a cancelled one never fires; and a deadline still cuts a download
off (tests/integration/test_hostile_downloads.py has the trickling servers)."""

from __future__ import annotations

import socket
import threading

from chalicelib.adapters.guarded_http import DeadlineClock, DeadlineWatchdog

WAIT = 10.0  # seconds a test waits for what must happen (never for what must not)


def test_deadlines_fire_in_order_on_one_thread_and_a_cancelled_one_never() -> None:
    clock = DeadlineClock()
    fired: list[tuple[str, str]] = []
    last = threading.Event()

    def note(name: str) -> None:
        fired.append((name, threading.current_thread().name))
        if name == "last":
            last.set()

    clock.schedule(0.2, lambda: note("last"))
    cancelled = clock.schedule(0.1, lambda: note("cancelled"))
    clock.schedule(0.0, lambda: note("first"))
    clock.schedule(0.05, lambda: note("second"))
    clock.cancel(cancelled)
    assert last.wait(WAIT)
    # the cancelled deadline came before the last one: had it not been dropped, it would show
    assert fired == [
        ("first", "deadline-clock"),
        ("second", "deadline-clock"),
        ("last", "deadline-clock"),
    ]
    assert clock.pending() == 0


def test_a_thousand_watchdogs_start_no_thread_of_their_own() -> None:
    clock = DeadlineClock()
    before = threading.active_count()
    for _ in range(1000):
        with DeadlineWatchdog(30.0, clock=clock) as watchdog:
            assert not watchdog.expired
    assert threading.active_count() <= before + 1  # the clock's one thread
    assert clock.pending() == 0  # the cancelled ones were dropped, not kept for 30 s


def test_a_watchdog_whose_deadline_passes_is_expired_and_shuts_its_sockets() -> None:
    clock = DeadlineClock()
    fired = threading.Event()
    left, right = socket.socketpair()
    try:
        with DeadlineWatchdog(0.0, clock=clock) as watchdog:
            watchdog.watch(left)
            clock.schedule(0.0, fired.set)  # after the watchdog's: the clock fires in order
            assert fired.wait(WAIT)
            assert watchdog.expired
            # shut down: a read returns at once with nothing instead of blocking
            assert left.recv(1) == b""
    finally:
        left.close()
        right.close()
