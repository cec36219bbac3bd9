"""`python -m pipeline_cli` / `image-pipeline`: submit, status, jobs, cancel, retry,
redeliver, delete, download, validate, configure.

Global options (--api, --api-key, --profile, --json) go before or after the command. Every
call to the API carries `Authorization: Bearer <key>`; the URL and the key come from the
option, else the environment (IMAGE_PIPELINE_API, IMAGE_PIPELINE_API_KEY), else the profile
(--profile, else IMAGE_PIPELINE_PROFILE, else `default`) of the config file
(pipeline_cli/config.py); the key is never printed. --json prints one JSON document on
stdout (progress and errors go to stderr).

Exit status: 0 success (a `completed` job with --wait); 3 `completed_with_errors`;
4 `failed`; 5 --wait gave up (--timeout); 6 the API key is missing or refused (401);
7 `cancelled` (a job waited for that ended cancelled); 1 any other error from the API or
the network (printed as the API words it, a 409 for a job that has ended, a 429 with the
wait it asks for); 2 a usage or configuration error; 130 interrupted; 141 (128 + SIGPIPE,
as a program killed by it) the reader of stdout went away (`| head`), quietly.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import platform
import re
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from pipeline_cli import __version__
from pipeline_cli.client import ApiClient, ApiError, KeyRefused, OutputOptions, Submitted
from pipeline_cli.config import (
    DEFAULT_PROFILE,
    PROFILE_ENV,
    ConfigError,
    Profile,
    config_path,
    read_profile,
    write_profile,
)
from pipeline_cli.progress import ProgressMeter
from pipeline_cli.render import (
    error_lines,
    jobs_lines,
    key_label,
    key_refused_line,
    status_lines,
)

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
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_CLOSED_PIPE = 128 + signal.SIGPIPE
KEY_FORM = re.compile(r"^[A-Za-z0-9._~+/=-]{1,200}$")  # what the API's authorizer accepts
EXIT_BY_STATUS = {  # the terminal statuses, and the exit status of a job waited for
    "completed": EXIT_OK,
    "completed_with_errors": EXIT_COMPLETED_WITH_ERRORS,
    "failed": EXIT_FAILED,
    "cancelled": EXIT_CANCELLED,
}
FORMATS = ("jpeg", "webp", "avif")


def global_options() -> argparse.ArgumentParser:
    """The options every command takes, before or after its name (as aws and gh do). Their
    defaults are SUPPRESS, so the command's parser does not overwrite what was given before
    it; `settings` fills in what none gave."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("global options (before or after the command)")
    group.add_argument(
        "--api",
        default=argparse.SUPPRESS,
        help=f"API base URL (env {API_ENV}, else the profile's 'api'; default {DEFAULT_API})",
    )
    group.add_argument(
        "--api-key",
        metavar="KEY",
        default=argparse.SUPPRESS,
        help=f"API key, sent as 'Authorization: Bearer KEY' (env {KEY_ENV}, else the "
        "profile's 'api_key': both keep it out of the process list and the shell history)",
    )
    group.add_argument(
        "--profile",
        metavar="NAME",
        default=argparse.SUPPRESS,
        help=f"the config file's profile to use (env {PROFILE_ENV}; default "
        f"'{DEFAULT_PROFILE}'; the file: $XDG_CONFIG_HOME/image-pipeline/config.toml)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the result as one JSON document (the API's own where it has one)",
    )
    return common


