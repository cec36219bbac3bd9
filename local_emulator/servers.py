"""Threaded HTTP servers that stop completely, and the moto server built on them.

The standard library's and werkzeug's threaded servers use daemon threads for their
connections: a keep-alive connection leaves a thread blocked in `readline()` after the
server is shut down. These servers remember their open connections and end them on stop,
then join every handler thread, so nothing outlives `stop_server`.

moto checks no signature and stores any browser POST upload; the moto server here is
behind the doors AWS has: its management API hidden and CORS by bucket rules
(`storage_doors.py`), every signature checked against the emulator's one access key
(`sigv4_check.py`), requests without credentials refused as on a private bucket but the
reads a bucket's CDN may make, which its stand-in answers (`cdn.py`), and browser POST
uploads checked against their POST policy (`post_policy.py`).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import threading
from collections.abc import Mapping
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from werkzeug.serving import ThreadedWSGIServer

from local_emulator.cdn import SigV4Signer, StorageAccess
from local_emulator.credentials import StorageCredentials, new_storage_credentials
from local_emulator.kept_objects import OneWritePerRequest
from local_emulator.post_policy import PolicyChecker, PostPolicyMiddleware, path_bucket
from local_emulator.provision import REGION
from local_emulator.sigv4_check import SignatureCheck, SignatureVerifier
from local_emulator.storage_doors import CorsRule, StorageDoors

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

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

    def bucket_named(self, environ: WSGIEnvironment) -> str | None:
        """The existing bucket an S3 request names, for its object or itself."""
        target = self.object_of(environ)
        name = target[0] if target is not None else self.bucket_of(environ)
        return name if name and self.exists(name) else None

    def cors_rules(self, bucket: str) -> list[CorsRule]:
        found = self._bucket(bucket)
        return [
            CorsRule(
                allowed_methods=tuple(rule.allowed_methods or ()),
                allowed_origins=tuple(rule.allowed_origins or ()),
                allowed_headers=tuple(rule.allowed_headers or ()),
                exposed_headers=tuple(rule.exposed_headers or ()),
                max_age_seconds=(
                    int(rule.max_age_seconds) if rule.max_age_seconds is not None else None
                ),
            )
            for rule in (found.cors if found is not None else [])
        ]

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
    closes its listening socket and its connections when stopped, behind the doors of the
    module's docstring. `credentials` is the one access key it accepts (new if not given).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        credentials: StorageCredentials | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self.credentials = credentials or new_storage_credentials()
        self._credentials: Mapping[str, str] = {
            self.credentials.access_key_id: self.credentials.secret_access_key
        }
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
        credentials = self.credentials
        self._access = StorageAccess(
            app,
            buckets,
            SigV4Signer(credentials.access_key_id, credentials.secret_access_key, REGION),
        )
        doors = StorageDoors(
            SignatureCheck(self._access, SignatureVerifier(self._credentials)), buckets
        )
        self._server = _MotoWSGIServer(self._host, self._port, doors, handler=MotoRequestHandler)
        self._thread = serve_in_thread(self._server, "moto-server")
        self.reset()
        return self.url

    def reset(self) -> None:
        """Forget every resource (moto keeps its state per process, not per server), and
        what the CDN's stand-in served: in this process, as `/moto-api/reset` would (which
        is not reachable from outside)."""
        from moto.moto_api._internal.models import moto_api_backend

        if self._access is not None:
            self._access.forget()
        moto_api_backend.reset()

    def stop(self) -> None:
        if self._server is None:
            return
        with contextlib.suppress(OSError):
            self.reset()
        stop_server(self._server, self._thread)
        self._server = None
        self._thread = None
