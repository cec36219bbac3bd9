"""The data directory itself: one stack at a time (the lock, and who holds it), what it
tells of an earlier version's directory, the options that contradict it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from local_emulator.data_dir import (
    IN_MEMORY_LINE,
    LAYOUT_VERSION,
    DataDir,
    DataDirError,
    check_options,
    describe_state,
)
from local_emulator.tenants import TenantSpec, tenant_order

REPO_ROOT = Path(__file__).resolve().parents[2]
HOLD = (
    "import sys, time\n"
    "from local_emulator.data_dir import DataDir\n"
    "DataDir(sys.argv[1]).open()\n"
    "print('held', flush=True)\n"
    "time.sleep(120)\n"
)


def test_a_second_open_is_refused_naming_the_directory_and_the_holder(tmp_path: Path) -> None:
    first = DataDir(tmp_path / "d").open()
    try:
        with pytest.raises(DataDirError) as refused:
            DataDir(tmp_path / "d").open()
        assert str(refused.value).startswith(
            f"--data-dir {tmp_path / 'd'} is in use by another stack (pid {os.getpid()})"
        )
    finally:
        first.close()
    DataDir(tmp_path / "d").open().close()  # let go: free again


def test_another_process_holds_it_until_it_is_killed(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DataDirError, match=rf"in use by another stack \(pid {holder.pid}\)"):
            DataDir(tmp_path).open()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    DataDir(tmp_path).open().close()  # a killed stack's lock went with it


def test_a_directory_with_the_database_alone_is_an_earlier_versions(tmp_path: Path) -> None:
    (tmp_path / "mongo.sqlite3").write_bytes(b"")
    opened = DataDir(tmp_path).open()
    opened.close()
    assert opened.legacy and not opened.fresh
    assert "kept only the database" in opened.legacy_lines()[0]
    reopened = DataDir(tmp_path).open()  # said once: from now on it is this layout
    reopened.close()
    assert not reopened.legacy and reopened.legacy_lines() == []


def test_a_new_directory_is_fresh_and_a_newer_layout_is_refused(tmp_path: Path) -> None:
    opened = DataDir(tmp_path / "new").open()
    opened.close()
    assert opened.fresh and not opened.legacy
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700  # it will hold secrets
    assert (tmp_path / "new" / "data-dir.json").stat().st_mode & 0o777 == 0o600
    assert "a new directory" in describe_state(opened, {})
    manifest = tmp_path / "new" / "data-dir.json"
    manifest.write_text(json.dumps({"version": LAYOUT_VERSION + 1}))
    with pytest.raises(DataDirError, match="newer version"):
        DataDir(tmp_path / "new").open()
    probe = DataDir(tmp_path / "new")
    probe._lock()  # the refusal let the lock go
    probe.close()


def test_options_that_would_keep_the_database_elsewhere_are_refused(tmp_path: Path) -> None:
    check_options(None, "memory", "mongodb://elsewhere")  # no directory: anything goes
    check_options(tmp_path, "sqlite", "")
    with pytest.raises(DataDirError, match="MONGO_URI"):
        check_options(tmp_path, None, "mongodb://elsewhere")
    with pytest.raises(DataDirError, match="--mongo-engine memory"):
        check_options(tmp_path, "memory", "")
    assert describe_state(None, {}) == IN_MEMORY_LINE


def test_tenants_kept_come_first_in_their_order_unless_others_are_given() -> None:
    kept = ["shop", "beta"]
    assert [t.name for t in tenant_order([], kept)] == ["shop", "beta"]
    assert [t.name for t in tenant_order([], [])] == ["local"]
    given = [TenantSpec("beta", "k"), TenantSpec("new")]
    assert tenant_order(given, kept) == [*given, TenantSpec("shop")]


def test_a_directory_holding_other_files_is_not_taken(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataDirError, match=r"holds other files \(notes.txt\) and no stack"):
        DataDir(tmp_path).open()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lock", "notes.txt"]
    DataDir(tmp_path / "empty").open().close()  # new, or empty: taken
