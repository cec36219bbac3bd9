"""The embedded server's `_id` lookups and unique checks (`local_emulator.mongo_patches`): a
query by string `_id` (equality or `$in`) answers what MongoDB answers without walking the
collection, and a string `_id` written twice is still refused without the walk; numeric ids
keep mongoeco's own path (1 and 1.0 are one id)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from mongoeco.engines.memory import MemoryEngine
from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from tests.support.mongo import embedded_mongo

SIZE = 50


class Walks:
    """How many stored documents the engine reads (each one a step of a walk)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        borrow = MemoryEngine._borrow_storage_document

        def counted(engine: Any, data: Any) -> Any:
            self.count += 1
            return borrow(engine, data)

        monkeypatch.setattr(MemoryEngine, "_borrow_storage_document", counted)

    def during(self, action: Any) -> tuple[Any, int]:
        before = self.count
        result = action()
        return result, self.count - before


@pytest.fixture(scope="module")
def uri() -> Iterator[str]:
    with embedded_mongo() as running:
        yield running


@pytest.fixture
def things(uri: str) -> Iterator[Collection[dict[str, Any]]]:
    with MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        collection: Collection[dict[str, Any]] = client["patches"]["things"]
        collection.drop()
        collection.insert_many([{"_id": f"id-{n}", "n": n} for n in range(SIZE)])
        yield collection


def test_an_absent_string_id_is_answered_without_a_walk(
    things: Collection[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    walks = Walks(monkeypatch)
    found, walked = walks.during(lambda: things.find_one({"_id": "id-absent"}))
    assert found is None
    assert walked == 0
    found, walked = walks.during(lambda: things.find_one({"_id": "id-7"}))
    assert found == {"_id": "id-7", "n": 7}
    assert walked <= 1


def test_in_answers_the_present_ids_in_natural_order_walking_only_them(
    things: Collection[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    walks = Walks(monkeypatch)
    wanted = ["id-30", "nope", "id-3", "id-12", "also-nope"]
    found, walked = walks.during(lambda: list(things.find({"_id": {"$in": wanted}})))
    assert [d["_id"] for d in found] == ["id-3", "id-12", "id-30"]  # as inserted
    assert walked <= 3
    none, walked = walks.during(lambda: list(things.find({"_id": {"$in": ["x", "y"]}})))
    assert none == []
    assert walked == 0


def test_the_rest_of_the_filter_still_applies(things: Collection[dict[str, Any]]) -> None:
    assert things.find_one({"_id": "id-5", "n": 6}) is None
    assert things.find_one({"_id": "id-5", "n": 5}) == {"_id": "id-5", "n": 5}
    assert [d["n"] for d in things.find({"_id": {"$in": ["id-1", "id-2"]}, "n": {"$gt": 1}})] == [2]
    result = things.update_one({"_id": "id-absent"}, {"$set": {"n": 0}})
    assert result.matched_count == 0
    assert things.update_one({"_id": "id-9"}, {"$inc": {"n": 1}}).modified_count == 1
    assert things.find_one({"_id": "id-9"}) == {"_id": "id-9", "n": 10}
    assert things.delete_many({"_id": {"$in": ["id-1", "gone"]}}).deleted_count == 1


def test_a_string_id_written_twice_is_refused_without_a_walk(
    things: Collection[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    walks = Walks(monkeypatch)
    _, walked = walks.during(lambda: things.insert_one({"_id": "id-new", "n": -1}))
    assert walked < SIZE
    with pytest.raises(DuplicateKeyError):
        things.insert_one({"_id": "id-4", "n": -1})
    things.replace_one({"_id": "id-new"}, {"_id": "id-new", "n": 1}, upsert=True)
    assert things.find_one({"_id": "id-new"}) == {"_id": "id-new", "n": 1}
    assert things.count_documents({}) == SIZE + 1


def test_numeric_ids_keep_their_equality(uri: str) -> None:
    with MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        numbers: Collection[dict[str, Any]] = client["patches"]["numbers"]
        numbers.drop()
        numbers.insert_one({"_id": 1, "v": "one"})
        assert numbers.find_one({"_id": 1.0}) == {"_id": 1, "v": "one"}
        with pytest.raises(DuplicateKeyError):
            numbers.insert_one({"_id": 1.0, "v": "again"})


def test_the_sqlite_engine_still_refuses_a_string_id_written_twice() -> None:
    with (
        embedded_mongo("sqlite") as sqlite_uri,
        MongoClient(sqlite_uri, serverSelectionTimeoutMS=5000) as client,
    ):
        kept: Collection[dict[str, Any]] = client["patches"]["kept"]
        kept.insert_many([{"_id": f"k-{n}"} for n in range(5)])
        with pytest.raises(DuplicateKeyError):
            kept.insert_one({"_id": "k-3"})
        kept.insert_one({"_id": 2})
        with pytest.raises(DuplicateKeyError):
            kept.insert_one({"_id": 2.0})
        assert kept.count_documents({}) == 6
