"""The docs page at /api-docs: Swagger UI's kept files, served by the API alone and only by
name, and a plain table of the OpenAPI document's routes where those files are missing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from chalicelib import openapi
from chalicelib.pages import docs_page


def test_docs_assets_are_whitelisted_files_of_the_kept_swagger_ui() -> None:
    page = docs_page.docs_page(openapi.document)
    assert 'src="api-docs?asset=swagger-ui-bundle.js"' in page
    assert 'href="api-docs?asset=swagger-ui.css"' in page
    assert 'href="api-docs?asset=api-docs.css"' in page  # ours, after Swagger UI's
    assert page.index("swagger-ui.css") < page.index("api-docs.css")
    ours = docs_page.docs_asset("api-docs.css")
    assert ours is not None and ours[1].startswith("text/css") and ".swagger-ui" in ours[0]
    assert "http://" not in page and "https://" not in page  # nothing from a CDN
    bundle = docs_page.docs_asset("swagger-ui-bundle.js")
    assert bundle is not None and bundle[1].startswith("application/javascript")
    assert "SwaggerUIBundle" in bundle[0] and len(bundle[0]) > 100_000
    assert docs_page.docs_asset("../../docs_page.py") is None
    assert docs_page.docs_asset("index.html") is None


def test_the_asset_cache_holds_only_the_assets_that_exist() -> None:
    """A name nobody serves is not remembered: 10,000 junk names leave the cache as it was
    (it was unbounded and filled before any key was asked for)."""
    for name in docs_page.DOCS_ASSETS:
        docs_page.docs_asset(name)
    before = docs_page._read_asset.cache_info().currsize
    for n in range(10_000):
        assert docs_page.docs_asset(f"junk-{n}.js") is None
    assert docs_page._read_asset.cache_info().currsize == before <= len(docs_page.DOCS_ASSETS)


def test_the_kept_swagger_ui_is_the_version_its_readme_names_unchanged() -> None:
    """web/swagger-ui holds swagger-ui-dist's files as published: its README names the
    version and each file's SHA-256, and says how to update them."""
    folder = docs_page.SWAGGER_UI
    readme = (folder / "README.md").read_text(encoding="utf-8")
    version = docs_page.SWAGGER_UI_VERSION
    assert version.startswith("5.") and f"Swagger UI {version}" in readme
    bundle = (folder / "swagger-ui-bundle.js").read_bytes()
    assert f'PACKAGE_VERSION:"{version}"'.encode() in bundle
    for name in ("swagger-ui-bundle.js", "swagger-ui.css"):
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert f"| `{name}` | `{digest}` |" in readme, name
    for notice in ("LICENSE", "NOTICE", "swagger-ui-bundle.js.LICENSE.txt"):
        assert (folder / notice).is_file(), notice
    assert "Apache License" in (folder / "LICENSE").read_text(encoding="utf-8")


def test_without_swagger_ui_the_page_is_a_table_of_every_operation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(docs_page, "SWAGGER_UI", tmp_path / "swagger-ui")  # not there
    page = docs_page.docs_page(openapi.document)
    assert page != docs_page.DOCS_PAGE and "<script" not in page
    spec = openapi.document()
    rows = page.count("<tr><td><code>")
    assert rows == sum(len(methods) for methods in spec["paths"].values()) > 10
    assert "<code>DELETE</code></td><td><code>/api/jobs/{requestId}</code>" in page
