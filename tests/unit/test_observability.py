"""JSON log lines with the request context, and CloudWatch EMF documents."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass

import pytest
from chalicelib import observability
from chalicelib.observability import JsonFormatter, JsonLineHandler, MetricsBuffer


@pytest.fixture
def lines() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    logger = logging.getLogger("tests.observability")
    logger.handlers = [JsonLineHandler(lambda: stream)]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, stream


def parsed(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_line_is_json_and_carries_the_context(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = lines
    logger.info("before")
    with observability.log_context(requestId="job-1", awsRequestId="aws-1"):
        logger.warning("row %s failed", 3, extra={"serial": 3})
        with observability.log_context(messageId="m-9", ignored=None):
            logger.info("inner")
        logger.info("after inner")
    logger.info("outside")
    first, failed, inner, after, outside = parsed(stream)
    assert "requestId" not in first and first["message"] == "before"
    assert failed["requestId"] == "job-1" and failed["awsRequestId"] == "aws-1"
    assert failed["message"] == "row 3 failed" and failed["level"] == "WARNING"
    assert failed["serial"] == 3 and failed["logger"] == "tests.observability"
    assert inner["messageId"] == "m-9" and inner["requestId"] == "job-1"
    assert "ignored" not in inner
    assert "messageId" not in after and after["requestId"] == "job-1"
    assert "requestId" not in outside
    assert str(first["timestamp"]).endswith("+00:00")


def test_exceptions_are_inside_the_json_line(lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = lines
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("it failed")
    text = stream.getvalue()
    assert text.count("\n") == 1
    (line,) = parsed(stream)
    assert "ValueError: boom" in str(line["exception"])


def test_context_does_not_leak_between_threads() -> None:
    seen: dict[str, dict[str, str]] = {}

    def work(name: str) -> None:
        with observability.log_context(requestId=name):
            threading.Event().wait(0.01)
            seen[name] = observability.current_context()

    threads = [threading.Thread(target=work, args=(f"job-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {k: v["requestId"] for k, v in seen.items()} == {
        f"job-{i}": f"job-{i}" for i in range(4)
    }
    assert observability.current_context() == {}


def test_formatter_keeps_a_non_serialisable_extra_readable() -> None:
    record = logging.makeLogRecord({"msg": "x", "levelname": "INFO", "thing": object()})
    assert json.loads(JsonFormatter().format(record))["thing"].startswith("<object")


@dataclass(frozen=True)
class Result:
    error_code: str | None
    bytes_in: int
    bytes_out: int


def test_emf_document_shape_sums_values_and_groups_dimensions() -> None:
    printed: list[str] = []
    buffer = MetricsBuffer(namespace="Test", sink=printed.append, clock=lambda: 1700000000.5)
    buffer.add("ImagesProcessed", 1)
    buffer.add("ImagesProcessed", 2)
    buffer.add("BytesSaved", 1000, "Bytes")
    buffer.add("ImagesFailed", 1, ErrorCode="timeout")
    with observability.log_context(requestId="job-7"):
        assert buffer.flush() == 2
    docs = [json.loads(line) for line in printed]
    plain = next(d for d in docs if "ErrorCode" not in d)
    failed = next(d for d in docs if "ErrorCode" in d)
    (directive,) = plain["_aws"]["CloudWatchMetrics"]
    assert plain["_aws"]["Timestamp"] == 1700000000500
    assert directive["Namespace"] == "Test"
    assert directive["Dimensions"] == [["Service"]]
    assert directive["Metrics"] == [
        {"Name": "BytesSaved", "Unit": "Bytes"},
        {"Name": "ImagesProcessed", "Unit": "Count"},
    ]
    assert plain["ImagesProcessed"] == 3 and plain["BytesSaved"] == 1000
    assert plain["Service"] == "image-pipeline" and plain["requestId"] == "job-7"
    assert failed["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["ErrorCode", "Service"]]
    assert failed["ErrorCode"] == "timeout" and failed["ImagesFailed"] == 1
    # Every metric named in the directive has a number at the root, as EMF requires.
    for doc in docs:
        for metric in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
            assert isinstance(doc[metric["Name"]], int | float)
        for dims in doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"]:
            assert all(isinstance(doc[d], str) for d in dims)
    assert buffer.flush() == 0 and len(printed) == 2


def test_record_images_and_webhook_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    printed: list[str] = []
    monkeypatch.setattr(observability, "_buffer", MetricsBuffer(sink=printed.append))
    observability.record_images(
        [Result(None, 1000, 300), Result(None, 500, 100), Result("timeout", 0, 0)]
    )
    observability.record_webhook_attempt("delivered")
    with observability.invocation(requestId="job-2"):
        pass
    docs = {tuple(sorted(k for k in d if k[0].isupper())): d for d in map(json.loads, printed)}
    assert len(printed) == 3
    main = next(d for d in docs.values() if "ImagesProcessed" in d)
    assert main["ImagesProcessed"] == 3
    assert (main["BytesIn"], main["BytesOut"], main["BytesSaved"]) == (1500, 400, 1100)
    assert next(d for d in docs.values() if "ImagesFailed" in d)["ErrorCode"] == "timeout"
    hook = next(d for d in docs.values() if "WebhookAttempts" in d)
    assert hook["Outcome"] == "delivered" and hook["requestId"] == "job-2"


def test_a_failing_sink_does_not_fail_the_invocation(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(line: str) -> None:
        raise OSError("closed")

    monkeypatch.setattr(observability, "_buffer", MetricsBuffer(sink=broken))
    with observability.invocation(requestId="job-3") as context:
        observability.count("ImagesProcessed")
    assert context == {"requestId": "job-3"}


def test_a_phase_counts_its_threads_cpu_only_when_phase_metrics_is_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    printed: list[str] = []
    monkeypatch.setattr(observability, "_buffer", MetricsBuffer(sink=printed.append))

    def busy() -> None:
        ends = time.thread_time() + 0.02
        while time.thread_time() < ends:
            pass

    monkeypatch.delenv(observability.PHASE_METRICS_ENV, raising=False)
    with observability.phase("compress"):
        busy()
    assert observability.metrics().flush() == 0
    monkeypatch.setenv(observability.PHASE_METRICS_ENV, "1")
    with observability.phase("compress"):
        busy()
    with observability.phase("download"):
        time.sleep(0.05)  # waiting is not CPU
    assert observability.metrics().flush() == 2
    docs = {d["Phase"]: d for d in map(json.loads, printed)}
    assert 0.02 <= docs["compress"]["PhaseCpuSeconds"] < 0.5
    assert docs["download"]["PhaseCpuSeconds"] < 0.02


def test_a_metrics_line_is_written_whole_with_its_newline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One write per EMF line: written in two (the line, then its newline), another thread's
    log line could land between them and glue onto it, and CloudWatch would drop the metric."""
    writes: list[str] = []

    class Recording(io.StringIO):
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

    monkeypatch.setattr(sys, "stderr", Recording())
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    monkeypatch.setattr(observability, "_buffer", MetricsBuffer())
    observability.count("ImagesProcessed")
    assert observability.metrics().flush() == 1
    assert len(writes) == 1 and writes[0].endswith("}\n")
    assert json.loads(writes[0])["ImagesProcessed"] == 1
