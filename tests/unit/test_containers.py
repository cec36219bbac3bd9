"""The emulator's execution environments: a spawned process per concurrent invocation."""

from __future__ import annotations

import os
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from local_emulator import snapstart_runtime
from local_emulator.containers import (
    MIB,
    ContainerExited,
    ContainerPool,
    InvocationError,
    OutOfMemory,
)
from local_emulator.dispatch import LambdaContext
from local_emulator.provision import FunctionInfo

HANDLERS = """
import os, time

COLD = {"starts": 0}
COLD["starts"] += 1


def handler(event, context):
    mode = event.get("mode")
    if mode == "raise":
        raise ValueError("bad row " + str(event.get("n")))
    if mode == "exit":
        os._exit(3)
    if mode == "sleep":
        time.sleep(event["seconds"])
    if mode == "allocate":  # touched, so resident; dropped before answering
        held = b"x" * (event["mb"] * 1024 * 1024)
        del held
    return {
        "pid": os.getpid(),
        "imports": COLD["starts"],
        "setting": os.environ.get("CONTAINER_TEST_SETTING"),
        "memorySize": os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"),
        "requestId": context.aws_request_id,
        "function": context.function_name,
        "remainingMs": context.get_remaining_time_in_millis(),
        "echo": event.get("n"),
    }
"""


def function_of(
    folder: Path, module: str, source: str, logical_id: str, snap_start: bool = False
) -> FunctionInfo:
    """A function whose handler is `module.handler`, written from `source` into `folder`."""
    (folder / f"{module}.py").write_text(textwrap.dedent(source))
    return FunctionInfo(
        logical_id=logical_id,
        name=f"stack-{logical_id}",
        handler=f"{module}.handler",
        code_dir=folder,
        timeout=30,
        memory_size=1769,
        arn=f"arn:aws:lambda:us-east-1:123456789012:function:stack-{logical_id}",
        snap_start=snap_start,
    )


@pytest.fixture
def function(tmp_path: Path) -> FunctionInfo:
    return function_of(tmp_path, "container_test_app", HANDLERS, "TestFunction")


@pytest.fixture
def pool(function: FunctionInfo) -> Iterator[ContainerPool]:
    environment = {**os.environ, "CONTAINER_TEST_SETTING": "from-the-stack"}
    pool = ContainerPool(function, environment)
    yield pool
    pool.close()


def _invoke(pool: ContainerPool, function: FunctionInfo, event: dict[str, Any]) -> Any:
    return pool(event, LambdaContext(function))


def test_runs_the_handler_in_another_process_with_the_stacks_environment(
    pool: ContainerPool, function: FunctionInfo
) -> None:
    context = LambdaContext(function)
    result = pool({"n": 1}, context)
    assert result["pid"] != os.getpid()
    assert result["setting"] == "from-the-stack"
    assert result["requestId"] == context.aws_request_id
    assert result["function"] == "stack-TestFunction"
    assert 25_000 < result["remainingMs"] <= 30_000
    assert result["echo"] == 1


def test_a_warm_container_is_reused_without_a_second_import(
    pool: ContainerPool, function: FunctionInfo
) -> None:
    first = _invoke(pool, function, {"n": 1})
    second = _invoke(pool, function, {"n": 2})
    assert second["pid"] == first["pid"]
    assert second["imports"] == 1
    assert pool.cold_starts == 1


def test_concurrent_invocations_get_containers_of_their_own(
    pool: ContainerPool, function: FunctionInfo
) -> None:
    _invoke(pool, function, {"n": 0})  # one warm container
    results: list[Any] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(_invoke(pool, function, {"mode": "sleep", "seconds": 1}))
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len({r["pid"] for r in results}) == 2
    assert pool.cold_starts == 2


def test_a_handler_error_carries_its_traceback_and_keeps_the_container(
    pool: ContainerPool, function: FunctionInfo
) -> None:
    before = _invoke(pool, function, {"n": 1})
    with pytest.raises(InvocationError) as raised:
        _invoke(pool, function, {"mode": "raise", "n": 7})
    assert "ValueError: bad row 7" in str(raised.value)
    assert "container_test_app.py" in str(raised.value)
    after = _invoke(pool, function, {"n": 2})
    assert after["pid"] == before["pid"]


def test_a_container_that_dies_fails_its_invocation_and_is_replaced(
    pool: ContainerPool, function: FunctionInfo
) -> None:
    before = _invoke(pool, function, {"n": 1})
    with pytest.raises(InvocationError, match="exited"):
        _invoke(pool, function, {"mode": "exit"})
    after = _invoke(pool, function, {"n": 2})
    assert after["pid"] != before["pid"]
    assert after["imports"] == 1  # a cold start in a new process
    assert pool.cold_starts == 2


