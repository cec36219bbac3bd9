"""The CLI's API key, its 401 and 429 answers and the `jobs` listing, against scripted HTTP
servers on loopback (one for the API, one for storage): what goes over the wire is checked,
not what the code meant to send."""

from __future__ import annotations

import io
import json
from email.utils import formatdate
from pathlib import Path

import pytest

from pipeline_cli.cli import EXIT_AUTH, EXIT_ERROR, EXIT_OK, KEY_ENV, main, wait_for
from pipeline_cli.client import ApiClient, ApiError, retry_after_seconds
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

OTHER_KEY = "ipk_ba9876543210_from-the-environment"


class Quiet:
    """A console for `wait_for` that shows nothing."""

    def progress(self, line: str) -> None:
        return

    def end_progress(self) -> None:
        return


def test_the_option_wins_over_the_environment_and_every_api_call_carries_the_key(
    api: Scripted,
) -> None:
    api.on("GET", f"/api/getProcessingStatus/{JOB}", 200, status_doc())
    code, _, err = run(api, "--api-key", KEY, "status", JOB, environ={KEY_ENV: OTHER_KEY})
    assert code == EXIT_OK, err
    code, _, err = run(api, "status", JOB, environ={KEY_ENV: f"  {OTHER_KEY}\n"})
    assert code == EXIT_OK, err
    code, _, err = run(api, "status", JOB)
    assert code == EXIT_OK, err
    assert [s.headers.get("authorization") for s in api.seen] == [
        f"Bearer {KEY}",
        f"Bearer {OTHER_KEY}",
        None,
    ]


def test_a_401_without_a_key_says_how_to_give_one_in_one_line_with_its_own_exit_code(
    api: Scripted,
) -> None:
    api.on("GET", "/api/jobs", 401, {"error": "Unauthorized", "details": []})
    code, out, err = run(api, "jobs")
    assert code == EXIT_AUTH != EXIT_ERROR
    assert out == ""
    assert err.splitlines() == [
        f"error: this API needs an API key (HTTP 401): pass --api-key, set {KEY_ENV} "
        "or run 'image-pipeline configure'"
    ]


def test_a_refused_key_is_reported_without_ever_printing_it(api: Scripted) -> None:
    api.on("GET", f"/api/getProcessingStatus/{JOB}", 401, {"message": "Unauthorized"})
    for argv, environ in ((["--api-key", KEY], {}), ([], {KEY_ENV: KEY})):
        code, out, err = run(api, *argv, "status", JOB, environ=environ)
        assert code == EXIT_AUTH
        assert err.splitlines() == [
            "error: the API refused the API key (HTTP 401): pass a valid one with "
            f"--api-key, set {KEY_ENV} or run 'image-pipeline configure'"
        ]
        assert KEY not in out + err and "s3cr3t" not in out + err
    assert repr(ApiClient(api.url, api_key=KEY)).count("s3cr3t") == 0


def test_other_errors_do_not_print_the_key_either(api: Scripted) -> None:
    api.on("GET", f"/api/getProcessingStatus/{JOB}", 502, b"<html>bad gateway</html>")
    code, out, err = run(api, "--api-key", KEY, "status", JOB)
    assert code == EXIT_ERROR and "HTTP 502" in err
    unreachable = io.StringIO()
    code = main(
        ["--api", "http://127.0.0.1:9", "--api-key", KEY, "status", JOB],
        unreachable,
        unreachable,
        environ={},
    )
    assert code == EXIT_ERROR and "cannot reach" in unreachable.getvalue()
    assert KEY not in out + err + unreachable.getvalue()


