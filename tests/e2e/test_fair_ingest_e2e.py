"""Ingest fair between tenants, through the emulator (issue 22: "ingest and finalization stay
quick for every tenant"): tenant alpha drops six CSVs of 5,000 rows in the bucket and, once
their ingest is under way, tenant beta drops one of 5 rows; beta's rows are all sent while
alpha has not sent one CSV's worth, and beta's job completes.

S3's events carry no message group, and the ingest function has two pollers here (its
reserved concurrency on AWS is small too): first in, first out, beta's CSV would be read only
once alpha's had all been taken, each ingested whole. A CSV this large is handed at once to
its tenant's message group, and each ingest run sends rows for one slice (0.2 s here, longer
for a CSV slow to read again) before handing over in that group, so beta's storage event is
taken when the first slice ends and the fair queue puts it before alpha's next slices.
Asserted: an order (how far alpha's fan-out had got when beta's was done), not a time."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pymongo
import pytest
import requests

from local_emulator.stack import Emulator
from tests.support.emulator import running_emulator
from tests.support.servers import serve
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

HEADER = "S. No.,Product Name,Input Image Urls\n"
TERMINAL = {"completed", "completed_with_errors", "failed", "cancelled"}
ALPHA_CSVS, ALPHA_ROWS, BETA_ROWS = 6, 5000, 5
SLICE_SECONDS = "0.2"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with running_emulator(
        {"INGEST_SLICE_SECONDS": SLICE_SECONDS}, tenants=("alpha", "beta")
    ) as emu:
        yield emu


@pytest.fixture(scope="module")
def image_host() -> Iterator[str]:
    """A small JPEG for every GET, but a 404 under /gone/ (alpha's rows: failed at once, so
    that the workers' share of the two cores stays small)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 120, 200)).save(buffer, "JPEG")
    jpeg = buffer.getvalue()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            body = b"" if self.path.startswith("/gone/") else jpeg
            self.send_response(404 if self.path.startswith("/gone/") else 200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve(Handler) as base:
        yield base


def api(emulator: Emulator, tenant: str) -> requests.Session:
    (key,) = [t.api_key for t in emulator.tenants if t.name == tenant]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    return session


def csv(base: str, rows: int, folder: str) -> bytes:
    lines = "".join(f"{n},P{n},{base}/{folder}/{n}.jpg\n" for n in range(1, rows + 1))
    return (HEADER + lines).encode()


def jobs_of(db: Any, tenant: str) -> list[dict[str, Any]]:
    return list(db.jobs.find({"tenant": tenant}, {"status": 1, "fanout": 1, "progress": 1}))


def fanned_out(db: Any, tenant: str) -> int:
    return sum(int(job.get("fanout", {}).get("sent", 0)) for job in jobs_of(db, tenant))


def test_a_small_csv_is_ingested_while_another_tenants_large_csvs_are_far_from_fanned_out(
    emulator: Emulator, image_host: str
) -> None:
    s3 = emulator.s3_client()
    bucket = emulator.uploads_bucket
    alpha_total = ALPHA_CSVS * ALPHA_ROWS
    with pymongo.MongoClient(emulator.mongo_uri, serverSelectionTimeoutMS=10_000) as client:
        db = client[emulator.environment.get("MONGO_DB", "image_pipeline")]
        for n in range(ALPHA_CSVS):
            body = csv(image_host, ALPHA_ROWS, f"gone/{n}")
            s3.put_object(Bucket=bucket, Key=f"incoming/alpha/feed-{n}.csv", Body=body)
        try:
            # alpha's ingest under way: both pollers busy with its slices
            assert wait_until(
                lambda: sum(j["fanout"]["sent"] > 0 for j in jobs_of(db, "alpha")) >= 2, 120, 0.02
            )
            beta_csv = csv(image_host, BETA_ROWS, "b")
            s3.put_object(Bucket=bucket, Key="incoming/beta/small.csv", Body=beta_csv)
            assert wait_until(
                lambda: any(j["fanout"].get("done") for j in jobs_of(db, "beta")), 120, 0.02
            )
            alpha_sent = fanned_out(db, "alpha")
            assert wait_until(
                lambda: all(j["status"] in TERMINAL for j in jobs_of(db, "beta")), 120, 0.05
            )
            (beta,) = jobs_of(db, "beta")
        finally:
            # alpha's ingest is not this test's business: cancelled, its slices stop
            session = api(emulator, "alpha")
            for job in jobs_of(db, "alpha"):
                if job["status"] not in TERMINAL:
                    session.post(f"{emulator.api_url}/api/jobs/{job['_id']}/cancel", timeout=30)
            wait_until(lambda: all(j["status"] in TERMINAL for j in jobs_of(db, "alpha")), 180, 0.5)
    assert beta["status"] == "completed" and beta["progress"]["processedProducts"] == BETA_ROWS
    # first in, first out, beta's CSV would have been read after every one of alpha's was
    # taken, and with them ingested whole: at least five of the six; with whole-CSV runs in
    # alpha's group, at least one of them
    assert alpha_sent < ALPHA_ROWS, f"alpha had sent {alpha_sent} of {alpha_total} rows first"
