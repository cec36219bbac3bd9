"""How many MongoDB documents and how much time a job of N rows costs, through the emulator.

    python -m benchmarks.mongo_footprint --rows 1000

Runs the whole local stack (moto, embedded MongoDB unless MONGO_URI is set, the functions),
drops an N-row CSV whose rows each name one small JPEG served over loopback, waits for the job
to end, then counts the documents the job left in each collection.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from typing import Any

from PIL import Image
from pymongo import MongoClient

from benchmarks._api import get_status, submit_csv
from local_emulator.stack import Emulator, EmulatorOptions
from tests.support.servers import serve_bytes

TERMINAL = {"completed", "completed_with_errors", "failed"}


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 140, 200)).save(out, "JPEG", quality=90)
    return out.getvalue()


def _csv(rows: int, base: str) -> str:
    lines = ["S. No.,Product Name,Input Image Urls"]
    lines += [f"{n},Product {n},{base}/p{n}.jpg" for n in range(1, rows + 1)]
    return "\n".join(lines) + "\n"


def _wait(api: str, api_key: str, request_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc: dict[str, Any] = get_status(api, api_key, request_id, 30, limit=1).json()
        if doc["status"] in TERMINAL:
            return doc
        time.sleep(0.5)
    raise SystemExit(f"job {request_id} did not end within {timeout:g}s")


def measure(rows: int, timeout: float) -> dict[str, Any]:
    with (
        serve_bytes(_jpeg(), "image/jpeg") as images,
        Emulator(
            EmulatorOptions(
                port=0,
                allow_private_hosts=True,
                quiet=True,
                verbose_dispatch=bool(os.environ.get("BENCH_VERBOSE")),
            )
        ) as emu,
    ):
        started = time.monotonic()
        request_id, accepted = submit_csv(
            emu.api_url, emu.api_key, _csv(rows, images).encode(), "bulk.csv", timeout=120
        )
        status = _wait(emu.api_url, emu.api_key, request_id, timeout)
        elapsed = time.monotonic() - started
        client: MongoClient[dict[str, Any]] = MongoClient(emu.mongo_uri)
        try:
            db = client[emu.environment.get("MONGO_DB", "image_pipeline")]
            per_collection = {
                name: db[name].count_documents({}) for name in sorted(db.list_collection_names())
            }
        finally:
            client.close()
    return {
        "rows": rows,
        "status": status["status"],
        "accepted_s": round(accepted, 2),
        "terminal_s": round(elapsed, 2),
        "rows_per_s": round(rows / elapsed, 1),
        "documents": per_collection,
        "documents_total": sum(per_collection.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.rows, args.timeout), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
