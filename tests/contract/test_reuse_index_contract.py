"""The ReuseIndex contract on the in-memory fake and MongoReuseIndex (embedded server, and
`MONGO_URI` when set), and the content address it is keyed by."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from chalicelib.adapters.mongo_reuse import MongoReuseIndex
from chalicelib.adapters.mongo_tenants import MongoTenantStore
from chalicelib.domain.reuse import ReusableOutput, content_address, new_reuse_key
from chalicelib.domain.tenancy import Tenant
from chalicelib.ports import ReuseIndex, TenantStore
from pymongo import MongoClient
from pymongo.database import Database

from tests.fakes import InMemoryReuseIndex, InMemoryTenantStore
from tests.support.stores import STORE_KINDS


@dataclass
class Index:
    reuse: ReuseIndex
    tenants: TenantStore


@pytest.fixture(params=STORE_KINDS)
def index(
    request: pytest.FixtureRequest, new_database: Callable[[MongoClient[Any]], Database[Any]]
) -> Index:
    kind = str(request.param)
    if kind == "memory":
        tenants = InMemoryTenantStore()
        return Index(InMemoryReuseIndex(tenants), tenants)
    server = "embedded_mongo_client" if kind == "mongoeco" else "external_mongo_client"
    db = new_database(request.getfixturevalue(server))
    return Index(MongoReuseIndex(db), MongoTenantStore(db))


def test_an_address_points_at_the_newest_copy_per_tenant(index: Index) -> None:
    assert index.reuse.find("acme", "a1") is None
    index.reuse.remember("acme", "a1", ReusableOutput("outputs/j1/1/0.webp", 100))
    assert index.reuse.find("acme", "a1") == ReusableOutput("outputs/j1/1/0.webp", 100)
    index.reuse.remember("acme", "a1", ReusableOutput("outputs/j2/1/0.webp", 100))
    assert index.reuse.find("acme", "a1") == ReusableOutput("outputs/j2/1/0.webp", 100)
    assert index.reuse.find("beta", "a1") is None  # another tenant's


def test_an_auto_output_keeps_its_quality_and_score(index: Index) -> None:
    """What `quality: "auto"` chose and reached goes with the output (a copy reports them);
    an output of a fixed quality has neither."""
    made = ReusableOutput("outputs/j1/1/0.webp", 100, quality=61, score=70.3)
    index.reuse.remember("acme", "a1", made)
    assert index.reuse.find("acme", "a1") == made
    again = ReusableOutput("outputs/j2/1/0.webp", 90, quality=58, score=71.0)
    index.reuse.remember_all([("acme", "a2", again), ("acme", "a3", ReusableOutput("k", 5))])
    assert index.reuse.find("acme", "a2") == again
    assert index.reuse.find("acme", "a3") == ReusableOutput("k", 5, None, None)


def test_remember_all_points_every_address_in_one_call(index: Index) -> None:
    index.reuse.remember("acme", "a1", ReusableOutput("outputs/j1/1/0.jpg", 100))
    index.reuse.remember_all(
        [
            ("acme", "a1", ReusableOutput("outputs/j2/1/0.jpg", 100)),
            ("acme", "a2", ReusableOutput("outputs/j2/2/0.jpg", 70)),
            ("beta", "a1", ReusableOutput("outputs/j3/1/0.jpg", 90)),
        ]
    )
    index.reuse.remember_all([])
    assert index.reuse.find("acme", "a1") == ReusableOutput("outputs/j2/1/0.jpg", 100)
    assert index.reuse.find("acme", "a2") == ReusableOutput("outputs/j2/2/0.jpg", 70)
    assert index.reuse.find("beta", "a1") == ReusableOutput("outputs/j3/1/0.jpg", 90)


def test_a_tenants_reuse_key_is_made_once_and_kept(index: Index) -> None:
    assert index.reuse.reuse_key("acme") is None  # no such tenant
    index.tenants.put_tenant(Tenant("acme"))
    index.tenants.put_tenant(Tenant("beta"))
    keys: list[str | None] = []
    barrier = threading.Barrier(4)

    def first_use() -> None:
        barrier.wait(10)
        keys.append(index.reuse.reuse_key("acme"))

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(set(keys)) == 1 and keys[0] is not None and len(keys[0]) == 64
    assert index.reuse.reuse_key("acme") == keys[0]
    assert index.reuse.reuse_key("beta") not in (None, keys[0])
    assert index.tenants.get_tenant("acme") == Tenant("acme")  # the record is otherwise kept
    index.tenants.put_tenant(Tenant("acme", webhook_url="https://acme.example/h"))
    assert index.reuse.reuse_key("acme") == keys[0]  # and a changed record keeps the key


def test_the_address_depends_on_the_tenants_key_the_encoder_the_options_and_the_bytes() -> None:
    key, other = new_reuse_key(), new_reuse_key()
    webp = {"format": "webp", "quality": 50, "maxWidth": 300, "maxHeight": None}
    base = content_address(key, "enc-1", webp, b"bytes")
    assert base == content_address(key, "enc-1", webp, b"bytes")
    assert (
        len(
            {
                base,
                content_address(other, "enc-1", webp, b"bytes"),
                content_address(key, "enc-2", webp, b"bytes"),
                content_address(key, "enc-1", {**webp, "maxWidth": 301}, b"bytes"),
                content_address(key, "enc-1", webp, b"bytes!"),
            }
        )
        == 5
    )
