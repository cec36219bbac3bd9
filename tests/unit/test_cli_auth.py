"""The CLI's API key, its 401 and 429 answers and the `jobs` listing, against scripted HTTP
servers on loopback (one for the API, one for storage): what goes over the wire is checked,
not what the code meant to send."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from pipeline_cli.cli import EXIT_AUTH, EXIT_ERROR, EXIT_OK, KEY_ENV, main, wait_for
from pipeline_cli.client import ApiClient, ApiError, retry_after_seconds
from tests.support.servers import serve

KEY = "ipk_0123456789ab_s3cr3t-value-never-printed"
OTHER_KEY = "ipk_ba9876543210_from-the-environment"
JOB = "7ccca9c7-868c-417e-baee-5f244c0fda81"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class Scripted:
    """Answers (method, path without query) with the next scripted (status, headers, body);
    the last answer of a route repeats. Records every request."""

    answers: dict[tuple[str, str], list[tuple[int, dict[str, str], Any]]] = field(
        default_factory=dict
    )
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def reset(self) -> None:
        with self.lock:
            self.answers.clear()
            self.seen.clear()

    def on(self, method: str, path: str, status: int, body: Any, **headers: str) -> None:
        self.answers.setdefault((method, path), []).append((status, headers, body))

    def handler(self) -> type[BaseHTTPRequestHandler]:
        script = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                path = self.path.split("?", 1)[0]
                with script.lock:
                    script.seen.append(
                        Seen(
                            self.command,
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                        )
                    )
                    queue = script.answers.get((self.command, path)) or [
                        (404, {}, {"error": "no such route", "details": []})
                    ]
                    status, headers, body = queue.pop(0) if len(queue) > 1 else queue[0]
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

        return Handler


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Scripted, Scripted]]:
    """The API and storage, started once for the module (a server takes 0.5 s to stop)."""
    api, storage = Scripted(), Scripted()
    with serve(api.handler()) as api.url, serve(storage.handler()) as storage.url:
        yield api, storage


@pytest.fixture
def api(servers: tuple[Scripted, Scripted]) -> Scripted:
    for script in servers:
        script.reset()
    return servers[0]


@pytest.fixture
def storage(servers: tuple[Scripted, Scripted], api: Scripted) -> Scripted:
    return servers[1]


def run(api: Scripted, *argv: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--api", api.url, *argv], out, err, environ=environ or {})
    return code, out.getvalue(), err.getvalue()


def status_doc(status: str = "completed", **extra: Any) -> dict[str, Any]:
    return {
        "requestId": JOB,
        "status": status,
        "progress": {"totalImages": 2, "processedImages": 2, "percent": 100.0},
        "products": [],
        "nextCursor": None,
        **extra,
    }


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

    class Quiet:
        def progress(self, line: str) -> None:
            self.last = line

        def end_progress(self) -> None:
            return

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

    class Quiet:
        def progress(self, line: str) -> None:
            return

        def end_progress(self) -> None:
            return

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
