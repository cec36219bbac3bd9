"""Lambda's event delivery, locally: SQS event source mappings and rate() schedules.

For each SQS mapping, poller threads do what Lambda's pollers do: ReceiveMessage up to
BatchSize (the queue's visibility timeout hides the batch meanwhile), call the handler with an
SQS event, then delete the records that succeeded -- all of them, or, with
ReportBatchItemFailures, all but the reported ones. A handler that raises deletes nothing.
Records not deleted come back when their visibility timeout runs out, and the queue's redrive
policy moves them to the DLQ after maxReceiveCount receives (moto does that on receive).

Each invocation is held to its function's Timeout (scaled, see `timescale`), as Lambda holds
it: past it, the invocation is over -- logged as Lambda logs it, its batch left to come back
after the visibility timeout, its result ignored. A function that runs in a process of its
own (`ContainerPool`) has that process killed; one that runs on a thread of this process
cannot be, so its code must stop by itself at its next look at the time it has left.

The pollers reach SQS through `Queues`: over HTTP with boto3 (`SqsApiQueues`), or straight
from moto's backend when it runs in this process (`local_emulator.inprocess.InProcessQueues`),
where an idle long poll waits on the queue's condition instead of a request a second.
"""

from __future__ import annotations

import base64
import importlib
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from local_emulator.provision import (
    ACCOUNT_ID,
    FunctionInfo,
    QueueInfo,
    ScheduleSource,
    SqsEventSource,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

Handler = Callable[[dict[str, Any], Any], Any]
Log = Callable[[str], None]
SQS_MAX_BATCH = 10


class LambdaContext:
    """The parts of Lambda's context object that handlers use."""

    def __init__(self, function: FunctionInfo) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = function.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = function.arn
        self.memory_limit_in_mb = function.memory_size
        self.log_group_name = f"/aws/lambda/{function.name}"
        self.log_stream_name = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        self._deadline = time.monotonic() + function.timeout
        self.timeout = function.timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_handler(handler: str, code_dir: Path) -> Handler:
    """`module.attr` from the function's code directory, as Lambda's runtime imports it."""
    module_name, _, attr = handler.rpartition(".")
    if not module_name:
        raise ValueError(f"handler {handler!r} must look like module.function")
    if str(code_dir) not in sys.path:
        sys.path.insert(0, str(code_dir))
    module = importlib.import_module(module_name)
    function = getattr(module, attr, None)
    if not callable(function):
        raise ValueError(f"handler {handler!r}: {module_name}.{attr} is not callable")
    return function  # type: ignore[no-any-return]


def _lambda_message_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in attributes.items():
        item: dict[str, Any] = {
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": value.get("DataType", "String"),
        }
        if "StringValue" in value:
            item["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            item["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode("ascii")
        out[name] = item
    return out


def sqs_record(message: MessageTypeDef, queue_arn: str, region: str) -> dict[str, Any]:
    """One record of Lambda's SQS event, from a ReceiveMessage result."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": _lambda_message_attributes(message.get("MessageAttributes", {})),
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def scheduled_event(function: FunctionInfo, schedule: ScheduleSource, region: str) -> Any:
    if schedule.input is not None:
        return schedule.input
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [
            f"arn:aws:events:{region}:{ACCOUNT_ID}:rule/{function.name}-{schedule.event_name}"
        ],
        "detail": {},
    }


class Queues(Protocol):
    """What the pollers need of SQS. Messages are ReceiveMessage's shape, as boto3 gives them."""

    def receive(
        self, queue: QueueInfo, count: int, wait: int, visibility: int
    ) -> list[MessageTypeDef]:
        """Up to `count` (at most ten) messages, each invisible for `visibility` seconds,
        waiting up to `wait` seconds for the first."""
        ...

    def delete(self, queue: QueueInfo, receipts: Sequence[str]) -> list[str]:
        """Delete; returns why each delete that failed failed."""
        ...


def in_batches(receipts: Sequence[str]) -> Iterator[list[tuple[str, str]]]:
    """(Id, ReceiptHandle) pairs, at most ten per list: one SQS batch call each."""
    for start in range(0, len(receipts), SQS_MAX_BATCH):
        chunk = receipts[start : start + SQS_MAX_BATCH]
        yield [(str(i), handle) for i, handle in enumerate(chunk)]


class SqsApiQueues:
    """`Queues` over SQS's API (the moto server's HTTP endpoint, or AWS itself)."""

    def __init__(self, sqs: SQSClient) -> None:
        self._sqs = sqs

    def receive(
        self, queue: QueueInfo, count: int, wait: int, visibility: int
    ) -> list[MessageTypeDef]:
        response = self._sqs.receive_message(
            QueueUrl=queue.url,
            MaxNumberOfMessages=max(1, min(SQS_MAX_BATCH, count)),
            WaitTimeSeconds=wait,
            VisibilityTimeout=visibility,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(response.get("Messages", []))

    def delete(self, queue: QueueInfo, receipts: Sequence[str]) -> list[str]:
        return _per_batch(
            receipts,
            lambda batch: self._sqs.delete_message_batch(
                QueueUrl=queue.url, Entries=[{"Id": i, "ReceiptHandle": h} for i, h in batch]
            ),
        )


def _per_batch(
    receipts: Sequence[str], call: Callable[[list[tuple[str, str]]], Mapping[str, Any]]
) -> list[str]:
    """One batch call per ten receipts; the errors of all of them (a call that raises fails
    its batch only)."""
    errors: list[str] = []
    for batch in in_batches(receipts):
        try:
            response = call(batch)
        except Exception as exc:
            errors.append(str(exc))
            continue
        errors += [str(f.get("Message", f)) for f in response.get("Failed", [])]
    return errors


def failed_message_ids(result: Any, batch_ids: list[str]) -> set[str]:
    """Which records Lambda would leave on the queue, given ReportBatchItemFailures.

    As on AWS: no `batchItemFailures` (or an empty list) is full success; a malformed
    answer or an identifier that is not in the batch fails the whole batch."""
    if not isinstance(result, Mapping):
        return set()
    failures = result.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return set(batch_ids)
    failed: set[str] = set()
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, Mapping) else None
        if not identifier or identifier not in batch_ids:
            return set(batch_ids)
        failed.add(str(identifier))
    return failed


@dataclass
class FunctionStats:
    invocations: int = 0
    records: int = 0
    failed_records: int = 0
    errors: int = 0
    timeouts: int = 0
    worst_seconds: float = 0.0  # the longest invocation seen (a timed-out one: its Timeout)


@dataclass(frozen=True)
class Invocation:
    """How one invocation ended: its result, or the handler's traceback, or a timeout."""

    seconds: float
    result: Any = None
    error: str = ""
    timed_out: bool = False


def invoke(handler: Handler, event: Any, context: LambdaContext) -> Invocation:
    """Call the handler as Lambda does: on a thread of its own, for at most its Timeout (the
    template's, times `LOCAL_TIME_SCALE`: `timescale.scaled_timeout`; the context's
    `get_remaining_time_in_millis` counts down from it).

    Late, the invocation is over and its result (should one come) ignored; a handler that
    can be stopped (`abort(aws_request_id)`, as ContainerPool's can) is stopped."""
    done: dict[str, Any] = {}

    def run() -> None:
        try:
            done["result"] = handler(event, context)
        except BaseException:
            done["error"] = traceback.format_exc()

    started = time.monotonic()
    thread = threading.Thread(
        target=run, name=f"lambda-{context.function_name}-{context.aws_request_id[:8]}", daemon=True
    )
    thread.start()
    thread.join(context.timeout)
    if thread.is_alive():
        abort = getattr(handler, "abort", None)
        if callable(abort):
            abort(context.aws_request_id)
        return Invocation(context.timeout, timed_out=True)
    elapsed = time.monotonic() - started
    return Invocation(elapsed, done.get("result"), done.get("error", ""))


class Dispatcher:
    """Runs the event source mappings and schedules of the stack's functions."""

    def __init__(
        self,
        queues: Queues,
        region: str,
        *,
        log: Log | None = None,
        verbose: bool = True,
        handler_loader: Callable[[FunctionInfo], Handler] | None = None,
    ) -> None:
        self._queues = queues
        self._region = region
        self._log_lock = threading.Lock()
        self._log_sink: Log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._verbose = verbose
        self._load: Callable[[FunctionInfo], Handler] = handler_loader or (
            lambda fn: load_handler(fn.handler, fn.code_dir)
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._disabled: set[str] = set()  # queue names whose mappings are switched off
        # function logical id -> invocations at once its ReservedConcurrentExecutions leaves
        self._reserved_left: dict[str, int] = {}
        self._stats_lock = threading.Lock()
        self.stats: dict[str, FunctionStats] = {}
        self.descriptions: list[str] = []

    def _log(self, line: str) -> None:
        with self._log_lock:
            self._log_sink(line)

    def _count(
        self, function: FunctionInfo, records: int, failed: int, outcome: Invocation
    ) -> None:
        with self._stats_lock:
            stats = self.stats.setdefault(function.name, FunctionStats())
            stats.invocations += 1
            stats.records += records
            stats.failed_records += failed
            stats.errors += int(bool(outcome.error) or outcome.timed_out)
            stats.timeouts += int(outcome.timed_out)
            stats.worst_seconds = max(stats.worst_seconds, outcome.seconds)

    def _log_timeout(self, context: LambdaContext) -> None:
        """As Lambda writes it to the function's log."""
        self._log(
            f"{datetime.now(UTC).isoformat(timespec='milliseconds').replace('+00:00', 'Z')} "
            f"{context.aws_request_id} Task timed out after {context.timeout:.2f} seconds"
        )

    def disable(self, queue_name: str) -> None:
        """Stop polling the queue, as `UpdateEventSourceMapping Enabled=false` does."""
        self._disabled.add(queue_name)

    def enable(self, queue_name: str) -> None:
        self._disabled.discard(queue_name)

    # -- set-up ---------------------------------------------------------------------
    def add_sqs(self, function: FunctionInfo, source: SqsEventSource, pollers: int) -> None:
        handler = self._load(function)
        if source.maximum_concurrency is not None:
            pollers = min(pollers, source.maximum_concurrency)
        pollers = max(1, pollers)
        if function.reserved_concurrency is not None:
            # one poller is one invocation at a time: all of a function's together stay
            # within its reserved concurrency, as Lambda throttles the rest
            left = self._reserved_left.setdefault(
                function.logical_id, function.reserved_concurrency
            )
            pollers = min(pollers, left)
            self._reserved_left[function.logical_id] = left - pollers
            if pollers < 1:
                self.descriptions.append(
                    f"{source.queue.name} -> {function.handler}: not polled (its reserved "
                    f"concurrency, {function.reserved_concurrency}, is taken)"
                )
                return
        for i in range(pollers):
            self._threads.append(
                threading.Thread(
                    target=self._poll,
                    args=(function, source, handler),
                    name=f"sqs-{function.logical_id}-{i}",
                    daemon=True,
                )
            )
        self.descriptions.append(
            f"{source.queue.name} -> {function.handler} (batch {source.batch_size}, "
            f"{pollers} poller{'s' if pollers > 1 else ''}"
            f"{f', window {source.batching_window:g}s' if source.batching_window else ''}"
            f"{', partial failures' if source.report_batch_item_failures else ''}, "
            f"visibility {source.queue.visibility_timeout}s"
            f"{'' if source.queue.visibility_timeout == source.queue.template_visibility_timeout else f' (template {source.queue.template_visibility_timeout}s)'})"  # noqa: E501
        )

    def add_schedule(self, function: FunctionInfo, schedule: ScheduleSource, scale: float) -> None:
        if function.reserved_concurrency == 0:  # Lambda throttles every invocation
            self.descriptions.append(f"{schedule.expression} -> {function.handler}: throttled")
            return
        handler = self._load(function)
        period = max(1.0, schedule.period_seconds * scale)
        self._threads.append(
            threading.Thread(
                target=self._tick,
                args=(function, schedule, handler, period),
                name=f"schedule-{function.logical_id}-{schedule.event_name}",
                daemon=True,
            )
        )
        self.descriptions.append(
            f"{schedule.expression} -> {function.handler} (every {period:g}s locally)"
        )

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop polling; wait for the batches in progress to finish."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.ident is None:
                continue
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
            if thread.is_alive():
                self._log(f"[dispatch] {thread.name} still running after {timeout:g}s")

    # -- SQS ------------------------------------------------------------------------
    def _receive(
        self, function: FunctionInfo, source: SqsEventSource, count: int, wait: int
    ) -> list[MessageTypeDef]:
        """Up to `count` records, invisible for the queue's visibility timeout (which the
        template keeps at six times the function's Timeout or more)."""
        return self._queues.receive(source.queue, count, wait, source.queue.visibility_timeout)

    def _poll(self, function: FunctionInfo, source: SqsEventSource, handler: Handler) -> None:
        size = max(1, source.batch_size)
        while not self._stop.is_set():
            if source.queue.name in self._disabled:
                self._stop.wait(0.1)
                continue
            try:
                messages = self._receive(function, source, size, wait=1)
                if messages and len(messages) < size and source.batching_window > 0:
                    # MaximumBatchingWindowInSeconds: gather up to BatchSize for a while.
                    deadline = time.monotonic() + source.batching_window
                    while len(messages) < size and not self._stop.is_set():
                        more = self._receive(function, source, size - len(messages), wait=0)
                        messages += more
                        if time.monotonic() >= deadline:
                            break
                        if not more:
                            self._stop.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            except Exception as exc:
                if self._stop.is_set():
                    break
                self._log(f"[sqs] receive from {source.queue.name} failed: {exc}")
                self._stop.wait(1)
                continue
            if messages:
                self._deliver(function, source, handler, messages)

    def _deliver(
        self,
        function: FunctionInfo,
        source: SqsEventSource,
        handler: Handler,
        messages: list[MessageTypeDef],
    ) -> None:
        queue = source.queue
        event = {"Records": [sqs_record(m, queue.arn, self._region) for m in messages]}
        ids = [m["MessageId"] for m in messages]
        context = LambdaContext(function)
        outcome = invoke(handler, event, context)
        if outcome.error or outcome.timed_out:
            failed = set(ids)
        elif source.report_batch_item_failures:
            failed = failed_message_ids(outcome.result, ids)
        else:
            failed = set()
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self._delete(queue, done)
        # the failed records come back when their visibility timeout runs out, as on AWS
        self._count(function, len(messages), len(failed), outcome)
        head = f"[lambda] {function.name} <- {len(messages)} record(s) from {queue.name}"
        if outcome.timed_out:
            self._log_timeout(context)
            self._log(f"{head}: timed out; records will be retried")
        elif outcome.error:
            last = outcome.error.strip().splitlines()[-1]
            self._log(
                f"{head}: ERROR {last} ({outcome.seconds:.2f}s); records will be retried\n"
                f"{outcome.error}"
            )
        elif failed:
            self._log(
                f"{head}: {len(failed)} reported failed ({outcome.seconds:.2f}s); retried later"
            )
        elif self._verbose:
            self._log(f"{head}: ok ({outcome.seconds:.2f}s)")

    def _delete(self, queue: QueueInfo, messages: list[MessageTypeDef]) -> None:
        try:
            errors = self._queues.delete(queue, [m["ReceiptHandle"] for m in messages])
        except Exception as exc:  # a transport that raises must not end the poller
            errors = [str(exc)]
        for error in errors:
            self._log(f"[sqs] delete failed: {error}")

    # -- schedules ------------------------------------------------------------------
    def _tick(
        self, function: FunctionInfo, schedule: ScheduleSource, handler: Handler, period: float
    ) -> None:
        while not self._stop.wait(period):
            head = f"[schedule] {function.name} ({schedule.expression})"
            context = LambdaContext(function)
            outcome = invoke(handler, scheduled_event(function, schedule, self._region), context)
            self._count(function, 0, 0, outcome)
            if outcome.timed_out:
                self._log_timeout(context)
            elif outcome.error:
                last = outcome.error.strip().splitlines()[-1]
                self._log(f"{head}: ERROR {last}\n{outcome.error}")
            elif self._verbose:
                self._log(f"{head}: ok ({outcome.seconds:.2f}s)")
