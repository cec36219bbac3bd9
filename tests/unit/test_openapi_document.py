"""The OpenAPI document is valid and names exactly the routes the app serves."""

from __future__ import annotations

import re

import app as app_module
from chalicelib import openapi
from openapi_spec_validator import validate

HTTP_METHODS = {"get", "post", "put", "patch", "delete", "head", "options"}


def test_the_document_is_a_valid_openapi_3_document() -> None:
    validate(openapi.document())  # raises on the first problem


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    served = {
        (path, method.lower())
        for path, methods in app_module.app.routes.items()
        for method in methods
    }
    documented = {
        (path, method)
        for path, methods in openapi.document()["paths"].items()
        for method in methods
        if method in HTTP_METHODS
    }
    assert served == documented


def test_path_parameters_are_declared_and_every_operation_has_its_errors() -> None:
    for path, methods in openapi.document()["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for operation in methods.values():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == names, path
            responses = operation["responses"]
            assert "500" in responses
            for code, response in responses.items():
                if code.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (path, code)


def test_docs_assets_are_whitelisted_files_of_the_installed_swagger_ui() -> None:
    page = openapi.docs_page()
    assert 'src="api-docs?asset=swagger-ui-bundle.js"' in page
    assert 'href="api-docs?asset=swagger-ui.css"' in page
    assert "http://" not in page and "https://" not in page  # nothing from a CDN
    bundle = openapi.docs_asset("swagger-ui-bundle.js")
    assert bundle is not None and bundle[1].startswith("application/javascript")
    assert "SwaggerUIBundle" in bundle[0] and len(bundle[0]) > 100_000
    assert openapi.docs_asset("../../openapi.py") is None
    assert openapi.docs_asset("index.html") is None
