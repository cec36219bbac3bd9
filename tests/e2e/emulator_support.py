"""A small stand-in stack for testing the emulator itself: a template in the shape of the
real one, and a handler module whose functions record what they receive."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES = REPO_ROOT / "local_emulator" / "samples"
FAKE_MODULE = "emulator_fake_app"

FAKE_TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  MaxRows:
    Type: String
    Default: "100"
  WebhookRetrySchedule:
    Type: String
    Default: "5,30,120"
Conditions:
  Never: !Equals [a, b]
Globals:
  Function:
    Runtime: python3.13
    CodeUri: code/
    Timeout: 30
    MemorySize: 256
    Environment:
      Variables:
        UPLOADS_BUCKET: !Ref UploadsBucket
        OUTPUTS_BUCKET: !Ref OutputsBucket
        INGEST_QUEUE_URL: !Ref IngestQueue
        ROWS_QUEUE_URL: !Ref RowsQueue
        ROWS_DLQ_ARN: !GetAtt RowsDeadLetterQueue.Arn
        MAX_ROWS: !Ref MaxRows
        WEBHOOK_RETRY_SCHEDULE: !Ref WebhookRetrySchedule
        MONGO_URI: "{{resolve:secretsmanager:image-pipeline/mongo:SecretString:uri}}"
        WEBHOOK_SECRET: "{{resolve:secretsmanager:image-pipeline/webhook:SecretString:key}}"
        STACK_LABEL: !Sub "${AWS::StackName}-${AWS::AccountId}"
        NEVER_SET: !If [Never, "x", !Ref AWS::NoValue]
Resources:
  UploadsBucket:
    Type: AWS::S3::Bucket
    Properties:
      BucketName: !Sub "${AWS::StackName}-uploads-${AWS::AccountId}"
      CorsConfiguration:
        CorsRules:
          - AllowedMethods: [GET, POST]
            AllowedOrigins: ["*"]
            AllowedHeaders: ["*"]
            MaxAge: 300
      NotificationConfiguration:
        QueueConfigurations:
          - Event: s3:ObjectCreated:*
            Queue: !GetAtt IngestQueue.Arn
            Filter:
              S3Key:
                Rules:
                  - Name: prefix
                    Value: incoming/
  OutputsBucket:
    Type: AWS::S3::Bucket
  IngestQueue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 60
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt IngestDeadLetterQueue.Arn
        maxReceiveCount: 3
  IngestDeadLetterQueue:
    Type: AWS::SQS::Queue
    Properties:
      MessageRetentionPeriod: 1209600
  RowsQueue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 61 # 6 x RowsFunction 10 s + 1 s batching window
      MessageRetentionPeriod: 86400
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt RowsDeadLetterQueue.Arn
        maxReceiveCount: 2
  RowsDeadLetterQueue:
    Type: AWS::SQS::Queue
    Properties:
      MessageRetentionPeriod: 1209600
  NeverQueue:
    Type: AWS::SQS::Queue
    Condition: Never
  IngestFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: emulator_fake_app.ingest_csv
      Events:
        Uploads:
          Type: SQS
          Properties:
            Queue: !GetAtt IngestQueue.Arn
            BatchSize: 1
  RowsFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: emulator_fake_app.process_rows
      Timeout: 10
      Events:
        Rows:
          Type: SQS
          Properties:
            Queue: !GetAtt RowsQueue.Arn
            BatchSize: 3
            MaximumBatchingWindowInSeconds: 1
            FunctionResponseTypes: [ReportBatchItemFailures]
  RowsDeadLetterFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: emulator_fake_app.rows_dead_letter
      Events:
        DeadRows:
          Type: SQS
          Properties:
            Queue: !GetAtt RowsDeadLetterQueue.Arn
            BatchSize: 10
  SweepFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: emulator_fake_app.sweep_stalled_jobs
      Events:
        Every:
          Type: Schedule
          Properties:
            Schedule: rate(1 minute)
  ApiFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: emulator_fake_app.app
      Events:
        Proxy:
          Type: Api
          Properties:
            Path: /{proxy+}
            Method: ANY
"""

FAKE_MODULE_SOURCE = '''\
"""Stand-in for functions/app.py: records every invocation."""
import json
import os
import threading
import time

from chalice import Chalice

app = Chalice(app_name="emulator-fake")
app.api.binary_types.append("multipart/form-data")

LOCK = threading.Lock()
CALLS = []  # (function, event, context.function_name)


def _record(name, event, context):
    with LOCK:
        CALLS.append((name, event, context.function_name, context.get_remaining_time_in_millis()))


def ingest_csv(event, context):
    _record("ingest_csv", event, context)


def process_rows(event, context):
    _record("process_rows", event, context)
    failures = []
    for record in event["Records"]:
        body = json.loads(record["body"])
        mode = body.get("mode")
        if mode == "raise":
            raise RuntimeError("always fails")
        if mode == "raise_once" and record["attributes"]["ApproximateReceiveCount"] == "1":
            raise RuntimeError("fails the first time")
        if mode == "fail":
            failures.append({"itemIdentifier": record["messageId"]})
        if mode == "slow":
            time.sleep(body["seconds"])
    return {"batchItemFailures": failures}


def rows_dead_letter(event, context):
    _record("rows_dead_letter", event, context)


def sweep_stalled_jobs(event, context):
    _record("sweep_stalled_jobs", event, context)


@app.route("/api/health")
def health():
    return {"status": "ok"}


@app.route("/api/env/{name}")
def env(name):
    return {"value": os.environ.get(name)}


@app.route("/api/sleep/{seconds}")
def sleep(seconds):
    time.sleep(float(seconds))
    return {"slept": seconds}


@app.route("/api/echo", methods=["POST"], content_types=["multipart/form-data"])
def echo():
    request = app.current_request
    return {
        "length": len(request.raw_body),
        "hex": request.raw_body.hex(),
    }
'''


