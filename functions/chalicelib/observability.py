"""Structured JSON logs and CloudWatch Embedded Metric Format (EMF) metrics, without clients.

Logs: `configure_logging()` makes every line of the `chalicelib` loggers (and the Chalice
app's own log) one JSON object carrying the fields of the current `log_context(...)`:
the job's `requestId`, the Lambda or API Gateway request id, the queue message id.

Metrics: `count(...)`/`record_images(...)` buffer values in the process; `flush()` prints one
EMF JSON document per dimension set (usually one line) to the log stream, which CloudWatch
turns into metrics with no API call. The entrypoints flush at the end of every invocation.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Protocol, TextIO

NAMESPACE_ENV = "METRICS_NAMESPACE"
DEFAULT_NAMESPACE = "ImagePipeline"
SERVICE = "image-pipeline"
LOGGERS = ("chalicelib",)
MAX_VALUES_PER_METRIC = 100  # EMF's limit per metric per document

_context: ContextVar[Mapping[str, str]] = ContextVar("log_context", default=MappingProxyType({}))


# -- context ------------------------------------------------------------------------------
def current_context() -> dict[str, str]:
    return dict(_context.get())


@contextmanager
def log_context(**fields: object) -> Iterator[dict[str, str]]:
    """Adds fields (None and "" are left out) to every log line written inside the block."""
    merged = {**_context.get()}
    merged.update({k: str(v) for k, v in fields.items() if v not in (None, "")})
    token = _context.set(merged)
    try:
        yield dict(merged)
    finally:
        _context.reset(token)


# -- logs ---------------------------------------------------------------------------------
RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context, any `extra`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_context.get())
        line.update(
            {k: v for k, v in record.__dict__.items() if k not in RESERVED and k[:1] != "_"}
        )
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def _log_stream() -> TextIO:
    # Lambda sends stdout and stderr to CloudWatch alike; locally stdout is the CLI's.
    return sys.stdout if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") else sys.stderr


class JsonLineHandler(logging.Handler):
    """Writes to the stream of the moment (so a replaced sys.stderr is honoured)."""

    def __init__(self, stream: Callable[[], TextIO] = _log_stream) -> None:
        super().__init__()
        self._stream = stream
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            out = self._stream()
            out.write(self.format(record) + "\n")
            out.flush()
        except Exception:
            self.handleError(record)


def configure_logging(
    extra_loggers: Iterable[logging.Logger] = (), level: int = logging.INFO
) -> None:
    """Idempotent. On Lambda the runtime's root handler gets the JSON formatter; elsewhere
    the `chalicelib` logger gets a JSON handler of its own (and stops propagating). The
    handlers of `extra_loggers` (e.g. the Chalice app's log, which does not propagate) get
    the JSON formatter too."""
    formatter = JsonFormatter()
    root = logging.getLogger()
    on_lambda = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME")) and bool(root.handlers)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if on_lambda:
            for handler in root.handlers:
                handler.setFormatter(formatter)
        elif not any(isinstance(h, JsonLineHandler) for h in logger.handlers):
            logger.addHandler(JsonLineHandler())
            logger.propagate = False  # one line per record, not a second plain one via root
    for logger in extra_loggers:
        for handler in logger.handlers:
            handler.setFormatter(formatter)


# -- metrics ------------------------------------------------------------------------------
class Sink(Protocol):
    def __call__(self, line: str) -> None: ...


def _print_line(line: str) -> None:
    # one write with its newline: print() writes the two apart, and another thread's log
    # line between them would glue onto this one (an EMF line CloudWatch then cannot read)
    out = _log_stream()
    out.write(line + "\n")
    out.flush()


Units = Mapping[str, str]


class MetricsBuffer:
    """Values summed per (dimensions, name) until `flush()`; safe across threads."""

    def __init__(
        self,
        namespace: str | None = None,
        sink: Sink | None = None,
        clock: Callable[[], float] = time.time,
        default_dimensions: Mapping[str, str] | None = None,
    ) -> None:
        self.namespace = namespace or os.environ.get(NAMESPACE_ENV, DEFAULT_NAMESPACE)
        self._sink: Sink = sink or _print_line
        self._clock = clock
        self.default_dimensions = dict(default_dimensions or {"Service": SERVICE})
        self._lock = threading.Lock()
        self._values: dict[tuple[tuple[str, str], ...], dict[str, tuple[float, str]]] = {}

    def add(self, name: str, value: float, unit: str = "Count", **dimensions: str) -> None:
        key = tuple(sorted({**self.default_dimensions, **dimensions}.items()))
        with self._lock:
            metrics = self._values.setdefault(key, {})
            total, _ = metrics.get(name, (0.0, unit))
            metrics[name] = (total + value, unit)

    def documents(self) -> list[dict[str, Any]]:
        """The EMF documents `flush()` would print, and empties the buffer."""
        with self._lock:
            values, self._values = self._values, {}
        timestamp = int(self._clock() * 1000)
        documents = []
        for dims, metrics in values.items():
            document: dict[str, Any] = {
                "_aws": {
                    "Timestamp": timestamp,
                    "CloudWatchMetrics": [
                        {
                            "Namespace": self.namespace,
                            "Dimensions": [[name for name, _ in dims]],
                            "Metrics": [
                                {"Name": name, "Unit": unit}
                                for name, (_, unit) in sorted(metrics.items())
                            ],
                        }
                    ],
                }
            }
            document.update(_context.get())
            document.update(dict(dims))
            document.update({name: _number(total) for name, (total, _) in sorted(metrics.items())})
            documents.append(document)
        return documents

    def flush(self) -> int:
        """Prints one EMF JSON line per dimension set; returns how many it printed."""
        documents = self.documents()
        for document in documents:
            self._sink(json.dumps(document, separators=(",", ":"), default=str))
        return len(documents)


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


_buffer: MetricsBuffer | None = None
_buffer_lock = threading.Lock()


def metrics() -> MetricsBuffer:
    """The process's buffer (built on first use, never at import)."""
    global _buffer  # noqa: PLW0603
    with _buffer_lock:
        if _buffer is None:
            _buffer = MetricsBuffer()
        return _buffer


def count(name: str, value: float = 1, unit: str = "Count", **dimensions: str) -> None:
    metrics().add(name, value, unit, **dimensions)


class ImageOutcome(Protocol):
    @property
    def error_code(self) -> object: ...
    @property
    def bytes_in(self) -> int: ...
    @property
    def bytes_out(self) -> int: ...


def record_images(results: Iterable[ImageOutcome]) -> None:
    """Images processed, bytes in/out/saved of the compressed ones, failures by code."""
    for result in results:
        count("ImagesProcessed")
        if result.error_code is None:
            count("BytesIn", result.bytes_in, "Bytes")
            count("BytesOut", result.bytes_out, "Bytes")
            count("BytesSaved", max(0, result.bytes_in - result.bytes_out), "Bytes")
        else:
            count("ImagesFailed", ErrorCode=str(result.error_code))


def record_reused_image() -> None:
    """An output copied from the tenant's earlier one: no decode, no encode."""
    count("ImagesReused")


GONE_METRIC = "MessagesForGoneJobs"
_GONE_LOGGED_LIMIT = 4096
_gone_logged: dict[tuple[str, str], None] = {}
_gone_lock = threading.Lock()


def record_gone_job(request_id: str, queue: str) -> None:
    """A message about a job that no longer exists, let go: counted every time, logged at
    info once per job and queue in this container (a deleted job's queued rows would
    otherwise write a line each)."""
    count(GONE_METRIC)
    with _gone_lock:
        first = (request_id, queue) not in _gone_logged
        if first:
            if len(_gone_logged) >= _GONE_LOGGED_LIMIT:
                _gone_logged.clear()
            _gone_logged[(request_id, queue)] = None
    if first:
        logging.getLogger("chalicelib.observability").info(
            "%s: job %s no longer exists (deleted or expired); its messages are let go",
            queue,
            request_id,
            extra={"goneJob": request_id, "queue": queue},
        )


def record_drop_held() -> None:
    """A drop whose tenant is not explicit, held (UNOWNED_DROPS=hold): no job made."""
    count("DropsHeld")


PHASE_METRICS_ENV = "PHASE_METRICS"


@contextmanager
def phase(name: str) -> Iterator[None]:
    """The CPU time this thread spends inside the block, counted as `PhaseCpuSeconds` with
    dimension `Phase=name` when PHASE_METRICS is on (`benchmarks.pipeline`'s breakdown per
    phase); nothing at all when it is off. Phases do not nest: an inner one would count twice."""
    if os.environ.get(PHASE_METRICS_ENV, "") not in ("1", "true"):
        yield
        return
    started = time.thread_time()
    try:
        yield
    finally:
        count("PhaseCpuSeconds", time.thread_time() - started, "Seconds", Phase=name)


def record_webhook_attempt(outcome: str) -> None:
    count("WebhookAttempts", Outcome=outcome)


@contextmanager
def invocation(**fields: object) -> Iterator[dict[str, str]]:
    """Around one handler invocation: the log context, and the metrics flushed at the end."""
    with log_context(**fields) as context:
        try:
            yield context
        finally:
            try:
                metrics().flush()
            except Exception:  # metrics must never fail the work they measure
                logging.getLogger("chalicelib.observability").exception("metrics flush failed")
