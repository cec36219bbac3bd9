"""The image threads shared by tenant first, then by job within the tenant."""

from __future__ import annotations

import threading

from chalicelib.adapters.fair_pool import FairThreadPool


def test_a_free_thread_goes_to_the_tenant_waiting_longest_then_to_its_job_waiting_longest() -> None:
    pool = FairThreadPool(1)
    order: list[str] = []
    gate, running = threading.Event(), threading.Event()

    def hold() -> None:
        running.set()
        assert gate.wait(10)
        order.append("a1.0")

    def piece(name: str) -> None:
        order.append(name)

    futures = [pool.run("a1", hold, tenant="alpha")]
    assert running.wait(10)  # the only thread is busy; everything below is queued
    for job in ("a1", "a2", "a3"):
        for n in range(1 if job == "a1" else 0, 3):
            name = f"{job}.{n}"
            futures.append(pool.run(job, lambda name=name: piece(name), tenant="alpha"))
    for n in range(3):
        futures.append(pool.run("b", lambda n=n: piece(f"b.{n}"), tenant="beta"))
    gate.set()
    for future in futures:
        future.result(10)
    # beta's one job gets every other thread, not one in four (one job of four), and alpha's
    # jobs take turns among alpha's threads
    assert order == [
        "a1.0", "b.0", "a2.0", "b.1", "a3.0", "b.2",
        "a1.1", "a2.1", "a3.1", "a1.2", "a2.2", "a3.2",
    ]  # fmt: skip
    pool.shutdown()
