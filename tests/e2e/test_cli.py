"""The command-line client against the emulator's API, as a person would use it, with the
emulator's API key (from --api-key or IMAGE_PIPELINE_API_KEY)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from local_emulator.stack import Emulator
from pipeline_cli.cli import (
    EXIT_AUTH,
    EXIT_COMPLETED_WITH_ERRORS,
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_OK,
    KEY_ENV,
    main,
)
from tests.e2e.emulator_support import bearer

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "local_emulator" / "samples"
HEADER = "S. No.,Product Name,Input Image Urls\n"


def run(emulator: Emulator, *argv: str) -> tuple[int, str, str]:
    """The CLI with the emulator's key (--api-key) and nothing from the environment."""
    return run_as(emulator, ["--api-key", emulator.api_key, *argv], {})


def run_as(emulator: Emulator, argv: list[str], environ: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--api", emulator.api_url, *argv], out, err, environ=environ)
    return code, out.getvalue(), err.getvalue()


def write(tmp_path: Path, text: str, name: str = "products.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def request_id_of(out: str) -> str:
    return next(line.split()[1] for line in out.splitlines() if line.startswith("requestId "))


def api_status(emulator: Emulator, request_id: str) -> dict[str, object]:
    response = requests.get(
        f"{emulator.api_url}/api/getProcessingStatus/{request_id}",
        headers=bearer(emulator.api_key),
        timeout=10,
    )
    assert response.status_code == 200
    body: dict[str, object] = response.json()
    return body


def test_submit_wait_shows_progress_and_ends_with_exit_0_for_a_completed_job(
    emulator: Emulator, images: str, tmp_path: Path
) -> None:
    csv_path = write(
        tmp_path, (SAMPLES / "products.csv").read_text().replace("{IMAGES_BASE}", images)
    )
    code, out, err = run(emulator, "submit", str(csv_path), "--wait", "--interval", "0.2")
    assert code == EXIT_OK, out + err
    request_id = request_id_of(out)
    status = api_status(emulator, request_id)
    assert status["status"] == "completed"
    progress = status["progress"]
    assert isinstance(progress, dict)
    total_images, total_products = progress["totalImages"], progress["totalProducts"]
    # The progress lines (stderr, one per change when not a terminal) end at the totals.
    last = err.strip().splitlines()[-1]
    assert f"products {total_products}/{total_products}" in last
    assert f"images {total_images}/{total_images}" in last and "failed 0" in last
    assert "100.0%" in last and "done" in last
    assert "img/s" in last
    # The final table shows the job as the API does.
    assert f"job        {request_id}" in out
    assert "status     completed" in out
    for product in status["products"]:  # type: ignore[attr-defined]
        assert product["productName"] in out


def test_presigned_submit_with_a_broken_image_exits_3_and_lists_the_failure(
    emulator: Emulator, images: str, tmp_path: Path
) -> None:
    text = HEADER + f'1,Mug,"{images}/mug.jpg,{images}/missing.jpg"\n'
    csv_path = write(tmp_path, text)
    code, out, err = run(
        emulator, "submit", "--presigned", str(csv_path), "--wait", "--interval", "0.2"
    )
    assert code == EXIT_COMPLETED_WITH_ERRORS, out + err
    request_id = request_id_of(out)
    status = api_status(emulator, request_id)
    assert status["status"] == "completed_with_errors"
    (product,) = status["products"]  # type: ignore[misc]
    (error,) = product["errors"]
    assert f"#1 {images}/missing.jpg: {error['code']}: {error['message']}" in out
    assert error["code"] == "http_error"


def test_a_job_with_no_image_done_exits_4(emulator: Emulator, images: str, tmp_path: Path) -> None:
    csv_path = write(tmp_path, HEADER + f"1,Page,{images}/html\n")
    code, out, err = run(emulator, "submit", str(csv_path), "--wait", "--interval", "0.2")
    assert code == EXIT_FAILED, out + err
    assert api_status(emulator, request_id_of(out))["status"] == "failed"
    assert "not_an_image" in out


def test_status_table_json_and_download_match_the_api(
    emulator: Emulator, images: str, tmp_path: Path
) -> None:
    csv_path = write(tmp_path, HEADER + f"1,Lamp,{images}/lamp-cutout.png\n")
    code, out, _ = run(emulator, "submit", str(csv_path), "--wait", "--interval", "0.2")
    assert code == EXIT_OK
    request_id = request_id_of(out)

    code, out, _ = run(emulator, "status", request_id, "--json")
    assert code == EXIT_OK
    assert json.loads(out) == api_status(emulator, request_id)

    code, out, _ = run(emulator, "status", request_id)
    assert code == EXIT_OK
    assert "status     completed" in out and "images     1/1 (0 failed, 100.0%)" in out
    assert any(line.split()[:3] == ["1", "Lamp", "completed"] for line in out.splitlines())

    target = tmp_path / "out.csv"
    code, out, _ = run(emulator, "download", request_id, "-o", str(target))
    assert code == EXIT_OK and str(target) in out
    expected = requests.get(
        f"{emulator.api_url}/api/jobs/{request_id}/output.csv",
        headers=bearer(emulator.api_key),
        timeout=10,
    )
    assert target.read_bytes() == expected.content
    assert target.read_text().startswith("S. No.,Product Name,Input Image Urls,Output Image Urls")


def test_validate_reports_every_problem_with_line_and_column_as_the_api_words_it(
    emulator: Emulator, tmp_path: Path
) -> None:
    text = HEADER + "1,,http://example.com/a.jpg\nx,Chair,ftp://example.com/b.jpg\n"
    csv_path = write(tmp_path, text)
    code, out, err = run(emulator, "validate", str(csv_path))
    assert code == EXIT_ERROR and out == ""
    answer = requests.post(
        f"{emulator.api_url}/api/validate",
        files={"file": ("products.csv", text.encode(), "text/csv")},
        headers=bearer(emulator.api_key),
        timeout=10,
    ).json()
    lines = err.splitlines()
    assert lines[0] == f"error: {answer['error']} (HTTP 400)"
    assert len(answer["details"]) >= 3
    for detail in answer["details"]:
        assert f"  line {detail['row']}, column {detail['column']}: {detail['message']}" in lines


def test_validate_accepts_a_good_csv(emulator: Emulator, images: str, tmp_path: Path) -> None:
    csv_path = write(tmp_path, HEADER + f'1,Mug,"{images}/a.jpg,{images}/b.jpg"\n')
    code, out, _ = run(emulator, "validate", str(csv_path))
    assert (code, out.strip()) == (EXIT_OK, "valid: 1 products, 2 images")


def test_errors_of_status_and_download_are_the_apis(emulator: Emulator) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    code, _, err = run(emulator, "status", unknown)
    assert code == EXIT_ERROR
    assert err.splitlines()[0] == f"error: no job with requestId {unknown} (HTTP 404)"

    pending = requests.post(
        f"{emulator.api_url}/api/uploads", json={}, headers=bearer(emulator.api_key), timeout=10
    ).json()
    code, _, err = run(emulator, "download", pending["requestId"])
    expected = requests.get(
        f"{emulator.api_url}/api/jobs/{pending['requestId']}/output.csv",
        headers=bearer(emulator.api_key),
        timeout=10,
    ).json()
    assert code == EXIT_ERROR
    assert err.splitlines()[0] == f"error: {expected['error']} (HTTP 409)"


def test_without_a_key_or_with_a_wrong_one_every_command_says_how_to_give_one(
    emulator: Emulator, tmp_path: Path
) -> None:
    csv_path = write(tmp_path, HEADER + "1,Mug,http://example.com/a.jpg\n")
    commands = [
        ["submit", str(csv_path)],
        ["submit", "--presigned", str(csv_path)],
        ["validate", str(csv_path)],
        ["status", "00000000-0000-4000-8000-000000000000"],
        ["download", "00000000-0000-4000-8000-000000000000"],
        ["jobs"],
    ]
    wrong = "ipk_000000000000_not-a-key-of-this-emulator"
    for command in commands:
        code, out, err = run_as(emulator, command, {})
        assert (code, out) == (EXIT_AUTH, ""), command
        assert err.splitlines() == [
            f"error: this API needs an API key (HTTP 401): pass --api-key, set {KEY_ENV} "
            "or run 'image-pipeline configure'"
        ], command
        for argv, environ in (
            (["--api-key", wrong, *command], {KEY_ENV: emulator.api_key}),  # the option wins
            (command, {KEY_ENV: wrong}),
        ):
            code, out, err = run_as(emulator, argv, environ)
            assert (code, out) == (EXIT_AUTH, ""), command
            assert err.splitlines() == [
                "error: the API refused the API key (HTTP 401): pass a valid one with "
                f"--api-key, set {KEY_ENV} or run 'image-pipeline configure'"
            ], command
            assert wrong not in err and emulator.api_key not in err


def test_jobs_lists_the_tenants_jobs_newest_first(
    emulator: Emulator, images: str, tmp_path: Path
) -> None:
    csv_path = write(tmp_path, HEADER + f"1,Lamp,{images}/lamp-cutout.png\n")
    code, out, err = run(emulator, "submit", str(csv_path), "--wait", "--interval", "0.2")
    assert code == EXIT_OK, out + err
    first = request_id_of(out)
    code, out, err = run(emulator, "submit", str(csv_path))
    assert code == EXIT_OK, out + err
    newest = request_id_of(out)

    code, out, err = run_as(emulator, ["jobs", "--limit", "1"], {KEY_ENV: emulator.api_key})
    assert code == EXIT_OK, err
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["Job", "Status"] and lines[2].split()[0] == newest
    assert lines[-1].startswith("(more jobs: --cursor ")
    cursor = lines[-1].removeprefix("(more jobs: --cursor ").removesuffix(")")
    code, out, _ = run(emulator, "jobs", "--limit", "1", "--cursor", cursor)
    assert code == EXIT_OK and out.splitlines()[2].split()[:2] == [first, "completed"]

    code, out, _ = run(emulator, "jobs", "--status", "completed", "--limit", "200", "--json")
    assert code == EXIT_OK
    listing = json.loads(out)
    assert first in [job["requestId"] for job in listing["jobs"]]
    assert {job["status"] for job in listing["jobs"]} == {"completed"}
    assert listing["jobs"] == sorted(listing["jobs"], key=lambda j: j["createdAt"], reverse=True)

    code, _, err = run(emulator, "jobs", "--limit", "0")
    assert code == EXIT_ERROR
    assert err.startswith("error: limit must be an integer between 1 and 200 (HTTP 400)")


def test_python_dash_m_runs_the_client_and_returns_its_exit_status(emulator: Emulator) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline_cli", "--api", emulator.api_url, "status", "not-a-uuid"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, KEY_ENV: emulator.api_key},
    )
    assert result.returncode == EXIT_ERROR
    assert result.stderr.startswith("error: requestId must be a UUID (HTTP 400)")
    assert emulator.api_key not in result.stdout + result.stderr
    help_text = subprocess.run(
        [sys.executable, "-m", "pipeline_cli", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for command in ("submit", "status", "jobs", "download", "validate", "--api-key", KEY_ENV):
        assert command in help_text
