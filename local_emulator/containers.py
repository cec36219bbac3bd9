"""Lambda's execution environments, locally: a process per concurrent invocation.

On AWS every concurrent invocation of a function runs in an execution environment of its
own, a process that imports the handler once (the cold start) and then serves one
invocation at a time, reused while it stays warm. `ContainerPool` does the same with spawned
processes: `pool(event, context)` takes an idle container of the function (or starts one),
sends it the event, and returns the handler's result or raises with the handler's
traceback. A container that dies mid-invocation is dropped, and the invocation fails like a
crashed Lambda (the dispatcher leaves the batch on the queue).

Memory is held to the function's `MemorySize`, as Lambda holds it: a container is told it
(`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, as Lambda sets it), its peak resident set (Linux's
`VmHWM`) is watched while it invokes, and a container that goes over is ended there and then
(`OutOfMemory`, a `ContainerExited`: the invocation fails and its batch stays on the queue).
Each pool keeps the highest peak of its containers (`peak_memory`) and how many it ended
(`memory_kills`), which the emulator prints beside its invocation stats at stop.

The containers reach the stack as a deployed function does: S3, SQS and EventBridge over
HTTP at `AWS_ENDPOINT_URL` (the moto server), MongoDB at `MONGO_URI`. Worth it for the
CPU-bound function: its images are compressed outside the emulator's process, so they
neither wait for nor hold the GIL that moto, the embedded MongoDB and the dispatchers share
(measured with `python -m benchmarks.pipeline`: docs/performance.md).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from local_emulator.provision import FunctionInfo

STOP = "stop"
INVOKE = "invoke"
MIB = 1024 * 1024  # Lambda's MemorySize "MB" are MiB
MEMORY_SIZE_ENV = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"
# How often a running invocation's peak memory is read (a read of /proc/<pid>/status); the
# peak is read again when it answers, so an excursion between two looks still ends it.
MEMORY_LOOK_SECONDS = 0.01


@dataclass(frozen=True)
class RemoteContext:
    """The parts of Lambda's context object that handlers use, rebuilt in the container."""

    aws_request_id: str
    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    log_group_name: str
    log_stream_name: str
    deadline: float  # time.time() at which the invocation times out

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.time()) * 1000))


class InvocationError(RuntimeError):
    """The handler raised in its container; the message carries the container's traceback."""


class ContainerExited(InvocationError):
    """The container's process died before it answered (a crash, like a Lambda runtime's)."""


class OutOfMemory(ContainerExited):
    """The container went over its function's MemorySize and was ended, as Lambda ends it."""


def peak_resident(pid: int) -> int | None:
    """A process's peak resident set in bytes (Linux's VmHWM), or None once it is gone.
    (The functions' `memory_budget.status_bytes` reads the same, but the emulator's modules
    load before the functions' code directory is on the path.)"""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _serve(conn: Connection, function: FunctionInfo, environment: Mapping[str, str]) -> None:
    """A container's main loop (in the spawned process)."""
    os.environ.update(environment)
    # The emulator's stdout carries its own lines (storage, ready, the demo's report): the
    # function's log goes to stderr, as the in-process functions' does.
    sys.stdout = sys.stderr
    from local_emulator import snapstart_runtime
    from local_emulator.dispatch import load_handler

    hooks = snapstart_runtime.install() if function.snap_start else None
    handler = load_handler(function.handler, function.code_dir)
    if hooks is not None:  # as if snapshotted after init, then restored here
        hooks.snapshot()
        hooks.restore()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] != INVOKE:
            return
        _, event, context = message
        try:
            result = handler(event, context)
        except Exception:
            conn.send(("error", traceback.format_exc()))
        else:
            conn.send(("ok", result))


