"""The fast presigner signs exactly as botocore does (so real S3 accepts its URLs)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

import boto3
import botocore.auth
import pytest
from botocore.config import Config
from chalicelib.adapters.s3 import GetPresigner, S3ObjectStore

NOW = datetime(2026, 11, 29, 3, 4, 5, tzinfo=UTC)
KEYS = [
    "outputs/0b7c/1/0.jpg",
    "outputs/a b+c/ü=1&x?.jpg",
    "incoming/~tilde/%41;semi,comma*star'q(p)!.csv",
    "x" * 300,
]


def client(endpoint: str | None, token: str | None = None) -> object:
    session = boto3.session.Session(
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        aws_session_token=token,
        region_name="eu-west-1",
    )
    return session.client("s3", endpoint_url=endpoint, config=Config(signature_version="s3v4"))


def split(url: str) -> tuple[str, str, dict[str, str]]:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}", parts.path, dict(parse_qsl(parts.query))


@pytest.mark.parametrize(
    ("endpoint", "token"),
    [
        ("http://127.0.0.1:4566", None),
        (None, None),
        (None, "FwoGZXIvYXdzE+/session=token"),
        ("https://s3.example.test:443", None),
    ],
)
def test_same_url_as_botocore(
    endpoint: str | None, token: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = client(endpoint, token)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: NOW.replace(tzinfo=None))
    presigner = GetPresigner(s3, "my-bucket")  # type: ignore[arg-type]
    for key in KEYS:
        for expires in (60, 604800):
            theirs = s3.generate_presigned_url(  # type: ignore[attr-defined]
                "get_object", Params={"Bucket": "my-bucket", "Key": key}, ExpiresIn=expires
            )
            ours = presigner.url(key, expires, now=NOW)
            assert split(ours) == split(theirs)


def test_the_store_uses_it_and_signs_now() -> None:
    store = S3ObjectStore(client("http://127.0.0.1:4566"), "b")  # type: ignore[arg-type]
    url = store.presigned_get("outputs/k.jpg", 600)
    origin, path, query = split(url)
    assert (origin, path) == ("http://127.0.0.1:4566", "/b/outputs/k.jpg")
    assert query["X-Amz-Expires"] == "600" and len(query["X-Amz-Signature"]) == 64
    signed_at = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - signed_at).total_seconds()) < 60


def test_falls_back_to_botocore_without_credentials() -> None:
    session = boto3.session.Session(region_name="us-east-1")
    s3 = session.client(
        "s3",
        endpoint_url="http://127.0.0.1:4566",
        config=Config(signature_version=botocore.UNSIGNED),
    )
    store = S3ObjectStore(s3, "b")
    url = store.presigned_get("k.jpg", 600)
    assert url.startswith("http://127.0.0.1:4566/b/k.jpg")
