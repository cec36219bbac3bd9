"""`serve --data-dir`: killed (SIGKILL) mid-job and started again on the same directory, the
stack goes on (the job ends, every output link answers, the webhook is signed with the secret
printed before the kill, the old key works); one stack per directory; a directory of the
earlier version (the database alone) starts and says what it lacks; flags that contradict
what is kept are refused; without it, the start-up says everything is in memory."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import requests

from local_emulator.data_dir import IN_MEMORY_LINE, DataDirError
from local_emulator.stack import Emulator, EmulatorOptions
from tests.e2e.emulator_support import (
    REPO_ROOT,
    SAMPLES,
    api_key,
    bearer,
    serve_process,
)
from tests.support.emulator import environment
from tests.support.servers import serve, webhook_receiver
from tests.support.waiting import wait_until

ROWS = 200
KILL_AT = 40
HEADER = "S. No.,Product Name,Input Image Urls\n"
TERMINAL = {"completed", "completed_with_errors", "failed", "cancelled"}


class GatedImages:
    """An image host that answers the first `open_for` requests, then holds every other one
    until `release()`: the job stops at `open_for` images, however fast the stack is."""

    def __init__(self, body: bytes, open_for: int) -> None:
        self.body = body
        self.open_for = open_for
        self.served = 0
        self._lock = threading.Lock()
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                with host._lock:
                    turn = host.served
                    host.served += 1
                if turn >= host.open_for:
                    host._released.wait(120)
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(host.body)))
                self.end_headers()
                self.wfile.write(host.body)

        return Handler


def _status(api: str, key: str, request_id: str) -> dict[str, Any]:
    answer = requests.get(
        f"{api}/api/getProcessingStatus/{request_id}?limit=1000", headers=bearer(key), timeout=10
    )
    assert answer.status_code == 200, answer.text
    doc: dict[str, Any] = answer.json()
    return doc


def _outputs(doc: dict[str, Any]) -> list[str]:
    return [url for product in doc["products"] for url in product["outputImageUrls"] if url]


@contextmanager
def _serving(data_dir: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], Any]]:
    with serve_process(
        *("--port", "0", "--allow-private-hosts", "--quiet", "--data-dir", str(data_dir)),
        *args,
    ) as (process, lines):
        yield process, lines


def test_serve_killed_mid_job_goes_on_when_started_again_on_the_same_data_dir(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "stack"
    images = GatedImages((SAMPLES / "images" / "mug.jpg").read_bytes(), open_for=KILL_AT)
    csv = HEADER + "".join(f"{n},Item {n},{{images}}/{n}.jpg\n" for n in range(1, ROWS + 1))
    # -- the first stack: the job runs until the image host holds it at 40 rows ------------
    with (
        serve(images.handler()) as image_base,
        _serving(data_dir, "--time-scale", "2") as (
            first,
            lines,
        ),
    ):
        key, secret = api_key(lines), lines["webhook-secret local"]
        api = lines["ready"]
        assert lines["data-dir"].startswith(f"{data_dir}: everything is kept here")

        # a second stack on the same directory is refused, naming the holder
        second = subprocess.run(
            [sys.executable, "-m", "local_emulator", "serve", "--data-dir", str(data_dir)],
            check=False,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert f"{data_dir} is in use by another stack (pid {first.pid})" in second.stderr
        assert "Traceback" not in second.stderr

        with webhook_receiver(secret) as receiver:
            answer = requests.post(
                f"{api}/api/uploadAndProcessDocument",
                headers=bearer(key),
                files={"file": ("p.csv", csv.replace("{images}", image_base), "text/csv")},
                data={"webhookUrl": receiver.url},
                timeout=30,
            )
            assert answer.status_code == 202, answer.text
            request_id = answer.json()["requestId"]
            assert wait_until(
                lambda: _status(api, key, request_id)["progress"]["processedProducts"] >= KILL_AT,
                timeout=120,
            )
            before = _status(api, key, request_id)
            assert before["status"] == "processing"
            assert before["progress"]["totalProducts"] == ROWS
            linked_before = _outputs(before)
            failed = [p for p in before["products"] if p["errors"]]
            assert len(linked_before) == KILL_AT, failed
            first.send_signal(signal.SIGKILL)
            first.wait(30)
            images.release()

            # -- the same directory again: the job goes on --------------------------------
            with _serving(data_dir) as (_again, relines):
                assert "api-key local" not in relines  # no key made: the old one works
                assert relines["webhook-secret local"] == secret
                assert relines["data-dir"].startswith(f"{data_dir}: everything is kept here")
                api = relines["ready"]
                assert wait_until(
                    lambda: _status(api, key, request_id)["status"] in TERMINAL, timeout=180
                )
                done = _status(api, key, request_id)
                assert done["status"] == "completed", done["errors"]
                assert done["progress"]["processedProducts"] == ROWS
                assert done["progress"]["failedImages"] == 0
                links = _outputs(done)
                assert len(links) == ROWS
                assert set(linked_before) <= set(links)  # the links handed out still hold
                for link in links:
                    got = requests.get(link, timeout=10)
                    assert got.status_code == 200, link
                    assert got.headers["Content-Type"] == "image/jpeg"
                csv_answer = requests.get(
                    f"{api}/api/jobs/{request_id}/output.csv", headers=bearer(key), timeout=10
                )
                assert csv_answer.status_code == 200
                assert csv_answer.text.count("\n") == ROWS + 1
                assert wait_until(lambda: bool(receiver.successful()), timeout=60)
                delivered = receiver.successful()
                assert all(d.verified for d in delivered)
                assert any(
                    request_id.encode() in d.body and b"job.completed" in d.body for d in delivered
                )


# -- in process: the flags against what a directory keeps ------------------------------
def _options(data_dir: Path, *tenants: str, log: Any = None) -> EmulatorOptions:
    return EmulatorOptions(
        host="127.0.0.1",
        port=0,
        quiet=True,
        verbose_dispatch=False,
        data_dir=data_dir,
        tenants=tenants,
        log=log,
    )


def test_a_directory_of_the_earlier_version_starts_and_says_what_it_lacks(tmp_path: Path) -> None:
    data_dir = tmp_path / "old"
    with Emulator(_options(data_dir, "shop")) as emulator:
        key, secret = emulator.api_key, emulator.webhook_secret
    for path in data_dir.iterdir():  # what the earlier version left: the database alone
        if not path.name.startswith("mongo.sqlite3"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    said: list[str] = []
    with Emulator(_options(data_dir, log=said.append)) as emulator:
        lacking = [line for line in said if "earlier version" in line]
        assert lacking, said
        assert "kept only the database" in lacking[0]
        for lacked in ("objects", "queued messages", "signing secrets"):
            assert lacked in lacking[0]
        (tenant,) = emulator.tenants
        assert (tenant.name, tenant.new_key, tenant.new_secret) == ("shop", False, True)
        assert tenant.webhook_secret != secret  # it was not kept: a new one, printed
        answer = requests.get(f"{emulator.api_url}/api/jobs", headers=bearer(key), timeout=10)
        assert answer.status_code == 200  # its key was kept, with the database
    with Emulator(_options(data_dir)) as emulator:  # from now on, everything is kept
        assert emulator.webhook_secret == tenant.webhook_secret
        assert "restored" in emulator.state_line


def test_flags_that_contradict_what_the_directory_keeps_are_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "kept"
    with Emulator(_options(data_dir, "shop=shop-key-one_0123456789")) as emulator:
        secret = emulator.webhook_secret
    with pytest.raises(DataDirError, match=rf"tenant shop is kept in {data_dir}.*not one of"):
        Emulator(_options(data_dir, "shop=shop-key-two_0123456789")).start()
    other = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    with (
        environment({"WEBHOOK_SECRET": other}),
        pytest.raises(DataDirError, match=r"WEBHOOK_SECRET is not .* tenant shop kept in"),
    ):
        Emulator(_options(data_dir)).start()
    with environment({"MONGO_URI": "mongodb://127.0.0.1:1"}), pytest.raises(DataDirError):
        Emulator(_options(data_dir)).start()
    with pytest.raises(DataDirError, match="--mongo-engine memory"):
        Emulator(
            EmulatorOptions(port=0, quiet=True, data_dir=data_dir, mongo_engine="memory")
        ).start()
    # the kept key, or none: it goes on, nothing new made, the same secret
    with Emulator(_options(data_dir, "shop=shop-key-one_0123456789")) as emulator:
        (tenant,) = emulator.tenants
        assert (tenant.new_key, tenant.webhook_secret) == (False, secret)


def test_without_a_data_dir_the_start_up_says_everything_is_in_memory() -> None:
    with serve_process("--port", "0", "--quiet") as (_process, lines):
        assert f"in-memory {lines['in-memory']}" == IN_MEMORY_LINE
    readme = (REPO_ROOT / "README.md").read_text()
    assert IN_MEMORY_LINE in readme.replace("\n", " ")