class _Container:
    def __init__(self, function: FunctionInfo, environment: Mapping[str, str]) -> None:
        self.memory_limit = function.memory_size * MIB
        self.peak = 0  # the highest VmHWM seen, bytes
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process: BaseProcess = ctx.Process(
            target=_serve,
            args=(child, function, dict(environment)),
            name=f"lambda-{function.logical_id}",
            daemon=True,
        )
        self.process.start()
        child.close()

    def invoke(self, event: Any, context: RemoteContext) -> Any:
        try:
            self.conn.send((INVOKE, event, context))
            while not self.conn.poll(MEMORY_LOOK_SECONDS):
                self._hold_to_memory_size(context)
            status, payload = self.conn.recv()
        except (EOFError, OSError) as exc:  # the process died before or while answering
            self.process.join(1.0)
            raise ContainerExited(
                f"the execution environment exited (code {self.process.exitcode})"
            ) from exc
        self._hold_to_memory_size(context)  # an excursion since the last look ends it too
        if status == "error":
            raise InvocationError(payload)
        return payload

    def _hold_to_memory_size(self, context: RemoteContext) -> None:
        """Note the container's peak memory; past its MemorySize, end it (OutOfMemory)."""
        pid = self.process.pid
        peak = peak_resident(pid) if pid is not None else None
        if peak is None:
            return
        self.peak = max(self.peak, peak)
        if peak <= self.memory_limit:
            return
        self.process.kill()
        self.process.join(5.0)
        # as Lambda reports it: "Runtime exited with error: signal: killed", and its REPORT
        raise OutOfMemory(
            f"RequestId: {context.aws_request_id} Error: Runtime exited with error: signal: "
            f"killed (Memory Size: {self.memory_limit // MIB} MB Max Memory Used: "
            f"{-(-peak // MIB)} MB)"
        )

    def close(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send((STOP,))
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout)
        self.conn.close()


class ContainerPool:
    """The execution environments of one function: `pool(event, context)` is its handler."""

    def __init__(self, function: FunctionInfo, environment: Mapping[str, str]) -> None:
        self.function = function
        # Lambda tells every function its MemorySize
        self._environment = {**environment, MEMORY_SIZE_ENV: str(function.memory_size)}
        self._lock = threading.Lock()
        self._idle: list[_Container] = []
        self._busy: dict[str, _Container] = {}  # by the invocation's aws_request_id
        self._closed = False
        self.cold_starts = 0
        self.killed = 0
        self.peak_memory = 0  # bytes: the highest peak of any of its containers
        self.memory_kills = 0  # containers ended for going over MemorySize

    def __call__(self, event: Any, context: Any) -> Any:
        container = self._checkout()
        remote = RemoteContext(
            aws_request_id=context.aws_request_id,
            function_name=context.function_name,
            function_version=context.function_version,
            invoked_function_arn=context.invoked_function_arn,
            memory_limit_in_mb=context.memory_limit_in_mb,
            log_group_name=context.log_group_name,
            log_stream_name=context.log_stream_name,
            deadline=time.time() + context.get_remaining_time_in_millis() / 1000,
        )
        with self._lock:
            self._busy[remote.aws_request_id] = container
        try:
            result = container.invoke(event, remote)
        except OutOfMemory:
            with self._lock:
                self.memory_kills += 1
            self._discard(container)
            raise
        except ContainerExited:
            self._discard(container)
            raise
        except InvocationError:  # the handler raised; its container stays warm
            self._checkin(container)
            raise
        except BaseException:
            self._discard(container)
            raise
        finally:
            with self._lock:
                self._busy.pop(remote.aws_request_id, None)
                self.peak_memory = max(self.peak_memory, container.peak)
        self._checkin(container)
        return result

    def memory_report(self) -> str:
        """One line: the highest peak memory of its containers against its MemorySize."""
        return (
            f"{self.function.name}: peak memory {-(-self.peak_memory // MIB)} MB of its "
            f"{self.function.memory_size} MB MemorySize, {self.memory_kills} container(s) "
            "ended for going over"
        )

    def abort(self, aws_request_id: str) -> None:
        """The invocation ran past its Timeout: kill its execution environment, as Lambda
        does (the next invocation gets a new one, a cold start)."""
        with self._lock:
            container = self._busy.get(aws_request_id)
            if container is None:
                return
            self.killed += 1
        container.process.kill()

    def _checkout(self) -> _Container:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.function.name}: the emulator is stopping")
            while self._idle:
                container = self._idle.pop()
                if container.process.is_alive():
                    return container
            self.cold_starts += 1
        return _Container(self.function, self._environment)

    def _checkin(self, container: _Container) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(container)
                return
        container.close()

    def _discard(self, container: _Container) -> None:
        container.close(timeout=1.0)

    def close(self) -> None:
        """Stop every container (those still invoking are stopped when they finish)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for container in idle:
            container.close()
