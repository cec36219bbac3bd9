"""The live API against its own OpenAPI document: valid, served, asking for a key exactly
where the document says, and fuzzed by schemathesis with the emulator's key (no answer may
be a 5xx), plus the offline docs page."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from chalicelib import openapi
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from local_emulator.stack import Emulator
from tests.e2e.emulator_support import bearer
from tests.support.emulator import running_emulator

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "8"))
UNKNOWN_JOB = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    # Private hosts stay refused: nothing the fuzzer invents may be fetched.
    with running_emulator(allow_private_hosts=False) as emu:
        yield emu


def test_the_served_document_is_valid_and_is_the_apps(emulator: Emulator) -> None:
    response = requests.get(f"{emulator.api_url}/api/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    served = response.json()
    validate(served)
    assert served == openapi.document()


def test_the_api_asks_for_a_key_exactly_where_the_document_says(emulator: Emulator) -> None:
    """Without a key every protected operation is a 401 in the contract's shape, before the
    request is looked at; a public one never is. With the emulator's key none is a 401."""
    spec = openapi.document()
    key = bearer(emulator.api_key)
    checked = 0
    for path, methods in spec["paths"].items():
        url = emulator.api_url + path.replace("{requestId}", UNKNOWN_JOB)
        for method, operation in methods.items():
            anonymous = requests.request(method.upper(), url, timeout=10)
            wrong = requests.request(
                method.upper(), url, headers={"Authorization": "Bearer ipk_x_wrong"}, timeout=10
            )
            if operation.get("security") == []:
                assert anonymous.status_code != 401 and wrong.status_code != 401, path
            else:
                for answer in (anonymous, wrong):
                    assert answer.status_code == 401, (method, path, answer.text)
                    assert set(answer.json()) == {"error", "details"}, answer.text
                documented = requests.request(method.upper(), url, headers=key, timeout=10)
                assert documented.status_code != 401, (method, path, documented.text)
                assert str(documented.status_code) in operation["responses"], (method, path)
            checked += 1
    assert checked == sum(len(methods) for methods in spec["paths"].values())


def test_the_listing_of_jobs_matches_its_schema(emulator: Emulator) -> None:
    key = bearer(emulator.api_key)
    created = requests.post(f"{emulator.api_url}/api/uploads", json={}, headers=key, timeout=10)
    assert created.status_code == 201, created.text
    answer = requests.get(f"{emulator.api_url}/api/jobs?limit=1", headers=key, timeout=10)
    assert answer.status_code == 200, answer.text
    listing = answer.json()
    spec = openapi.document()
    OAS30Validator(
        {"$ref": "#/components/schemas/JobList", "components": spec["components"]}
    ).validate(listing)
    assert len(listing["jobs"]) == 1
    assert listing["jobs"][0]["requestId"] == created.json()["requestId"]  # newest first


def test_the_docs_page_and_its_assets_come_from_the_api(emulator: Emulator) -> None:
    page = requests.get(f"{emulator.api_url}/api-docs", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "http://" not in page.text and "https://" not in page.text
    for asset, marker in (
        ("swagger-ui-bundle.js", "SwaggerUIBundle"),
        ("swagger-ui.css", ".swagger-ui"),
    ):
        assert f"api-docs?asset={asset}" in page.text
        response = requests.get(f"{emulator.api_url}/api-docs?asset={asset}", timeout=10)
        assert response.status_code == 200 and marker in response.text
    missing = requests.get(f"{emulator.api_url}/api-docs?asset=../openapi.py", timeout=10)
    assert missing.status_code == 404 and set(missing.json()) == {"error", "details"}


def test_schemathesis_finds_no_server_error(emulator: Emulator, tmp_path: Path) -> None:
    """Every operation of the document, fuzzed from its schemas with the emulator's key (so
    the requests get past the authorizer); bounded to stay fast.

    TRACE is left out of the coverage phase's unexpected methods: the emulator's HTTP server
    answers it 501 before the app sees it, and API Gateway never hands it to the function."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        '[phases.coverage]\nunexpected-methods = ["get", "put", "post", "delete", "patch"]\n'
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(config),
            "run",
            f"{emulator.api_url}/api/openapi.json",
            "--url",
            emulator.api_url,
            "--header",
            f"Authorization: Bearer {emulator.api_key}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            "4",
            "--generation-deterministic",
            "--request-timeout",
            "30",
            "--phases",
            "examples,coverage,fuzzing",
            "--suppress-health-check",
            "all",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    selected = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", report)
    assert selected is not None, report
    assert selected.group(1) == selected.group(2) == selected.group(3)  # every operation ran
    assert re.search(r"(\d+) generated, \1 passed", report), report
