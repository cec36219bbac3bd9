"""The local emulator's own machinery: provisioning from a template, Lambda-like delivery of
queue, storage and schedule events, the API server, and `serve` as a process.

Runs against a stand-in stack (tests/e2e/emulator_support.py), so it needs none of the
pipeline's logic; the real template.yaml is checked for provisioning only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from local_emulator.dispatch import FunctionStats, failed_message_ids
from local_emulator.provision import Provisioner, rate_seconds
from local_emulator.servers import MotoServer
from local_emulator.stack import Emulator, EmulatorOptions
from local_emulator.timescale import scaled_timeout, scaled_visibility
from tests.e2e.emulator_support import (
    FAKE_MODULE,
    REPO_ROOT,
    api_key,
    bearer,
    bodies,
    calls,
    child_pids,
    port_open,
    serve_process,
    storage_client,
    write_fake_stack,
)
from tests.support.emulator import running_emulator
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

REAL_TEMPLATE = REPO_ROOT / "template.yaml"


@pytest.fixture(scope="module")
def fake_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    template = write_fake_stack(tmp_path_factory.mktemp("fake-stack"))
    yield template
    sys.modules.pop(FAKE_MODULE, None)


@pytest.fixture(scope="module", params=["in-process", "http"])
def emu(fake_template: Path, request: pytest.FixtureRequest) -> Iterator[Emulator]:
    """Each test of the stack runs twice: with the pollers and functions on moto's backend in
    this process (the default), and with every SQS and S3 call over HTTP."""
    with running_emulator(
        template=fake_template,
        time_scale=0.1,
        schedule_scale=1 / 60,
        verbose_dispatch=False,
        log=lambda line: None,
        worker_processes=False,
        in_process_aws=request.param == "in-process",
    ) as emulator:
        yield emulator


def _send(emu: Emulator, *messages: dict[str, Any]) -> None:
    sqs = emu.sqs_client()
    url = emu.environment["ROWS_QUEUE_URL"]
    for start in range(0, len(messages), 10):
        sqs.send_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "MessageBody": json.dumps(m)}
                for i, m in enumerate(messages[start : start + 10])
            ],
        )


def _seen(function: str, tag: str) -> list[dict[str, Any]]:
    return [b for b in bodies(function) if b.get("tag") == tag]


# -- pure helpers -----------------------------------------------------------------------
def test_batch_item_failures_follow_lambda_rules() -> None:
    ids = ["a", "b", "c"]
    assert failed_message_ids(None, ids) == set()
    assert failed_message_ids({"batchItemFailures": []}, ids) == set()
    assert failed_message_ids({"batchItemFailures": [{"itemIdentifier": "b"}]}, ids) == {"b"}
    # An identifier that is not in the batch, or an empty one, fails the whole batch.
    assert failed_message_ids({"batchItemFailures": [{"itemIdentifier": "z"}]}, ids) == set(ids)
    assert failed_message_ids({"batchItemFailures": [{"itemIdentifier": ""}]}, ids) == set(ids)
    assert failed_message_ids({"batchItemFailures": "nope"}, ids) == set(ids)


def test_rates_and_visibility_scaling() -> None:
    assert rate_seconds("rate(1 minute)") == 60
    assert rate_seconds("rate(5 minutes)") == 300
    assert rate_seconds("rate(2 hours)") == 7200
    assert rate_seconds("cron(0 * * * ? *)") is None
    assert scaled_visibility(720, 0.05) == 36
    assert scaled_visibility(30, 0.05) == 2
    assert scaled_visibility(1, 0.05) == 1
    assert scaled_visibility(720, 1) == 720
    assert scaled_visibility(750, 0.25) == 188  # rounded up: still >= 6 x the Timeout's 30
    assert scaled_visibility(750, 0.25) >= 6 * scaled_timeout(120, 0.25)


# -- lifecycle: before the shared emulator starts (moto keeps one state per process) --
def test_stop_leaves_no_thread_and_restores_the_environment(fake_template: Path) -> None:
    before_threads = set(threading.enumerate())
    before_env = dict(os.environ)
    emulator = Emulator(
        EmulatorOptions(
            host="127.0.0.1", port=0, template=fake_template, quiet=True, log=lambda line: None
        )
    )
    with emulator:
        api, storage = emulator.api_url, emulator.storage_url
        assert requests.get(f"{api}/api/health", timeout=10).status_code == 200
    for url in (api, storage):
        parts = urlsplit(url)
        assert not port_open(parts.hostname or "", parts.port or 0)
    assert wait_until(lambda: set(threading.enumerate()) <= before_threads, timeout=5)
    # (importing chalice sets AWS_EXECUTION_ENV, once per process: not the emulator's doing)
    after_env = {k: v for k, v in os.environ.items() if k != "AWS_EXECUTION_ENV"}
    assert after_env == {k: v for k, v in before_env.items() if k != "AWS_EXECUTION_ENV"}


@pytest.mark.skipif(not REAL_TEMPLATE.exists(), reason="template.yaml not written yet")
def test_real_template_provisions() -> None:
    """Every bucket, queue, redrive, notification and event source of template.yaml."""
    moto = MotoServer()
    env_before = dict(os.environ)
    os.environ.update(
        AWS_ACCESS_KEY_ID=moto.credentials.access_key_id,
        AWS_SECRET_ACCESS_KEY=moto.credentials.secret_access_key,
    )
    try:
        endpoint = moto.start()
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        import boto3

        session = boto3.session.Session(region_name="us-east-1")
        provisioner = Provisioner(REAL_TEMPLATE, session, time_scale=0.05)
        stack = provisioner.provision()
        resources = provisioner.template["Resources"]
        s3, sqs = session.client("s3"), session.client("sqs")

        def of_type(kind: str) -> set[str]:
            return {k for k, v in resources.items() if v.get("Type") == kind}

        assert set(stack.buckets) == of_type("AWS::S3::Bucket")
        assert set(stack.queues) == of_type("AWS::SQS::Queue")
        assert set(stack.alarms) == of_type("AWS::CloudWatch::Alarm")
        alarms = session.client("cloudwatch").describe_alarms()["MetricAlarms"]
        assert {a["AlarmName"] for a in alarms} == {a.name for a in stack.alarms.values()}
        existing = {b["Name"] for b in s3.list_buckets()["Buckets"]}
        assert {b.name for b in stack.buckets.values()} <= existing
        arns = {q.arn for q in stack.queues.values()}
        for queue in stack.queues.values():
            attrs = sqs.get_queue_attributes(QueueUrl=queue.url, AttributeNames=["All"])[
                "Attributes"
            ]
            if "RedrivePolicy" in attrs:
                assert json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"] in arns
                assert queue.dead_letter_target in stack.queues
        notified = [
            c["QueueArn"]
            for b in stack.buckets.values()
            for c in s3.get_bucket_notification_configuration(Bucket=b.name).get(
                "QueueConfigurations", []
            )
        ]
        assert notified, "no bucket notifies a queue"
        assert set(notified) <= arns
        sources = [s for f in stack.functions.values() for s in f.sqs_sources]
        assert {s.queue.arn for s in sources} >= set(notified)
        for function in stack.functions.values():
            module = function.handler.rsplit(".", 1)[0]  # handlers.worker: handlers/worker.py
            assert (function.code_dir / (module.replace(".", "/") + ".py")).exists()
            # AWS's rule holds locally too, both scaled alike (here by 0.05)
            for source in function.sqs_sources:
                assert (
                    source.queue.visibility_timeout >= 6 * function.timeout + source.batching_window
                ), function.logical_id
            assert function.serves_api or function.timeout == 0.05 * function.template_timeout
        for name, value in stack.environment.items():
            if stack.environment_sources[name] != "dynamic":
                assert "{{resolve:" not in value, name
    finally:
        moto.stop()
        os.environ.clear()
        os.environ.update(env_before)


# -- provisioning ---------------------------------------------------------------------
def test_provisions_buckets_queues_and_notifications(emu: Emulator) -> None:
    s3, sqs = emu.s3_client(), emu.sqs_client()
    names = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert names == {"image-pipeline-uploads-123456789012", "image-pipeline-outputsbucket"}
    assert emu.uploads_bucket == "image-pipeline-uploads-123456789012"

    cors = s3.get_bucket_cors(Bucket=emu.uploads_bucket)["CORSRules"]
    assert cors[0]["AllowedMethods"] == ["GET", "POST"]
    assert cors[0]["MaxAgeSeconds"] == 300

    queues = emu.stack.queues
    assert set(queues) == {
        "IngestQueue",
        "IngestDeadLetterQueue",
        "RowsQueue",
        "RowsDeadLetterQueue",
    }  # NeverQueue's condition is false
    rows = sqs.get_queue_attributes(QueueUrl=queues["RowsQueue"].url, AttributeNames=["All"])[
        "Attributes"
    ]
    assert rows["VisibilityTimeout"] == "7"  # 61 s scaled by 0.1, rounded up
    assert rows["MessageRetentionPeriod"] == "86400"
    assert json.loads(rows["RedrivePolicy"]) == {
        "deadLetterTargetArn": queues["RowsDeadLetterQueue"].arn,
        "maxReceiveCount": 2,
    }
    assert queues["RowsQueue"].template_visibility_timeout == 61

    notification = s3.get_bucket_notification_configuration(Bucket=emu.uploads_bucket)
    (config,) = notification["QueueConfigurations"]
    assert config["QueueArn"] == queues["IngestQueue"].arn
    assert config["Events"] == ["s3:ObjectCreated:*"]
    assert config["Filter"]["Key"]["FilterRules"] == [{"Name": "prefix", "Value": "incoming/"}]


def test_environment_comes_from_the_template(emu: Emulator) -> None:
    env = emu.environment
    assert env["UPLOADS_BUCKET"] == "image-pipeline-uploads-123456789012"
    assert env["OUTPUTS_BUCKET"] == "image-pipeline-outputsbucket"
    assert env["ROWS_QUEUE_URL"] == emu.stack.queues["RowsQueue"].url
    assert env["ROWS_DLQ_ARN"] == emu.stack.queues["RowsDeadLetterQueue"].arn
    assert env["MAX_ROWS"] == "100"
    assert env["STACK_LABEL"] == "image-pipeline-123456789012"
    assert "NEVER_SET" not in env
    user = emu.credentials.mongo  # the embedded MongoDB wants its user
    assert env["MONGO_URI"].startswith(f"mongodb://{user.username}:{user.password}@127.0.0.1:")
    assert env["WEBHOOK_SECRET"].startswith("whsec_")
    assert env["WEBHOOK_SECRET"] == emu.webhook_secret
    # the emulator's own 5,30,120,600,900,900 (LOCAL_PARAMETERS), not the template's, x 0.1
    assert env["WEBHOOK_RETRY_SCHEDULE"] == "1,3,12,60,90,90"
    assert env["ALLOW_PRIVATE_HOSTS"] == "1"
    assert env["API_BASE_URL"] == emu.api_url
    for name in ("UPLOADS_BUCKET", "MONGO_URI", "WEBHOOK_SECRET", "API_BASE_URL"):
        assert os.environ[name] == env[name]
    assert os.environ["AWS_ENDPOINT_URL"] == emu.storage_url
    # and the functions see the same (the API runs in this process too)
    value = requests.get(f"{emu.api_url}/api/env/ROWS_QUEUE_URL", timeout=10).json()["value"]
    assert value == env["ROWS_QUEUE_URL"]


# -- storage events -------------------------------------------------------------------
def test_objects_under_incoming_reach_the_ingest_function(emu: Emulator) -> None:
    s3 = emu.s3_client()
    key = f"incoming/{uuid.uuid4()}.csv"
    s3.put_object(Bucket=emu.uploads_bucket, Key="elsewhere/ignored.csv", Body=b"a")
    s3.put_object(Bucket=emu.uploads_bucket, Key=key, Body=b"S. No.\n")

    def event_keys() -> list[str]:
        return [
            r["s3"]["object"]["key"] for b in bodies("ingest_csv") for r in b.get("Records", [])
        ]

    assert wait_until(lambda: key.replace("/", "%2F") in event_keys())
    time.sleep(1)
    assert not any("elsewhere" in k for k in event_keys())
    # moto (like S3) sent an s3:TestEvent when the notification was configured
    assert any(b.get("Event") == "s3:TestEvent" for b in bodies("ingest_csv"))
    assert all(len(event["Records"]) == 1 for _, event, _, _ in calls("ingest_csv"))


# -- queue delivery -------------------------------------------------------------------
def test_sqs_event_has_lambdas_shape(emu: Emulator) -> None:
    tag = uuid.uuid4().hex
    _send(emu, {"tag": tag, "mode": "ok"})
    assert wait_until(lambda: len(_seen("process_rows", tag)) == 1)
    event, function_name, remaining = next(
        (e, n, r)
        for _, e, n, r in calls("process_rows")
        if any(tag in rec["body"] for rec in e["Records"])
    )
    record = next(rec for rec in event["Records"] if tag in rec["body"])
    assert set(record) >= {
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfBody",
        "eventSource",
        "eventSourceARN",
        "awsRegion",
    }
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == emu.stack.queues["RowsQueue"].arn
    assert record["awsRegion"] == "us-east-1"
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert "SentTimestamp" in record["attributes"]
    assert function_name == "image-pipeline-RowsFunction"
    assert 0 < remaining <= 60_000


def test_message_attributes_reach_the_event_as_lambda_gives_them(emu: Emulator) -> None:
    tag = uuid.uuid4().hex
    emu.sqs_client().send_message(
        QueueUrl=emu.environment["ROWS_QUEUE_URL"],
        MessageBody=json.dumps({"tag": tag, "mode": "ok"}),
        MessageAttributes={
            "kind": {"DataType": "String", "StringValue": "row"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xffraw"},
        },
    )
    assert wait_until(lambda: len(_seen("process_rows", tag)) == 1)
    record = next(
        rec for _, e, _, _ in calls("process_rows") for rec in e["Records"] if tag in rec["body"]
    )
    assert record["messageAttributes"]["kind"]["stringValue"] == "row"
    assert record["messageAttributes"]["kind"]["dataType"] == "String"
    blob = record["messageAttributes"]["blob"]
    assert (blob["dataType"], base64.b64decode(blob["binaryValue"])) == ("Binary", b"\x00\xffraw")
    assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()


def test_batches_and_partial_failures(emu: Emulator) -> None:
    tag = uuid.uuid4().hex
    oks = [{"tag": tag, "mode": "ok", "n": n} for n in range(7)]
    fails = [{"tag": tag, "mode": "fail", "n": 100 + n} for n in range(2)]
    _send(emu, *oks, *fails)

    assert wait_until(lambda: len(_seen("rows_dead_letter", tag)) == 2, timeout=30)
    time.sleep(8)  # longer than the visibility timeout: nothing else comes back
    seen = _seen("process_rows", tag)
    for ok in oks:
        assert seen.count(ok) == 1  # deleted after the first success
    for fail in fails:
        assert seen.count(fail) == 2  # maxReceiveCount, then the DLQ
    assert sorted(b["n"] for b in _seen("rows_dead_letter", tag)) == [100, 101]
    assert all(len(event["Records"]) <= 3 for _, event, _, _ in calls("process_rows"))


def test_exception_leaves_the_batch_for_redelivery(emu: Emulator) -> None:
    tag = uuid.uuid4().hex
    _send(emu, {"tag": tag, "mode": "raise_once"})
    assert wait_until(lambda: len(_seen("process_rows", tag)) == 2, timeout=15)
    time.sleep(3)
    assert len(_seen("process_rows", tag)) == 2  # the second attempt succeeded
    assert _seen("rows_dead_letter", tag) == []


def test_redrive_to_the_dead_letter_queue(emu: Emulator) -> None:
    tag = uuid.uuid4().hex
    _send(emu, {"tag": tag, "mode": "raise"})
    assert wait_until(lambda: len(_seen("rows_dead_letter", tag)) == 1, timeout=30)
    assert len(_seen("process_rows", tag)) == 2
    (_, event, _, _) = next(c for c in calls("rows_dead_letter") if tag in json.dumps(c[1]))
    assert event["Records"][0]["eventSourceARN"] == emu.stack.queues["RowsDeadLetterQueue"].arn


def test_an_invocation_past_its_timeout_is_ended_and_its_batch_comes_back(emu: Emulator) -> None:
    """As Lambda: RowsFunction's Timeout is 10 s, 1 s at this time scale. A batch that runs
    longer is over at 1 s (its result ignored, nothing deleted), and comes back once the
    visibility timeout set when it was received (61 s, 7 s here) runs out; after
    maxReceiveCount (2) receives it is in the dead-letter queue."""
    assert emu.dispatcher is not None
    stats = emu.dispatcher.stats
    before = stats.get("image-pipeline-RowsFunction", FunctionStats()).timeouts
    tag = uuid.uuid4().hex
    started = time.monotonic()
    _send(emu, {"tag": tag, "mode": "slow", "seconds": 2})
    assert wait_until(lambda: len(_seen("process_rows", tag)) == 1, timeout=30)
    assert wait_until(
        lambda: stats.get("image-pipeline-RowsFunction", FunctionStats()).timeouts > before,
        timeout=5,
    )
    assert len(_seen("process_rows", tag)) == 1  # not again before the visibility runs out
    assert wait_until(lambda: len(_seen("rows_dead_letter", tag)) == 1, timeout=30)
    assert len(_seen("process_rows", tag)) == 2
    assert time.monotonic() - started >= 7  # the second receive waited for the visibility
    rows = stats["image-pipeline-RowsFunction"]
    assert rows.timeouts >= before + 2
    assert 1.0 <= rows.worst_seconds < 1.5  # no invocation counted past its Timeout


def test_schedules_run_scaled(emu: Emulator) -> None:
    assert wait_until(lambda: len(calls("sweep_stalled_jobs")) >= 2, timeout=10)
    _, event, function_name, _ = calls("sweep_stalled_jobs")[0]
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert function_name == "image-pipeline-SweepFunction"


# -- API ------------------------------------------------------------------------------
def test_api_passes_multipart_bodies_as_binary(emu: Emulator) -> None:
    payload = bytes(range(256)) * 4  # not UTF-8
    response = requests.post(
        f"{emu.api_url}/api/echo",
        files={"file": ("blob.bin", payload, "application/octet-stream")},
        data={"webhookUrl": "http://127.0.0.1:9/hook"},
        timeout=10,
    )
    assert response.status_code == 200
    body = bytes.fromhex(response.json()["hex"])
    assert payload in body
    assert b"http://127.0.0.1:9/hook" in body


def test_api_serves_requests_concurrently(emu: Emulator) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        slow = [pool.submit(requests.get, f"{emu.api_url}/api/sleep/2", timeout=10) for _ in "ab"]
        time.sleep(0.2)
        started = time.monotonic()
        assert requests.get(f"{emu.api_url}/api/health", timeout=10).json() == {"status": "ok"}
        assert time.monotonic() - started < 1.5
        assert all(f.result().status_code == 200 for f in slow)


# -- as a process ---------------------------------------------------------------------
def test_serve_prints_storage_and_ready_then_stops_on_sigterm(fake_template: Path) -> None:
    with serve_process("--port", "0", "--template", str(fake_template), "--quiet") as (
        process,
        lines,
    ):
        storage_url, _, bucket = lines["storage"].partition(" bucket=")
        assert bucket == "image-pipeline-uploads-123456789012"
        assert storage_url.startswith("http://127.0.0.1:")
        api = lines["ready"]
        assert requests.get(f"{api}/api/health", timeout=10).json() == {"status": "ok"}
        assert child_pids(process.pid) == []
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        assert process.returncode == 0
    for url in (storage_url, api):
        parts = urlsplit(url)
        assert not port_open(parts.hostname or "", parts.port or 0)


def test_serve_prints_the_only_storage_credentials_and_a_data_dir_keeps_them(
    fake_template: Path, tmp_path: Path
) -> None:
    """`storage-credentials <id> <secret>` before `ready`: the endpoint takes them and no
    other; given by flag or environment, kept under --data-dir (0600) for the next start,
    and a flag that contradicts what is kept is a clear error."""
    import boto3
    from botocore.exceptions import ClientError

    def s3(storage: str, key_id: str, secret: str) -> Any:
        return boto3.session.Session(
            aws_access_key_id=key_id, aws_secret_access_key=secret, region_name="us-east-1"
        ).client("s3", endpoint_url=storage)

    base = ("--port", "0", "--template", str(fake_template), "--quiet")
    # this module's stack (`emu`) runs meanwhile, its functions' MONGO_URI in os.environ:
    # a --data-dir keeps its own database, so serve must not inherit one
    own_db = {"MONGO_URI": ""}
    with serve_process(*base, "--data-dir", str(tmp_path), env=own_db) as (_process, lines):
        words = [line.split(" ")[0] for line in lines.all]
        assert words.index("storage-credentials") < words.index("ready")
        key_id, secret = lines["storage-credentials"].split(" ")
        storage = lines["storage"].partition(" bucket=")[0]
        assert storage_client(lines, "s3").list_buckets()["Buckets"]
        assert storage_client(lines, "sqs").list_queues()["QueueUrls"]
        with pytest.raises(ClientError) as caught:
            s3(storage, "testing", "testing").list_buckets()
        assert caught.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    assert stat.S_IMODE((tmp_path / "credentials.json").stat().st_mode) == 0o600
    with serve_process(*base, "--data-dir", str(tmp_path), env=own_db) as (_process, lines):
        assert lines["storage-credentials"] == f"{key_id} {secret}"
    given = ("AKIAGIVENBYFLAG00001", "given-by-flag-secret")
    with serve_process(*base, "--storage-credentials", ":".join(given)) as (_process, lines):
        assert lines["storage-credentials"] == " ".join(given)
    env = {"STORAGE_ACCESS_KEY_ID": "AKIAGIVENBYENV000001", "STORAGE_SECRET_ACCESS_KEY": "from-env"}
    with serve_process(*base, env=env) as (_process, lines):
        assert lines["storage-credentials"] == "AKIAGIVENBYENV000001 from-env"
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "local_emulator",
            "serve",
            *base,
            "--data-dir",
            str(tmp_path),
            "--storage-credentials",
            ":".join(given),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, **own_db},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 1
    assert "keeps other storage credentials" in refused.stderr


def test_serve_stops_on_sigint(fake_template: Path) -> None:
    with serve_process("--port", "0", "--template", str(fake_template), "--quiet") as (
        process,
        _lines,
    ):
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
        assert process.returncode == 0


@pytest.mark.skipif(
    not (REAL_TEMPLATE.exists() and (REPO_ROOT / "functions" / "app.py").exists()),
    reason="template.yaml or functions/app.py not written yet",
)
def test_serve_runs_the_real_stack() -> None:
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    with serve_process(
        *("--port", "0", "--allow-private-hosts", "--quiet"),
        *("--tenant", "acme=acme-given-key_0123456789", "--tenant", "beta"),
        env={"WEBHOOK_SECRET": secret},
    ) as (process, lines):
        # before `ready`: each tenant's API key and signing secret
        tenants = [line.split(" ") for line in lines.all if line.startswith(("api-key", "webhook"))]
        assert [t[:2] for t in tenants] == [
            ["api-key", "acme"],
            ["webhook-secret", "acme"],
            ["api-key", "beta"],
            ["webhook-secret", "beta"],
        ]
        assert tenants[0][2] == "acme-given-key_0123456789"
        assert tenants[1][2] == secret  # WEBHOOK_SECRET is the first tenant's
        assert tenants[2][2].startswith("ipk_") and tenants[3][2].startswith("whsec_")
        assert lines["storage"].startswith("http://127.0.0.1:")
        response = requests.get(f"{lines['ready']}/api/health", timeout=10)
        assert response.status_code == 200
        # A protected route wants the key serve printed, and takes it.
        jobs = f"{lines['ready']}/api/jobs"
        assert requests.get(jobs, timeout=10).status_code == 401
        answer = requests.get(jobs, headers=bearer(api_key(lines)), timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"jobs": [], "nextCursor": None}
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        assert process.returncode == 0
