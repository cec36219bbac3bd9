"""The worker's memory held to its MemorySize end to end (issue 27, "Done when"): the worker in
container processes (LOCAL_WORKER_PROCESSES=1), each told its MemorySize and ended by the
emulator if its peak goes over, as Lambda ends it. A 50 MP AVIF job on the template's 1769 MB
fails alone with `too_large_to_encode` (from the header: never decoded) while the other
product completes; with the worker lowered to 384 MB (`WorkerMemorySize`, and downloads of
at most 8 MiB) the same rule refuses a 12 MP AVIF and makes four 3 MP AVIFs wait for memory
one after the other: four at once (about 95 MB each above a resting worker of about 100 MB)
would take the container over its MemorySize, and the emulator would end it. Its own module:
one emulator per process at a time."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.memory import large_photo
from local_emulator.containers import MIB, ContainerPool
from local_emulator.stack import Emulator
from tests.e2e.emulator_support import keyed
from tests.e2e.test_pipeline_e2e import HEADER, wait_terminal
from tests.support.emulator import running_emulator
from tests.support.servers import image_host

pytestmark = pytest.mark.e2e


def jpeg_file(folder: Path, name: str, width: int, height: int, seed: int) -> str:
    out = io.BytesIO()
    with large_photo(width, height, seed, grain=False) as image:
        image.save(out, "JPEG", quality=85)
    (folder / name).write_bytes(out.getvalue())
    return name


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("memory-photos")
    jpeg_file(folder, "small.jpg", 640, 480, 1)
    for n in range(4):  # four pictures: not one output copied for the others (reuse)
        jpeg_file(folder, f"3mp-{n}.jpg", 2048, 1536, 30 + n)
    jpeg_file(folder, "12mp.jpg", 4000, 3000, 12)
    jpeg_file(folder, "50mp.jpg", 8640, 5760, 50)
    with image_host(folder) as url:
        yield url


def avif_job(emulator: Emulator, rows: list[str]) -> dict[str, Any]:
    """A job of one product per URL, into AVIF; its terminal status."""
    text = HEADER + "".join(f"{n},P{n},{url}\n" for n, url in enumerate(rows, 1))
    return wait_terminal(emulator, _submit(emulator, text), timeout=240)


def _submit(emulator: Emulator, text: str) -> str:
    answer = keyed(emulator).post(
        f"{emulator.api_url}/api/uploadAndProcessDocument",
        files={"file": ("products.csv", text.encode(), "text/csv")},
        data={"format": "avif"},
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["requestId"])


def worker_pool(emulator: Emulator) -> ContainerPool:
    [pool] = emulator._pools
    assert "WorkerFunction" in pool.function.name
    return pool


def codes(product: dict[str, Any]) -> list[str]:
    return [e["code"] for e in product.get("errors", [])]


def test_a_50_mp_avif_on_1769_mb_fails_alone_with_its_code(photos: str) -> None:
    with running_emulator(worker_processes=True) as emu:
        doc = avif_job(emu, [f"{photos}/50mp.jpg", f"{photos}/small.jpg"])
        pool = worker_pool(emu)
        report = emu.invocation_report()
    assert pool.function.memory_size == 1769
    assert doc["status"] == "completed_with_errors", doc
    huge, small = doc["products"]
    assert codes(huge) == ["too_large_to_encode"] and huge["outputImageUrls"] == [""]
    assert small["status"] == "completed" and small["outputImageUrls"][0].endswith(".avif")
    assert 0 < pool.peak_memory <= 1769 * MIB and pool.memory_kills == 0
    assert pool.memory_report() in report


def test_on_a_lowered_memory_size_images_wait_for_memory_and_the_peak_stays_within(
    photos: str,
) -> None:
    with running_emulator(
        {"MAX_IMAGE_BYTES": str(8 * MIB)},
        worker_processes=True,
        parameter_overrides={"WorkerMemorySize": "384"},
    ) as emu:
        rows = [f"{photos}/12mp.jpg"] + [f"{photos}/3mp-{n}.jpg" for n in range(4)]
        doc = avif_job(emu, rows)
        pool = worker_pool(emu)
    assert pool.function.memory_size == 384
    assert doc["status"] == "completed_with_errors", doc
    refused, *made = doc["products"]
    assert codes(refused) == ["too_large_to_encode"]
    assert [p["status"] for p in made] == ["completed"] * 4
    assert 0 < pool.peak_memory <= 384 * MIB and pool.memory_kills == 0
