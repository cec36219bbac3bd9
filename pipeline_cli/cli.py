"""`python -m pipeline_cli` / `image-pipeline`: submit, status, jobs, cancel, delete,
download, validate.

Every call to the API carries `Authorization: Bearer <key>`, the key from --api-key or else
IMAGE_PIPELINE_API_KEY; the key is never printed.

Exit status: 0 success (a `completed` job with --wait); 3 `completed_with_errors`;
4 `failed`; 5 --wait gave up (--timeout); 6 the API key is missing or refused (401);
7 `cancelled` (a job waited for that ended cancelled); 1 any other error from the API or
the network (printed as the API words it, a 409 for a job that has ended, a 429 with the
wait it asks for); 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from pipeline_cli.client import ApiClient, ApiError, KeyRefused, OutputOptions, Submitted
from pipeline_cli.progress import ProgressMeter
from pipeline_cli.render import error_lines, jobs_lines, key_refused_line, status_lines

API_ENV = "IMAGE_PIPELINE_API"
KEY_ENV = "IMAGE_PIPELINE_API_KEY"
DEFAULT_API = "http://127.0.0.1:8000"
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_COMPLETED_WITH_ERRORS = 3
EXIT_FAILED = 4
EXIT_TIMEOUT = 5
EXIT_AUTH = 6
EXIT_CANCELLED = 7
EXIT_BY_STATUS = {  # the terminal statuses, and the exit status of a job waited for
    "completed": EXIT_OK,
    "completed_with_errors": EXIT_COMPLETED_WITH_ERRORS,
    "failed": EXIT_FAILED,
    "cancelled": EXIT_CANCELLED,
}
FORMATS = ("jpeg", "webp", "avif")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="image-pipeline",
        description="Client of the image pipeline API (the local emulator or a deployed URL).",
        epilog="exit status: 0 ok/completed, 1 API or network error, 2 usage, "
        "3 completed_with_errors, 4 failed, 5 --wait timed out, 6 API key missing or refused, "
        "7 cancelled",
    )
    top.add_argument(
        "--api",
        default=os.environ.get(API_ENV, DEFAULT_API),
        help=f"API base URL (env {API_ENV}; default {DEFAULT_API})",
    )
    top.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"API key, sent as 'Authorization: Bearer KEY' (env {KEY_ENV}, which keeps it "
        "out of the process list and the shell history; this option wins)",
    )
    commands = top.add_subparsers(dest="command", required=True)

    submit = commands.add_parser("submit", help="upload a CSV and start a job")
    submit.add_argument("csv", type=Path)
    submit.add_argument("--webhook-url", help="where the signed webhook goes when the job ends")
    submit.add_argument(
        "--presigned",
        action="store_true",
        help="upload straight to storage through the presigned POST of /api/uploads",
    )
    submit.add_argument("--idempotency-key", help="same key, same job (multipart only)")
    submit.add_argument(
        "--format", choices=FORMATS, help="output format (default jpeg, whatever the input)"
    )
    submit.add_argument(
        "--quality", type=int, metavar="1-100", help="encoder quality (default: the format's)"
    )
    submit.add_argument(
        "--max-width", type=int, metavar="PX", help="outputs fit this width (never enlarged)"
    )
    submit.add_argument(
        "--max-height", type=int, metavar="PX", help="outputs fit this height (never enlarged)"
    )
    _wait_options(submit)

    status = commands.add_parser("status", help="a job's status")
    status.add_argument("request_id")
    status.add_argument("--json", action="store_true", help="the API's JSON, every product")

    download = commands.add_parser("download", help="a finished job's output CSV")
    download.add_argument("request_id")
    download.add_argument("-o", "--output", help="file to write ('-' for stdout)")

    validate = commands.add_parser("validate", help="check a CSV without starting a job")
    validate.add_argument("csv", type=Path)
    validate.add_argument("--webhook-url")

    cancel = commands.add_parser("cancel", help="cancel a job that has not ended")
    cancel.add_argument("request_id")
    _wait_options(cancel, "wait until the job has ended and show it")

    delete = commands.add_parser(
        "delete", help="delete an ended job: its outputs, CSVs and records"
    )
    delete.add_argument("request_id")

    jobs = commands.add_parser("jobs", help="your jobs, newest first, a page at a time")
    jobs.add_argument("--status", help="only jobs with this status (pending, processing, ...)")
    jobs.add_argument("--limit", type=int, help="jobs per page, 1-200 (default 50)")
    jobs.add_argument("--cursor", help="the next page: the cursor the previous page printed")
    jobs.add_argument("--json", action="store_true", help="the API's JSON")
    return top


def _wait_options(
    command: argparse.ArgumentParser, help_text: str = "show progress until the job ends"
) -> None:
    command.add_argument("--wait", action="store_true", help=help_text)
    command.add_argument("--interval", type=float, default=0.5, help="seconds between polls")
    command.add_argument("--timeout", type=float, default=0, help="give up waiting after N s")


def api_key(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    """--api-key, else IMAGE_PIPELINE_API_KEY; None when neither gives one."""
    key = args.api_key if args.api_key is not None else environ.get(KEY_ENV, "")
    return key.strip() or None


class Console:
    """stdout for results, stderr for progress; a live line only on a terminal."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err
        self.live = err.isatty()
        self._last = ""

    def print(self, line: str = "") -> None:
        print(line, file=self.out, flush=True)

    def error(self, line: str) -> None:
        self.end_progress()
        print(line, file=self.err, flush=True)

    def progress(self, line: str) -> None:
        if line == self._last:
            return
        if self.live:
            self.err.write("\r\x1b[2K" + line)
            self.err.flush()
        else:
            print(line, file=self.err, flush=True)
        self._last = line

    def end_progress(self) -> None:
        if self.live and self._last:
            self.err.write("\n")
            self.err.flush()
        self._last = ""


