"""HEIC and JPEG XL through a running stack (issue 27, "Done when": a HEIC photo comes out as
a JPEG of its size): a job whose images are a phone's HEIC (turned by its `irot` box, EXIF
saying so beside it), a plain HEIC and a JPEG XL, all served by a loopback image host, ends
with each a JPEG of the source's size as seen; a damaged HEIC and an animated JPEG XL fail
alone with `decode_failed` and the rest of the job goes on."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from pathlib import Path

import pillow_heif
import pytest
import requests
from PIL import Image

from local_emulator.samples import make_samples
from local_emulator.stack import Emulator
from tests.e2e.emulator_support import keyed
from tests.e2e.test_pipeline_e2e import wait_terminal
from tests.support.servers import image_host

pytestmark = pytest.mark.e2e

JXL_FILES = Path(__file__).resolve().parents[1] / "unit" / "jxl_files"


def photo(size: tuple[int, int], seed: int) -> Image.Image:
    return make_samples.landscape(random.Random(seed), size)


def heic(image: Image.Image, orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    pillow_heif.from_pillow(image).save(out, quality=80, exif=exif.tobytes())
    return out.getvalue()


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("heic-jxl")
    phone = heic(photo((480, 360), 1), orientation=6)  # stored landscape, seen portrait
    assert b"irot" in phone
    (root / "phone.heic").write_bytes(phone)
    (root / "plain.heic").write_bytes(heic(photo((320, 240), 2)))
    out = io.BytesIO()
    photo((400, 300), 3).save(out, "JXL", quality=85)
    (root / "photo.jxl").write_bytes(out.getvalue())
    (root / "damaged.heic").write_bytes(phone[: len(phone) // 2])
    (root / "animated.jxl").write_bytes((JXL_FILES / "animated.jxl").read_bytes())
    with image_host(root) as url:
        yield url


def test_heic_and_jxl_photos_come_out_as_jpegs_of_their_size(
    emulator: Emulator, sources: str
) -> None:
    names = ["phone.heic", "plain.heic", "photo.jxl", "damaged.heic", "animated.jxl"]
    text = "S. No.,Product Name,Input Image Urls\n" + "".join(
        f"{n},Product {n},{sources}/{name}\n" for n, name in enumerate(names, 1)
    )
    answer = keyed(emulator).post(
        f"{emulator.api_url}/api/uploadAndProcessDocument",
        files={"file": ("products.csv", text.encode(), "text/csv")},
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    doc = wait_terminal(emulator, answer.json()["requestId"])
    assert doc["status"] == "completed_with_errors", doc
    products = {p["inputImageUrls"][0].rsplit("/", 1)[1]: p for p in doc["products"]}

    expected_sizes = {"phone.heic": (360, 480), "plain.heic": (320, 240), "photo.jxl": (400, 300)}
    for name, size in expected_sizes.items():
        product = products[name]
        assert product["status"] == "completed" and not product["errors"], product
        fetched = requests.get(product["outputImageUrls"][0], timeout=30)
        assert fetched.status_code == 200 and fetched.headers["Content-Type"] == "image/jpeg"
        with Image.open(io.BytesIO(fetched.content)) as output:
            assert (output.format, output.size) == ("JPEG", size), name

    for name in ("damaged.heic", "animated.jxl"):
        product = products[name]
        assert product["status"] == "failed" and product["outputImageUrls"] == [""], product
        assert [e["code"] for e in product["errors"]] == ["decode_failed"], product
    assert doc["progress"]["failedImages"] == 2 and doc["progress"]["processedImages"] == 5
