"""The emulator's API server (local_emulator/api_server.py) over loopback, with a tiny Chalice
app and small limits, so what takes seconds in the e2e table takes a fraction here: the
connection cap, stopping with connections waiting, chunked bodies, errors the gateway answers
in its own shape, and a binary body reaching the app base64-encoded."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from chalice.app import Chalice

from local_emulator.api_server import ApiServer, FrontDoorLimits


def make_app() -> Chalice:
    app = Chalice(app_name="front-door-test")
    app.api.binary_types.append("multipart/form-data")

    @app.route("/echo", methods=["POST"], content_types=["multipart/form-data", "text/plain"])
    def echo() -> dict[str, Any]:
        request = app.current_request
        assert request is not None
        raw = request.raw_body
        data = raw if isinstance(raw, bytes) else raw.encode()
        return {"length": len(data), "hex": data.hex()}

    @app.route("/boom", methods=["GET"])
    def boom() -> dict[str, Any]:
        raise RuntimeError("a bug")

    @app.route("/ok", methods=["GET"])
    def ok() -> dict[str, Any]:
        return {"ok": True}

    return app


LIMITS = FrontDoorLimits(
    lambda_payload_bytes=64 * 1024,
    idle_seconds=0.6,
    header_seconds=0.6,
    body_stall_seconds=0.6,
    body_seconds=2.0,
    max_connections=2,
)


@pytest.fixture
def server() -> Iterator[ApiServer]:
    api = ApiServer(make_app(), "127.0.0.1", 0, quiet=True, limits=LIMITS)
    api.start()
    try:
        yield api
    finally:
        api.stop()


def send(port: int, data: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, body


def get(path: str, *extra: str, body: bytes = b"", method: str = "GET") -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: localhost", "Connection: close", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def test_a_chunked_body_reaches_the_app_base64_encoded_as_on_api_gateway(
    server: ApiServer,
) -> None:
    payload = bytes(range(256))
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (payload[:100], payload[100:]))
    status, _, body = send(
        server.address[1],
        get(
            "/echo",
            "Content-Type: Multipart/Form-Data; boundary=x",
            "Transfer-Encoding: chunked",
            method="POST",
            body=chunked + b"0\r\nX-Trailer: 1\r\n\r\n",
        ),
    )
    assert status == 200
    assert json.loads(body) == {"length": 256, "hex": payload.hex()}


def test_the_payload_cap_counts_a_binary_body_base64_encoded(server: ApiServer) -> None:
    limit = LIMITS.lambda_payload_bytes
    text_ok = limit - 4096  # fits as text...
    status, _, _ = send(
        server.address[1],
        get("/echo", "Content-Type: text/plain", f"Content-Length: {text_ok}", method="POST")
        + b"a" * text_ok,
    )
    assert status == 200
    status, _, body = send(  # ...but not base64-encoded, as a binary type is
        server.address[1],
        get(
            "/echo",
            "Content-Type: multipart/form-data; boundary=x",
            f"Content-Length: {text_ok}",
            method="POST",
        ),
    )
    assert status == 413
    assert json.loads(body)["details"][0]["maxPayloadBytes"] == limit


def test_an_unhandled_error_and_chalices_own_errors_take_the_contract_shape(
    server: ApiServer,
) -> None:
    status, headers, body = send(server.address[1], get("/boom"))
    assert status == 500
    assert set(json.loads(body)) == {"error", "details"}
    assert "Traceback" not in body.decode() and "a bug" not in body.decode()
    status, headers, body = send(
        server.address[1], get("/echo", "Content-Type: application/json", method="POST")
    )
    assert status == 415
    assert set(json.loads(body)) == {"error", "details"}
    assert headers["x-content-type-options"] == "nosniff"


def test_connections_past_the_cap_wait_in_the_backlog_and_are_served(server: ApiServer) -> None:
    port = server.address[1]
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(LIMITS.max_connections)]
    try:
        time.sleep(0.1)
        started = time.monotonic()
        status, _, _ = send(port, get("/ok"))  # waits until an idle one is cut off
        waited = time.monotonic() - started
        assert status == 200
        assert waited >= LIMITS.idle_seconds * 0.5
        assert waited < LIMITS.idle_seconds + 5
    finally:
        for sock in idle:
            sock.close()


def test_stop_ends_open_and_waiting_connections(server: ApiServer) -> None:
    port = server.address[1]
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
    for sock in held:
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: localhost\r\n")  # headers never finished
    time.sleep(0.1)
    stopping = threading.Thread(target=server.stop)
    started = time.monotonic()
    stopping.start()
    stopping.join(timeout=15)
    assert not stopping.is_alive()
    assert time.monotonic() - started < 10
    for sock in held:
        sock.close()


def test_chunk_framing_errors_are_400s(server: ApiServer) -> None:
    for chunked in (b"zz\r\n", b"1;ext\r\nab\r\n", b"\r\n", b"1" * 5000 + b"\r\n"):
        status, headers, body = send(
            server.address[1],
            get("/echo", "Content-Type: text/plain", "Transfer-Encoding: chunked", method="POST")
            + chunked,
        )
        assert status == 400, (chunked[:20], body)
        assert headers["connection"] == "close"
        assert set(json.loads(body)) == {"error", "details"}


def test_a_binary_body_is_what_the_app_gets(server: ApiServer) -> None:
    payload = b"\x00\xff" * 10
    status, _, body = send(
        server.address[1],
        get(
            "/echo",
            "Content-Type: multipart/form-data; boundary=x",
            f"Content-Length: {len(payload)}",
            method="POST",
            body=payload,
        ),
    )
    assert status == 200
    assert bytes.fromhex(json.loads(body)["hex"]) == payload
