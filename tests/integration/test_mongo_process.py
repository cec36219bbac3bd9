"""The embedded MongoDB server in a process of its own (`local_emulator.mongo_process`): it
serves with its credentials and refuses a client without them, keeps its SQLite state across
a restart on the same directory, says why it could not start, and leaves no process behind,
whether stopped or orphaned by a parent killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from local_emulator.credentials import MongoCredentials
from local_emulator.mongo_process import MongoProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
CREDENTIALS = MongoCredentials("emulator", "a-password-of-the-test")
WAIT = 20.0  # seconds allowed for what must happen


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (ended, not yet reaped by its parent) is gone for our purpose
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MongoProcess]:
    mongo = MongoProcess(engine="sqlite", data_dir=tmp_path / "db", credentials=CREDENTIALS)
    mongo.start()
    try:
        yield mongo
    finally:
        mongo.stop()


def test_it_serves_its_user_and_refuses_a_client_without_credentials(server: MongoProcess) -> None:
    assert server.pid is not None and server.pid != os.getpid()
    assert f"{CREDENTIALS.username}:{CREDENTIALS.password}@" in server.uri
    with MongoClient(server.uri, serverSelectionTimeoutMS=5000) as client:
        client["db"]["things"].insert_one({"_id": 1, "name": "kept"})
        assert client["db"]["things"].find_one({"_id": 1}) == {"_id": 1, "name": "kept"}
    anonymous = server.uri.replace(f"{CREDENTIALS.username}:{CREDENTIALS.password}@", "")
    anonymous = anonymous.split("?")[0] + "?directConnection=true"
    with (
        MongoClient(anonymous, serverSelectionTimeoutMS=5000) as client,
        pytest.raises(OperationFailure),
    ):
        client["db"]["things"].find_one({"_id": 1})


def test_its_credentials_are_not_on_its_command_line(server: MongoProcess) -> None:
    with open(f"/proc/{server.pid}/cmdline", "rb") as cmdline:
        assert CREDENTIALS.password.encode() not in cmdline.read()


def test_stop_ends_the_process_and_a_restart_on_the_same_directory_keeps_the_data(
    tmp_path: Path,
) -> None:
    first = MongoProcess(engine="sqlite", data_dir=tmp_path, credentials=CREDENTIALS)
    with MongoClient(first.start(), serverSelectionTimeoutMS=5000) as client:
        client["db"]["things"].insert_one({"_id": "a", "n": 1})
    pid = first.pid
    assert pid is not None
    first.stop()
    assert not _alive(pid)
    assert (tmp_path / "mongo.sqlite3").exists()
    again = MongoProcess(engine="sqlite", data_dir=tmp_path, credentials=CREDENTIALS)
    try:
        with MongoClient(again.start(), serverSelectionTimeoutMS=5000) as client:
            assert client["db"]["things"].find_one({"_id": "a"}) == {"_id": "a", "n": 1}
    finally:
        again.stop()


def test_a_server_that_cannot_start_says_why_and_leaves_no_process() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        mongo = MongoProcess(port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match="did not start"):
            mongo.start()
    assert mongo.pid is None  # stopped and reaped


PARENT = (
    "import sys, time\n"
    "from local_emulator.mongo_process import MongoProcess\n"
    "mongo = MongoProcess()\n"
    "mongo.start()\n"
    "print(mongo.pid, flush=True)\n"
    "time.sleep(120)\n"
)


def test_a_parent_killed_with_sigkill_leaves_no_server_behind() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _alive(child)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
    assert _gone_within(child, WAIT)


def test_sigint_at_the_terminal_does_not_reach_it(server: MongoProcess) -> None:
    """A Ctrl-C reaches the emulator, which stops the server in its order: the server is in a
    session of its own and ignores SIGINT."""
    assert server.pid is not None
    assert os.getsid(server.pid) != os.getsid(0)
    with open(f"/proc/{server.pid}/status") as status:
        ignored = next(line for line in status if line.startswith("SigIgn:"))
    assert int(ignored.split()[1], 16) & (1 << (signal.SIGINT - 1))
