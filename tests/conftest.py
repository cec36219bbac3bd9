"""Shared fixtures. MongoDB: `MONGO_URI` when set, else the embedded server (started once).

`job_store` is each JobStore the contract runs on (tests/support/stores.py): the in-memory
fake, MongoJobStore on the embedded server, and MongoJobStore on `MONGO_URI` when set."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from tests.support.mongo import DatabaseNames, embedded_mongo, session_client
from tests.support.stores import STORE_KINDS, StoreUnderTest


@pytest.fixture(scope="session")
def mongo_names() -> DatabaseNames:
    return DatabaseNames()


@pytest.fixture(scope="session")
def embedded_mongo_client(mongo_names: DatabaseNames) -> Iterator[MongoClient[Any]]:
    """The embedded server, started once a test asks for it, and a client of it."""
    with embedded_mongo() as uri, session_client(uri, mongo_names) as client:
        yield client


@pytest.fixture(scope="session")
def external_mongo_client(mongo_names: DatabaseNames) -> Iterator[MongoClient[Any]]:
    """A client of the server `MONGO_URI` names."""
    uri = os.environ.get("MONGO_URI", "").strip()
    if not uri:
        pytest.skip("MONGO_URI is not set")
    with session_client(uri, mongo_names) as client:
        yield client


@pytest.fixture(scope="session")
def mongo_client(request: pytest.FixtureRequest) -> MongoClient[Any]:
    """`MONGO_URI`'s server when the environment names one, else the embedded server."""
    external = bool(os.environ.get("MONGO_URI", "").strip())
    client = request.getfixturevalue(
        "external_mongo_client" if external else "embedded_mongo_client"
    )
    return client  # type: ignore[no-any-return]


@pytest.fixture
def new_database(
    mongo_names: DatabaseNames,
) -> Iterator[Callable[[MongoClient[Any]], Database[Any]]]:
    """Makes fresh, uniquely named databases; each is dropped after the test."""
    made: list[Database[Any]] = []

    def new(client: MongoClient[Any]) -> Database[Any]:
        made.append(client[mongo_names.new()])
        return made[-1]

    yield new
    for db in made:
        db.client.drop_database(db.name)


@pytest.fixture
def mongo_db(
    mongo_client: MongoClient[Any], new_database: Callable[[MongoClient[Any]], Database[Any]]
) -> Database[Any]:
    """A fresh database on `mongo_client`'s server, dropped after the test."""
    return new_database(mongo_client)


@pytest.fixture(params=STORE_KINDS)
def job_store(
    request: pytest.FixtureRequest, new_database: Callable[[MongoClient[Any]], Database[Any]]
) -> StoreUnderTest:
    kind = str(request.param)
    if kind == "memory":
        return StoreUnderTest.memory()
    server = "embedded_mongo_client" if kind == "mongoeco" else "external_mongo_client"
    return StoreUnderTest.mongo(kind, new_database(request.getfixturevalue(server)))
