"""The watch page in a real headless Chromium (Debian's `chromium`, driven by Playwright):
the API key typed into the page goes, as the Authorization header, to the API's routes and
nowhere else; a CSV picked in the page goes straight to storage through the presigned POST,
the job is watched to the end, and what the page shows is checked against the API. A
missing or refused key says so. A screenshot is kept under test-artifacts/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from local_emulator.stack import Emulator
from tests.e2e.emulator_support import SAMPLES, bearer, sample_with_a_missing_picture
from tests.support.chromium import ARTIFACTS, use_key
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

SCREENSHOT = ARTIFACTS / "watch-page.png"


def bare(url: str | None) -> str:
    return (url or "").split("?", 1)[0]


def stored_keys(page: Any) -> dict[str, Any]:
    return {
        "session": page.evaluate("Object.values(sessionStorage)"),
        "local": page.evaluate("localStorage.length"),
    }


def test_uploads_bucket_declares_cors_for_the_browser_post(emulator: Emulator) -> None:
    rules = emulator.s3_client().get_bucket_cors(Bucket=emulator.uploads_bucket)["CORSRules"]
    assert any("POST" in rule["AllowedMethods"] and "*" in rule["AllowedOrigins"] for rule in rules)


def test_the_page_uploads_through_storage_and_shows_the_job_as_the_api_does(
    emulator: Emulator, images: str, page: Any, tmp_path: Path
) -> None:
    text = sample_with_a_missing_picture(images)
    csv_path = tmp_path / "products.csv"
    csv_path.write_text(text)
    seen: list[Any] = []

    def keep(request: Any) -> None:  # Playwright wants a function, not a bound builtin
        seen.append(request)

    page.on("request", keep)

    page.goto(f"{emulator.api_url}/")
    assert page.get_attribute("#api-key", "type") == "password"
    assert page.text_content("label[for=api-key]") == "API key"
    use_key(page, emulator.api_key)
    assert page.input_value("#api-key") == ""  # the field does not keep it
    assert "Using key" in (page.text_content("#key-state") or "")
    page.set_input_files("#csv", str(csv_path))
    page.click("#start")
    page.wait_for_selector("body[data-settled='true']", timeout=120_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    api_calls = [f"{r.method} {r.url}" for r in seen]
    # It went through the presigned POST, straight to storage, not the multipart API.
    assert any(c.startswith(f"POST {emulator.api_url}/api/uploads") for c in api_calls)
    assert any(c.startswith(f"POST {emulator.storage_url}/") for c in api_calls)
    assert not any("uploadAndProcessDocument" in c for c in api_calls)
    # The key went with every call to the API and to nothing else (storage, image hosts).
    authorization = {f"{r.method} {r.url}": r.all_headers().get("authorization") for r in seen}
    to_api = [c for c in authorization if c.split(" ", 1)[1].startswith(f"{emulator.api_url}/api/")]
    assert len(to_api) >= 3
    assert {authorization[c] for c in to_api} == {f"Bearer {emulator.api_key}"}
    assert [c for c, value in authorization.items() if value and c not in to_api] == []
    # Kept in this tab's session storage only: not in local storage, the address or the page.
    assert stored_keys(page) == {"session": [emulator.api_key], "local": 0}
    assert emulator.api_key not in page.url and emulator.api_key not in page.content()

    request_id = page.text_content("#request-id")
    status = requests.get(
        f"{emulator.api_url}/api/getProcessingStatus/{request_id}",
        headers=bearer(emulator.api_key),
        timeout=10,
    ).json()
    assert status["status"] == "completed_with_errors"
    assert page.text_content("#job-status") == status["status"]
    progress = status["progress"]
    assert page.text_content("#products") == (
        f"{progress['processedProducts']}/{progress['totalProducts']}"
    )
    assert (
        page.text_content("#images") == f"{progress['processedImages']}/{progress['totalImages']}"
    )
    assert page.text_content("#failed") == str(progress["failedImages"]) == "1"
    # Presigned URLs are signed anew on every read: compare where they point.
    assert bare(page.get_attribute("#output-csv", "href")) == bare(status["outputCsvUrl"])

    boxes = page.query_selector_all("[data-testid=product]")
    assert len(boxes) == len(status["products"]) == 6
    total_saved = 0
    for box, product in zip(boxes, status["products"], strict=True):
        assert box.get_attribute("data-serial") == str(product["serialNumber"])
        assert product["productName"] in (box.query_selector("h3").text_content() or "")
        shown_status = box.query_selector("[data-testid=product-status]").text_content()
        assert shown_status == product["status"]
        pairs = box.query_selector_all("[data-testid=image]")
        assert len(pairs) == len(product["inputImageUrls"])
        errors = {e["url"]: e for e in product["errors"]}
        for index, pair in enumerate(pairs):
            url = product["inputImageUrls"][index]
            if url in errors:
                shown = pair.query_selector("[data-testid=image-error]").text_content()
                assert shown == f"{errors[url]['code']}: {errors[url]['message']}"
                continue
            before = (SAMPLES / "images" / url.rsplit("/", 1)[1]).stat().st_size
            after = len(requests.get(product["outputImageUrls"][index], timeout=10).content)
            assert pair.query_selector("[data-testid=before-size]").text_content() == (
                f"{before:,} bytes"
            )
            assert pair.query_selector("[data-testid=after-size]").text_content() == (
                f"{after:,} bytes"
            )
            assert pair.query_selector("[data-testid=saved]").get_attribute("data-bytes") == str(
                before - after
            )
            images_shown = pair.query_selector_all("img")
            assert [bare(i.get_attribute("src")) for i in images_shown] == [
                url,
                bare(product["outputImageUrls"][index]),
            ]
            pair.scroll_into_view_if_needed()  # the images load lazily
            for image in images_shown:  # both pictures really display
                page.wait_for_function(
                    "i => i.complete && i.naturalWidth > 0", arg=image, timeout=15_000
                )
            total_saved += before - after
    assert page.text_content("#saved-total").startswith(f"{total_saved:,} of ")
    assert SCREENSHOT.stat().st_size > 10_000
    assert page.evaluate("window.__csp") == []  # the page works under its policy


def test_the_page_refuses_a_job_id_that_is_not_one(emulator: Emulator, page: Any) -> None:
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    page.goto(f"{emulator.api_url}/")
    use_key(page, emulator.api_key)
    page.goto(f"{emulator.api_url}/?job=../../api/health")
    page.wait_for_function("() => document.getElementById('message').textContent !== ''")
    assert page.text_content("#message").startswith("not a job id")
    assert not any("/api/" in url.split("?", 1)[0] for url in fetched), fetched


def test_without_a_key_the_page_asks_for_one_and_calls_nothing(
    emulator: Emulator, page: Any, tmp_path: Path
) -> None:
    csv_path = tmp_path / "products.csv"
    csv_path.write_text("S. No.,Product Name,Input Image Urls\n1,Mug,http://example.com/a.jpg\n")
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    page.goto(f"{emulator.api_url}/")
    assert page.text_content("#key-state").startswith("No API key yet")
    assert page.is_disabled("#forget-key")
    page.set_input_files("#csv", str(csv_path))
    page.click("#start")
    page.wait_for_function("() => document.getElementById('message').className === 'errors'")
    assert page.text_content("#message") == "This API needs an API key: enter yours above."
    assert page.evaluate("document.activeElement.id") == "api-key"
    assert not any("/api/" in url for url in fetched), fetched

    use_key(page, "not a key")  # refused by the page itself: never sent
    assert page.text_content("#key-state").startswith("That is not an API key")
    assert page.get_attribute("#api-key", "aria-invalid") == "true"
    assert stored_keys(page) == {"session": [], "local": 0}


def test_a_refused_key_says_so_and_can_be_changed_or_forgotten(
    emulator: Emulator, page: Any
) -> None:
    """A job in the address bar waits for a key; a wrong key gets the API's 401 shown; the
    right one resumes the watch (of an unknown job here: its 404); forgetting empties the
    tab's storage."""
    unknown = "00000000-0000-4000-8000-000000000000"
    message = "() => document.getElementById('message').textContent"
    page.goto(f"{emulator.api_url}/?job={unknown}")
    page.wait_for_function(f"{message}.startsWith('This API needs an API key')")

    wrong = "ipk_000000000000_" + "x" * 43
    use_key(page, wrong)
    page.wait_for_function(f"{message}.startsWith('The API refused the API key')")
    assert page.text_content("#key-state") == (
        "The API refused key ipk_000000000000_…: enter a valid one, or forget it."
    )
    assert page.get_attribute("#api-key", "aria-invalid") == "true"
    assert wrong not in page.content()

    use_key(page, emulator.api_key)
    page.wait_for_function(f"{message}.startsWith('no job with requestId {unknown}')")
    assert stored_keys(page) == {"session": [emulator.api_key], "local": 0}
    page.reload()  # the tab keeps the key across a reload
    page.wait_for_function(f"{message}.startsWith('no job with requestId')")

    page.click("#forget-key")
    assert stored_keys(page) == {"session": [], "local": 0}
    assert page.text_content("#message") == "The API key is forgotten in this tab."
    assert page.text_content("#key-state").startswith("No API key yet")
    assert page.is_disabled("#forget-key")


