"""A MongoDB for the tests: `MONGO_URI` when set, else the embedded mongoeco wire server."""

from __future__ import annotations

import itertools
import os
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
def mongo_server() -> Iterator[str]:
    """`MONGO_URI` when the environment names one, else a fresh embedded server."""
    external = os.environ.get("MONGO_URI", "").strip()
    if external:
        yield external
        return
    with embedded_mongo() as uri:
        yield uri


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
