"""The emulator's storage (MotoServer over HTTP) enforces the app's presigned POST as S3 does:
the genuine upload is stored, and each way of bending it is refused with S3's status and
code, leaving nothing behind."""

from __future__ import annotations

import base64
import json
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError
from chalicelib.adapters.s3 import S3ObjectStore
from chalicelib.config import Settings

from local_emulator.credentials import new_storage_credentials
from local_emulator.servers import MotoServer

CREDENTIALS = new_storage_credentials()  # the one key the server accepts
ACCESS_KEY_ID = CREDENTIALS.access_key_id
SECRET_ACCESS_KEY = CREDENTIALS.secret_access_key

REGION = "us-east-1"
MAX = Settings().max_csv_bytes
CSV = b"S. No.,Product Name,Input Image Urls\n1,Mug,http://127.0.0.1:9/a.jpg\n"
PAGE = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def storage() -> Iterator[str]:
    server = MotoServer(credentials=CREDENTIALS)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@dataclass
class Bucket:
    client: Any
    name: str


@pytest.fixture
def s3(storage: str) -> Bucket:
    """A client configured as the functions' (bootstrap.py), and a fresh bucket that lets a
    page POST to it, as the template's uploads bucket does."""
    session = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        region_name=REGION,
    )
    client = session.client("s3", endpoint_url=storage, config=Config(signature_version="s3v4"))
    bucket = f"uploads-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    client.put_bucket_cors(
        Bucket=bucket,
        CORSConfiguration={
            "CORSRules": [
                {"AllowedMethods": ["POST"], "AllowedOrigins": ["*"], "MaxAgeSeconds": 3000}
            ]
        },
    )
    return Bucket(client, bucket)


def presigned(s3: Bucket, expires_in: int = 900) -> tuple[str, dict[str, str], str]:
    key = f"incoming/{uuid.uuid4()}.csv"
    post = S3ObjectStore(s3.client, s3.name).presigned_post(key, MAX, expires_in)
    return post.url, dict(post.fields), key


def exists(s3: Bucket, key: str) -> bool:
    try:
        s3.client.head_object(Bucket=s3.name, Key=key)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] in {"404", "NoSuchKey"}
        return False
    return True


def upload(
    url: str, fields: dict[str, str], body: bytes, content_type: str = "text/csv"
) -> requests.Response:
    return requests.post(
        url,
        data=fields,
        files={"file": ("products.csv", body, content_type)},
        headers={"Origin": PAGE},
        timeout=60,
    )


def test_the_genuine_presigned_post_is_stored(s3: Bucket) -> None:
    url, fields, key = presigned(s3)
    answer = upload(url, fields, CSV)
    assert answer.status_code == 204, answer.text
    assert exists(s3, key)
    assert s3.client.get_object(Bucket=s3.name, Key=key)["Body"].read() == CSV


def _altered_policy(fields: dict[str, str]) -> dict[str, str]:
    document = json.loads(base64.b64decode(fields["policy"]))
    for condition in document["conditions"]:
        if isinstance(condition, list) and condition[0] == "content-length-range":
            condition[2] = 100 * MAX
    return {**fields, "policy": base64.b64encode(json.dumps(document).encode()).decode()}


def _flip(signature: str) -> str:
    return ("1" if signature[0] == "0" else "0") + signature[1:]


OTHER_KEY = "incoming/00000000-0000-4000-8000-000000000000.csv"

# case: (fields, file, Content-Type field, expiry) -> (status, code)
CASES: dict[str, tuple[Callable[[dict[str, str]], dict[str, str]], bytes, str, int, str]] = {
    "another key": (lambda f: {**f, "key": OTHER_KEY}, CSV, "", 403, "AccessDenied"),
    "over the size cap": (lambda f: f, b"x" * (MAX + 1), "", 400, "EntityTooLarge"),
    "11 MiB": (lambda f: f, b"x" * (11 * 1024 * 1024), "", 400, "EntityTooLarge"),
    "an empty file": (lambda f: f, b"", "", 400, "EntityTooSmall"),
    "a PNG": (
        lambda f: {**f, "Content-Type": "image/png"},
        b"\x89PNG\r\n\x1a\n",
        "image/png",
        403,
        "AccessDenied",
    ),
    "a zeroed signature": (
        lambda f: {**f, "x-amz-signature": "0" * 64},
        CSV,
        "",
        403,
        "SignatureDoesNotMatch",
    ),
    "an altered signature": (
        lambda f: {**f, "x-amz-signature": _flip(f["x-amz-signature"])},
        CSV,
        "",
        403,
        "SignatureDoesNotMatch",
    ),
    "an altered policy": (_altered_policy, CSV, "", 403, "SignatureDoesNotMatch"),
    "a field the policy does not cover": (
        lambda f: {**f, "x-amz-meta-owner": "mallory"},
        CSV,
        "",
        403,
        "AccessDenied",
    ),
    "no policy": (
        lambda f: {k: v for k, v in f.items() if k != "policy"},
        CSV,
        "",
        403,
        "AccessDenied",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_refusal_has_s3s_status_and_code_and_stores_nothing(s3: Bucket, case: str) -> None:
    change, body, file_type, status, code = CASES[case]
    url, fields, key = presigned(s3)
    answer = upload(url, change(fields), body, file_type or "text/csv")
    assert answer.status_code == status, answer.text
    error = ET.fromstring(answer.content)
    assert error.tag == "Error"
    assert error.findtext("Code") == code
    assert answer.headers["Content-Type"] == "application/xml"
    # the page reads why (the bucket's CORS rule answers on a refusal too: as S3 does, `*`
    # for a rule that allows any origin)
    assert answer.headers.get("Access-Control-Allow-Origin") == "*"
    assert not exists(s3, key)
    assert not exists(s3, OTHER_KEY)


def test_an_expired_policy_is_refused(s3: Bucket) -> None:
    url, fields, key = presigned(s3, expires_in=-1)
    answer = upload(url, fields, CSV)
    assert answer.status_code == 403
    error = ET.fromstring(answer.content)
    assert error.findtext("Code") == "AccessDenied"
    assert error.findtext("Message") == "Invalid according to Policy: Policy expired."
    assert not exists(s3, key)


def test_the_size_refusal_names_the_cap(s3: Bucket) -> None:
    url, fields, _ = presigned(s3)
    answer = upload(url, fields, b"x" * (MAX + 1))
    error = ET.fromstring(answer.content)
    assert error.findtext("MaxSizeAllowed") == str(MAX)
    assert error.findtext("ProposedSize") == str(MAX + 1)


def test_the_sdks_own_requests_still_pass(s3: Bucket) -> None:
    """Signed API calls (PutObject, DeleteObjects' POST) are not browser uploads."""
    s3.client.put_object(Bucket=s3.name, Key="incoming/a.csv", Body=CSV)
    s3.client.put_object(Bucket=s3.name, Key="incoming/b.csv", Body=CSV)
    deleted = s3.client.delete_objects(
        Bucket=s3.name, Delete={"Objects": [{"Key": "incoming/a.csv"}]}
    )
    assert [d["Key"] for d in deleted["Deleted"]] == ["incoming/a.csv"]
    assert exists(s3, "incoming/b.csv") and not exists(s3, "incoming/a.csv")