def test_the_key_never_goes_to_storage_neither_on_the_presigned_post_nor_a_redirect(
    api: Scripted, storage: Scripted, tmp_path: Path
) -> None:
    csv_path = tmp_path / "products.csv"
    csv_path.write_text("S. No.,Product Name,Input Image Urls\n1,Mug,http://example.com/a.jpg\n")
    api.on(
        "POST",
        "/api/uploads",
        201,
        {
            "requestId": JOB,
            "upload": {"url": f"{storage.url}/uploads", "fields": {"key": f"incoming/{JOB}.csv"}},
            "statusUrl": f"{api.url}/api/getProcessingStatus/{JOB}",
        },
    )
    storage.on("POST", "/uploads", 204, b"")
    csv_link = f"{storage.url}/outputs/{JOB}.csv?X-Amz-Signature=abc"
    api.on("GET", f"/api/jobs/{JOB}/output.csv", 302, {"location": csv_link}, Location=csv_link)
    storage.on("GET", f"/outputs/{JOB}.csv", 200, b"S. No.,Product Name\n")

    code, out, err = run(api, "--api-key", KEY, "submit", "--presigned", str(csv_path))
    assert code == EXIT_OK, err
    assert f"requestId {JOB}" in out
    code, out, err = run(api, "--api-key", KEY, "download", JOB, "-o", "-")
    assert (code, out) == (EXIT_OK, "S. No.,Product Name\n"), err

    assert [(s.method, s.headers.get("authorization")) for s in api.seen] == [
        ("POST", f"Bearer {KEY}"),
        ("GET", f"Bearer {KEY}"),
    ]
    assert [s.method for s in storage.seen] == ["POST", "GET"]
    assert all("authorization" not in s.headers for s in storage.seen)


def test_a_429_while_waiting_waits_as_long_as_retry_after_asks_then_polls_again(
    api: Scripted,
) -> None:
    path = f"/api/getProcessingStatus/{JOB}"
    limited = {"error": "too many requests", "details": []}
    api.on("GET", path, 200, status_doc("processing"))
    api.on("GET", path, 429, limited, **{"Retry-After": "7"})
    api.on("GET", path, 200, status_doc("completed"))  # the poll that sees it end
    api.on("GET", path, 429, limited, **{"Retry-After": "2"})  # the final full read
    api.on("GET", path, 200, status_doc("completed", products=[{"serialNumber": 1}]))
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    final = wait_for(
        ApiClient(api.url, api_key=KEY),
        JOB,
        Quiet(),
        interval=0.5,
        timeout=0,
        clock=lambda: now[0],
        sleep=sleep,
    )
    assert final is not None and final["products"] == [{"serialNumber": 1}]
    assert slept == [0.5, 7.0, 2.0]
    assert len(api.seen) == 5


def test_a_retry_after_past_the_timeout_ends_the_wait_as_a_timeout(api: Scripted) -> None:
    api.on(
        "GET",
        f"/api/getProcessingStatus/{JOB}",
        429,
        {"error": "too many requests", "details": []},
        **{"Retry-After": "120"},
    )
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    final = wait_for(
        ApiClient(api.url),
        JOB,
        Quiet(),
        interval=0.5,
        timeout=30,
        clock=lambda: now[0],
        sleep=sleep,
    )
    assert final is None and slept == []  # gave up at once: 120 s is past the 30 s left


def test_a_429_outside_polling_is_reported_with_the_wait_it_asks_for(api: Scripted) -> None:
    api.on(
        "GET",
        "/api/jobs",
        429,
        {"error": "too many requests", "details": []},
        **{"Retry-After": "3"},
    )
    code, out, err = run(api, "--api-key", KEY, "jobs")
    assert (code, out) == (EXIT_ERROR, "")
    assert err.splitlines() == ["error: too many requests (HTTP 429); retry after 3s"]


@pytest.mark.parametrize(
    ("command", "path"), [("retry", "retry"), ("redeliver", "webhook/redeliver")]
)
def test_a_fractional_retry_after_on_retry_or_redeliver_is_the_wait_reported(
    api: Scripted, command: str, path: str
) -> None:
    """Never rounded down: told to wait less than asked, a caller is refused again."""
    limited = {"error": f"{command} was asked for less than 60 s ago", "details": []}
    api.on("POST", f"/api/jobs/{JOB}/{path}", 429, limited, **{"Retry-After": "2.5"})
    code, out, err = run(api, "--api-key", KEY, command, JOB)
    assert (code, out) == (EXIT_ERROR, "")
    assert err.splitlines() == [f"error: {limited['error']} (HTTP 429); retry after 2.5s"]


def test_a_fractional_retry_after_while_waiting_is_slept_in_full(api: Scripted) -> None:
    path = f"/api/getProcessingStatus/{JOB}"
    api.on(
        "GET", path, 429, {"error": "too many requests", "details": []}, **{"Retry-After": "1.5"}
    )
    api.on("GET", path, 200, status_doc("completed"))
    slept: list[float] = []

    final = wait_for(
        ApiClient(api.url, api_key=KEY), JOB, Quiet(), interval=1.0, timeout=0, sleep=slept.append
    )
    assert final is not None and slept == [1.5]