def test_the_docs_page_renders_under_its_policy(emulator: Emulator, page: Any) -> None:
    response = page.goto(f"{emulator.api_url}/api-docs")
    assert "unsafe-inline" not in response.headers["content-security-policy"]
    page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
    page.click(".opblock-summary >> nth=0")
    page.click("text=Try it out >> nth=0")
    assert page.query_selector_all(".swagger-ui .opblock")
    # Inline scripts stay refused: the policy is in force, not merely present.
    page.evaluate(
        "document.body.append(Object.assign(document.createElement('script'), "
        "{textContent: 'window.injected = 1'}))"
    )
    page.wait_for_function("window.__csp.length > 0")
    assert page.evaluate("window.injected") is None
    assert all(v.startswith("script-src") for v in page.evaluate("window.__csp"))


def test_the_page_polls_with_if_none_match_and_keeps_its_view_on_304(
    emulator: Emulator, images: str, page: Any
) -> None:
    """A job waiting for its CSV does not change: once the page has its status, each poll
    sends If-None-Match with the last ETag and gets a 304 with no body, and the page goes on
    showing the job; when the CSV arrives the tag changes and the page follows the job to
    its end."""
    created = requests.post(
        f"{emulator.api_url}/api/uploads",
        json={"fileName": "p.csv"},
        headers=bearer(emulator.api_key),
        timeout=10,
    )
    assert created.status_code == 201, created.text
    request_id = created.json()["requestId"]
    brief = f"{emulator.api_url}/api/getProcessingStatus/{request_id}?limit=1"
    answers: list[tuple[int, str | None, str | None]] = []

    def keep(response: Any) -> None:
        if response.url == brief:
            sent = response.request.all_headers().get("if-none-match")
            answers.append((response.status, sent, response.all_headers().get("etag")))

    page.on("response", keep)
    page.goto(f"{emulator.api_url}/")
    use_key(page, emulator.api_key)
    with page.expect_response(lambda r: r.url == brief and r.status == 304, timeout=30_000):
        page.goto(f"{emulator.api_url}/?job={request_id}")
    assert page.text_content("#job-status") == "pending"
    first, *polls = answers
    assert first[0] == 200 and first[1] is None and first[2]
    assert polls and all((code, sent) == (304, first[2]) for code, sent, _ in polls)

    csv = f"S. No.,Product Name,Input Image Urls\n1,Mug,{images}/mug.jpg\n"
    upload = created.json()["upload"]
    stored = requests.post(
        upload["url"], data=upload["fields"], files={"file": ("p.csv", csv, "text/csv")}, timeout=10
    )
    assert stored.status_code in (200, 201, 204), stored.text
    page.wait_for_selector("body[data-job-status='completed']", timeout=120_000)
    assert page.text_content("#job-status") == "completed"
    assert page.text_content("#products") == "1/1"
    assert answers[-1][0] == 200 and answers[-1][2] != first[2]
    assert page.evaluate("window.__csp") == []


