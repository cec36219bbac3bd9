"""`serve --data-dir DIR`: what the stack keeps there, the lock that keeps a second stack
off it, and what a directory of an earlier version lacks.

The layout (every name under DIR is listed here, so one more kept thing is one more entry):

    lock              the lock (fcntl.flock) and the pid of the stack that holds it
    data-dir.json     this layout's version and what it keeps (absent: an earlier version's)
    mongo.sqlite3     the embedded MongoDB (mongoeco's SQLite engine): jobs, rows, tenants,
                      their keys' hashes
    objects/          every S3 object, one file each (kept_objects.py)
    queues.jsonl      the SQS messages sent and not deleted, as a journal (kept_queues.py)
    secrets.json      Secrets Manager's secrets: the tenants' signing secrets (kept_secrets.py)
    tenants.json      the stack's tenants in order (the first is the default tenant)
    ports.json        the storage endpoint's port: the output links handed out name it
    credentials.json  the storage endpoint's access key and the embedded MongoDB's user
                      (credentials.py, which reads and writes it)

Everything is written before the call that changes it answers (an object's PUT, a message's
SendMessage), so a stack killed at any moment (SIGKILL) finds on its next start everything it
had acknowledged. Not fsync'ed: a power cut may lose the writes of its last seconds, as the
page cache had them.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LAYOUT_VERSION = 1
LOCK = "lock"
MANIFEST = "data-dir.json"
MONGO = "mongo.sqlite3"
OBJECTS = "objects"
QUEUES = "queues.jsonl"
SECRETS = "secrets.json"
TENANTS = "tenants.json"
PORTS = "ports.json"
# What a directory of this layout keeps, as data-dir.json lists it.
KEPT = ("database", "objects", "queued messages", "secrets", "tenants")
IN_MEMORY_LINE = (
    "in-memory stack: everything (objects, queued messages, secrets, tenants and keys, the "
    "database) is lost when it stops; --data-dir DIR keeps it"
)


class DataDirError(Exception):
    """The data directory cannot be used as asked; the message says why and what to do."""


def check_options(data_dir: Path | None, mongo_engine: str | None, mongo_uri: str) -> None:
    """Options that contradict --data-dir: a database it would not keep."""
    if data_dir is None:
        return
    if mongo_uri:
        raise DataDirError(
            f"--data-dir {data_dir} keeps the database, but MONGO_URI names another one; "
            "unset MONGO_URI to keep everything in the directory, or drop --data-dir"
        )
    if mongo_engine == "memory":
        raise DataDirError(
            f"--data-dir {data_dir} keeps the database, which --mongo-engine memory would "
            "not; drop --mongo-engine (with --data-dir it is sqlite)"
        )


def write_atomically(path: Path, data: bytes) -> None:
    """`data` at `path`, whole or not at all (a temporary file renamed over it)."""
    temporary = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
        out.write(data)
    os.replace(temporary, path)


@dataclass(frozen=True)
class Manifest:
    version: int
    kept: tuple[str, ...]


class DataDir:
    """One stack's directory: `open()` takes the lock (DataDirError when another stack
    holds it) and reads what an earlier start left; `close()` lets it go."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock_fd: int | None = None
        self.legacy = False  # written by a version that kept only the database
        self.fresh = False  # nothing kept yet

    def path(self, name: str) -> Path:
        return self.root / name

    @property
    def objects(self) -> Path:
        return self.path(OBJECTS)

    @property
    def queues(self) -> Path:
        return self.path(QUEUES)

    @property
    def secrets(self) -> Path:
        return self.path(SECRETS)

    def open(self) -> DataDir:
        if self.root.exists() and not self.root.is_dir():
            raise DataDirError(f"--data-dir {self.root} is not a directory")
        # its owner's alone: it holds the tenants' signing secrets and every object
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock()
        manifest = self._manifest()
        if manifest is None:
            self.legacy = self.path(MONGO).exists()
            self.fresh = not self.legacy
            others = sorted(p.name for p in self.root.iterdir() if p.name != LOCK)
            if self.fresh and others:
                self.close()
                raise DataDirError(
                    f"--data-dir {self.root} holds other files ({', '.join(others[:3])}"
                    f"{', ...' if len(others) > 3 else ''}) and no stack: give a new or empty "
                    "directory"
                )
            self._write_manifest()
        elif manifest.version > LAYOUT_VERSION:
            self.close()
            raise DataDirError(
                f"--data-dir {self.root} was written by a newer version (layout "
                f"{manifest.version}; this one reads {LAYOUT_VERSION}); use that version"
            )
        return self

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # the lock goes with it
            self._lock_fd = None

    def _lock(self) -> None:
        path = self.path(LOCK)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirError(
                f"--data-dir {self.root} is in use by another stack (pid {holder}); stop it, "
                "or give another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _manifest(self) -> Manifest | None:
        try:
            raw = json.loads(self.path(MANIFEST).read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise DataDirError(f"{self.path(MANIFEST)} is not valid JSON: {exc}") from None
        return Manifest(int(raw.get("version", 0)), tuple(raw.get("kept", ())))

    def _write_manifest(self) -> None:
        body = {"version": LAYOUT_VERSION, "kept": list(KEPT)}
        write_atomically(self.path(MANIFEST), json.dumps(body, indent=1).encode())

    def legacy_lines(self) -> list[str]:
        """What a directory of an earlier version lacks, said once at start."""
        if not self.legacy:
            return []
        return [
            f"data-dir {self.root} was written by an earlier version that kept only the "
            "database: its jobs, tenants and API keys are here; its objects (uploaded CSVs, "
            "outputs), queued messages and tenants' signing secrets were not kept",
            "data-dir: jobs left running are finished by the sweeper; their outputs made "
            "before are gone (their links no longer answer); each tenant gets a new signing secret "
            "(printed below); from now on everything is kept",
        ]

    # -- ports that links handed out name -----------------------------------------------
    def kept_port(self, name: str) -> int:
        """The port `name` had on an earlier start (0: none yet, any free one)."""
        return int(self._read_json(PORTS, {}).get(name, 0))

    def keep_port(self, name: str, port: int) -> None:
        ports = self._read_json(PORTS, {})
        if ports.get(name) != port:
            ports[name] = port
            write_atomically(self.path(PORTS), json.dumps(ports).encode())

    def _read_json(self, name: str, default: Any) -> Any:
        try:
            return json.loads(self.path(name).read_text())
        except FileNotFoundError:
            return default
        except ValueError as exc:
            raise DataDirError(f"{self.path(name)} is not valid JSON: {exc}") from None

    # -- the stack's tenants, in order ------------------------------------------------
    def kept_tenants(self) -> list[str]:
        return [str(name) for name in self._read_json(TENANTS, [])]

    def keep_tenants(self, names: Sequence[str]) -> None:
        write_atomically(self.path(TENANTS), json.dumps(list(names)).encode())


def describe_state(data_dir: DataDir | None, counts: Mapping[str, int]) -> str:
    """The one start-up line saying where the stack's state lives."""
    if data_dir is None:
        return IN_MEMORY_LINE
    if data_dir.fresh:
        return f"data-dir {data_dir.root}: everything is kept here (a new directory)"
    found = ", ".join(f"{n} {what}" for what, n in counts.items())
    restored = f" (restored: {found})" if found else ""
    return f"data-dir {data_dir.root}: everything is kept here{restored}"
