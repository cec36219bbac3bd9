"""The Chalice app over HTTP, the way `chalice local` serves it, with three fixes.

- Threaded, and every connection is closed and joined on stop.
- Binary bodies: API Gateway matches `binary_types` against the media type, ignoring
  parameters (`multipart/form-data; boundary=...`) and header case, and accepts wildcards;
  `chalice local` compares the raw header value exactly, so multipart bodies would reach
  the app as text. Here they arrive base64-encoded, as on API Gateway.
- Request bodies sent with `Transfer-Encoding: chunked` are read.
"""

from __future__ import annotations

import fnmatch
from http.server import BaseHTTPRequestHandler
from typing import Any

from chalice.config import Config
from chalice.local import (
    ChaliceRequestHandler,
    LambdaEventConverter,
    LocalChalice,
    LocalGateway,
    RouteMatcher,
)

from local_emulator.servers import TrackingHTTPServer, serve_in_thread, server_url, stop_server


class BinaryAwareEventConverter(LambdaEventConverter):
    def _is_binary(self, headers: dict[str, Any]) -> bool:
        content_type = next((str(v) for k, v in headers.items() if k.lower() == "content-type"), "")
        media_type = content_type.split(";", 1)[0].strip().lower()
        if not media_type:
            return False
        return any(
            fnmatch.fnmatchcase(media_type, pattern.lower()) for pattern in self._binary_types
        )


class EmulatorRequestHandler(ChaliceRequestHandler):
    server: TrackingHTTPServer

    def __init__(
        self, request: Any, client_address: Any, server: Any, app_object: Any, config: Any
    ) -> None:
        gateway = LocalGateway(app_object, config)
        gateway.event_converter = BinaryAwareEventConverter(
            RouteMatcher(list(app_object.routes)), list(app_object.api.binary_types)
        )
        self.local_gateway = gateway
        BaseHTTPRequestHandler.__init__(self, request, client_address, server)

    def _parse_payload(self) -> tuple[dict[str, Any], bytes | None]:
        headers = dict(self.headers)
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            body = self._read_chunked()
            headers = {k: v for k, v in headers.items() if k.lower() != "transfer-encoding"}
            headers["Content-Length"] = str(len(body))
            return headers, body or None
        length = int(self.headers.get("content-length", "0") or 0)
        return headers, (self.rfile.read(length) if length > 0 else None)

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.quiet:
            super().log_message(format, *args)


class ApiServer:
    """Serves a Chalice app object on host:port in a thread (port 0 picks a free one)."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        function_name: str = "api_handler",
        lambda_timeout: int = 900,
        memory_size: int = 128,
        quiet: bool = False,
    ) -> None:
        self._app = app
        self._original_class = app.__class__
        if not isinstance(app, LocalChalice):
            # What chalice.local.create_local_server does, without touching its globals:
            # a thread-local `current_request` so concurrent requests don't mix.
            app.__class__ = type("EmulatorLocalChalice", (LocalChalice, app.__class__), {})
        config = Config(
            chalice_stage="dev",
            function_name=function_name,
            user_provided_params={
                "chalice_app": app,
                "app_name": getattr(app, "app_name", "app"),
                "lambda_timeout": lambda_timeout,
                "lambda_memory_size": memory_size,
            },
        )
        self._server = TrackingHTTPServer(
            (host, port),
            lambda request, client_address, server: EmulatorRequestHandler(
                request, client_address, server, app, config
            ),
        )
        self._server.quiet = quiet
        self._thread: Any = None

    @property
    def url(self) -> str:
        host, port = server_url(self._server)
        return f"http://{host}:{port}"

    @property
    def address(self) -> tuple[str, int]:
        return server_url(self._server)

    def start(self) -> None:
        self._thread = serve_in_thread(self._server, "chalice-api")

    def stop(self) -> None:
        stop_server(self._server, self._thread)
        self._thread = None
        self._app.__class__ = self._original_class
