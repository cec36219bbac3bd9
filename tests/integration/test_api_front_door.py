"""The emulator's API server (local_emulator/api_server.py) over loopback, with a tiny Chalice
app and small limits, so what takes seconds in the e2e table takes a fraction here: slow
and idle connections holding no request thread, stopping with connections waiting, chunked
bodies, errors the gateway answers in its own shape, and a binary body reaching the app
base64-encoded."""

from __future__ import annotations

import json
import select
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


SLOW_CONNECTIONS = 200


@pytest.fixture
def patient_server() -> Iterator[ApiServer]:
    """2 request threads, and a header timeout long enough that no slow connection of the
    test below is cut off while it runs."""
    limits = FrontDoorLimits(idle_seconds=60, header_seconds=60, max_connections=2)
    api = ApiServer(make_app(), "127.0.0.1", 0, quiet=True, limits=limits)
    api.start()
    try:
        yield api
    finally:
        api.stop()


def test_slow_and_idle_connections_hold_no_request_thread(patient_server: ApiServer) -> None:
    """Slowloris: 200 connections that sent a request line and a Host header, and never the
    end of their heads, and as many idle ones, against a server of 2 request threads: a
    normal request is answered while every one of them is still open (on a thread per
    connection it waited for their 60 s header timeouts)."""
    port = patient_server.address[1]
    assert patient_server.limits.max_connections < SLOW_CONNECTIONS
    held: list[socket.socket] = []
    try:
        for _ in range(SLOW_CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"GET /ok HTTP/1.1\r\nHost: localhost\r\n")
            held.append(sock)
            held.append(socket.create_connection(("127.0.0.1", port), timeout=10))  # idle
        for _ in range(3):
            status, _, body = send(port, get("/ok"), timeout=20)  # long before their timeout
            assert status == 200 and json.loads(body) == {"ok": True}
        # none of them was cut off to make room: none has an answer or an end yet
        readable, _, _ = select.select(held, [], [], 0)
        assert readable == []
    finally:
        for sock in held:
            sock.close()


def test_slow_bodies_hold_no_request_thread(patient_server: ApiServer) -> None:
    """200 requests whose heads announce a small body that never comes: a normal request
    is answered while they all wait (their bodies are waited for without a thread)."""
    port = patient_server.address[1]
    held: list[socket.socket] = []
    try:
        for _ in range(SLOW_CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(
                get(
                    "/echo",
                    "Content-Type: text/plain",
                    "Content-Length: 100",
                    body=b"x",
                    method="POST",
                )
            )
            held.append(sock)
        status, _, body = send(port, get("/ok"), timeout=20)
        assert status == 200 and json.loads(body) == {"ok": True}
        readable, _, _ = select.select(held, [], [], 0)
        assert readable == []
    finally:
        for sock in held:
            sock.close()


def test_a_body_that_stops_coming_is_a_408(server: ApiServer) -> None:
    started = time.monotonic()
    status, _, body = send(
        server.address[1],
        get("/echo", "Content-Type: text/plain", "Content-Length: 100", body=b"x", method="POST"),
    )
    assert status == 408 and "body" in json.loads(body)["error"]
    assert time.monotonic() - started >= LIMITS.body_stall_seconds * 0.9


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