def parser() -> argparse.ArgumentParser:
    common = global_options()
    top = argparse.ArgumentParser(
        prog="image-pipeline",
        description="Client of the image pipeline API (the local emulator or a deployed URL).",
        epilog="exit status: 0 ok/completed, 1 API or network error, 2 usage or config, "
        "3 completed_with_errors, 4 failed, 5 --wait timed out, 6 API key missing or refused, "
        "7 cancelled, 130 interrupted, 141 stdout closed",
        parents=[common],
    )
    top.add_argument(
        "--version",
        action="version",
        version=f"image-pipeline {__version__} (Python {platform.python_version()})",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, parents=[common])

    submit = command("submit", "upload a CSV and start a job")
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
        "--quality",
        type=_quality,
        metavar="1-100|auto",
        help="encoder quality (default: the format's), or auto: per image the smallest output "
        "reaching --target-score",
    )
    submit.add_argument(
        "--target-score",
        type=float,
        metavar="30-95",
        help="the SSIMULACRA2 score --quality auto aims at (default 70; 90: visually lossless)",
    )
    submit.add_argument(
        "--max-width", type=int, metavar="PX", help="outputs fit this width (never enlarged)"
    )
    submit.add_argument(
        "--max-height", type=int, metavar="PX", help="outputs fit this height (never enlarged)"
    )
    _wait_options(submit)

    status = command("status", "a job's status (--json: the API's JSON, every product)")
    status.add_argument("request_id")

    download = command("download", "a finished job's output CSV")
    download.add_argument("request_id")
    download.add_argument("-o", "--output", help="file to write ('-' for stdout)")

    validate = command("validate", "check a CSV without starting a job")
    validate.add_argument("csv", type=Path)
    validate.add_argument("--webhook-url")

    cancel = command("cancel", "cancel a job that has not ended")
    cancel.add_argument("request_id")
    _wait_options(cancel, "wait until the job has ended and show it")

    retry = command("retry", "run a finished job's failed images again")
    retry.add_argument("request_id")
    _wait_options(retry, "wait until the job has ended again and show it")

    redeliver = command("redeliver", "send a finished job's last webhook again, same id")
    redeliver.add_argument("request_id")

    delete = command("delete", "delete an ended job: its outputs, CSVs and records")
    delete.add_argument("request_id")

    jobs = command("jobs", "your jobs, newest first, a page at a time")
    jobs.add_argument("--status", help="only jobs with this status (pending, processing, ...)")
    jobs.add_argument("--limit", type=int, help="jobs per page, 1-200 (default 50)")
    jobs.add_argument("--cursor", help="the next page: the cursor the previous page printed")

    command(
        "configure",
        "write a profile (--api, and the key from --api-key, the environment or stdin) "
        "to the config file, mode 0600",
    )
    return top


def _wait_options(
    command: argparse.ArgumentParser, help_text: str = "show progress until the job ends"
) -> None:
    command.add_argument("--wait", action="store_true", help=help_text)
    command.add_argument("--interval", type=float, default=0.5, help="seconds between polls")
    command.add_argument("--timeout", type=float, default=0, help="give up waiting after N s")


@dataclass(frozen=True)
class Settings:
    """Where the client calls and with which key, each from the first that gives it: the
    option, the environment, the profile."""

    api: str
    api_key: str | None
    profile: Profile


