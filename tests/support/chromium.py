"""A real headless Chromium (Debian's `chromium`, driven by Playwright) for the tests of the
pages: one browser context on a fresh profile, every Content-Security-Policy violation the
page meets kept in `window.__csp` for the tests to count."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 900}
# Where the tests keep their screenshots.
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

CSP_WATCH = """window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(
  `${e.violatedDirective} ${e.blockedURI} ${e.sample || ""}`));"""


def chromium_executable() -> str:
    """The browser's path; the test is skipped where it is not installed (failed on CI)."""
    found = shutil.which(CHROMIUM) or (CHROMIUM if Path(CHROMIUM).is_file() else None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    return found


@contextmanager
def chromium_page(profile: Path, **context: Any) -> Iterator[Any]:
    """A page of a new persistent context under `profile`, a desktop's viewport unless
    `context` (Playwright's options: viewport, is_mobile...) says otherwise."""
    executable = chromium_executable()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            **{"viewport": DESKTOP, **context},
        )
        browser.add_init_script(CSP_WATCH)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def use_key(page: Any, key: str) -> None:
    """Types the key into the watch page's key field, as a person would."""
    page.fill("#api-key", key)
    page.click("#save-key")
