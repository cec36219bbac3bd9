"""The JobStore implementations the contract runs against, and what a test needs of each that
the port does not offer: counting jobs, losing a counter (a crash between a row and its
`$inc`), and holding the callers of a race between their reads and their writes.

Kinds: `memory` (tests/fakes.py), `mongoeco` (MongoJobStore on the embedded wire server) and,
when `MONGO_URI` is set, `mongodb` (MongoJobStore on that server).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

from chalicelib.adapters.mongo_codecs import JOBS
from chalicelib.adapters.mongo_store import MongoJobStore
from pymongo.collection import Collection
from pymongo.database import Database

from tests.fakes import InMemoryJobStore

STORE_KINDS = ["memory", "mongoeco", *(["mongodb"] if os.environ.get("MONGO_URI") else [])]
RACE_TIMEOUT = 20.0  # seconds a racer waits for the others before the race counts as broken


class WriteGate:
    """Forces a race instead of hoping for one. Each call run by `race` stops before its first
    write to the jobs until every racer has reached its own: all have read before any writes,
    so only a compare-and-set (or one atomic operation) keeps a claim to one caller."""

    def __init__(self) -> None:
        self._local = threading.local()

    def before_write(self) -> None:
        barrier: threading.Barrier | None = getattr(self._local, "barrier", None)
        if barrier is not None:
            self._local.barrier = None  # the call's first write waits, the others go on
            barrier.wait()

    def race[T](self, calls: Sequence[Callable[[], T]]) -> list[T]:
        """Run the calls at once, one thread each; their results in order."""
        barrier = threading.Barrier(len(calls), timeout=RACE_TIMEOUT)
        results: list[Any] = [None] * len(calls)
        errors: list[BaseException] = []

        def run(n: int, call: Callable[[], T]) -> None:
            self._local.barrier = barrier
            try:
                results[n] = call()
            except BaseException as exc:
                errors.append(exc)
            finally:
                self._local.barrier = None

        threads = [threading.Thread(target=run, args=(n, c)) for n, c in enumerate(calls)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(RACE_TIMEOUT * 2)
        if errors:
            raise errors[0]
        return cast(list[T], results)


class _GatedCollection:
    """A pymongo collection whose writes wait at the gate first."""

    _WRITES = frozenset({"update_one", "update_many", "find_one_and_update", "replace_one"})

    def __init__(self, collection: Collection[Any], gate: WriteGate) -> None:
        self._collection = collection
        self._gate = gate

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._collection, name)
        if name not in self._WRITES:
            return attribute

        def gated(*args: Any, **kwargs: Any) -> Any:
            self._gate.before_write()
            return attribute(*args, **kwargs)

        return gated


class _GatedDatabase:
    """A pymongo database whose `jobs` collection is gated (MongoJobStore takes a database)."""

    def __init__(self, db: Database[Any], gate: WriteGate) -> None:
        self._db = db
        self._gate = gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def __getitem__(self, name: str) -> Any:
        collection = self._db[name]
        return _GatedCollection(collection, self._gate) if name == JOBS else collection


@dataclass
class StoreUnderTest:
    kind: str
    store: InMemoryJobStore | MongoJobStore
    db: Database[Any] | None = None
    gate: WriteGate = field(default_factory=WriteGate)

    @classmethod
    def memory(cls) -> StoreUnderTest:
        gate = WriteGate()
        store = InMemoryJobStore()
        store.before_write = gate.before_write
        return cls("memory", store, None, gate)

    @classmethod
    def mongo(cls, kind: str, db: Database[Any]) -> StoreUnderTest:
        gate = WriteGate()
        store = MongoJobStore(cast(Database[Any], _GatedDatabase(db, gate)))
        return cls(kind, store, db, gate)

    def job_count(self) -> int:
        if isinstance(self.store, InMemoryJobStore):
            return len(self.store.jobs)
        assert self.db is not None
        return self.db[JOBS].count_documents({})

    def lose_counts(self, request_id: str, products: int, images: int = 0) -> None:
        """Take counts off the job's progress, as if rows were recorded but never counted."""
        if isinstance(self.store, InMemoryJobStore):
            with self.store._lock:
                job = self.store.jobs[request_id]
                job.progress = replace(
                    job.progress,
                    processed_products=job.progress.processed_products - products,
                    processed_images=job.progress.processed_images - images,
                )
            return
        assert self.db is not None
        self.db[JOBS].update_one(
            {"_id": request_id},
            {
                "$inc": {
                    "progress.processedProducts": -products,
                    "progress.processedImages": -images,
                }
            },
        )