def _given(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _profile_name(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[str, bool]:
    """The profile asked for and whether it was named (--profile, else the environment)."""
    named = _given(getattr(args, "profile", None)) or _given(environ.get(PROFILE_ENV))
    return (named, True) if named else (DEFAULT_PROFILE, False)


def settings(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """The option wins over the environment, which wins over the profile. The config file
    is read only when a profile is named or a setting is still missing; a named profile
    that is not there is an error, the implicit `default` may be absent."""
    api = _given(getattr(args, "api", None)) or _given(environ.get(API_ENV))
    key = _given(getattr(args, "api_key", None)) or _given(environ.get(KEY_ENV))
    name, named = _profile_name(args, environ)
    profile = Profile(name)
    if named or api is None or key is None:
        profile = read_profile(config_path(environ), name, required=named)
    return Settings(api or profile.api or DEFAULT_API, key or profile.api_key, profile)


def api_key(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    """--api-key, else IMAGE_PIPELINE_API_KEY, else the profile's; None when none gives one."""
    return settings(args, environ).api_key


class Console:
    """stdout for results, stderr for progress; a live line only on a terminal."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err
        self.live = err.isatty()
        self._last = ""

    def print(self, line: str = "") -> None:
        print(line, file=self.out, flush=True)

    def json(self, document: Any) -> None:
        """One JSON document on stdout (--json)."""
        self.print(json.dumps(document, indent=2))

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


def _quality(text: str) -> int | str:
    """--quality: a whole number (the API checks its range) or `auto`."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number or auto: {text!r}") from None


def _submit(api: ApiClient, args: argparse.Namespace, console: Console) -> Submitted:
    options = OutputOptions(
        args.format, args.quality, args.max_width, args.max_height, args.target_score
    )
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
    if not args.json:
        console.print(f"requestId {submitted.request_id}")
        console.print(f"status    {submitted.status_url}")
    if args.wait:
        return _wait_and_show(api, submitted.request_id, args, console)
    if args.json:
        console.json(
            {
                "requestId": submitted.request_id,
                "statusUrl": submitted.status_url,
                "message": submitted.message,
            }
        )
    return EXIT_OK


def _wait_and_show(
    api: ApiClient, request_id: str, args: argparse.Namespace, console: Console
) -> int:
    """--wait: progress until the job ends, then its status (--json: the API's status,
    every product); the exit status says how it ended."""
    document = wait_for(api, request_id, console, args.interval, args.timeout)
    if document is None:
        console.error(f"error: job {request_id} did not end within {args.timeout:g}s")
        return EXIT_TIMEOUT
    if args.json:
        console.json(document)
    else:
        console.print()
        for line in status_lines(document):
            console.print(line)
    return EXIT_BY_STATUS.get(str(document.get("status")), EXIT_ERROR)


def cmd_cancel(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    """409 (an ended job) is an API error like any other: exit 1, in the API's words."""
    answer = api.cancel(args.request_id)
    if args.wait:
        if not args.json:
            console.print(f"cancelling {args.request_id}: no new image starts")
        return _wait_and_show(api, args.request_id, args, console)
    if args.json:
        console.json(answer)
    else:
        console.print(f"cancelling {answer.get('requestId', args.request_id)}: no new image starts")
    return EXIT_OK


def cmd_retry(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    """The failed images of a finished job go again (202); a job still running, or
    cancelled, is a 409, and a second retry within the API's interval a 429."""
    answer = api.retry(args.request_id)
    if args.wait:
        if not args.json:
            console.print(f"retrying the failed images of {args.request_id}")
        return _wait_and_show(api, args.request_id, args, console)
    if args.json:
        console.json(answer)
    else:
        console.print(
            f"retrying the failed images of {answer.get('requestId', args.request_id)}: "
            f"{answer.get('message', '')} (status {answer.get('status')})"
        )
    return EXIT_OK


def cmd_redeliver(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    answer = api.redeliver(args.request_id)
    if args.json:
        console.json(answer)
        return EXIT_OK
    webhook: Mapping[str, Any] = answer.get("webhook") or {}
    console.print(
        f"webhook of {answer.get('requestId', args.request_id)} queued for delivery again "
        f"(id {webhook.get('id', '?')}, {webhook.get('attempts', 0)} attempt(s) so far)"
    )
    return EXIT_OK


def cmd_delete(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    api.delete(args.request_id, on_progress=console.progress)
    console.end_progress()
    if args.json:
        console.json({"requestId": args.request_id, "deleted": True})
    else:
        console.print(f"deleted {args.request_id}: its outputs, CSVs and records")
    return EXIT_OK


def cmd_status(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    document = api.full_status(args.request_id)
    if args.json:
        console.json(document)
    else:
        for line in status_lines(document):
            console.print(line)
    return EXIT_OK


def cmd_download(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    target = args.output or f"{args.request_id}.csv"
    if target == "-" and args.json:
        console.error("error: --json and -o - both want stdout: name a file with -o")
        return EXIT_USAGE
    data = api.output_csv(args.request_id)
    if target == "-":
        console.out.write(data.decode("utf-8"))
        console.out.flush()
        return EXIT_OK
    Path(target).write_bytes(data)
    if args.json:
        console.json({"requestId": args.request_id, "path": target, "bytes": len(data)})
    else:
        console.print(f"wrote {target} ({len(data):,} bytes)")
    return EXIT_OK


def cmd_validate(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    if not args.csv.is_file():
        console.error(f"error: no such file: {args.csv}")
        return EXIT_USAGE
    result = api.validate(args.csv, args.webhook_url)
    if args.json:
        console.json(result)
    else:
        console.print(
            f"valid: {result.get('totalProducts')} products, {result.get('totalImages')} images"
        )
    return EXIT_OK


def cmd_jobs(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    listing = api.jobs(args.status, args.limit, args.cursor)
    if args.json:
        console.json(listing)
    else:
        for line in jobs_lines(listing):
            console.print(line)
    return EXIT_OK


COMMANDS: dict[str, Callable[[ApiClient, argparse.Namespace, Console], int]] = {
    "submit": cmd_submit,
    "status": cmd_status,
    "jobs": cmd_jobs,
    "cancel": cmd_cancel,
    "retry": cmd_retry,
    "redeliver": cmd_redeliver,
    "delete": cmd_delete,
    "download": cmd_download,
    "validate": cmd_validate,
}


def _key_to_configure(
    args: argparse.Namespace, environ: Mapping[str, str], stdin: TextIO
) -> str | None:
    """--api-key, else the environment's, else asked for (unechoed) on a terminal, else the
    first line of stdin (`... | image-pipeline configure`, as gh's --with-token)."""
    key = _given(getattr(args, "api_key", None)) or _given(environ.get(KEY_ENV))
    if key:
        return key
    if stdin.isatty():
        return _given(getpass.getpass("API key: "))
    return _given(stdin.readline())


def cmd_configure(
    args: argparse.Namespace, console: Console, environ: Mapping[str, str], stdin: TextIO
) -> int:
    """Writes the profile (--profile, IMAGE_PIPELINE_PROFILE or `default`): its `api` from
    --api or the environment, else kept as it was, else the default; its key as
    `_key_to_configure` finds it, checked for form (the API's) but not sent."""
    path = config_path(environ)
    name, _ = _profile_name(args, environ)
    existing = read_profile(path, name, required=False)
    api = (
        _given(getattr(args, "api", None))
        or _given(environ.get(API_ENV))
        or existing.api
        or DEFAULT_API
    )
    key = _key_to_configure(args, environ, stdin)
    if key is None:
        console.error(
            "error: no API key given: pass --api-key, set IMAGE_PIPELINE_API_KEY "
            "or write it on stdin"
        )
        return EXIT_USAGE
    if not KEY_FORM.match(key):
        console.error("error: that is not an API key (letters, digits and ._~+/=- only)")
        return EXIT_USAGE
    write_profile(path, Profile(name, api, key))
    if args.json:
        console.json({"profile": name, "path": str(path), "api": api, "apiKey": key_label(key)})
    else:
        console.print(
            f"wrote profile {name} to {path} (mode 0600): api {api}, key {key_label(key)}"
        )
    return EXIT_OK


def _quiet_stdout(out: TextIO) -> None:
    """After a closed pipe: stdout's descriptor goes to /dev/null, so the interpreter's
    last flush at exit finds nowhere to fail (Python's documented recipe)."""
    try:
        descriptor = out.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, descriptor)
    os.close(devnull)


def main(
    argv: Sequence[str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
) -> int:
    args = parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    environ = os.environ if environ is None else environ
    console = Console(out or sys.stdout, err or sys.stderr)
    try:
        if args.command == "configure":
            return cmd_configure(args, console, environ, stdin or sys.stdin)
        chosen = settings(args, environ)
        api = ApiClient(chosen.api, api_key=chosen.api_key)
        return COMMANDS[args.command](api, args, console)
    except ConfigError as error:
        console.error(f"error: {error}")
        return EXIT_USAGE
    except KeyRefused as error:
        console.error(key_refused_line(error, KEY_ENV))
        return EXIT_AUTH
    except ApiError as error:
        for line in error_lines(error):
            console.error(line)
        return EXIT_ERROR
    except BrokenPipeError:
        _quiet_stdout(console.out)
        return EXIT_CLOSED_PIPE
    except KeyboardInterrupt:
        console.error("interrupted")
        return EXIT_INTERRUPTED