def test_a_container_knows_its_memory_size_and_its_peak_is_reported(
    pool: ContainerPool, function: FunctionInfo
) -> None:
    result = _invoke(pool, function, {"mode": "allocate", "mb": 64})
    assert result["memorySize"] == "1769"  # as Lambda tells it
    assert 64 * MIB < pool.peak_memory < function.memory_size * MIB
    assert pool.memory_kills == 0
    line = pool.memory_report()
    assert line.startswith("stack-TestFunction: peak memory ")
    assert line.endswith(" MB of its 1769 MB MemorySize, 0 container(s) ended for going over")


def test_a_container_over_its_memory_size_is_ended_and_its_invocation_fails(
    tmp_path: Path,
) -> None:
    """As Lambda: the invocation fails like a crash (the dispatcher leaves its batch on the
    queue) even though the handler dropped the memory and answered, since its peak went
    over; the next invocation gets a new container."""
    function = replace(
        function_of(tmp_path, "container_test_app", HANDLERS, "TestFunction"), memory_size=128
    )
    pool = ContainerPool(function, dict(os.environ))
    try:
        before = _invoke(pool, function, {"n": 1})
        assert before["memorySize"] == "128"
        with pytest.raises(OutOfMemory, match="Memory Size: 128 MB Max Memory Used") as raised:
            _invoke(pool, function, {"mode": "allocate", "mb": 200})
        assert isinstance(raised.value, ContainerExited)
        with pytest.raises(ProcessLookupError):
            os.kill(before["pid"], 0)
        after = _invoke(pool, function, {"n": 2})
        assert after["pid"] != before["pid"] and pool.cold_starts == 2
        assert pool.memory_kills == 1 and pool.peak_memory > 128 * MIB
        assert "1 container(s) ended for going over" in pool.memory_report()
    finally:
        pool.close()


def test_closing_stops_every_container(pool: ContainerPool, function: FunctionInfo) -> None:
    pid = _invoke(pool, function, {"n": 1})["pid"]
    pool.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(RuntimeError, match="stopping"):
        _invoke(pool, function, {"n": 2})


SNAPSTART_HANDLERS = """
import os, time
try:
    import snapshot_restore_py as hooks
except ImportError:
    hooks = None

CALLS = []
STATE = {"client": "built at init"}


def first_dropped():
    CALLS.append("before:first")


def second_dropped():
    CALLS.append("before:second")
    STATE["client"] = None


def reseeded(tag, *, slow=0.0):
    time.sleep(slow)
    CALLS.append("after:" + tag)


if hooks is not None:
    hooks.register_before_snapshot(first_dropped)
    hooks.register_before_snapshot(second_dropped)
    hooks.register_after_restore(reseeded, "one")
    hooks.register_after_restore(reseeded, "two", slow=float(os.environ.get("RESTORE_SLOW", "0")))


def handler(event, context):
    return {"calls": CALLS, "client": STATE["client"], "hooks": hooks is not None}
"""


def snapstart_function(tmp_path: Path, snap_start: bool) -> FunctionInfo:
    return function_of(
        tmp_path, "snapstart_test_app", SNAPSTART_HANDLERS, "SnapFunction", snap_start
    )


def test_a_snapstart_container_runs_its_hooks_after_init_as_lambda_orders_them(
    tmp_path: Path,
) -> None:
    function = snapstart_function(tmp_path, snap_start=True)
    pool = ContainerPool(function, dict(os.environ))
    try:
        result = _invoke(pool, function, {})
    finally:
        pool.close()
    assert result["hooks"]
    # before the snapshot in the reverse order of registration, after the restore in order
    assert result["calls"] == ["before:second", "before:first", "after:one", "after:two"]
    assert result["client"] is None  # what the before-snapshot hook dropped stays dropped


def test_without_snapstart_a_container_has_no_hooks_module(tmp_path: Path) -> None:
    function = snapstart_function(tmp_path, snap_start=False)
    pool = ContainerPool(function, dict(os.environ))
    try:
        result = _invoke(pool, function, {})
    finally:
        pool.close()
    assert result == {"calls": [], "client": "built at init", "hooks": False}


def test_restore_hooks_over_lambdas_limit_raise_its_timeout() -> None:
    hooks = snapstart_runtime.RuntimeHooks(restore_limit=0.05)
    hooks.register_after_restore(time.sleep, 0.1)
    with pytest.raises(snapstart_runtime.SnapStartTimeout):
        hooks.restore()


def test_the_stand_in_module_takes_hooks_as_decorators_too() -> None:
    hooks = snapstart_runtime.RuntimeHooks()
    module: Any = hooks.module()
    calls: list[str] = []

    @module.register_before_snapshot
    def before() -> None:
        calls.append("before")

    @module.register_after_restore
    def after() -> None:
        calls.append("after")

    assert before.__name__ == "before"  # returned unchanged
    hooks.snapshot()
    assert hooks.restore() < 1.0
    assert calls == ["before", "after"]
