"""What the storage endpoint's SigV4 check costs a request, measured.

    python -m benchmarks.storage_check [--rounds N] [--size BYTES]

A moto server as the emulator runs it (its doors included) on loopback; boto3 GETs and PUTs
an object of `--size` bytes (300 KB: an output image) with the check as it runs
(`sigv4_check.SignatureVerifier.verify`: the signature recomputed, and for a PUT the body's
SHA-256 compared with its `x-amz-content-sha256`) and with `verify` replaced by a no-op,
interleaved in blocks of 20 so that the machine's load falls on both alike. Printed: the
median per request each way and their ratio (checked / unchecked). The pipeline's functions
reach S3 in process (`local_emulator/inprocess.py`), not through this endpoint: what is
measured here is what a client over HTTP pays (presigned links, the CDN's stand-in,
`LOCAL_AWS_IN_PROCESS=0`, worker processes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

from local_emulator import sigv4_check
from local_emulator.servers import MotoServer

BLOCK = 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.storage_check")
    parser.add_argument("--rounds", type=int, default=10, help="blocks of 20 per side")
    parser.add_argument("--size", type=int, default=300_000, help="object bytes")
    args = parser.parse_args(argv)
    server = MotoServer()
    url = server.start()
    credentials = server.credentials
    s3: Any = boto3.session.Session(
        aws_access_key_id=credentials.access_key_id,
        aws_secret_access_key=credentials.secret_access_key,
        region_name="us-east-1",
    ).client("s3", endpoint_url=url, config=Config(signature_version="s3v4"))
    body = os.urandom(args.size)
    s3.create_bucket(Bucket="bench-storage-check")
    s3.put_object(Bucket="bench-storage-check", Key="read", Body=body)
    real = sigv4_check.SignatureVerifier.verify

    def unchecked(self: Any, environ: Any) -> Any:
        return None

    def get() -> object:
        return s3.get_object(Bucket="bench-storage-check", Key="read")["Body"].read()

    def put() -> object:
        return s3.put_object(Bucket="bench-storage-check", Key="write", Body=body)

    calls: dict[str, Callable[[], object]] = {"GET": get, "PUT": put}
    times: dict[tuple[str, bool], list[float]] = {(n, c): [] for n in calls for c in (True, False)}
    try:
        for _ in range(args.rounds):
            for checked in (True, False):
                sigv4_check.SignatureVerifier.verify = real if checked else unchecked  # type: ignore[method-assign]
                for _ in range(BLOCK):
                    for name, call in calls.items():
                        started = time.perf_counter()
                        call()
                        times[(name, checked)].append(time.perf_counter() - started)
    finally:
        sigv4_check.SignatureVerifier.verify = real  # type: ignore[method-assign]
        server.stop()
    for name in calls:
        on, off = statistics.median(times[(name, True)]), statistics.median(times[(name, False)])
        print(
            f"{name} {args.size:,} bytes: checked {on * 1000:.2f} ms, unchecked "
            f"{off * 1000:.2f} ms per request, ratio {on / off:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