def _submit(api: ApiClient, args: argparse.Namespace, console: Console) -> Submitted:
    options = OutputOptions(args.format, args.quality, args.max_width, args.max_height)
    if args.presigned:
        return api.submit_presigned(args.csv, args.webhook_url, options)
    return api.submit_multipart(args.csv, args.webhook_url, args.idempotency_key, options)


def wait_for(
    api: ApiClient,
    request_id: str,
    console: Console,
    interval: float,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any] | None:
    """Polls until the job is terminal; the final full status, or None on timeout. A 429
    waits as long as its Retry-After asks (else one interval) and polls again."""
    meter = ProgressMeter(started=clock())

    def polled(call: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        while True:
            try:
                return call()
            except ApiError as error:
                if error.status != 429:
                    raise
                pause = interval if error.retry_after is None else error.retry_after
                if timeout and clock() + pause - meter.started > timeout:
                    return None
                console.progress(f"rate limited by the API: polling again in {pause:g}s")
                sleep(pause)

    while True:
        document = polled(lambda: api.status(request_id, limit=1))
        if document is None:
            console.end_progress()
            return None
        console.progress(meter.update(clock(), document))
        if document.get("status") in EXIT_BY_STATUS:
            final = polled(lambda: api.full_status(request_id))
            console.end_progress()
            return final
        if timeout and clock() - meter.started >= timeout:
            console.end_progress()
            return None
        sleep(interval)


def cmd_submit(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    if not args.csv.is_file():
        console.error(f"error: no such file: {args.csv}")
        return EXIT_USAGE
    submitted = _submit(api, args, console)
    console.print(f"requestId {submitted.request_id}")
    console.print(f"status    {submitted.status_url}")
    if not args.wait:
        return EXIT_OK
    return _wait_and_show(api, submitted.request_id, args, console)


def _wait_and_show(
    api: ApiClient, request_id: str, args: argparse.Namespace, console: Console
) -> int:
    """--wait: progress until the job ends, then its status; the exit status says how it
    ended."""
    document = wait_for(api, request_id, console, args.interval, args.timeout)
    if document is None:
        console.error(f"error: job {request_id} did not end within {args.timeout:g}s")
        return EXIT_TIMEOUT
    console.print()
    for line in status_lines(document):
        console.print(line)
    return EXIT_BY_STATUS.get(str(document.get("status")), EXIT_ERROR)


def cmd_cancel(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    """409 (an ended job) is an API error like any other: exit 1, in the API's words."""
    answer = api.cancel(args.request_id)
    console.print(f"cancelling {answer.get('requestId', args.request_id)}: no new image starts")
    if not args.wait:
        return EXIT_OK
    return _wait_and_show(api, args.request_id, args, console)


def cmd_delete(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    api.delete(args.request_id, on_progress=console.progress)
    console.end_progress()
    console.print(f"deleted {args.request_id}: its outputs, CSVs and records")
    return EXIT_OK


def cmd_status(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    document = api.full_status(args.request_id)
    if args.json:
        console.print(json.dumps(document, indent=2))
    else:
        for line in status_lines(document):
            console.print(line)
    return EXIT_OK


def cmd_download(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    data = api.output_csv(args.request_id)
    target = args.output or f"{args.request_id}.csv"
    if target == "-":
        console.out.write(data.decode("utf-8"))
        console.out.flush()
        return EXIT_OK
    Path(target).write_bytes(data)
    console.print(f"wrote {target} ({len(data):,} bytes)")
    return EXIT_OK


def cmd_validate(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    if not args.csv.is_file():
        console.error(f"error: no such file: {args.csv}")
        return EXIT_USAGE
    result = api.validate(args.csv, args.webhook_url)
    console.print(
        f"valid: {result.get('totalProducts')} products, {result.get('totalImages')} images"
    )
    return EXIT_OK


def cmd_jobs(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    listing = api.jobs(args.status, args.limit, args.cursor)
    if args.json:
        console.print(json.dumps(listing, indent=2))
    else:
        for line in jobs_lines(listing):
            console.print(line)
    return EXIT_OK


COMMANDS: dict[str, Callable[[ApiClient, argparse.Namespace, Console], int]] = {
    "submit": cmd_submit,
    "status": cmd_status,
    "jobs": cmd_jobs,
    "cancel": cmd_cancel,
    "delete": cmd_delete,
    "download": cmd_download,
    "validate": cmd_validate,
}


def main(
    argv: Sequence[str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> int:
    args = parser().parse_args(argv)
    console = Console(out or sys.stdout, err or sys.stderr)
    api = ApiClient(args.api, api_key=api_key(args, os.environ if environ is None else environ))
    try:
        return COMMANDS[args.command](api, args, console)
    except KeyRefused as error:
        console.error(key_refused_line(error, KEY_ENV))
        return EXIT_AUTH
    except ApiError as error:
        for line in error_lines(error):
            console.error(line)
        return EXIT_ERROR
    except KeyboardInterrupt:
        console.error("interrupted")
        return 130
