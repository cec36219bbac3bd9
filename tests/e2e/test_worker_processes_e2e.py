"""The worker function in processes of its own (LOCAL_WORKER_PROCESSES=1): spawned containers,
one per concurrent invocation, that reach S3 and SQS over HTTP at the moto server and MongoDB
at MONGO_URI, as a deployed function does. Its own module: one emulator per process at a time."""

from __future__ import annotations

import json

import pytest
import requests

from tests.e2e.test_pipeline_e2e import (
    read_output_csv,
    sample_csv,
    sample_image_count,
    upload,
    wait_terminal,
)
from tests.support.emulator import running_emulator

pytestmark = pytest.mark.e2e


def test_worker_in_processes_of_its_own_completes_the_sample_job(images: str) -> None:
    with running_emulator(worker_processes=True) as emu:
        doc = wait_terminal(emu, upload(emu, sample_csv(images)))
        assert doc["status"] == "completed", json.dumps(doc, indent=1)
        assert doc["progress"]["processedImages"] == sample_image_count()
        pools = emu._pools
        assert len(pools) == 1 and pools[0].cold_starts >= 1
        [out] = read_output_csv(emu, doc["requestId"])[1:2]
        got = requests.get(out[3].split(",")[0], timeout=30)
        assert got.status_code == 200 and got.content[:3] == b"\xff\xd8\xff"
