"""The OpenAPI document is valid, names exactly the routes the app serves, and declares
exactly the app's public and protected routes as such."""

from __future__ import annotations

import re
from typing import Any

import app as app_module
from chalicelib import openapi
from openapi_spec_validator import validate

HTTP_METHODS = {"get", "post", "put", "patch", "delete", "head", "options"}
# The contract's public routes ("Authentication"); every other one needs a key.
CONTRACT_PUBLIC = {
    ("/api/health", "get"),
    ("/api/openapi.json", "get"),
    ("/api-docs", "get"),
    ("/", "get"),
}


def operations() -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (path, method): operation
        for path, methods in openapi.document()["paths"].items()
        for method, operation in methods.items()
        if method in HTTP_METHODS
    }


def chalice_routes() -> dict[tuple[str, str], Any]:
    return {
        (path, method.lower()): entry
        for path, methods in app_module.app.routes.items()
        for method, entry in methods.items()
    }


def test_the_document_is_a_valid_openapi_3_document() -> None:
    validate(openapi.document())  # raises on the first problem


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    assert set(chalice_routes()) == set(operations())


def test_an_operation_is_public_exactly_when_its_route_has_no_authorizer() -> None:
    spec = openapi.document()
    scheme = spec["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert spec["security"] == [{"bearerAuth": []}]
    documented = operations()
    public_in_app = {route for route, entry in chalice_routes().items() if entry.authorizer is None}
    public_in_document = {
        route for route, operation in documented.items() if operation.get("security") == []
    }
    assert public_in_app == public_in_document == CONTRACT_PUBLIC
    for route, operation in documented.items():
        # A protected operation takes the document's security: not its own, nor none.
        assert operation.get("security", spec["security"]) == (
            [] if route in CONTRACT_PUBLIC else [{"bearerAuth": []}]
        ), route


def test_protected_operations_answer_401_and_429_with_retry_after_and_public_ones_do_not() -> None:
    for route, operation in operations().items():
        responses = operation["responses"]
        if route in CONTRACT_PUBLIC:
            assert "401" not in responses and "429" not in responses, route
            continue
        assert "WWW-Authenticate" in responses["401"]["headers"], route
        retry_after = responses["429"]["headers"]["Retry-After"]
        assert retry_after["required"] is True, route
        assert retry_after["schema"]["type"] == "integer", route


def test_404s_of_a_job_say_it_may_be_another_tenants() -> None:
    for (path, _), operation in operations().items():
        if "{requestId}" in path:
            assert "another tenant" in operation["responses"]["404"]["description"], path


def test_the_listing_of_jobs_is_declared_as_the_contract_says() -> None:
    spec = openapi.document()
    operation = spec["paths"]["/api/jobs"]["get"]
    params = {p["name"]: p for p in operation["parameters"] if p["in"] != "header"}
    assert set(params) == {"status", "limit", "cursor"}
    assert all(p["in"] == "query" and not p["required"] for p in params.values())
    assert params["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 200,
        "default": 50,
    }
    assert set(params["status"]["schema"]["enum"]) >= {"pending", "processing", "failed"}
    listing = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert listing == {"$ref": "#/components/schemas/JobList"}
    schemas = spec["components"]["schemas"]
    assert schemas["JobList"]["properties"]["jobs"]["items"] == {
        "$ref": "#/components/schemas/JobSummary"
    }
    assert schemas["JobList"]["properties"]["nextCursor"]["nullable"] is True
    assert set(schemas["JobSummary"]["properties"]) == {
        "requestId",
        "status",
        "createdAt",
        "updatedAt",
        "progress",
    }


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


def test_the_status_and_the_job_list_declare_their_etag_and_304() -> None:
    ops = operations()
    for key in (("/api/getProcessingStatus/{requestId}", "get"), ("/api/jobs", "get")):
        operation = ops[key]
        headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
        assert headers == {"If-None-Match"}, key
        responses = operation["responses"]
        assert "content" not in responses["304"], key  # no body
        for code in ("200", "304"):
            assert {"ETag", "Cache-Control"} <= set(responses[code]["headers"]), (key, code)
