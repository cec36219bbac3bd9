"""The emulator's doors, shut as AWS's are (issue 23): on the storage endpoint moto's
management API is unreachable, a wrong or fake signature is refused for reads, lists and
writes on every service, and nothing reflects an origin; the embedded MongoDB refuses a client
without its credentials. And the right credentials work by every path: SigV4 headers,
presigned GET and PUT, presigned POST, and the public output images anonymously."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pymongo
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from local_emulator.stack import Emulator
from tests.support.emulator import running_emulator

pytestmark = pytest.mark.e2e

ORIGIN = "http://127.0.0.1:9999"  # a page on another local port
SIGNATURE_ERRORS = {
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
    "InvalidAccessKeyId",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
}


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with running_emulator(allow_private_hosts=False, start_dispatchers=False) as emu:
        yield emu


def client(
    emu: Emulator, service: str, secret: str | None = None, key_id: str | None = None
) -> Any:
    storage = emu.storage_credentials
    return boto3.session.Session(
        aws_access_key_id=key_id or storage.access_key_id,
        aws_secret_access_key=secret or storage.secret_access_key,
        region_name="us-east-1",
    ).client(  # type: ignore[call-overload]
        service,
        endpoint_url=emu.storage_url,
        config=Config(signature_version="s3v4", retries={"max_attempts": 1}),
    )


def outputs_bucket(emu: Emulator) -> str:
    return next(b.name for k, b in emu.stack.buckets.items() if "output" in k.lower())


def any_queue(emu: Emulator) -> str:
    return next(iter(emu.stack.queues.values())).url


DOORS_SECRET = "doors/test"


def any_secret(emu: Emulator) -> str:
    return DOORS_SECRET


# (service, what, call on a client) for every service the stack uses on the endpoint.
Call = Callable[[Any, Emulator], object]
CALLS: list[tuple[str, str, Call]] = [
    ("s3", "read", lambda c, e: c.get_object(Bucket=e.uploads_bucket, Key="doors/kept.txt")),
    ("s3", "list", lambda c, e: c.list_objects_v2(Bucket=e.uploads_bucket)),
    ("s3", "write", lambda c, e: c.put_object(Bucket=e.uploads_bucket, Key="doors/new", Body=b"x")),
    ("sqs", "read", lambda c, e: c.get_queue_attributes(QueueUrl=any_queue(e))),
    ("sqs", "list", lambda c, e: c.list_queues()),
    ("sqs", "write", lambda c, e: c.send_message(QueueUrl=any_queue(e), MessageBody="x")),
    ("secretsmanager", "read", lambda c, e: c.get_secret_value(SecretId=any_secret(e))),
    ("secretsmanager", "list", lambda c, e: c.list_secrets()),
    (
        "secretsmanager",
        "write",
        lambda c, e: c.put_secret_value(SecretId=any_secret(e), SecretString="changed"),
    ),
    ("apigateway", "list", lambda c, e: c.get_usage_plans()),
    ("cloudwatch", "list", lambda c, e: c.describe_alarms()),
    ("cloudfront", "list", lambda c, e: c.list_distributions()),
    ("events", "list", lambda c, e: c.list_rules()),
    ("sts", "read", lambda c, e: c.get_caller_identity()),
]


@pytest.fixture(scope="module")
def kept(emulator: Emulator) -> str:
    """An object and a secret the read calls read."""
    emulator.s3_client().put_object(
        Bucket=emulator.uploads_bucket, Key="doors/kept.txt", Body=b"kept"
    )
    client(emulator, "secretsmanager").create_secret(Name=DOORS_SECRET, SecretString="kept")
    return "doors/kept.txt"


@pytest.mark.parametrize(("service", "what", "call"), CALLS, ids=[f"{s}-{w}" for s, w, _ in CALLS])
def test_a_wrong_secret_or_an_unknown_key_is_refused(
    emulator: Emulator, kept: str, service: str, what: str, call: Call
) -> None:
    for bad in (
        client(emulator, service, secret="not-the-secret-key"),
        client(emulator, service, key_id="AKIANOTTHEEMULATORS0"),
    ):
        with pytest.raises(ClientError) as caught:
            call(bad, emulator)
        error = caught.value.response
        assert error["Error"]["Code"] in SIGNATURE_ERRORS, error
        assert error["ResponseMetadata"]["HTTPStatusCode"] in (400, 403)
    # the writes changed nothing
    s3 = emulator.s3_client()
    listed = s3.list_objects_v2(Bucket=emulator.uploads_bucket).get("Contents", [])
    assert "doors/new" not in [o["Key"] for o in listed]
    secrets = client(emulator, "secretsmanager")
    assert secrets.get_secret_value(SecretId=DOORS_SECRET)["SecretString"] == "kept"
    call(client(emulator, service), emulator)  # the right credentials work
    s3.delete_object(Bucket=emulator.uploads_bucket, Key="doors/new")
    secrets.put_secret_value(SecretId=DOORS_SECRET, SecretString="kept")


def test_a_refusal_is_in_s3s_and_sqss_own_shape(emulator: Emulator, kept: str) -> None:
    bad = client(emulator, "s3", secret="not-the-secret-key")
    url = bad.generate_presigned_url(
        "get_object", Params={"Bucket": emulator.uploads_bucket, "Key": kept}, ExpiresIn=60
    )
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 403
    error = ET.fromstring(answer.content)
    assert (error.tag, error.findtext("Code")) == ("Error", "SignatureDoesNotMatch")
    assert error.findtext("AWSAccessKeyId") == emulator.storage_credentials.access_key_id
    sqs = requests.post(
        emulator.storage_url,
        data={"Action": "ListQueues", "Version": "2012-11-05"},
        headers={
            "Authorization": "AWS4-HMAC-SHA256 Credential="
            f"{emulator.storage_credentials.access_key_id}/20260101/us-east-1/sqs/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
            "X-Amz-Date": "20260101T000000Z",
        },
        timeout=10,
    )
    assert sqs.status_code == 403
    assert ET.fromstring(sqs.content).findtext("Error/Code") in SIGNATURE_ERRORS | {
        "RequestTimeTooSkewed"
    }


def test_a_fake_presigned_signature_reads_lists_and_writes_nothing(
    emulator: Emulator, kept: str
) -> None:
    s3 = emulator.s3_client()
    bucket = emulator.uploads_bucket
    outputs = outputs_bucket(emulator)
    s3.put_object(Bucket=outputs, Key="outputs/doors/1/0.jpg", Body=b"public image")
    links = {
        "read": s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": kept}),
        "list": s3.generate_presigned_url("list_objects_v2", Params={"Bucket": bucket}),
        "write": s3.generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": "incoming/beta/x.csv"}
        ),
        "overwrite": s3.generate_presigned_url(
            "put_object", Params={"Bucket": outputs, "Key": "outputs/doors/1/0.jpg"}
        ),
    }
    for what, link in links.items():
        signed, _, _ = link.partition("X-Amz-Signature=")
        method = "PUT" if what in ("write", "overwrite") else "GET"
        for fake in ("0", "0" * 64, link.rpartition("=")[2][::-1]):
            answer = requests.request(
                method, signed + "X-Amz-Signature=" + fake, data=b"", timeout=10
            )
            assert answer.status_code == 403, (what, answer.text)
            assert ET.fromstring(answer.content).findtext("Code") == "SignatureDoesNotMatch"
    assert "incoming/beta/x.csv" not in [
        o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    ]
    image = requests.get(f"{emulator.storage_url}/{outputs}/outputs/doors/1/0.jpg", timeout=10)
    assert (image.status_code, image.content) == (200, b"public image")  # anonymous, via the CDN


def test_the_right_credentials_work_by_every_path(emulator: Emulator) -> None:
    s3 = emulator.s3_client()
    bucket = emulator.uploads_bucket
    key = f"doors/{uuid.uuid4()}/a b+c (1)ü.txt"  # percent-encoded in every path
    s3.put_object(Bucket=bucket, Key=key, Body=b"by header")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"by header"
    put = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": key})
    assert requests.put(put, data=b"by presigned PUT", timeout=10).status_code == 200
    get = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key})
    answer = requests.get(get, timeout=10)
    assert (answer.status_code, answer.content) == (200, b"by presigned PUT")
    post = s3.generate_presigned_post(bucket, "doors/posted.txt", ExpiresIn=60)
    posted = requests.post(
        post["url"], data=post["fields"], files={"file": ("x.txt", b"by POST")}, timeout=10
    )
    assert posted.status_code == 204, posted.text
    assert s3.get_object(Bucket=bucket, Key="doors/posted.txt")["Body"].read() == b"by POST"
    forged = {**post["fields"], "x-amz-signature": "0" * 64}
    refused = requests.post(post["url"], data=forged, files={"file": b"x"}, timeout=10)
    assert ET.fromstring(refused.content).findtext("Code") == "SignatureDoesNotMatch"
    expired = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=0
    )
    late = requests.get(expired, timeout=10)
    assert late.status_code == 403
    assert ET.fromstring(late.content).findtext("Message") == "Request has expired"


def test_the_management_api_is_not_reachable(emulator: Emulator, kept: str) -> None:
    base = emulator.storage_url
    for method, path in (
        ("GET", "/moto-api/data.json"),
        ("GET", "/moto-api/"),
        ("POST", "/moto-api/reset"),
        ("POST", "/moto-api/reset-auth"),
        ("GET", "/moto-api/seed?a=42"),
    ):
        answer = requests.request(method, base + path, headers={"Origin": ORIGIN}, timeout=10)
        assert answer.status_code == 404, path
        assert ET.fromstring(answer.content).findtext("Code") == "NoSuchBucket"
        assert "Access-Control-Allow-Origin" not in answer.headers
        assert b"whsec_" not in answer.content and b"mongodb" not in answer.content
    # the reset did nothing
    body = emulator.s3_client().get_object(Bucket=emulator.uploads_bucket, Key=kept)["Body"]
    assert body.read() == b"kept"


def test_no_origin_is_reflected_but_by_a_buckets_cors_rules(emulator: Emulator, kept: str) -> None:
    base = emulator.storage_url
    sqs = client(emulator, "sqs")
    sqs.meta.events.register(
        "before-sign.sqs.*", lambda request, **_: request.headers.__setitem__("Origin", ORIGIN)
    )
    seen: list[dict[str, str]] = []
    sqs.meta.events.register(
        "after-call.sqs.*", lambda http_response, **_: seen.append(dict(http_response.headers))
    )
    sqs.list_queues()
    assert seen and not any(k.lower().startswith("access-control") for k in seen[0])
    for path in ("/", f"/{outputs_bucket(emulator)}", f"/{emulator.uploads_bucket}/{kept}"):
        for method in ("GET", "PUT", "DELETE"):
            preflight = requests.options(
                base + path,
                headers={"Origin": ORIGIN, "Access-Control-Request-Method": method},
                timeout=10,
            )
            assert preflight.status_code == 403, (path, method)
            assert "Access-Control-Allow-Origin" not in preflight.headers
    for path in ("/", f"/{emulator.uploads_bucket}/{kept}"):
        answer = requests.get(base + path, headers={"Origin": ORIGIN}, timeout=10)
        assert "Access-Control-Allow-Origin" not in answer.headers
    # the uploads bucket's rule (template.yaml): browsers POST the presigned form, from anywhere
    preflight = requests.options(
        f"{base}/{emulator.uploads_bucket}",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
        timeout=10,
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert preflight.headers["Access-Control-Allow-Methods"] == "POST"
    assert preflight.headers["Access-Control-Max-Age"] == "3000"


def test_mongodb_refuses_a_client_without_its_credentials(emulator: Emulator) -> None:
    uri = emulator.mongo_uri
    user = emulator.credentials.mongo
    assert f"{user.username}:{user.password}@" in uri
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=10_000) as good:
        assert good.admin.command("ping")["ok"] == 1.0
        tenants = good.get_database("image_pipeline").list_collection_names()
    address = uri.partition("@")[2].partition("/")[0]
    bare = f"mongodb://{address}/?directConnection=true"
    wrong = uri.replace(f":{user.password}@", ":not-the-password@")
    with pymongo.MongoClient(bare, serverSelectionTimeoutMS=10_000) as anonymous:
        with pytest.raises(pymongo.errors.OperationFailure, match="Authentication required"):
            anonymous.get_database("image_pipeline").api_keys.insert_one({"tenant": "beta"})
        with pytest.raises(pymongo.errors.OperationFailure):
            anonymous.get_database("image_pipeline").list_collection_names()
    with (
        pymongo.MongoClient(wrong, serverSelectionTimeoutMS=10_000) as guessing,
        pytest.raises(pymongo.errors.OperationFailure, match="Authentication failed"),
    ):
        guessing.get_database("image_pipeline").api_keys.find_one()
    assert "api_keys" in tenants  # what the right credentials read


def test_a_chunked_upload_as_botocore_streams_it_is_stored_decoded(emulator: Emulator) -> None:
    """What botocore (aws-cli, boto3) sends over HTTPS with its default checksums: an
    aws-chunked body, `STREAMING-UNSIGNED-PAYLOAD-TRAILER`, a CRC32 trailer. Stored as the
    data it carries; with a wrong seed signature, refused."""
    import base64
    import zlib

    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    data = bytes(range(256)) * 300  # 76,800 bytes: two chunks
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big"))
    body = b"".join(
        f"{len(piece):x}\r\n".encode() + piece + b"\r\n" for piece in (data[:65536], data[65536:])
    )
    body += b"0\r\nx-amz-checksum-crc32:" + crc + b"\r\n\r\n"
    url = f"{emulator.storage_url}/{emulator.uploads_bucket}/doors/streamed.bin"
    signed = AWSRequest(
        method="PUT",
        url=url,
        data=body,
        headers={
            "Content-Encoding": "aws-chunked",
            "X-Amz-Content-SHA256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            "X-Amz-Decoded-Content-Length": str(len(data)),
            "X-Amz-Trailer": "x-amz-checksum-crc32",
        },
    )
    signed.context["checksum"] = {"request_algorithm": {"in": "trailer"}}  # as botocore marks it
    storage = emulator.storage_credentials
    credentials = Credentials(storage.access_key_id, storage.secret_access_key)
    S3SigV4Auth(credentials, "s3", "us-east-1").add_auth(signed)
    headers = dict(signed.headers)
    assert headers["X-Amz-Content-SHA256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    answer = requests.put(url, data=body, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    stored = emulator.s3_client().get_object(
        Bucket=emulator.uploads_bucket, Key="doors/streamed.bin"
    )
    assert stored["Body"].read() == data
    forged = {**headers, "Authorization": headers["Authorization"][:-8] + "00000000"}
    refused = requests.put(url, data=body, headers=forged, timeout=10)
    assert refused.status_code == 403
