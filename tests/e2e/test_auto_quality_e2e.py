"""`quality: "auto"` through a running stack (issue 27, "Done when"): a job asking for `auto`
(multipart field) ends completed with each image's quality and score in its status, aligned
with its outputs; the score each output really reaches, SSIMULACRA2
(`chalicelib.perceptual.ssimulacra2`) of the output as served against its source decoded and
fitted as the pipeline fits it (`imaging.fitted_pixels`), is what the status says and has a
median between 68 and 74; `targetScore` 50 (the presigned upload's JSON) gives smaller files;
a re-submitted `auto` job copies its outputs and reports the scores of the ones it copies;
`targetScore` without `auto`, or out of range, is a 400 naming it on both upload routes; the
page's *Auto quality* sends `auto` and its target and shows each image's quality and score."""

from __future__ import annotations

import io
import json
import statistics
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from chalicelib.imaging import CompressOptions, fitted_pixels
from chalicelib.perceptual import ssimulacra2
from PIL import Image

from local_emulator.stack import Emulator
from tests.e2e.emulator_support import SAMPLES, keyed
from tests.e2e.test_output_options_e2e import (
    assert_names_fields,
    fetch,
    job_count,
    outputs_of,
    run_job,
    status_links,
    submit_multipart,
    submit_presigned,
    table,
    wait_terminal,
)
from tests.support.chromium import use_key
from tests.support.emulator import running_emulator
from tests.support.metrics import emitted_metrics

pytestmark = pytest.mark.e2e

# Every bundled sample: photographs and drawings, JPEG (one CMYK, one turned by EXIF), PNG
# with alpha, WebP, a palette GIF.
NAMES = (
    "mug.jpg",
    "hills-portrait.jpg",
    "lamp-cutout.png",
    "catalogue-cmyk.jpg",
    "meadow.webp",
    "sunrise.gif",
)
# How far the score the status shows may be from the reference's: the search may measure
# with a faster variant of the metric, held to at most 3 points on any image (issue 27).
SCORE_AGREEMENT = 3.0


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    # The worker's whole Timeout, as on AWS (the emulator's default scale gives it a quarter):
    # the search stops trying when time runs short, and a 2 MP photo's few encodes and scores
    # take seconds with four images in flight on a shared machine.
    with running_emulator(tenants=("local",), time_scale=1.0) as emu:
        yield emu


def reference_score(name: str, output: bytes) -> float:
    """SSIMULACRA2 of the served output against the sample decoded, oriented, brought to sRGB
    and fitted to the output's size as the pipeline does."""
    with Image.open(io.BytesIO(output)) as image:
        served = np.asarray(image.convert("RGB"))
    height, width = served.shape[:2]
    data = (SAMPLES / "images" / name).read_bytes()
    fitted = fitted_pixels(data, CompressOptions(max_width=width, max_height=height))
    assert (fitted.width, fitted.height) == (width, height), name
    source = np.frombuffer(fitted.data, dtype=np.uint8).reshape(height, width, 3)
    return ssimulacra2(source, served)


def scores_of(doc: Mapping[str, Any]) -> list[tuple[int, float, int, bytes]]:
    """(quality, score, bytes, the output as served) of each image of a completed auto job,
    checking the status's lists are aligned with its outputs."""
    assert doc["status"] == "completed", doc
    found = []
    for product in doc["products"]:
        urls = product["outputImageUrls"]
        qualities, scores = product["outputQualities"], product["outputScores"]
        assert len(qualities) == len(scores) == len(urls) == 1, product
        quality, score = qualities[0], scores[0]
        assert isinstance(quality, int) and 1 <= quality <= 100, product
        assert isinstance(score, int | float), product
        data = fetch(urls[0]).data
        assert len(data) == product["outputBytes"][0], product
        found.append((quality, float(score), len(data), data))
    return found


def test_auto_reaches_its_target_and_a_lower_target_makes_smaller_files(
    emulator: Emulator, images: str
) -> None:
    text = table(images, NAMES)
    high = run_job(emulator, text, {"quality": "auto"})
    assert high["options"]["quality"] == "auto" and high["options"]["targetScore"] == 70
    made = scores_of(high)
    reference = [reference_score(n, data) for n, (_, _, _, data) in zip(NAMES, made, strict=True)]
    for name, (quality, shown, _, _), measured in zip(NAMES, made, reference, strict=True):
        assert abs(shown - measured) <= SCORE_AGREEMENT, (name, quality, shown, measured)
    assert 68 <= statistics.median(reference) <= 74, list(zip(NAMES, reference, strict=True))

    request_id = submit_presigned(emulator, text, {"quality": "auto", "targetScore": 50})
    low = wait_terminal(emulator, request_id)
    assert low["options"]["targetScore"] == 50
    cheaper = scores_of(low)
    for name, before, after in zip(NAMES, made, cheaper, strict=True):
        assert after[2] <= before[2] and after[0] <= before[0], (name, before[:3], after[:3])
    assert sum(c[2] for c in cheaper) < sum(m[2] for m in made)


