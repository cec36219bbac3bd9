"""The emulator's storage over HTTP (MotoServer) answers requests without credentials as S3
answers them on private buckets, but the reads a bucket's CDN may make (the template's bucket
policy decides), which its stand-in serves: an output image is a plain GET away, an output CSV,
an uploaded CSV, a listing or an anonymous write are AccessDenied."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config

from local_emulator.cdn import Fronted
from local_emulator.credentials import new_storage_credentials
from local_emulator.provision import ACCOUNT_ID, REGION, Provisioner
from local_emulator.servers import MotoServer

CREDENTIALS = new_storage_credentials()  # the one key the server accepts
ACCESS_KEY_ID = CREDENTIALS.access_key_id
SECRET_ACCESS_KEY = CREDENTIALS.secret_access_key

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
JPEG = b"\xff\xd8\xff\xe0 not much of a picture \xff\xd9"


@dataclass
class Stack:
    server: MotoServer
    url: str
    s3: Any
    uploads: str
    outputs: str
    fronted: Fronted


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """template.yaml provisioned on a moto server, its distribution stood in for."""
    server = MotoServer(credentials=CREDENTIALS)
    url = server.start()
    session = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        region_name=REGION,
    )
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AWS_ENDPOINT_URL", url)
            provisioned = Provisioner(TEMPLATE, session, warn=lambda _: None).provision()
        (cdn,) = provisioned.cdns.values()
        (bucket,) = cdn.buckets
        policy = provisioned.bucket_policies[bucket]
        fronted = Fronted(bucket, cdn.arn, ACCOUNT_ID, policy, cdn.cors)
        server.access.front(fronted)
        s3 = session.client("s3", endpoint_url=url, config=Config(signature_version="s3v4"))
        uploads = provisioned.buckets["UploadsBucket"].name
        yield Stack(server, url, s3, uploads, bucket, fronted)
    finally:
        server.stop()


def refused(answer: requests.Response) -> bool:
    if answer.status_code != 403:
        return False
    if answer.request.method == "HEAD":
        return True
    return ET.fromstring(answer.content).findtext("Code") == "AccessDenied"


def put(stack: Stack, bucket: str, key: str, body: bytes, **extra: str) -> None:
    stack.s3.put_object(Bucket=bucket, Key=key, Body=body, **extra)


def test_an_output_image_is_a_plain_get_away(stack: Stack) -> None:
    key = f"outputs/{uuid.uuid4()}/1/0.jpg"
    caching = "public, max-age=60"
    put(stack, stack.outputs, key, JPEG, ContentType="image/jpeg", CacheControl=caching)
    answer = requests.get(f"{stack.url}/{stack.outputs}/{key}", timeout=10)
    assert answer.status_code == 200 and answer.content == JPEG
    assert answer.headers["Content-Type"] == "image/jpeg"
    assert answer.headers["Cache-Control"] == caching
    head = requests.head(f"{stack.url}/{stack.outputs}/{key}", timeout=10)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(JPEG)
    # as CloudFront with the template's cache policy, no query string reaches the bucket
    acl = requests.get(f"{stack.url}/{stack.outputs}/{key}?acl", timeout=10)
    assert acl.status_code == 200 and acl.content == JPEG


def test_what_the_policy_does_not_let_the_cdn_read_is_refused(stack: Stack) -> None:
    job = uuid.uuid4()
    put(stack, stack.outputs, f"outputs/{job}/output.csv", b"S. No.,Product Name\n")
    put(stack, stack.outputs, f"elsewhere/{job}.jpg", JPEG)
    put(stack, stack.uploads, f"incoming/{job}.csv", b"S. No.,Product Name\n")
    for path in (
        f"{stack.outputs}/outputs/{job}/output.csv",  # the output CSV: the tenant's, not public
        f"{stack.outputs}/elsewhere/{job}.jpg",  # outside outputs/
        f"{stack.uploads}/incoming/{job}.csv",  # the uploads bucket has no CDN
        f"{stack.outputs}/outputs/{job}/9/9.jpg",  # not there: 403 as without s3:ListBucket
        stack.outputs,  # a listing
        "",  # the list of buckets
    ):
        assert refused(requests.get(f"{stack.url}/{path}", timeout=10)), path
        assert refused(requests.head(f"{stack.url}/{path}", timeout=10)), path


def test_writes_without_credentials_are_refused(stack: Stack) -> None:
    key = f"outputs/{uuid.uuid4()}/1/0.jpg"
    assert refused(requests.put(f"{stack.url}/{stack.outputs}/{key}", data=JPEG, timeout=10))
    assert refused(requests.delete(f"{stack.url}/{stack.outputs}/{key}", timeout=10))
    listed = stack.s3.list_objects_v2(Bucket=stack.outputs, Prefix=key)
    assert listed.get("KeyCount", 0) == 0


def test_requests_with_credentials_are_untouched(stack: Stack) -> None:
    key = f"outputs/{uuid.uuid4()}/output.csv"
    put(stack, stack.outputs, key, b"csv")
    assert stack.s3.get_object(Bucket=stack.outputs, Key=key)["Body"].read() == b"csv"
    link = stack.s3.generate_presigned_url(
        "get_object", Params={"Bucket": stack.outputs, "Key": key}, ExpiresIn=60
    )
    answer = requests.get(link, timeout=10)
    assert answer.status_code == 200 and answer.content == b"csv"


def test_a_bucket_no_cdn_fronts_serves_nobody(stack: Stack) -> None:
    key = f"outputs/{uuid.uuid4()}/1/0.jpg"
    put(stack, stack.outputs, key, JPEG)
    url = f"{stack.url}/{stack.outputs}/{key}"
    try:
        stack.server.access.forget()
        assert refused(requests.get(url, timeout=10))
        stack.server.access.front(replace(stack.fronted, policy=None))  # no policy: no read
        assert refused(requests.get(url, timeout=10))
        other = replace(stack.fronted, distribution_arn=stack.fronted.distribution_arn + "X")
        stack.server.access.front(other)  # another distribution: its SourceArn does not match
        assert refused(requests.get(url, timeout=10))
    finally:
        stack.server.access.front(stack.fronted)
    assert requests.get(url, timeout=10).status_code == 200


def test_an_output_answers_a_cors_read_of_any_origin_as_its_distribution_does(
    stack: Stack,
) -> None:
    """The template's response headers policy (OutputsResponseHeadersPolicy) on the
    distribution: a GET or HEAD of an output image from a page of any origin gets
    `Access-Control-Allow-Origin: *` (no credentials); the bucket itself has no CORS rule, so
    a signed read of the same object (S3, not the CDN) gets none, nor does a refused one."""
    assert stack.fronted.cors is not None
    with pytest.raises(stack.s3.exceptions.ClientError):
        stack.s3.get_bucket_cors(Bucket=stack.outputs)
    key = f"outputs/{uuid.uuid4()}/1/0.jpg"
    put(stack, stack.outputs, key, JPEG, ContentType="image/jpeg")
    url = f"{stack.url}/{stack.outputs}/{key}"
    origin = {"Origin": "https://shop.example"}
    for call in (requests.get, requests.head):
        answer = call(url, headers=origin, timeout=10)
        assert answer.status_code == 200
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        assert "Access-Control-Allow-Credentials" not in answer.headers
    assert requests.get(url, headers=origin, timeout=10).content == JPEG
    # not a CORS request: nothing added
    assert "Access-Control-Allow-Origin" not in requests.get(url, timeout=10).headers
    # the bucket, signed, is S3's answer by the bucket's (absent) rules
    link = stack.s3.generate_presigned_url(
        "get_object", Params={"Bucket": stack.outputs, "Key": key}, ExpiresIn=60
    )
    signed = requests.get(link, headers=origin, timeout=10)
    assert signed.status_code == 200 and "Access-Control-Allow-Origin" not in signed.headers
    # a bucket no distribution fronts answers no anonymous read, CORS or not
    put(stack, stack.uploads, f"incoming/{uuid.uuid4()}.csv", b"S. No.\n")
    refused_read = requests.get(
        f"{stack.url}/{stack.uploads}/incoming/x.csv", headers=origin, timeout=10
    )
    assert refused(refused_read)
    assert "Access-Control-Allow-Origin" not in refused_read.headers
