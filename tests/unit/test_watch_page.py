"""The watch page's markup, under its own Content-Security-Policy and for assistive
technology: what a browser test cannot see at a glance (the browser itself is driven in
tests/e2e/test_browser_page.py)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from chalicelib.entrypoints.http_api import page_csp
from chalicelib.pages import watch_page


class Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {name: value or "" for name, value in attrs}))


def parsed() -> Markup:
    markup = Markup()
    markup.feed(watch_page.watch_page())
    return markup


def script() -> str:
    found = re.search(r"<script>(.*?)</script>", watch_page.watch_page(), re.DOTALL)
    assert found is not None
    return found.group(1)


def test_nothing_inline_but_the_one_script_and_style_the_policy_hashes() -> None:
    page = watch_page.watch_page()
    elements = parsed().elements
    assert [tag for tag, _ in elements].count("script") == 1
    assert [tag for tag, _ in elements].count("style") == 1
    for tag, attrs in elements:
        assert "style" not in attrs, tag
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        assert not attrs.get("href", "").lower().startswith("javascript:"), tag
    assert "unsafe-inline" not in page_csp(page)


def test_every_field_has_a_label_and_the_page_has_its_landmarks() -> None:
    elements = parsed().elements
    labelled = {attrs["for"] for tag, attrs in elements if tag == "label"}
    fields = [attrs for tag, attrs in elements if tag in {"input", "select", "textarea"}]
    assert fields and all(field["id"] in labelled for field in fields)
    tags = [tag for tag, _ in elements]
    assert tags.count("main") == 1 and "header" in tags
    forms = [attrs for tag, attrs in elements if tag == "form"]
    assert forms and all(form.get("aria-label") for form in forms)


def test_the_key_field_is_a_password_that_the_browser_does_not_fill_or_check() -> None:
    (key,) = [attrs for tag, attrs in parsed().elements if attrs.get("id") == "api-key"]
    assert key["type"] == "password"
    assert key["autocomplete"] == "off" and key["spellcheck"] == "false"


def test_the_key_is_kept_in_session_storage_only_and_sent_as_a_header() -> None:
    code = script()
    assert "sessionStorage" in code
    assert "localStorage" not in code and "document.cookie" not in code
    assert 'headers.set("Authorization", `Bearer ${apiKey}`)' in code
    # It is set in one place, the API's own calls: not on storage's presigned POST.
    assert code.count('"Authorization"') == 1


def test_the_upload_form_has_the_output_options_and_a_running_job_a_cancel_button() -> None:
    elements = parsed().elements
    by_id = {attrs["id"]: (tag, attrs) for tag, attrs in elements if "id" in attrs}
    assert by_id["format"][0] == "select" and by_id["format"][1]["name"] == "format"
    options = [attrs["value"] for tag, attrs in elements if tag == "option"]
    assert options == ["jpeg", "webp", "avif"]
    quality = by_id["quality"][1]
    assert (quality["type"], quality["min"], quality["max"]) == ("number", "1", "100")
    for field, name in (("max-width", "maxWidth"), ("max-height", "maxHeight")):
        attrs = by_id[field][1]
        assert (attrs["type"], attrs["name"], attrs["min"]) == ("number", name, "1")
    tag, cancel = by_id["cancel-job"]
    assert tag == "button" and cancel["type"] == "button" and "hidden" in cancel
    code = script()
    assert "api/jobs/${id}/cancel" in code
    assert '"failed", "cancelled"]' in code  # a cancelled job is terminal: the watch ends


def test_the_upload_form_offers_auto_quality_with_its_target_score() -> None:
    by_id = {attrs["id"]: (tag, attrs) for tag, attrs in parsed().elements if "id" in attrs}
    tag, auto = by_id["quality-auto"]
    assert (tag, auto["type"]) == ("input", "checkbox")
    _, target = by_id["target-score"]
    assert (target["type"], target["name"], target["min"], target["max"]) == (
        "number",
        "targetScore",
        "30",
        "95",
    )
    assert "disabled" in target  # until auto is chosen
    code = script()
    assert 'if (auto) options.quality = "auto";' in code
    assert '["target-score", "targetScore"]' in code
    # each image of an auto job shows the quality chosen and the score reached
    assert "product.outputQualities" in code and "product.outputScores" in code
