"""The ObjectStore contract on the fake the unit tier uses and S3ObjectStore on moto: what
the services rely on when they store, read back and copy objects."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from chalicelib.adapters.s3 import S3ObjectStore
from chalicelib.errors import NotFound
from chalicelib.ports import ObjectStore
from moto import mock_aws

from tests.fakes import FakeObjectStore

BUCKET = "contract-bucket"


@pytest.fixture(params=["fake", "s3"])
def store(request: pytest.FixtureRequest) -> Iterator[ObjectStore]:
    if request.param == "fake":
        yield FakeObjectStore(BUCKET)
        return
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield S3ObjectStore(client, BUCKET)


def test_put_head_open(store: ObjectStore) -> None:
    assert store.head("a/b.jpg") is None
    with pytest.raises(NotFound):
        store.open("a/b.jpg")
    store.put_bytes("a/b.jpg", b"\xff\xd8image", "image/jpeg")
    info = store.head("a/b.jpg")
    assert info is not None and info.size == 7
    assert store.open("a/b.jpg").read() == b"\xff\xd8image"


def test_copy_is_made_in_the_store_and_a_missing_source_is_false(store: ObjectStore) -> None:
    store.put_bytes("outputs/j1/1/0.webp", b"RIFFwebp", "image/webp")
    assert store.copy("outputs/j1/1/0.webp", "outputs/j2/1/0.webp") is True
    assert store.open("outputs/j2/1/0.webp").read() == b"RIFFwebp"
    assert store.open("outputs/j1/1/0.webp").read() == b"RIFFwebp"  # the source stays
    assert store.copy("outputs/gone.webp", "outputs/j3/1/0.webp") is False
    assert store.head("outputs/j3/1/0.webp") is None
