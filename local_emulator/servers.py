"""Threaded HTTP servers that stop completely, and the moto server built on them.

The standard library's and werkzeug's threaded servers use daemon threads for their
connections: a keep-alive connection leaves a thread blocked in `readline()` after the
server is shut down. These servers remember their open connections and end them on stop,
then join every handler thread, so nothing outlives `stop_server`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import socketserver
import threading
import urllib.request
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from werkzeug.serving import ThreadedWSGIServer

if TYPE_CHECKING:
    _ServerBase = socketserver.TCPServer
else:
    _ServerBase = object


class ConnectionTrackingMixin(_ServerBase):
    """Remembers accepted connections so `close_connections` can end idle keep-alives."""

    daemon_threads = False
    block_on_close = True

    def _tracked(self) -> tuple[threading.Lock, set[socket.socket]]:
        state: tuple[threading.Lock, set[socket.socket]] | None = getattr(
            self, "_tracking_state", None
        )
        if state is None:
            state = (threading.Lock(), set())
            self._tracking_state = state
        return state

    def process_request(self, request: Any, client_address: Any) -> None:
        lock, connections = self._tracked()
        with lock:
            connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        lock, connections = self._tracked()
        with lock:
            connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        lock, connections = self._tracked()
        with lock:
            open_now = list(connections)
        for conn in open_now:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class TrackingHTTPServer(ConnectionTrackingMixin, ThreadingHTTPServer):
    """`http.server.ThreadingHTTPServer` that joins its handler threads on close."""

    quiet = False


class _MotoWSGIServer(ConnectionTrackingMixin, ThreadedWSGIServer):
    daemon_threads = False


def serve_in_thread(server: socketserver.BaseServer, name: str) -> threading.Thread:
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name=name, daemon=True
    )
    thread.start()
    return thread


def stop_server(server: socketserver.BaseServer, thread: threading.Thread | None) -> None:
    """Stop accepting, end open connections, join every handler thread, close the socket."""
    if thread is not None and thread.is_alive():
        server.shutdown()
        thread.join(timeout=10)
    if isinstance(server, ConnectionTrackingMixin):
        server.close_connections()
    server.server_close()


def server_url(server: socketserver.TCPServer) -> tuple[str, int]:
    host, port = server.server_address[:2]
    return str(host), int(port)


class MotoServer:
    """moto's HTTP server (every AWS service moto emulates) on one loopback port.

    Same app and request handler as `moto.server.ThreadedMotoServer`, on a server that
    closes its listening socket and its connections when stopped.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._server: _MotoWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("moto server is not running")
        host, port = server_url(self._server)
        return f"http://{host}:{port}"

    def start(self) -> str:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )

        from local_emulator import moto_patches

        moto_patches.apply()
        werkzeug_log = logging.getLogger("werkzeug")
        if werkzeug_log.level == logging.NOTSET:
            werkzeug_log.setLevel(logging.WARNING)
        app = DomainDispatcherApplication(create_backend_app)
        self._server = _MotoWSGIServer(self._host, self._port, app, handler=MotoRequestHandler)
        self._thread = serve_in_thread(self._server, "moto-server")
        self.reset()
        return self.url

    def reset(self) -> None:
        """Forget every resource (moto keeps its state per process, not per server)."""
        url = f"{self.url}/moto-api/reset"  # always http://host:port
        request = urllib.request.Request(url, method="POST", data=b"")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            json.loads(response.read() or b"{}")

    def stop(self) -> None:
        if self._server is None:
            return
        with contextlib.suppress(OSError):
            self.reset()
        stop_server(self._server, self._thread)
        self._server = None
        self._thread = None
