"""Shared fixtures. MongoDB: `MONGO_URI` when set, else the embedded server (started once)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from tests.support.mongo import CLIENT_OPTIONS, DatabaseNames, mongo_server


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    """A MongoDB URI for the session; the embedded server starts only if a test asks."""
    with mongo_server() as uri:
        yield uri


@pytest.fixture(scope="session")
def mongo_names() -> DatabaseNames:
    return DatabaseNames()


@pytest.fixture(scope="session")
def mongo_client(mongo_uri: str, mongo_names: DatabaseNames) -> Iterator[MongoClient[Any]]:
    client: MongoClient[Any] = MongoClient(mongo_uri, **CLIENT_OPTIONS)
    try:
        yield client
    finally:
        try:
            mongo_names.drop_all(client)  # whatever a failed test left behind
        finally:
            client.close()


@pytest.fixture
def mongo_db(mongo_client: MongoClient[Any], mongo_names: DatabaseNames) -> Iterator[Database[Any]]:
    """A fresh, uniquely named database, dropped after the test."""
    name = mongo_names.new()
    try:
        yield mongo_client[name]
    finally:
        mongo_client.drop_database(name)
