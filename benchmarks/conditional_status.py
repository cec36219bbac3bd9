"""What a conditional status read saves: the status of a 200-product job (a page of 100, the
whole job in one page of 1000) and the job list, each read as a full 200 and as a 304 (the
client sends the ETag it has), on the emulator over loopback HTTP, quiet and then while
another tenant's 1,000-row job runs (distinct image bytes: nothing is reused).

    python -m benchmarks.conditional_status [--reads 200] [--busy-rows 1000]

Prints, per read, the median and 99th percentile latency seen by the client (keep-alive, one
request at a time), the CPU per read of the process (the stack and the client: a fair figure
while it runs nothing else, i.e. quiet) and the bytes of the answer's body. The tenants'
throttle is lifted (what is measured is the route, not the usage plan).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from local_emulator.stack import Emulator, EmulatorOptions

ROOT = Path(__file__).resolve().parent.parent
PICTURE = (ROOT / "local_emulator" / "samples" / "images" / "mug.jpg").read_bytes()
TERMINAL = {"completed", "completed_with_errors", "failed", "cancelled"}


@contextmanager
def distinct_images() -> Iterator[str]:
    """`/<n>.jpg`: the sample JPEG with `n` after its end (decoders stop at EOI): distinct
    bytes per URL, so content-addressed reuse copies nothing."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            body = PICTURE + self.path.encode()
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def submit(api: requests.Session, url: str, images: str, rows: int, tag: str) -> str:
    text = "S. No.,Product Name,Input Image Urls\n" + "".join(
        f"{n},P{n},{images}/{tag}-{n}.jpg\n" for n in range(1, rows + 1)
    )
    answer = api.post(
        f"{url}/api/uploadAndProcessDocument",
        files={"file": ("p.csv", text.encode(), "text/csv")},
        timeout=60,
    )
    answer.raise_for_status()
    return str(answer.json()["requestId"])


def wait(api: requests.Session, url: str, request_id: str) -> None:
    while True:
        doc = api.get(f"{url}/api/getProcessingStatus/{request_id}?limit=1", timeout=30).json()
        if doc["status"] in TERMINAL:
            return
        time.sleep(0.2)


@dataclass
class Reads:
    latencies: list[float] = field(default_factory=list)
    cpu: float = 0.0  # seconds of this process's CPU (the stack's and the client's)


def measure(api: requests.Session, url: str, reads: int) -> tuple[Reads, Reads, int]:
    """`reads` full reads and `reads` conditional ones, alternated (both under the same
    load): their latencies and CPU, and the full answer's size. The CPU is the whole
    process's (the emulator runs in it): a fair figure only while nothing else runs."""
    first = api.get(url, timeout=30)
    first.raise_for_status()
    tag = first.headers["ETag"]
    full, conditional = Reads(), Reads()
    for _ in range(reads):
        for headers, kept, expected in (
            ({}, full, 200),
            ({"If-None-Match": tag}, conditional, 304),
        ):
            cpu, started = time.process_time(), time.perf_counter()
            answer = api.get(url, headers=headers, timeout=30)
            kept.latencies.append(time.perf_counter() - started)
            kept.cpu += time.process_time() - cpu
            assert answer.status_code == expected, answer.status_code
            assert expected == 200 or not answer.content
    return full, conditional, len(first.content)


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def report(api: requests.Session, base: str, request_id: str, reads: int, label: str) -> None:
    reads_of = {
        "status, limit=100": f"{base}/api/getProcessingStatus/{request_id}?limit=100",
        "status, limit=1000": f"{base}/api/getProcessingStatus/{request_id}?limit=1000",
        "job list": f"{base}/api/jobs",
    }
    print(f"\n{label}")
    print(
        f"{'read':<20} {'answer':>6} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms':>8} {'body bytes':>11}"
    )
    for name, url in reads_of.items():
        full, conditional, size = measure(api, url, reads)
        for code, kept, body in (("200", full, size), ("304", conditional, 0)):
            p50 = statistics.median(kept.latencies) * 1000
            cpu = kept.cpu / reads * 1000
            print(
                f"{name:<20} {code:>6} {p50:>8.2f} {p99(kept.latencies) * 1000:>8.2f} "
                f"{cpu:>8.2f} {body:>11}"
            )


def progress(api: requests.Session, base: str, request_id: str) -> str:
    doc = api.get(f"{base}/api/getProcessingStatus/{request_id}?limit=1", timeout=30).json()
    rows = doc["progress"]
    return f"{doc['status']}, {rows['processedProducts']}/{rows['totalProducts']} rows"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=200, help="reads per line")
    parser.add_argument("--busy-rows", type=int, default=1000, help="the other tenant's job")
    args = parser.parse_args()
    options = EmulatorOptions(
        host="127.0.0.1",
        port=0,
        allow_private_hosts=True,
        quiet=True,
        tenants=("alpha", "beta"),
        # what is measured is the route, not the usage plan's throttle (20/s a tenant)
        parameter_overrides={"TenantRateLimit": "100000", "TenantBurstLimit": "100000"},
    )
    with distinct_images() as images, Emulator(options) as emulator:
        keys = {t.name: t.api_key for t in emulator.tenants}
        alpha, beta = requests.Session(), requests.Session()
        alpha.headers["Authorization"] = f"Bearer {keys['alpha']}"
        beta.headers["Authorization"] = f"Bearer {keys['beta']}"
        base = emulator.api_url
        request_id = submit(alpha, base, images, 200, "a")
        wait(alpha, base, request_id)
        report(alpha, base, request_id, args.reads, "quiet")
        busy = submit(beta, base, images, args.busy_rows, "b")
        print(f"\nbeta's job before: {progress(beta, base, busy)}")
        report(alpha, base, request_id, args.reads, f"while beta's {args.busy_rows} rows run")
        print(f"beta's job after: {progress(beta, base, busy)} (busy all along unless completed)")


if __name__ == "__main__":
    main()
