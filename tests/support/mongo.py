"""A MongoDB for the tests: `MONGO_URI` when set, else the embedded mongoeco wire server."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pymongo import MongoClient

from local_emulator.mongo import EmbeddedMongo, MongoEngine

CLIENT_OPTIONS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 5000,
    "connectTimeoutMS": 5000,
    "appname": "image-pipeline-tests",
}


@contextmanager
def embedded_mongo(engine: MongoEngine = "memory") -> Iterator[str]:
    """Start the embedded server on loopback; yield its URI; stop it (thread joined)."""
    server = EmbeddedMongo(host="127.0.0.1", port=0, engine=engine)
    uri = server.start()
    try:
        yield uri
    finally:
        server.stop()


@contextmanager
def session_client(uri: str, names: DatabaseNames) -> Iterator[MongoClient[Any]]:
    """A client for the session; on the way out it drops whatever a failed test left."""
    client: MongoClient[Any] = MongoClient(uri, **CLIENT_OPTIONS)
    try:
        yield client
    finally:
        try:
            names.drop_all(client)
        finally:
            client.close()


class DatabaseNames:
    """Unique database names for one test session, and the clean-up of all of them."""

    def __init__(self) -> None:
        self.prefix = f"test_{uuid.uuid4().hex[:10]}"
        self._counter = itertools.count(1)

    def new(self) -> str:
        return f"{self.prefix}_{next(self._counter)}"

    def drop_all(self, client: MongoClient[dict[str, Any]]) -> None:
        for name in client.list_database_names():
            if name.startswith(self.prefix):
                client.drop_database(name)
