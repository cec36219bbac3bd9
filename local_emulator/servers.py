"""Threaded HTTP servers that stop completely, and the moto server built on them.

The standard library's and werkzeug's threaded servers use daemon threads for their
connections: a keep-alive connection leaves a thread blocked in `readline()` after the
server is shut down. These servers remember their open connections and end them on stop,
then join every handler thread, so nothing outlives `stop_server`.

moto's S3 stores any browser POST upload; the moto server here checks them against their
POST policy first, as S3 does (`post_policy.py`). moto also serves requests without
credentials (lists, writes); here they are refused as on a private bucket, but the reads a
bucket's CDN may make, which its stand-in answers (`cdn.py`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import socketserver
import threading
import urllib.request
from collections.abc import Mapping
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from werkzeug.serving import ThreadedWSGIServer

from local_emulator.cdn import SigV4Signer, StorageAccess
from local_emulator.kept_objects import OneWritePerRequest
from local_emulator.post_policy import PolicyChecker, PostPolicyMiddleware, path_bucket
from local_emulator.provision import REGION

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    _ServerBase = socketserver.TCPServer
else:
    _ServerBase = object

# moto's fake credentials: what the emulator gives every client, and the only key whose
# signatures its storage accepts.
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"  # noqa: S105


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


class MotoBuckets:
    """moto's buckets, as the POST policy check asks about them (moto's own routing rules
    for path-style and virtual-host requests, its bucket regions and CORS rules)."""

    def bucket_of(self, environ: WSGIEnvironment) -> str | None:
        from moto.s3.responses import S3Response
        from moto.s3.utils import bucket_name_from_url
        from werkzeug.wrappers import Request

        path = str(environ.get("PATH_INFO", ""))
        request = Request(environ)  # reads nothing of the body
        if S3Response.subdomain_based_buckets(request):
            name = bucket_name_from_url(request.url) if path in ("", "/") else None
            return str(name) if name else None
        return path_bucket(path)

    def object_of(self, environ: WSGIEnvironment) -> tuple[str, str] | None:
        """(bucket, key) of an object request, path-style or on the bucket's virtual host."""
        from moto.s3.responses import S3Response
        from moto.s3.utils import bucket_name_from_url
        from werkzeug.wrappers import Request

        path = str(environ.get("PATH_INFO", ""))
        if S3Response.subdomain_based_buckets(Request(environ)):
            bucket = bucket_name_from_url(Request(environ).url)
            key = path[1:]
        else:
            bucket, _, key = path[1:].partition("/")
        return (str(bucket), key) if bucket and key else None

    @staticmethod
    def _bucket(name: str) -> Any:
        from moto.s3.models import s3_backends

        located = s3_backends.bucket_accounts.get(name)
        if located is None:
            return None
        partition, account = located
        return s3_backends[account][partition].buckets.get(name)

    def exists(self, bucket: str) -> bool:
        return self._bucket(bucket) is not None

    def region(self, bucket: str) -> str | None:
        found = self._bucket(bucket)
        return None if found is None else str(found.region_name)

    def cors_headers(self, bucket: str, origin: str) -> list[tuple[str, str]]:
        from moto.s3.utils import cors_matches_origin

        found = self._bucket(bucket)
        for rule in found.cors if found is not None else []:
            methods = rule.allowed_methods or []
            if "POST" in methods and cors_matches_origin(origin, rule.allowed_origins or []):
                headers = [
                    ("Access-Control-Allow-Origin", origin),
                    ("Access-Control-Allow-Methods", ", ".join(methods)),
                ]
                if rule.exposed_headers:
                    headers.append(
                        ("Access-Control-Expose-Headers", ", ".join(rule.exposed_headers))
                    )
                return headers
        return []


class MotoServer:
    """moto's HTTP server (every AWS service moto emulates) on one loopback port.

    Same app and request handler as `moto.server.ThreadedMotoServer`, on a server that
    closes its listening socket and its connections when stopped, with S3's POST policy
    enforced on browser uploads (`credentials`: access key id -> secret, by default the
    emulator's fake pair).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        credentials: Mapping[str, str] | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._credentials = dict(credentials or {ACCESS_KEY_ID: SECRET_ACCESS_KEY})
        self._server: _MotoWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._access: StorageAccess | None = None

    @property
    def access(self) -> StorageAccess:
        """What requests without credentials may do (a CDN's stand-in registers here)."""
        if self._access is None:
            raise RuntimeError("moto server is not running")
        return self._access

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
        buckets = MotoBuckets()
        app = PostPolicyMiddleware(
            OneWritePerRequest(DomainDispatcherApplication(create_backend_app)),
            PolicyChecker(self._credentials),
            buckets,
        )
        access_key, secret_key = next(iter(self._credentials.items()))
        self._access = StorageAccess(app, buckets, SigV4Signer(access_key, secret_key, REGION))
        self._server = _MotoWSGIServer(
            self._host, self._port, self._access, handler=MotoRequestHandler
        )
        self._thread = serve_in_thread(self._server, "moto-server")
        self.reset()
        return self.url

    def reset(self) -> None:
        """Forget every resource (moto keeps its state per process, not per server), and
        what the CDN's stand-in served."""
        if self._access is not None:
            self._access.forget()
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
