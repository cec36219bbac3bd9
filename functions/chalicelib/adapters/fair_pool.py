"""A thread pool that shares its threads fairly between tenants, then between each tenant's
keys (jobs).

A plain ThreadPoolExecutor serves work first come, first served: a job whose ten images
trickle from a slow host takes every thread, and a job submitted after it waits until they
give up. Here each key has its own queue, and a thread that comes free takes the next piece
of work of the tenant served least recently (never served first), and within that tenant of
its key served least recently: while N tenants have work queued each gets about 1/N of the
threads as they come free, however many jobs each splits its work into, and a second job
starts as soon as one thread is free, however much the first has queued.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

_Item = tuple[Future[Any], Callable[[], Any]]
REMEMBERED_KEYS = 4096  # keys (and tenants) whose last service is remembered (oldest forgotten)


class _LastServed:
    """When each name was last served (a tick), for at most REMEMBERED_KEYS names."""

    def __init__(self) -> None:
        self._ticks: OrderedDict[object, int] = OrderedDict()

    def get(self, name: object) -> int:
        return self._ticks.get(name, -1)

    def mark(self, name: object, tick: int) -> None:
        self._ticks[name] = tick
        self._ticks.move_to_end(name)
        if len(self._ticks) > REMEMBERED_KEYS:
            self._ticks.popitem(last=False)


class FairThreadPool:
    """`WorkPool` over up to `max_workers` daemon threads, started as work arrives."""

    def __init__(self, max_workers: int, thread_name_prefix: str = "work") -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._max_workers = max_workers
        self._prefix = thread_name_prefix
        self._lock = threading.Condition()
        # tenant -> key -> work not started, each in the order it came
        self._queues: dict[str, dict[str, deque[_Item]]] = {}
        self._tenant_served = _LastServed()
        self._key_served = _LastServed()  # by (tenant, key)
        self._tick = 0
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for work and not yet woken
        self._woken = 0  # threads woken for work that have not taken the lock back yet
        self._shutdown = False

    def run[T](self, key: str, work: Callable[[], T], *, tenant: str = "") -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("the pool is shut down")
            self._queues.setdefault(tenant, {}).setdefault(key, deque()).append((future, work))
            if self._idle > 0:
                # wake one waiting thread, and count it busy at once: the next piece of work
                # handed over before it wakes must go to another thread, not to it again
                self._idle -= 1
                self._woken += 1
                self._lock.notify()
            elif len(self._threads) < self._max_workers:
                thread = threading.Thread(
                    target=self._serve,
                    name=f"{self._prefix}_{len(self._threads)}",
                    daemon=True,
                )
                self._threads.append(thread)
                thread.start()
        return future

    @property
    def idle(self) -> int:
        """Threads waiting for work."""
        with self._lock:
            return self._idle

    def queued(self) -> dict[str, int]:
        """Work not yet started, by key."""
        with self._lock:
            return {
                key: len(items) for keys in self._queues.values() for key, items in keys.items()
            }

    def shutdown(self, wait: bool = True) -> None:
        """Finish what is queued, then let the threads end."""
        with self._lock:
            self._shutdown = True
            self._lock.notify_all()
            threads = list(self._threads)
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()

    def _next(self) -> _Item | None:
        """The next item of the tenant served least recently, of its key served least
        recently; None once shut down and drained."""
        with self._lock:
            while not self._queues:
                if self._shutdown:
                    return None
                self._idle += 1
                self._lock.wait()
                if self._woken > 0:  # woken by run(), which took it off _idle already
                    self._woken -= 1
                else:  # woken by shutdown()
                    self._idle -= 1
            tenant = min(self._queues, key=self._tenant_served.get)
            keys = self._queues[tenant]
            key = min(keys, key=lambda k: self._key_served.get((tenant, k)))
            items = keys[key]
            item = items.popleft()
            if not items:
                del keys[key]
                if not keys:
                    del self._queues[tenant]
            self._tick += 1
            self._tenant_served.mark(tenant, self._tick)
            self._key_served.mark((tenant, key), self._tick)
            return item

    def _serve(self) -> None:
        while (item := self._next()) is not None:
            future, work = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = work()
            except BaseException as exc:  # as ThreadPoolExecutor: the future carries it
                future.set_exception(exc)
            else:
                future.set_result(result)
