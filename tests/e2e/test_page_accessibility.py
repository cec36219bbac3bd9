"""A page everyone can use: axe-core (pinned: the npm package's `axe.min.js`, kept in
tests/e2e/axe-core/ with its version and sum) run in a real headless Chromium on the watch
page (`/`) and the docs page (`/api-docs`), in each of the states a person brings them to.
Every violation axe reports, whatever its impact, fails the test, which lists them. Pages
stay under their Content-Security-Policy meanwhile."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest
from chalicelib.pages import docs_page

from local_emulator.stack import Emulator
from tests.e2e.emulator_support import sample_with_a_missing_picture
from tests.e2e.test_pipeline_e2e import upload
from tests.support.chromium import use_key

pytestmark = pytest.mark.e2e


AXE = Path(__file__).resolve().parent / "axe-core" / "axe.min.js"
AXE_VERSION = "4.14.1"
AXE_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"


def axe_script() -> str:
    """The pinned axe-core, checked against its recorded sum before it is trusted."""
    data = AXE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == AXE_SHA256, f"{AXE} is not axe-core {AXE_VERSION}"
    return data.decode("utf-8")


def violations(page: Any) -> list[str]:
    """axe-core's violations of the page as it is now, one line each with its elements.
    Injected by Playwright's evaluate (the page's own policy does not apply to it)."""
    page.evaluate(axe_script())
    assert page.evaluate("axe.version") == AXE_VERSION
    found = page.evaluate(
        "options => axe.run(document, options).then(r => r.violations)",
        {"resultTypes": ["violations"]},
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} -- "
        + "; ".join(" ".join(node["target"]) for node in v["nodes"][:5])
        for v in found
    ]


def test_the_docs_page_has_no_axe_violation_in_any_state(emulator: Emulator, page: Any) -> None:
    page.goto(f"{emulator.api_url}/api-docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
    assert page.evaluate("window.versions?.swaggerUI?.version") == docs_page.SWAGGER_UI_VERSION
    assert violations(page) == [], "as it opens"

    for summary in page.query_selector_all(".opblock-summary-control"):
        summary.click()
    page.wait_for_selector(".opblock.is-open .try-out__btn")
    for button in page.query_selector_all("button.try-out__btn"):
        button.click()
    health = "#operations-default-get_api_health"
    page.click(f"{health} .execute")
    page.wait_for_selector(f"{health} .live-responses-table")
    for toggle in page.query_selector_all(".models .model-box-control"):
        toggle.click()
    time.sleep(0.5)  # the repairs run on the next animation frame
    assert violations(page) == [], "every operation open, in Try it out, one executed"

    page.click(".btn.authorize")
    page.wait_for_selector(".modal-ux")
    time.sleep(0.5)
    assert violations(page) == [], "the Authorize dialog open"
    page.fill(".modal-ux input", emulator.api_key)
    page.click(".modal-ux button.authorize")
    page.wait_for_selector(".modal-ux button:has-text('Logout')")
    time.sleep(0.5)
    assert violations(page) == [], "the Authorize dialog, a key applied"
    assert page.evaluate("window.__csp") == []


def test_the_watch_page_has_no_axe_violation_as_it_opens(emulator: Emulator, page: Any) -> None:
    page.goto(f"{emulator.api_url}/")
    page.wait_for_selector("#api-key")
    assert violations(page) == []
    assert page.evaluate("window.__csp") == []


def test_the_watch_page_has_no_axe_violation_showing_a_finished_job(
    emulator: Emulator, page: Any, images: str
) -> None:
    request_id = upload(emulator, sample_with_a_missing_picture(images))
    page.goto(f"{emulator.api_url}/")
    use_key(page, emulator.api_key)
    page.goto(f"{emulator.api_url}/?job={request_id}")
    page.wait_for_selector("body[data-settled='true']", timeout=120_000)
    page.wait_for_selector("[data-testid=image-error]")
    assert violations(page) == [], "on a desktop"
    page.set_viewport_size({"width": 390, "height": 844})
    assert violations(page) == [], "on a phone"
    assert page.evaluate("window.__csp") == []