def test_api_gateways_own_429_is_asked_again_after_its_retry_after(
    api: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tenant's burst spent (API Gateway's throttle, `x-amzn-ErrorType`): the request
    never reached the function, so the client asks again after Retry-After, a few times at
    most, as AWS's SDKs do; the API's own 429 (above) is reported at once."""
    from pipeline_cli import client

    slept: list[float] = []
    monkeypatch.setattr(client.time, "sleep", slept.append)
    throttled = {"x-amzn-ErrorType": "TooManyRequestsException", "Retry-After": "1"}
    limited = {"error": "too many requests; retry later", "details": []}
    api.on("GET", "/api/jobs", 429, limited, **throttled)
    api.on("GET", "/api/jobs", 429, limited, **throttled)
    api.on("GET", "/api/jobs", 200, {"jobs": [], "nextCursor": None})
    code, _, err = run(api, "--api-key", KEY, "jobs")
    assert (code, err) == (0, "")
    assert slept == [1.0, 1.0] and len(api.seen) == 3
    # throttled every time: given up after THROTTLE_RETRIES more, and said
    api.reset()
    slept.clear()
    api.on("GET", "/api/jobs", 429, limited, **throttled)
    code, out, err = run(api, "--api-key", KEY, "jobs")
    assert (code, out) == (EXIT_ERROR, "")
    assert len(api.seen) == client.THROTTLE_RETRIES + 1 and len(slept) == client.THROTTLE_RETRIES
    assert err.splitlines() == ["error: too many requests; retry later (HTTP 429); retry after 1s"]


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_seconds("5") == 5.0
    assert retry_after_seconds("2.5") == 2.5
    assert retry_after_seconds("0.25") == 0.25
    assert retry_after_seconds("1.") is None and retry_after_seconds("-1") is None
    assert retry_after_seconds(formatdate(1_000_030, usegmt=True), now=lambda: 1_000_000) == 30
    assert retry_after_seconds(formatdate(1_000_000, usegmt=True), now=lambda: 1_000_050) == 0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None
    assert ApiError("x", 503).retry_after is None


def test_jobs_lists_a_page_as_a_table_and_passes_status_limit_and_cursor(api: Scripted) -> None:
    api.on(
        "GET",
        "/api/jobs",
        200,
        {
            "jobs": [
                {
                    "requestId": JOB,
                    "status": "completed_with_errors",
                    "createdAt": "2025-01-02T03:04:05.000Z",
                    "updatedAt": "2025-01-02T03:04:09.000Z",
                    "progress": {
                        "processedImages": 11,
                        "totalImages": 11,
                        "failedImages": 1,
                        "percent": 100.0,
                    },
                }
            ],
            "nextCursor": "WyIyMDI1Il0",
        },
    )
    code, out, err = run(
        api,
        "--api-key",
        KEY,
        "jobs",
        "--status",
        "completed_with_errors",
        "--limit",
        "1",
        "--cursor",
        "abc",
    )
    assert code == EXIT_OK, err
    (seen,) = api.seen
    assert seen.path == "/api/jobs?status=completed_with_errors&limit=1&cursor=abc"
    lines = out.splitlines()
    assert lines[0].split() == ["Job", "Status", "Images", "Failed", "Done", "Created"]
    assert lines[2].split() == [
        JOB,
        "completed_with_errors",
        "11/11",
        "1",
        "100.0%",
        "2025-01-02T03:04:05.000Z",
    ]
    assert lines[-1] == "(more jobs: --cursor WyIyMDI1Il0)"

    code, out, _ = run(api, "--api-key", KEY, "jobs", "--json")
    assert code == EXIT_OK and json.loads(out)["jobs"][0]["requestId"] == JOB
    assert api.seen[-1].path == "/api/jobs"


def test_an_empty_listing_says_so(api: Scripted) -> None:
    api.on("GET", "/api/jobs", 200, {"jobs": [], "nextCursor": None})
    assert run(api, "--api-key", KEY, "jobs")[1] == "no jobs\n"
