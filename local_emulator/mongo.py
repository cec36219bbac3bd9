"""The embedded MongoDB-compatible server: mongoeco's wire server on its own event loop.

With `credentials` it admits only that user (SCRAM-SHA-256, source `admin`, mongoeco's own
authentication; its SCRAM-SHA-1 does not agree with pymongo's): a client without them is
refused every command but the handshake, and the URI it gives carries them
(`mongodb://user:password@host:port/...&authMechanism=SCRAM-SHA-256`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

if TYPE_CHECKING:
    from local_emulator.credentials import MongoCredentials

MongoEngine = Literal["memory", "sqlite"]


class EmbeddedMongo:
    """A loopback MongoDB wire server backed by mongoeco (in memory, or SQLite on disk).

    `start()` returns a `mongodb://` URI that pymongo connects to; `stop()` closes the
    listener, every client connection and the engine, and joins the thread.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        engine: MongoEngine = "memory",
        data_dir: Path | None = None,
        credentials: MongoCredentials | None = None,
    ) -> None:
        self._credentials = credentials
        self._host = host
        self._port = port
        self._engine_kind: MongoEngine = engine
        self._data_dir = data_dir
        self._uri: concurrent.futures.Future[str] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def uri(self) -> str:
        return self._uri.result(timeout=0)

    def start(self) -> str:
        self._thread = threading.Thread(target=self._run, name="embedded-mongo", daemon=True)
        self._thread.start()
        try:
            return self._uri.result(timeout=20)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout=15)
            if self._thread.is_alive():
                raise TimeoutError("the embedded MongoDB server did not stop within 15 s")
            self._thread = None

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
            if not self._uri.done():
                self._uri.set_exception(exc)

    def _make_engine(self, scratch: Path) -> Any:
        if self._engine_kind == "memory":
            from mongoeco.engines.memory import MemoryEngine

            return MemoryEngine()
        from mongoeco.engines.sqlite import SQLiteEngine

        directory = self._data_dir if self._data_dir is not None else scratch
        directory.mkdir(parents=True, exist_ok=True)
        return SQLiteEngine(str(directory / "mongo.sqlite3"), executor_workers=2)

    async def _serve(self) -> None:
        from mongoeco.wire._lifecycle import finish_cleanup
        from mongoeco.wire.auth import WireAuthUser
        from mongoeco.wire.proxy import AsyncMongoEcoProxyServer

        from local_emulator import mongo_patches

        mongo_patches.apply()
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        credentials = self._credentials
        users = (
            (
                WireAuthUser(
                    credentials.username,
                    credentials.password,
                    source="admin",
                    mechanisms=("SCRAM-SHA-256",),
                    roles=({"role": "root", "db": "admin"},),
                ),
            )
            if credentials is not None
            else ()
        )
        with tempfile.TemporaryDirectory(prefix="emulator-mongo-") as scratch:
            proxy = AsyncMongoEcoProxyServer(
                engine=self._make_engine(Path(scratch)),
                host=self._host,
                port=self._port,
                auth_users=users,
            )
            try:
                address = await asyncio.wait_for(proxy.start(), timeout=15)
                self._uri.set_result(_with_credentials(str(address.uri), credentials))
                await self._stop.wait()
            finally:
                await finish_cleanup(proxy.close())


def _with_credentials(uri: str, credentials: MongoCredentials | None) -> str:
    """`mongodb://host:port/?directConnection=true` with the user, its password and its
    authentication source."""
    if credentials is None:
        return uri
    user = f"{quote(credentials.username, safe='')}:{quote(credentials.password, safe='')}"
    scheme, _, rest = uri.partition("://")
    separator = "&" if "?" in rest else "?"
    return f"{scheme}://{user}@{rest}{separator}authSource=admin&authMechanism=SCRAM-SHA-256"
