"""The CLI's output options, `cancel` and `delete`, against the scripted API and storage of
tests/support/scripted_api.py: what goes over the wire, what is printed, the exit status (a job
waited for that ends cancelled has its own)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from chalicelib.multipart_form import parse_form

from pipeline_cli.cli import EXIT_CANCELLED, EXIT_ERROR, EXIT_OK, EXIT_USAGE, main
from tests.support.scripted_api import (  # the fixtures `api` and `storage` with them
    JOB,
    KEY,
    Scripted,
    api_fixture,  # noqa: F401
    run,
    servers_fixture,  # noqa: F401
    status_doc,
    storage_fixture,  # noqa: F401
)

CSV = "S. No.,Product Name,Input Image Urls\n1,Mug,http://example.com/a.jpg\n"
OPTIONS = ["--format", "webp", "--quality", "40", "--max-width", "1200", "--max-height", "900"]


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    path = tmp_path / "products.csv"
    path.write_text(CSV)
    return path


def accepted() -> dict[str, Any]:
    return {"requestId": JOB, "message": "accepted", "statusUrl": f"/api/getProcessingStatus/{JOB}"}


def test_submit_sends_the_output_options_as_multipart_fields(api: Scripted, csv_path: Path) -> None:
    api.on("POST", "/api/uploadAndProcessDocument", 202, accepted())
    code, _, err = run(api, "--api-key", KEY, "submit", str(csv_path), *OPTIONS)
    assert code == EXIT_OK, err
    (seen,) = api.seen
    form = parse_form(seen.headers["content-type"], seen.body, max_file_bytes=1 << 20)
    assert {name: form.text(name) for name in ("format", "quality", "maxWidth", "maxHeight")} == {
        "format": "webp",
        "quality": "40",
        "maxWidth": "1200",
        "maxHeight": "900",
    }
    file = form.file("file")
    assert file is not None and bytes(file.data).decode() == CSV


def test_submit_without_options_sends_none_of_their_fields(api: Scripted, csv_path: Path) -> None:
    api.on("POST", "/api/uploadAndProcessDocument", 202, accepted())
    assert run(api, "--api-key", KEY, "submit", str(csv_path), "--max-width", "300")[0] == EXIT_OK
    (seen,) = api.seen
    form = parse_form(seen.headers["content-type"], seen.body, max_file_bytes=1 << 20)
    assert [form.text(n) for n in ("format", "quality", "maxWidth", "maxHeight")] == [
        None,
        None,
        "300",
        None,
    ]


def test_submit_presigned_sends_the_options_as_json_keys(
    api: Scripted, storage: Scripted, csv_path: Path
) -> None:
    api.on(
        "POST",
        "/api/uploads",
        201,
        {"requestId": JOB, "upload": {"url": f"{storage.url}/up", "fields": {"key": "k"}}},
    )
    storage.on("POST", "/up", 204, b"")
    code, _, err = run(api, "--api-key", KEY, "submit", "--presigned", str(csv_path), *OPTIONS)
    assert code == EXIT_OK, err
    (seen,) = api.seen
    assert json.loads(seen.body) == {
        "fileName": "products.csv",
        "format": "webp",
        "quality": 40,
        "maxWidth": 1200,
        "maxHeight": 900,
    }
    assert b"webp" not in storage.seen[0].body  # storage gets the policy's fields only


def test_quality_auto_and_its_target_go_as_fields_or_json_keys(
    api: Scripted, storage: Scripted, csv_path: Path
) -> None:
    auto = ["--quality", "auto", "--target-score", "80"]
    api.on("POST", "/api/uploadAndProcessDocument", 202, accepted())
    assert run(api, "--api-key", KEY, "submit", str(csv_path), *auto)[0] == EXIT_OK
    api.on(
        "POST",
        "/api/uploads",
        201,
        {"requestId": JOB, "upload": {"url": f"{storage.url}/up", "fields": {"key": "k"}}},
    )
    storage.on("POST", "/up", 204, b"")
    half = ["--quality", "AUTO", "--target-score", "72.5"]
    code, _, err = run(api, "--api-key", KEY, "submit", "--presigned", str(csv_path), *half)
    assert code == EXIT_OK, err
    multipart, presigned = api.seen
    form = parse_form(multipart.headers["content-type"], multipart.body, max_file_bytes=1 << 20)
    assert [form.text(n) for n in ("quality", "targetScore")] == ["auto", "80"]
    assert json.loads(presigned.body) == {
        "fileName": "products.csv",
        "quality": "auto",
        "targetScore": 72.5,
    }


def test_a_quality_neither_a_number_nor_auto_is_a_usage_error(
    api: Scripted, csv_path: Path
) -> None:
    with pytest.raises(SystemExit) as usage:
        run(api, "submit", str(csv_path), "--quality", "best")
    assert usage.value.code == EXIT_USAGE
    assert api.seen == []


def test_an_unknown_format_is_a_usage_error(api: Scripted, csv_path: Path) -> None:
    with pytest.raises(SystemExit) as usage:
        run(api, "submit", str(csv_path), "--format", "gif")
    assert usage.value.code == EXIT_USAGE
    assert api.seen == []


def test_a_bad_option_the_api_refuses_is_printed_with_its_field(
    api: Scripted, csv_path: Path
) -> None:
    api.on(
        "POST",
        "/api/uploadAndProcessDocument",
        400,
        {
            "error": "invalid output options: quality",
            "details": [{"field": "quality", "message": "must be an integer from 1 to 100"}],
        },
    )
    code, out, err = run(api, "--api-key", KEY, "submit", str(csv_path), "--quality", "0")
    assert (code, out) == (EXIT_ERROR, "")
    assert err.splitlines() == [
        "error: invalid output options: quality (HTTP 400)",
        "  quality: must be an integer from 1 to 100",
    ]


def test_cancel_posts_to_the_jobs_cancel_route_with_the_key(api: Scripted) -> None:
    api.on("POST", f"/api/jobs/{JOB}/cancel", 202, {"requestId": JOB, "status": "processing"})
    code, out, err = run(api, "--api-key", KEY, "cancel", JOB)
    assert code == EXIT_OK, err
    assert out == f"cancelling {JOB}: no new image starts\n"
    assert [(s.method, s.path, s.headers.get("authorization")) for s in api.seen] == [
        ("POST", f"/api/jobs/{JOB}/cancel", f"Bearer {KEY}")
    ]


def test_cancel_wait_ends_with_the_exit_status_of_a_cancelled_job(api: Scripted) -> None:
    api.on("POST", f"/api/jobs/{JOB}/cancel", 202, {"requestId": JOB, "status": "processing"})
    path = f"/api/getProcessingStatus/{JOB}"
    api.on("GET", path, 200, status_doc("processing"))
    api.on("GET", path, 200, status_doc("cancelled"))
    code, out, _ = run(api, "--api-key", KEY, "cancel", JOB, "--wait", "--interval", "0.01")
    assert code == EXIT_CANCELLED not in (EXIT_OK, EXIT_ERROR)
    assert "status     cancelled" in out.splitlines()


def test_a_submitted_job_waited_for_that_is_cancelled_exits_7(
    api: Scripted, csv_path: Path
) -> None:
    api.on("POST", "/api/uploadAndProcessDocument", 202, accepted())
    api.on("GET", f"/api/getProcessingStatus/{JOB}", 200, status_doc("cancelled"))
    code, _, err = run(api, "--api-key", KEY, "submit", str(csv_path), "--wait")
    assert code == EXIT_CANCELLED == 7, err


def test_cancelling_a_job_that_ended_is_the_apis_409(api: Scripted) -> None:
    api.on(
        "POST",
        f"/api/jobs/{JOB}/cancel",
        409,
        {"error": f"job {JOB} is completed; only a job that has not ended can be cancelled"},
    )
    code, out, err = run(api, "--api-key", KEY, "cancel", JOB)
    assert (code, out) == (EXIT_ERROR, "")
    assert err.splitlines() == [
        f"error: job {JOB} is completed; only a job that has not ended can be cancelled (HTTP 409)"
    ]


def test_delete_asks_again_while_the_api_answers_202(api: Scripted) -> None:
    path = f"/api/jobs/{JOB}"
    api.on("DELETE", path, 202, {"requestId": JOB, "deletedObjects": 10000})
    api.on("DELETE", path, 204, b"")
    code, out, err = run(api, "--api-key", KEY, "delete", JOB)
    assert code == EXIT_OK, err
    assert out == f"deleted {JOB}: its outputs, CSVs and records\n"
    assert [(s.method, s.path) for s in api.seen] == [("DELETE", path), ("DELETE", path)]
    assert all(s.headers.get("authorization") == f"Bearer {KEY}" for s in api.seen)


def test_deleting_a_running_job_is_the_apis_409(api: Scripted) -> None:
    api.on("DELETE", f"/api/jobs/{JOB}", 409, {"error": "job is processing", "details": []})
    code, out, err = run(api, "--api-key", KEY, "delete", JOB)
    assert (code, out) == (EXIT_ERROR, "")
    assert err == "error: job is processing (HTTP 409)\n"


def test_the_exit_statuses_are_documented_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"], environ={})
    assert "refused, 7 cancelled" in " ".join(capsys.readouterr().out.split())