def test_a_resubmitted_auto_job_reports_the_scores_of_the_outputs_it_copies(
    emulator: Emulator, images: str
) -> None:
    text = table(images, ("meadow.webp", "sunrise.gif", "mug.jpg"))  # the quicker ones
    fields = {"format": "webp", "quality": "auto", "targetScore": "62.5"}
    with emitted_metrics(emulator) as metrics:
        first = run_job(emulator, text, fields)
        second = run_job(emulator, text, fields)
        assert metrics.wait_total("ImagesReused", 3) == 3
    assert outputs_of(emulator, second) == outputs_of(emulator, first)
    assert status_links(second) != status_links(first)
    for key in ("outputQualities", "outputScores", "outputBytes"):
        assert [p[key] for p in second["products"]] == [p[key] for p in first["products"]], key


def test_a_fixed_quality_job_shows_no_scores(emulator: Emulator, images: str) -> None:
    doc = run_job(emulator, table(images, NAMES[:1]), {"quality": "40"})
    assert doc["status"] == "completed"
    assert "outputQualities" not in doc["products"][0]
    assert "targetScore" not in doc["options"]


BAD_FIELDS = [
    ({"targetScore": "70"}, {"targetScore"}),
    ({"quality": "40", "targetScore": "70"}, {"targetScore"}),
    ({"quality": "auto", "targetScore": "29"}, {"targetScore"}),
    ({"quality": "auto", "targetScore": "96"}, {"targetScore"}),
    ({"quality": "auto", "targetScore": "x"}, {"targetScore"}),
    ({"quality": "automatic"}, {"quality"}),
]
BAD_JSON = [
    ({"targetScore": 70}, {"targetScore"}),
    ({"quality": 40, "targetScore": 70}, {"targetScore"}),
    ({"quality": "auto", "targetScore": 95.5}, {"targetScore"}),
    ({"quality": "auto", "targetScore": "high"}, {"targetScore"}),
    ({"quality": "auto", "targetScore": True}, {"targetScore"}),
    ({"quality": "x", "targetScore": 70}, {"quality", "targetScore"}),
]


def test_a_target_score_without_auto_or_out_of_range_is_a_400_naming_it(
    emulator: Emulator, images: str
) -> None:
    text = table(images, NAMES[:1])
    before = job_count(emulator)
    for fields, named in BAD_FIELDS:
        assert_names_fields(submit_multipart(emulator, text, fields), named)
    for options, named in BAD_JSON:
        answer = keyed(emulator).post(f"{emulator.api_url}/api/uploads", json=options, timeout=10)
        assert_names_fields(answer, named)
    assert job_count(emulator) == before  # nothing was accepted


def test_the_page_asks_for_auto_and_shows_each_images_quality_and_score(
    emulator: Emulator, images: str, page: Any, tmp_path: Path
) -> None:
    csv_path = tmp_path / "products.csv"
    csv_path.write_text(table(images, ("meadow.webp", "sunrise.gif")))
    asked: list[Any] = []
    page.on("request", lambda r: asked.append(r) if r.url.endswith("/api/uploads") else None)
    page.goto(f"{emulator.api_url}/")
    use_key(page, emulator.api_key)
    assert page.is_disabled("#target-score") and page.is_enabled("#quality")
    page.check("#quality-auto")
    assert page.is_enabled("#target-score") and page.is_disabled("#quality")
    page.fill("#target-score", "60")
    page.set_input_files("#csv", str(csv_path))
    page.click("#start")
    page.wait_for_selector("body[data-settled='true']", timeout=120_000)
    (request,) = asked
    assert json.loads(request.post_data or "{}") == {
        "fileName": "products.csv",
        "format": "jpeg",
        "quality": "auto",
        "targetScore": 60,
    }
    request_id = page.text_content("#request-id")
    doc = wait_terminal(emulator, str(request_id))
    assert doc["status"] == "completed" and doc["options"]["targetScore"] == 60
    captions = [c.text_content() for c in page.query_selector_all("[data-testid=after-size]")]
    expected = [
        f"{p['outputBytes'][0]:,} bytes, quality {p['outputQualities'][0]}, "
        f"score {p['outputScores'][0]:.1f}"
        for p in doc["products"]
    ]
    assert captions == expected
    assert page.evaluate("window.__csp") == []
