"""What the emulator does to its own process: the embedded MongoDB server in a process of its
own by default (LOCAL_MONGO_PROCESS=0: a thread), gone when the stack stops; the GIL's switch
interval set while it runs (LOCAL_SWITCH_INTERVAL_MS) and put back when it stops."""

from __future__ import annotations

import os
import sys

import pytest
from pymongo import MongoClient

from local_emulator.mongo import EmbeddedMongo
from local_emulator.mongo_process import MongoProcess
from local_emulator.stack import SWITCH_INTERVAL, Emulator, EmulatorOptions


def _options(**given: object) -> EmulatorOptions:
    return EmulatorOptions(
        port=0, quiet=True, start_api=False, start_dispatchers=False, log=lambda line: None, **given
    )  # type: ignore[arg-type]


def test_the_switch_interval_and_the_server_process_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LOCAL_SWITCH_INTERVAL_MS", raising=False)
    monkeypatch.delenv("LOCAL_MONGO_PROCESS", raising=False)
    defaults = EmulatorOptions().resolved()
    assert defaults.switch_interval == SWITCH_INTERVAL
    assert defaults.mongo_process is True
    monkeypatch.setenv("LOCAL_SWITCH_INTERVAL_MS", "5")
    monkeypatch.setenv("LOCAL_MONGO_PROCESS", "0")
    given = EmulatorOptions().resolved()
    assert given.switch_interval == pytest.approx(0.005)
    assert given.mongo_process is False
    for bad in ("0", "-1", "soon", "5000"):
        monkeypatch.setenv("LOCAL_SWITCH_INTERVAL_MS", bad)
        with pytest.raises(ValueError, match="LOCAL_SWITCH_INTERVAL_MS"):
            EmulatorOptions().resolved()


def test_the_stack_runs_its_database_in_a_process_and_leaves_nothing_behind() -> None:
    before = sys.getswitchinterval()
    emulator = Emulator(_options(switch_interval=0.002)).start()
    try:
        assert sys.getswitchinterval() == pytest.approx(0.002)
        server = emulator._mongo
        assert isinstance(server, MongoProcess)
        pid = server.pid
        assert pid is not None and pid != os.getpid()
        with MongoClient(emulator.mongo_uri, serverSelectionTimeoutMS=5000) as client:
            assert client.admin.command("ping")["ok"] == 1
    finally:
        emulator.stop()
    assert sys.getswitchinterval() == pytest.approx(before)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped: no longer this process's child


def test_local_mongo_process_0_keeps_the_server_in_a_thread() -> None:
    emulator = Emulator(_options(mongo_process=False)).start()
    try:
        assert isinstance(emulator._mongo, EmbeddedMongo)
        with MongoClient(emulator.mongo_uri, serverSelectionTimeoutMS=5000) as client:
            assert client.admin.command("ping")["ok"] == 1
    finally:
        emulator.stop()
