"""What the embedded MongoDB server (mongoeco's memory engine) does unlike MongoDB, patched.

MongoDB finds a document by `_id` through the `_id` index whether or not it exists. mongoeco
looks a wanted `_id` up directly only when the document is there: an `_id` that is absent,
and every `{"_id": {"$in": [...]}}`, walks the whole collection and tests each document. A
pipeline looks up far more absent ids than present ones (the reuse index, before each image
is first made), and each miss cost more as the collection grew: 1.5 ms of the server's CPU at
300 documents, 3.9 ms at 2,000, against 0.8 ms for one found (docs/performance.md).

And each document written alone (an insert, a replacement, an upsert) is checked against
every document of its collection for an equal `_id`, which makes a collection's inserts
slower as it grows (a 2,000-document `insert_many` took 22 s, one by one): that walk is for
numeric ids only (1 and 1.0 are equal under different storage keys), so a string `_id` is
checked by its storage key alone, as mongoeco already does for the documents of a batch
(in memory, and in the SQLite engine that `--data-dir` uses: 1,500 inserts took 54 s).

Here a query whose plan names the `_id` by equality or `$in`, every value a string (a
string's storage key is the string's; no other value equals it) and no collation, takes its
candidates from the ids alone: none when none is there. The engine then tests the candidates
against the whole filter as before, so what a query answers does not change, only what it
walks. Other queries are mongoeco's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_APPLIED = False


def apply() -> None:
    """Patch mongoeco's memory engine (once per process)."""
    global _APPLIED  # noqa: PLW0603
    if _APPLIED:
        return
    from mongoeco.engines.memory import MemoryEngine

    original = MemoryEngine._candidate_items_for_plan_locked

    def candidates_by_id(
        self: Any,
        coll: dict[Any, Any],
        query_plan: Any,
        *,
        collation: Any = None,
        **rest: Any,
    ) -> list[tuple[Any, Any]]:
        ids = string_ids(query_plan) if collation is None else None
        if ids is None:
            return original(self, coll, query_plan, collation=collation, **rest)
        keys = {self._storage_key(value) for value in ids}
        present = [key for key in keys if key in coll]
        if len(present) == 1:
            return [(present[0], coll[present[0]])]
        ordered = getattr(coll, "ordered_keys", None)
        if callable(ordered):  # natural order, as the engine gives it
            present = ordered(present)
        else:
            present = [key for key in coll if key in set(present)]
        return [(key, coll[key]) for key in present]

    MemoryEngine._candidate_items_for_plan_locked = candidates_by_id  # type: ignore[method-assign]

    MemoryEngine._ensure_unique_indexes = _string_ids_by_storage_key(  # type: ignore[method-assign]
        MemoryEngine._ensure_unique_indexes
    )

    from mongoeco.engines.sqlite import SQLiteEngine

    SQLiteEngine._validate_document_against_unique_indexes = _string_ids_by_storage_key(  # type: ignore[method-assign]
        SQLiteEngine._validate_document_against_unique_indexes
    )
    _APPLIED = True


def _string_ids_by_storage_key(unique_check: Callable[..., None]) -> Callable[..., None]:
    """An engine's unique-index check, told not to scan the payloads for a string `_id`: the
    engine's storage key (memory: its dict key; SQLite: its primary key, checked by a query)
    already holds that check exactly."""

    def check(self: Any, db_name: str, coll_name: str, document: Any, **options: Any) -> None:
        if isinstance(document, dict) and isinstance(document.get("_id"), str):
            options["scan_payload_id"] = False
        unique_check(self, db_name, coll_name, document, **options)

    return check


def string_ids(query_plan: Any) -> list[str] | None:
    """The `_id`s a query plan names by equality or `$in` (alone, or as one clause of an
    `$and`), when all are strings; else None."""
    from mongoeco.core.query_plan import (
        AndCondition,
        EqualsCondition,
        InCondition,
    )

    clauses = query_plan.clauses if isinstance(query_plan, AndCondition) else (query_plan,)
    for clause in clauses:
        if getattr(clause, "field", None) != "_id":
            continue
        if isinstance(clause, EqualsCondition) and isinstance(clause.value, str):
            return [clause.value]
        if (
            isinstance(clause, InCondition)
            and clause.values
            and all(isinstance(value, str) for value in clause.values)
        ):
            return [value for value in clause.values if isinstance(value, str)]
    return None