def test_the_page_counts_an_outputs_bytes_on_another_origin_when_the_status_has_none(
    emulator: Emulator, images: str, page: Any
) -> None:
    """A row without byte counts (as one stored before they were kept): the page, on the
    API's origin, fetches the output image from the CDN's stand-in (the storage endpoint,
    another origin) with `mode: "cors"`, which the browser allows only because the
    distribution's response headers policy answers `Access-Control-Allow-Origin`; the page
    shows the output's true size, not "size unknown"."""
    csv = f"S. No.,Product Name,Input Image Urls\n1,Mug,{images}/mug.jpg\n"
    created = requests.post(
        f"{emulator.api_url}/api/uploadAndProcessDocument",
        files={"file": ("p.csv", csv.encode(), "text/csv")},
        headers=bearer(emulator.api_key),
        timeout=30,
    )
    assert created.status_code == 202, created.text
    request_id = created.json()["requestId"]
    status_url = f"{emulator.api_url}/api/getProcessingStatus/{request_id}"
    status: dict[str, Any] = {}

    def completed() -> bool:
        status.update(requests.get(status_url, headers=bearer(emulator.api_key), timeout=10).json())
        return status["status"] == "completed"

    assert wait_until(completed, timeout=60), status
    output = status["products"][0]["outputImageUrls"][0]
    size = len(requests.get(output, timeout=10).content)
    assert output.startswith(emulator.storage_url + "/")  # not the page's origin
    assert emulator.storage_url.rsplit(":", 1)[1] != emulator.api_url.rsplit(":", 1)[1]

    def without_byte_counts(route: Any) -> None:
        answer = route.fetch()
        if answer.status != 200:
            route.fulfill(response=answer)
            return
        doc = answer.json()
        for product in doc["products"]:
            product.pop("inputBytes", None)
            product.pop("outputBytes", None)
        route.fulfill(response=answer, json=doc)

    fetched: list[Any] = []

    def keep(request: Any) -> None:  # Playwright wants a function, not a bound builtin
        fetched.append(request)

    page.on("requestfinished", keep)
    page.route("**/api/getProcessingStatus/**", without_byte_counts)
    page.goto(f"{emulator.api_url}/")
    use_key(page, emulator.api_key)
    page.goto(f"{emulator.api_url}/?job={request_id}")
    page.wait_for_function(
        "() => { const c = document.querySelector('[data-testid=after-size]');"
        " return c !== null && c.textContent !== '\u2026'; }",
        timeout=60_000,
    )
    assert page.text_content("[data-testid=after-size]") == f"{size:,} bytes"
    before = (SAMPLES / "images" / "mug.jpg").stat().st_size
    assert page.text_content("[data-testid=before-size]") == f"{before:,} bytes"
    assert any(r.url == output and r.resource_type == "fetch" for r in fetched)
    assert page.evaluate("window.__csp") == []
