"""The watch page on a phone (390 px wide, in headless Chromium): nothing wider than the
screen, before and after stacked and each at least half the width, every label beside its
field, a failed image as its error code and message (no broken picture), column headings
(on a desktop; on a phone a word above each picture), a refused key named by its prefix. A
screenshot is kept under test-artifacts/ (watch-page-390.png)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local_emulator.stack import Emulator
from tests.e2e.emulator_support import sample_with_a_missing_picture
from tests.e2e.test_pipeline_e2e import upload
from tests.support.chromium import ARTIFACTS, chromium_page, use_key

pytestmark = pytest.mark.e2e

PHONE = {"width": 390, "height": 844}
SCREENSHOT = ARTIFACTS / "watch-page-390.png"
LABELS = ["api-key", "csv", "webhook", "format", "quality", "max-width", "max-height"]


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[Any]:
    with chromium_page(
        tmp_path / "profile", viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=1
    ) as page:
        yield page


def box(element: Any) -> dict[str, float]:
    found = element.bounding_box()
    assert found is not None, element
    return dict(found)


def assert_labels_beside_their_fields(page: Any) -> None:
    """Each label on its field's line, just left of it (not drifted beside another one)."""
    for field_id in LABELS:
        label = box(page.query_selector(f"label[for={field_id}]"))
        field = box(page.query_selector(f"#{field_id}"))
        label_middle = label["y"] + label["height"] / 2
        assert field["y"] <= label_middle <= field["y"] + field["height"], field_id
        gap = field["x"] - (label["x"] + label["width"])
        assert 0 <= gap <= 16, (field_id, gap)
        assert field["x"] + field["width"] <= PHONE["width"], field_id


def test_the_page_on_a_phone_stacks_before_and_after_and_keeps_labels_with_fields(
    emulator: Emulator, images: str, phone: Any
) -> None:
    request_id = upload(emulator, sample_with_a_missing_picture(images))
    page = phone
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    page.goto(f"{emulator.api_url}/")
    assert_labels_beside_their_fields(page)
    use_key(page, emulator.api_key)
    page.goto(f"{emulator.api_url}/?job={request_id}")
    page.wait_for_selector("body[data-settled='true']", timeout=120_000)
    assert_labels_beside_their_fields(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    pairs = page.query_selector_all("[data-testid=image]")
    assert len(pairs) == 13  # the samples' 11 and row 6's 2
    half = PHONE["width"] / 2
    for pair in pairs:
        pair.scroll_into_view_if_needed()
        pictures = pair.query_selector_all("img")
        for picture in pictures:
            page.wait_for_function(
                "i => i.complete && i.naturalWidth > 0", arg=picture, timeout=15_000
            )
        if pair.query_selector("[data-testid=image-error]"):
            continue
        before, after = (box(p) for p in pictures)
        assert before["width"] >= half and after["width"] >= half
        assert after["y"] >= before["y"] + before["height"], "after is below before"
        words = [s.text_content() for s in pair.query_selector_all(".side")]
        assert words == ["Before", "After"]
        assert all(s.is_visible() for s in pair.query_selector_all(".side"))
    assert not any(h.is_visible() for h in page.query_selector_all("[role=columnheader]"))

    failed = page.query_selector("[data-serial='6'] [data-testid=image][data-index='1']")
    assert failed.query_selector_all("img") == []  # no broken picture for what failed
    assert failed.query_selector("[data-testid=before-size]") is None  # nor a guess at its size
    error = failed.query_selector("[data-testid=image-error]")
    assert error.is_visible()
    assert error.text_content().startswith("http_error: ")
    assert box(error)["width"] >= half
    assert page.evaluate("[...document.images].filter(i => i.naturalWidth === 0).length") == 0
    assert not [url for url in fetched if "nowhere.jpg" in url]  # the page fetched nothing there

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000

    # On a desktop the same job reads as a table with its column headings above the columns.
    page.set_viewport_size({"width": 1280, "height": 900})
    first = page.query_selector("[data-testid=product]")
    headings = first.query_selector_all("[role=columnheader]")
    assert [h.text_content() for h in headings] == ["Before", "After", "Saved"]
    assert all(h.is_visible() for h in headings)
    cells = first.query_selector("[data-testid=image]").query_selector_all("[role=cell]")
    for heading, cell in zip(headings, cells, strict=True):
        assert abs(box(heading)["x"] - box(cell)["x"]) <= 1
    assert not any(s.is_visible() for s in page.query_selector_all(".side"))
    assert page.evaluate("window.__csp") == []


def test_a_refused_key_is_named_by_its_prefix_never_whole(emulator: Emulator, phone: Any) -> None:
    page = phone
    unknown = "00000000-0000-4000-8000-000000000000"
    page.goto(f"{emulator.api_url}/?job={unknown}")
    for key, shown in (
        ("not-an-ipk-key-0123456789", "not-…"),
        ("ipk_abcdefabcdef_" + "y" * 43, "ipk_abcdefabcdef_…"),
    ):
        use_key(page, key)
        page.wait_for_function(
            "() => document.getElementById('key-state').textContent.startsWith('The API refused')"
        )
        assert page.text_content("#key-state") == (
            f"The API refused key {shown}: enter a valid one, or forget it."
        )
        assert key not in page.content()
        page.click("#forget-key")
