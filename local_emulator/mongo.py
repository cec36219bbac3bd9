"""The embedded MongoDB-compatible server: mongoeco's wire server on its own event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import tempfile
import threading
from pathlib import Path
from typing import Any, Literal

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
    ) -> None:
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
        from mongoeco.wire.proxy import AsyncMongoEcoProxyServer

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        with tempfile.TemporaryDirectory(prefix="emulator-mongo-") as scratch:
            proxy = AsyncMongoEcoProxyServer(
                engine=self._make_engine(Path(scratch)), host=self._host, port=self._port
            )
            try:
                address = await asyncio.wait_for(proxy.start(), timeout=15)
                self._uri.set_result(str(address.uri))
                await self._stop.wait()
            finally:
                await finish_cleanup(proxy.close())
