"""`python -m local_emulator demo`: the bundled sample CSV, end to end, over HTTP.

Brings the stack up (private hosts allowed: the images come from loopback), serves the
sample images, receives and verifies the webhook, submits the CSV, shows progress, and
prints the final status, the output CSV, the webhook and how many bytes were saved. Every
call to the API carries the API key of the emulator's first tenant (never printed); the
images are measured through another session, which does not send it.
"""

from __future__ import annotations

import argparse
import functools
import json
import queue
import sys
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

import requests

from local_emulator.api_server import PortUnavailable
from local_emulator.cli import (
    install_stop_signals,
    make_emulator,
    port_unavailable_line,
    print_storage_lines,
)
from local_emulator.data_dir import DataDirError
from local_emulator.servers import TrackingHTTPServer, serve_in_thread, server_url, stop_server

SAMPLES = Path(__file__).resolve().parent / "samples"
PLACEHOLDER = "{IMAGES_BASE}"
TERMINAL = {"completed", "completed_with_errors", "failed"}
WEBHOOK_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature", "content-type")


class DemoError(Exception):
    """The demo cannot go on; the message says why."""


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    error: str = ""
    payload: Any = None


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class _Receiver:
    secret: str
    deliveries: queue.Queue[Delivery] = field(default_factory=queue.Queue)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        from standardwebhooks.webhooks import Webhook, WebhookVerificationError

        receiver = self
        verifier = Webhook(self.secret)

        class WebhookHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                delivery = Delivery(self.path, headers, body, verified=False)
                try:
                    delivery.payload = verifier.verify(body, headers)
                    delivery.verified = True
                except (WebhookVerificationError, ValueError) as exc:
                    delivery.error = str(exc) or type(exc).__name__
                receiver.deliveries.put(delivery)
                self.send_response(204 if delivery.verified else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return WebhookHandler


def _start(server: TrackingHTTPServer, name: str) -> tuple[TrackingHTTPServer, str]:
    serve_in_thread(server, name)
    host, port = server_url(server)
    return server, f"http://{host}:{port}"


def _progress_line(status: dict[str, Any], started: float) -> str:
    p = status.get("progress") or {}
    failed = p.get("failedImages", 0)
    return (
        f"[{time.monotonic() - started:6.1f}s] {status.get('status', '?'):<22} "
        f"products {p.get('processedProducts', 0)}/{p.get('totalProducts', 0)}  "
        f"images {p.get('processedImages', 0)}/{p.get('totalImages', 0)}"
        f"{f' ({failed} failed)' if failed else ''}  {p.get('percent', 0)}%"
    )


def _size(session: requests.Session, url: str) -> int | None:
    try:
        response = session.get(url, timeout=30)
    except requests.RequestException:
        return None
    return len(response.content) if response.ok else None


def _all_products(session: requests.Session, api: str, request_id: str) -> list[dict[str, Any]]:
    products: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        page = session.get(
            f"{api}/api/getProcessingStatus/{request_id}", params=params, timeout=30
        ).json()
        products.extend(page.get("products") or [])
        cursor = page.get("nextCursor")
        if not cursor:
            return products


def _bytes_summary(session: requests.Session, products: list[dict[str, Any]]) -> list[str]:
    lines = []
    total_in = total_out = ok = failed = 0
    for product in products:
        pairs = zip(
            product.get("inputImageUrls") or [], product.get("outputImageUrls") or [], strict=False
        )
        for input_url, output_url in pairs:
            if not output_url:
                failed += 1
                continue
            size_in, size_out = _size(session, input_url), _size(session, output_url)
            if size_in is None or size_out is None:
                failed += 1
                continue
            ok += 1
            total_in += size_in
            total_out += size_out
            lines.append(
                f"  #{product.get('serialNumber')} {input_url.rsplit('/', 1)[-1]}: "
                f"{size_in:,} -> {size_out:,} bytes"
            )
    if total_in:
        saved = 100 * (1 - total_out / total_in)
        lines.append(
            f"bytes in {total_in:,}, out {total_out:,}: {saved:.1f}% smaller "
            f"({ok} image(s) compressed, {failed} without output)"
        )
    else:
        lines.append(f"no compressed image to compare ({failed} without output)")
    return lines


def _submit(session: requests.Session, api: str, csv_text: str, webhook_url: str) -> str:
    response = session.post(
        f"{api}/api/uploadAndProcessDocument",
        files={"file": ("products.csv", csv_text.encode("utf-8"), "text/csv")},
        data={"webhookUrl": webhook_url},
        timeout=60,
    )
    if response.status_code != 202:
        raise DemoError(f"upload refused: {response.status_code} {response.text}")
    body = response.json()
    print(f"submitted: {json.dumps(body)}", flush=True)
    return str(body["requestId"])


def _wait_for_job(
    session: requests.Session, api: str, request_id: str, timeout: float, stop: Any
) -> dict[str, Any]:
    started = time.monotonic()
    last = ""
    while True:
        response = session.get(f"{api}/api/getProcessingStatus/{request_id}", timeout=30)
        if response.status_code != 200:
            raise DemoError(f"status: {response.status_code} {response.text}")
        status: dict[str, Any] = response.json()
        line = _progress_line(status, started)
        if line.split("]", 1)[1] != last:
            last = line.split("]", 1)[1]
            print(line, flush=True)
        if status.get("status") in TERMINAL:
            return status
        if time.monotonic() - started > timeout:
            raise DemoError(f"the job did not finish within {timeout:g}s")
        if stop.wait(0.5):
            raise DemoError("interrupted")


def _status_after_delivery(
    session: requests.Session, api: str, request_id: str, status: dict[str, Any]
) -> dict[str, Any]:
    """The status once the webhook function has recorded the delivery the receiver saw."""
    deadline = time.monotonic() + 10
    while status.get("webhook", {}).get("state") == "pending" and time.monotonic() < deadline:
        time.sleep(0.2)
        response = session.get(f"{api}/api/getProcessingStatus/{request_id}", timeout=30)
        if response.status_code == 200:
            status = response.json()
    return status


def _print_webhook(delivery: Delivery) -> None:
    print(f"\n== webhook received: POST {delivery.path}")
    for name in WEBHOOK_HEADERS:
        if name in delivery.headers:
            print(f"{name}: {delivery.headers[name]}")
    try:
        print(json.dumps(json.loads(delivery.body), indent=2))
    except ValueError:
        print(delivery.body.decode("utf-8", "replace"))


def run_demo(args: argparse.Namespace) -> int:
    stop = install_stop_signals()
    csv_path: Path = args.csv or SAMPLES / "products.csv"
    images: Path = args.images or SAMPLES / "images"
    if not csv_path.is_file() or not images.is_dir():
        print(f"error: sample data missing ({csv_path}, {images}/)", file=sys.stderr, flush=True)
        return 1
    emulator = make_emulator(args, allow_private_hosts=True, quiet=not args.verbose)
    servers: list[TrackingHTTPServer] = []
    try:
        emulator.start()
        api = emulator.api_url
        print(emulator.state_line)
        print_storage_lines(emulator)
        print(f"ready {api}", flush=True)
        image_server, images_base = _start(
            TrackingHTTPServer(
                ("127.0.0.1", 0), functools.partial(_QuietFiles, directory=str(images))
            ),
            "demo-images",
        )
        servers.append(image_server)
        receiver = _Receiver(emulator.webhook_secret)
        hook_server, hook_base = _start(
            TrackingHTTPServer(("127.0.0.1", 0), receiver.handler()), "demo-webhooks"
        )
        servers.append(hook_server)
        print(f"images {images_base}/  webhook receiver {hook_base}/hooks/demo", flush=True)
        tenant = emulator.tenants[0]
        # a tenant kept by --data-dir got no key at this start: the demo makes its own
        api_key = tenant.api_key or emulator.new_api_key(label="demo")
        print(f"tenant {tenant.name}: its API key goes with every request")
        code = _run(
            args,
            api=api,
            api_key=api_key,
            csv_path=csv_path,
            images_base=images_base,
            hook_base=hook_base,
            receiver=receiver,
            stop=stop,
        )
        print("\n== invocations (no function may run past its Timeout)")
        for line in emulator.invocation_report():
            print(line)
        return code
    except (DemoError, DataDirError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except PortUnavailable as exc:
        print(port_unavailable_line(exc), file=sys.stderr, flush=True)
        return 1
    finally:
        for server in servers:
            stop_server(server, None)
        emulator.stop()


def _run(
    args: argparse.Namespace,
    *,
    api: str,
    api_key: str,
    csv_path: Path,
    images_base: str,
    hook_base: str,
    receiver: _Receiver,
    stop: Any,
) -> int:
    csv_text = csv_path.read_text(encoding="utf-8").replace(PLACEHOLDER, images_base)
    with requests.Session() as session, requests.Session() as files:
        session.headers["Authorization"] = f"Bearer {api_key}"
        request_id = _submit(session, api, csv_text, f"{hook_base}/hooks/demo")
        status = _wait_for_job(session, api, request_id, args.timeout, stop)
        try:
            delivery = receiver.deliveries.get(timeout=args.webhook_timeout)
        except queue.Empty:
            raise DemoError(
                f"no webhook arrived within {args.webhook_timeout:g}s of the job ending"
            ) from None
        status = _status_after_delivery(session, api, request_id, status)
        print("\n== final status")
        print(json.dumps(status, indent=2))
        output = session.get(f"{api}/api/jobs/{request_id}/output.csv", timeout=60)
        print("\n== output CSV")
        print(output.text if output.ok else f"({output.status_code}) {output.text}")
        _print_webhook(delivery)
        if not delivery.verified:
            raise DemoError(f"webhook signature NOT verified: {delivery.error}")
        print("signature verified")
        print("\n== bytes")
        for line in _bytes_summary(files, _all_products(session, api, request_id)):
            print(line)
    if status.get("status") == "failed":
        raise DemoError(f"the job failed: {json.dumps(status.get('errors'))}")
    if not output.ok:
        raise DemoError(f"output CSV: {output.status_code}")
    print(f"\ndone: job {request_id} {status.get('status')}", flush=True)
    return 0
