"""The worker's per-container memory of the URLs it has done, by (job, URL): a URL repeated
anywhere in a job is downloaded and compressed once per container. Not to be confused with
reuse (services/reuse.py), the tenant's content-addressed outputs kept across jobs."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict

from chalicelib.domain.models import ImageResult
from chalicelib.services.deps import Dependencies


class JobUrlCache:
    """Outputs already stored in this container, by (job, URL): a URL repeated anywhere in
    a job is downloaded and compressed once per container (each Lambda instance keeps its
    own, as each of the emulator's worker processes does). Only successes are kept, after their
    output is stored; the oldest entries go first beyond `limit`."""

    def __init__(self, limit: int = 20_000) -> None:
        self._limit = limit
        self._items: OrderedDict[tuple[str, str], ImageResult] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def get(self, job_url: tuple[str, str]) -> ImageResult | None:
        with self._lock:
            found = self._items.get(job_url)
            if found is not None:
                self._items.move_to_end(job_url)
                self.hits += 1
            return found

    def put(self, job_url: tuple[str, str], result: ImageResult) -> None:
        with self._lock:
            self._items[job_url] = result
            self._items.move_to_end(job_url)
            while len(self._items) > self._limit:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = 0


_CACHES: weakref.WeakKeyDictionary[object, JobUrlCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def job_url_cache(deps: Dependencies) -> JobUrlCache:
    """The (job, URL) cache of the output store these dependencies write to (one per container;
    tests get one per fake world)."""
    with _CACHES_LOCK:
        cache = _CACHES.get(deps.outputs)
        if cache is None:
            cache = _CACHES[deps.outputs] = JobUrlCache()
        return cache
