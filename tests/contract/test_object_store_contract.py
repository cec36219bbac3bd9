"""The ObjectStore contract on the fake the unit tier uses and S3ObjectStore on moto: what
the services rely on when they store, read back and copy objects."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from chalicelib.adapters import s3 as s3_adapter
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


def test_delete_removes_one_object_and_a_missing_one_is_no_error(store: ObjectStore) -> None:
    store.put_bytes("incoming/a.csv", b"S. No.", "text/csv")
    store.put_bytes("incoming/a.csv.bak", b"S. No.", "text/csv")
    store.delete("incoming/a.csv")
    store.delete("incoming/a.csv")
    assert store.head("incoming/a.csv") is None
    assert store.head("incoming/a.csv.bak") is not None


def test_delete_prefix_removes_every_object_under_it_page_after_page(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More keys than a listing page or a DeleteObjects request holds (S3's 1,000, made 7
    here so that a few keys take several pages)."""
    assert s3_adapter.DELETE_BATCH == 1000
    monkeypatch.setattr(s3_adapter, "DELETE_BATCH", 7)
    keys = [f"outputs/job-1/{n // 10}/{n % 10}.webp" for n in range(23)]
    for key in keys:
        store.put_bytes(key, b"RIFF", "image/webp")
    store.put_bytes("outputs/job-10/1/0.webp", b"RIFF", "image/webp")  # a longer id: kept
    store.put_bytes("outputs/job-2/output.csv", b"S. No.", "text/csv")

    assert store.delete_prefix("outputs/job-1/", limit=10) == 10
    assert sum(store.head(key) is not None for key in keys) == 13
    assert store.delete_prefix("outputs/job-1/") == 13
    assert all(store.head(key) is None for key in keys)
    assert store.delete_prefix("outputs/job-1/") == 0
    assert store.head("outputs/job-10/1/0.webp") is not None
    assert store.head("outputs/job-2/output.csv") is not None