def write_fake_stack(directory: Path) -> Path:
    """The stand-in template and code under `directory`; returns the template's path."""
    code = directory / "code"
    code.mkdir(parents=True, exist_ok=True)
    (code / f"{FAKE_MODULE}.py").write_text(FAKE_MODULE_SOURCE)
    template = directory / "template.yaml"
    template.write_text(FAKE_TEMPLATE)
    return template


def calls(function: str) -> list[tuple[str, dict[str, Any], str, int]]:
    module = sys.modules[FAKE_MODULE]
    with module.LOCK:
        return [c for c in module.CALLS if c[0] == function]


def bodies(function: str) -> list[dict[str, Any]]:
    return [
        json.loads(record["body"])
        for _, event, _, _ in calls(function)
        for record in event.get("Records", [])
    ]


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def child_pids(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        children += [int(p) for p in text.split()]
    return children


class OutputLines(dict[str, str]):
    """A process's stdout lines by first word (the first of each; a tenant's lines also by
    word and tenant), and `all` of them in order."""

    def __init__(self) -> None:
        super().__init__()
        self.all: list[str] = []


PER_TENANT_LINES = ("api-key", "webhook-secret")


def api_key(lines: dict[str, str], tenant: str | None = None) -> str:
    """The API key `serve` printed for `tenant` (default: the first tenant)."""
    if tenant is None:
        tenant = lines["api-key"].partition(" ")[0]
    return lines[f"api-key {tenant}"]


def storage_client(lines: dict[str, str], service: str) -> Any:
    """A boto3 client of `service` on the storage endpoint `serve` printed, with the only
    credentials it accepts (its `storage-credentials` line)."""
    import boto3
    from botocore.config import Config

    key_id, _, secret = lines["storage-credentials"].partition(" ")
    return boto3.session.Session(
        aws_access_key_id=key_id, aws_secret_access_key=secret, region_name="us-east-1"
    ).client(  # type: ignore[call-overload]
        service,
        endpoint_url=lines["storage"].partition(" bucket=")[0],
        config=Config(signature_version="s3v4"),
    )


def sample_with_a_missing_picture(images: str) -> str:
    """The bundled sample CSV with its images on `images`, and a sixth product whose second
    picture is not there."""
    text = (SAMPLES / "products.csv").read_text().replace("{IMAGES_BASE}", images)
    return text + f'6,Missing Picture,"{images}/mug.jpg,{images}/nowhere.jpg"\n'


def bearer(key: str) -> dict[str, str]:
    """The header of a call to the API with this key."""
    return {"Authorization": f"Bearer {key}"}


@contextmanager
def serve_process(
    *args: str, env: dict[str, str] | None = None, timeout: float = 90.0
) -> Iterator[tuple[subprocess.Popen[str], OutputLines]]:
    """`python -m local_emulator serve ...` until its `ready` line; yields the process and
    its stdout lines so far by first word (`storage`, `ready`...; the first line of a word
    that repeats). A tenant's lines are also kept by word and tenant:
    `lines["api-key local"]` is tenant `local`'s key, `lines["webhook-secret local"]` its
    signing secret (see `api_key`). On exit, SIGTERM."""
    process = subprocess.Popen(
        [sys.executable, "-m", "local_emulator", "serve", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: queue.Queue[str] = queue.Queue()
    stdout = process.stdout
    assert stdout is not None

    def pump() -> None:
        for line in iter(stdout.readline, ""):
            out.put(line)

    threading.Thread(target=pump, daemon=True).start()
    lines = OutputLines()
    try:
        deadline = time.monotonic() + timeout
        while "ready" not in lines:
            try:
                line = out.get(timeout=0.5).strip()
            except queue.Empty:
                if process.poll() is None and time.monotonic() < deadline:
                    continue
                process.kill()
                _, err = process.communicate()
                raise AssertionError(f"serve did not get ready: {lines}\n{err}") from None
            word, _, rest = line.partition(" ")
            if word in PER_TENANT_LINES:
                tenant, _, value = rest.partition(" ")
                lines[f"{word} {tenant}"] = value
            lines.setdefault(word, rest)
            lines.all.append(line)
        yield process, lines
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


_SESSIONS: dict[int, requests.Session] = {}


# Query parameters that would make a link expire (a presigned URL's).
EXPIRY = frozenset({"x-amz-expires", "expires", "x-amz-signature", "signature", "x-amz-date"})


def never_expires(url: str) -> bool:
    names = {name.lower() for name in parse_qs(urlsplit(url).query, keep_blank_values=True)}
    return not names & EXPIRY


def keyed(emulator: Any) -> requests.Session:
    """A session that calls `emulator`'s API with its first tenant's key (one per emulator).
    Only for the API: a presigned storage URL is called with plain `requests`."""
    session = _SESSIONS.get(id(emulator))
    if session is None or session.headers.get("Authorization") != f"Bearer {emulator.api_key}":
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {emulator.api_key}"
        _SESSIONS[id(emulator)] = session
    return session
