"""What `--data-dir` keeps of moto, against moto itself: written before each call answers,
read back into a fresh moto (a restarted stack) as it was, without storage events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.s3 import notifications
from moto.s3.models import s3_backends

from local_emulator import moto_patches
from local_emulator.kept_objects import KeptObjects
from local_emulator.kept_queues import QueueJournal
from local_emulator.kept_secrets import KeptSecrets
from local_emulator.provision import ACCOUNT_ID, REGION

UPLOADS, OUTPUTS, INGEST = "kept-uploads", "kept-outputs", "kept-ingest"


@pytest.fixture(autouse=True)
def _patched() -> None:
    moto_patches.apply()  # as the emulator runs moto


def _client(service: str) -> Any:
    return boto3.client(service, region_name=REGION)


def _buckets() -> None:
    s3, sqs = _client("s3"), _client("sqs")
    queue = sqs.create_queue(QueueName=INGEST)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    for bucket in (UPLOADS, OUTPUTS):
        s3.create_bucket(Bucket=bucket)
    s3.put_bucket_notification_configuration(
        Bucket=UPLOADS,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )


def _queued(name: str) -> list[str]:
    from moto.sqs.models import sqs_backends

    return [m.body for m in sqs_backends[ACCOUNT_ID][REGION].get_queue(name)._messages]


def test_objects_are_on_disk_before_their_event_and_come_back_without_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = KeptObjects(tmp_path / "objects")
    on_disk_at_event: list[bool] = []
    send = notifications._send_sqs_message

    def sending(account_id: str, event_body: Any, queue_name: str, region: str) -> None:
        if "Records" in event_body:  # not the configuration's s3:TestEvent
            on_disk_at_event.append(any((tmp_path / "objects" / UPLOADS).rglob("*.obj")))
        send(account_id, event_body, queue_name, region)

    monkeypatch.setattr(notifications, "_send_sqs_message", sending)
    with mock_aws():
        _buckets()
        kept.activate()
        try:
            s3 = _client("s3")
            s3.put_object(
                Bucket=UPLOADS, Key="incoming/a.csv", Body=b"a,b\n", ContentType="text/csv"
            )
            s3.put_object(
                Bucket=OUTPUTS,
                Key="outputs/j/1/0.jpg",
                Body=b"\xff\xd8jpeg",
                ContentType="image/jpeg",
                CacheControl="public, max-age=60",
            )
            s3.copy_object(
                Bucket=OUTPUTS, Key="outputs/j/2/0.jpg", CopySource=f"{OUTPUTS}/outputs/j/1/0.jpg"
            )
            # the functions' in-process put: stored, then its headers set
            backend = s3_backends[ACCOUNT_ID]["aws"]
            backend.put_object(OUTPUTS, "outputs/j/3/0.jpg", b"third").set_metadata(
                {"Content-Type": "image/webp"}
            )
            s3.put_object(Bucket=OUTPUTS, Key="outputs/gone.jpg", Body=b"x")
            s3.delete_object(Bucket=OUTPUTS, Key="outputs/gone.jpg")
            assert _queued(INGEST)  # the event went out
        finally:
            kept.deactivate()
    assert on_disk_at_event == [True]

    with mock_aws():  # a restarted stack: moto empty, the template's buckets made again
        _buckets()
        assert kept.restore(lambda line: None) == 4
        s3 = _client("s3")
        listed = s3.list_objects_v2(Bucket=OUTPUTS)["Contents"]
        assert sorted(o["Key"] for o in listed) == [f"outputs/j/{n}/0.jpg" for n in (1, 2, 3)]
        first = s3.get_object(Bucket=OUTPUTS, Key="outputs/j/1/0.jpg")
        assert first["Body"].read() == b"\xff\xd8jpeg"
        assert (first["ContentType"], first["CacheControl"]) == ("image/jpeg", "public, max-age=60")
        assert (
            s3.get_object(Bucket=OUTPUTS, Key="outputs/j/2/0.jpg")["Body"].read() == b"\xff\xd8jpeg"
        )
        third = s3.get_object(Bucket=OUTPUTS, Key="outputs/j/3/0.jpg")
        assert (third["Body"].read(), third["ContentType"]) == (b"third", "image/webp")
        csv = s3.get_object(Bucket=UPLOADS, Key="incoming/a.csv")
        assert (csv["Body"].read(), csv["ContentType"]) == (b"a,b\n", "text/csv")
        assert not [b for b in _queued(INGEST) if "Records" in b]  # no storage event again


def _journal(path: Path) -> QueueJournal:
    journal = QueueJournal(path)
    journal.restore(lambda line: None)  # opens it
    journal.activate()
    return journal


def _queues(sqs: Any) -> dict[str, str]:
    dlq = sqs.create_queue(QueueName="kept-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})
    urls = {"dlq": dlq}
    urls["rows"] = sqs.create_queue(QueueName="kept-rows", Attributes={"RedrivePolicy": redrive})[
        "QueueUrl"
    ]
    for name in ("hooks", "purged"):
        urls[name] = sqs.create_queue(QueueName=f"kept-{name}")["QueueUrl"]
    return urls


def test_messages_sent_and_not_deleted_come_back_in_their_queues(tmp_path: Path) -> None:
    path = tmp_path / "queues.jsonl"
    with mock_aws():
        sqs = _client("sqs")
        urls = _queues(sqs)
        journal = _journal(path)
        try:
            for body in ("done", "poison", "waiting"):
                sqs.send_message(
                    QueueUrl=urls["rows"],
                    MessageBody=body,
                    MessageAttributes={"tenant": {"DataType": "String", "StringValue": "acme"}},
                )
            sqs.send_message(QueueUrl=urls["hooks"], MessageBody="retry later", DelaySeconds=600)
            for body in ("a", "b"):
                sqs.send_message(QueueUrl=urls["purged"], MessageBody=body)
            sqs.purge_queue(QueueUrl=urls["purged"])
            taken = sqs.receive_message(QueueUrl=urls["rows"], MaxNumberOfMessages=10)["Messages"]
            for message in taken:
                if message["Body"] == "done":
                    sqs.delete_message(
                        QueueUrl=urls["rows"], ReceiptHandle=message["ReceiptHandle"]
                    )
                else:  # back at once; the next receive moves "poison" and "waiting" to the DLQ
                    sqs.change_message_visibility(
                        QueueUrl=urls["rows"],
                        ReceiptHandle=message["ReceiptHandle"],
                        VisibilityTimeout=0,
                    )
            sqs.receive_message(QueueUrl=urls["rows"], MaxNumberOfMessages=10)
            assert sorted(_queued("kept-dlq")) == ["poison", "waiting"]
            dead = sqs.receive_message(QueueUrl=urls["dlq"], MaxNumberOfMessages=10)["Messages"]
            poison = next(m for m in dead if m["Body"] == "poison")
            sqs.delete_message(QueueUrl=urls["dlq"], ReceiptHandle=poison["ReceiptHandle"])
        finally:
            journal.close()

    with mock_aws():
        sqs = _client("sqs")
        urls = _queues(sqs)
        again = QueueJournal(path)
        assert again.restore(lambda line: None) == 2
        again.close()
        assert _queued("kept-rows") == []
        assert _queued("kept-purged") == []
        assert _queued("kept-dlq") == ["waiting"]
        waiting = sqs.receive_message(
            QueueUrl=urls["dlq"], MessageAttributeNames=["All"], AttributeNames=["All"]
        )["Messages"][0]
        assert waiting["MessageAttributes"]["tenant"]["StringValue"] == "acme"
        # the delayed one is still delayed: not received now
        assert "Messages" not in sqs.receive_message(QueueUrl=urls["hooks"])
        assert _queued("kept-hooks") == ["retry later"]
    # the journal now holds just what it restored
    assert len(path.read_text().splitlines()) == 2


def test_secrets_current_values_come_back(tmp_path: Path) -> None:
    kept = KeptSecrets(tmp_path / "secrets.json")
    with mock_aws():
        secrets = _client("secretsmanager")
        kept.activate()
        try:
            secrets.create_secret(Name="stack/tenants/acme/webhook", SecretString="whsec_one")
            secrets.put_secret_value(
                SecretId="stack/tenants/acme/webhook", SecretString="whsec_two"
            )
            secrets.create_secret(Name="stack/gone", SecretString="x")
            secrets.delete_secret(SecretId="stack/gone", ForceDeleteWithoutRecovery=True)
        finally:
            kept.deactivate()
    with mock_aws():
        assert kept.restore() == 1
        secrets = _client("secretsmanager")
        value = secrets.get_secret_value(SecretId="stack/tenants/acme/webhook")["SecretString"]
        assert value == "whsec_two"
        with pytest.raises(secrets.exceptions.ResourceNotFoundException):
            secrets.get_secret_value(SecretId="stack/gone")


@pytest.fixture(autouse=True)
def _nothing_left_active() -> Iterator[None]:
    yield
    from local_emulator import kept_objects, kept_queues, kept_secrets

    assert kept_objects._Hooks.active is None
    assert kept_queues._Hooks.active is None
    assert kept_secrets._Hooks.active is None


def test_an_object_put_over_http_is_on_disk_with_its_headers_when_the_put_answers(
    tmp_path: Path,
) -> None:
    from local_emulator.credentials import new_storage_credentials
    from local_emulator.servers import MotoServer

    credentials = new_storage_credentials()
    server = MotoServer("127.0.0.1", 0, credentials=credentials)
    kept = KeptObjects(tmp_path / "objects")
    url = server.start()
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id=credentials.access_key_id,
            aws_secret_access_key=credentials.secret_access_key,
        )
        s3.create_bucket(Bucket=OUTPUTS)
        kept.activate()
        try:
            s3.put_object(Bucket=OUTPUTS, Key="a.csv", Body=b"1,2\n", ContentType="text/csv")
            (written,) = (tmp_path / "objects" / OUTPUTS).rglob("*.obj")
            header, _, body = written.read_bytes().partition(b"\n")
            assert body == b"1,2\n"
            assert json.loads(header)["metadata"]["content-type"] == "text/csv"
            s3.delete_object(Bucket=OUTPUTS, Key="a.csv")
            assert not written.exists()
        finally:
            kept.deactivate()
    finally:
        server.stop()
