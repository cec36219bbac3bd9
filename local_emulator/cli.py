"""The command line: `python -m local_emulator serve|demo`."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import signal
import sys
import threading
import traceback
from pathlib import Path
from types import FrameType

from local_emulator.api_server import PortUnavailable
from local_emulator.credentials import (
    ACCESS_KEY_ENV,
    SECRET_KEY_ENV,
    CredentialsError,
    StorageCredentials,
    parse_storage_credentials,
)
from local_emulator.data_dir import DataDirError
from local_emulator.mongo import MongoEngine
from local_emulator.stack import DEFAULT_TEMPLATE, Emulator, EmulatorOptions
from local_emulator.tenants import DEFAULT_TENANTS, parse_tenant, parse_tenants
from local_emulator.timescale import DEFAULT_TIME_SCALE, TIME_SCALE_ENV


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _tenant(text: str) -> str:
    try:
        parse_tenant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


TENANTS_ENV = "IMAGE_PIPELINE_TENANTS"


def tenants_given(args: argparse.Namespace, environ: dict[str, str] | None = None) -> list[str]:
    """`--tenant`s, then the lines of `--tenant-file` (NAME or NAME=KEY; blank lines and
    `#` comments skipped); when neither is given, IMAGE_PIPELINE_TENANTS (NAME[=KEY] items
    separated by commas or spaces). A key in a file or the environment is not shown by `ps`,
    as a command line is."""
    texts = list(args.tenants or [])
    if args.tenant_file is not None:
        try:
            lines = args.tenant_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ValueError(f"--tenant-file: {exc.strerror or exc}: {args.tenant_file}") from None
        texts += [
            line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")
        ]
    if not texts:
        value = (os.environ if environ is None else environ).get(TENANTS_ENV, "")
        texts = [item for item in re.split(r"[,\s]+", value) if item]
    return texts


def _storage_credentials(text: str) -> StorageCredentials:
    try:
        return parse_storage_credentials(text)
    except CredentialsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_stack_options(parser: argparse.ArgumentParser, default_port: int) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="API bind address")
    parser.add_argument(
        "--port", type=int, default=default_port, help="API port (0: any free port)"
    )
    parser.add_argument(
        "--template", type=Path, default=DEFAULT_TEMPLATE, help="SAM template to provision"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="keep everything here (objects, queued messages, secrets, tenants and their "
        "keys, the database): a restart on the same directory goes on where it stopped; one "
        "stack at a time (default: all in memory, lost on exit)",
    )
    parser.add_argument(
        "--mongo-engine",
        choices=("memory", "sqlite"),
        help="embedded MongoDB storage (default: memory, or sqlite with --data-dir, which "
        "takes no other)",
    )
    parser.add_argument(
        "--workers", type=int, help="pollers for the rows queue (default: CPU cores + 1)"
    )
    parser.add_argument(
        "--time-scale",
        type=_positive_float,
        help="multiply every duration of the stack alike: the functions' Timeouts (not the "
        "API's), visibility timeouts, schedules, download deadlines and timeouts, leases "
        f"(default: {TIME_SCALE_ENV} or {DEFAULT_TIME_SCALE})",
    )
    parser.add_argument(
        "--tenant",
        dest="tenants",
        action="append",
        type=_tenant,
        metavar="NAME[=KEY]",
        help="a tenant and, optionally, its API key (default: new at each start; with "
        "--data-dir a kept tenant keeps its keys); repeatable, the first is the default tenant. "
        "Without --tenant or --tenant-file: the tenants in "
        f"${TENANTS_ENV} (NAME[=KEY] items separated by commas or spaces), else those "
        f"--data-dir keeps, else {' '.join(DEFAULT_TENANTS)}. A key given here shows in "
        "`ps`; one in a file or the environment does not",
    )
    parser.add_argument(
        "--tenant-file",
        type=Path,
        metavar="PATH",
        help="more tenants, one NAME[=KEY] a line (# comments), after the --tenant ones",
    )
    parser.add_argument(
        "--storage-credentials",
        type=_storage_credentials,
        metavar="ID:SECRET",
        help="the one access key the storage endpoint accepts (default: "
        f"{ACCESS_KEY_ENV} and {SECRET_KEY_ENV}, those --data-dir keeps, or new); a flag "
        "shows the secret to anyone who can run ps: prefer the environment",
    )
    parser.add_argument(
        "--schedule-scale",
        type=_positive_float,
        help="multiply rate() schedule periods by this instead (default: the time scale)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m local_emulator",
        description="Run the image pipeline locally: moto, an embedded MongoDB, the API and "
        "the functions, wired as in template.yaml.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the stack in the foreground")
    _add_stack_options(serve, 8000)
    serve.add_argument(
        "--allow-private-hosts",
        action="store_true",
        help="let image and webhook URLs point at loopback/private addresses "
        "(also ALLOW_PRIVATE_HOSTS=1)",
    )
    serve.add_argument("--quiet", action="store_true", help="no access log, no per-batch log")

    demo = commands.add_parser("demo", help="process the bundled sample CSV end to end")
    _add_stack_options(demo, 0)
    demo.add_argument("--csv", type=Path, help="CSV with {IMAGES_BASE}/ URLs")
    demo.add_argument("--images", type=Path, help="directory served as {IMAGES_BASE}")
    demo.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the job")
    demo.add_argument(
        "--webhook-timeout", type=float, default=60.0, help="seconds to wait for the webhook"
    )
    demo.add_argument("--verbose", action="store_true", help="log every request and batch")
    return parser


def make_emulator(args: argparse.Namespace, *, allow_private_hosts: bool, quiet: bool) -> Emulator:
    engine: MongoEngine | None = args.mongo_engine
    return Emulator(
        EmulatorOptions(
            host=args.host,
            port=args.port,
            allow_private_hosts=allow_private_hosts,
            template=args.template,
            workers=args.workers,
            time_scale=args.time_scale,
            schedule_scale=args.schedule_scale,
            mongo_engine=engine,
            data_dir=args.data_dir,
            quiet=quiet,
            verbose_dispatch=not quiet,
            tenants=args.tenants or (),
            storage_credentials=args.storage_credentials,
        )
    )


def port_unavailable_line(exc: PortUnavailable) -> str:
    """What could not be bound and how to choose otherwise, in one line (no traceback)."""
    if exc.errno == errno.EADDRNOTAVAIL:
        advice = "this machine has no such address: choose another with --host"
    elif exc.errno == errno.EADDRINUSE:
        advice = (
            f"another program holds port {exc.port}: choose another with --port N "
            "(--port 0: any free port)"
        )
    else:
        advice = "choose another port with --port N (--port 0: any free port)"
    return f"error: the API {exc}; {advice}"


def print_storage_lines(emulator: Emulator) -> None:
    """The storage endpoint and the only credentials it accepts (`serve` and `demo`)."""
    storage = emulator.storage_credentials
    print(f"storage {emulator.storage_url} bucket={emulator.uploads_bucket}")
    print(f"storage-credentials {storage.access_key_id} {storage.secret_access_key}", flush=True)


def install_stop_signals() -> threading.Event:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return stop


def serve(args: argparse.Namespace) -> int:
    stop = install_stop_signals()
    # As on Lambda, records that reach the root logger are shown (on stderr).
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    emulator = make_emulator(args, allow_private_hosts=args.allow_private_hosts, quiet=args.quiet)
    try:
        emulator.start()
    except PortUnavailable as exc:
        print(port_unavailable_line(exc), file=sys.stderr, flush=True)
        return 1
    except Exception as exc:
        # e.g. the port is taken, the data directory is in use, credentials refused: the
        # message says it all
        if not isinstance(exc, OSError | DataDirError | CredentialsError):
            traceback.print_exc()
        print(f"error: the stack did not start: {exc}", file=sys.stderr, flush=True)
        return 1
    try:
        for line in emulator.describe():
            print(line, file=sys.stderr)
        print(emulator.state_line, flush=True)
        for tenant in emulator.tenants:
            if tenant.new_key:  # a kept tenant's keys were printed when they were made
                print(f"api-key {tenant.name} {tenant.api_key}")
            print(f"webhook-secret {tenant.name} {tenant.webhook_secret}")
        print_storage_lines(emulator)
        print(f"ready {emulator.api_url}", flush=True)
        while not stop.wait(0.5):
            pass
        print("stopping", file=sys.stderr, flush=True)
        for line in emulator.invocation_report():
            print(f"invocations {line}", file=sys.stderr, flush=True)
    finally:
        emulator.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.tenants = tenants_given(args) or None
        parse_tenants(args.tenants or DEFAULT_TENANTS)
    except ValueError as exc:
        parser.error(str(exc))
    if args.command == "serve":
        return serve(args)
    from local_emulator.demo import run_demo

    return run_demo(args)
