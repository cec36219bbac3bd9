"""MongoDB behind the ReuseIndex port: `reuse` (`_id` = "<tenant>:<address>") points at the
newest copy of an output; each tenant's reuse key lives in its `tenants` record."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import ReplaceOne
from pymongo.collection import Collection
from pymongo.database import Database

from chalicelib.domain.reuse import ReusableOutput, new_reuse_key

Document = dict[str, Any]

REUSE = "reuse"
TENANTS = "tenants"


class MongoReuseIndex:
    def __init__(self, db: Database[Document]) -> None:
        self._reuse: Collection[Document] = db[REUSE]
        self._tenants: Collection[Document] = db[TENANTS]

    def find(self, tenant: str, address: str) -> ReusableOutput | None:
        doc = self._reuse.find_one({"_id": f"{tenant}:{address}"})
        if doc is None:
            return None
        quality, score = doc.get("quality"), doc.get("score")
        return ReusableOutput(
            str(doc["key"]),
            int(doc.get("bytesOut", 0)),
            None if quality is None else int(quality),
            None if score is None else float(score),
        )

    def remember(self, tenant: str, address: str, output: ReusableOutput) -> None:
        self._reuse.replace_one(
            {"_id": f"{tenant}:{address}"}, _reuse_doc(tenant, address, output), upsert=True
        )

    def remember_all(self, entries: Sequence[tuple[str, str, ReusableOutput]]) -> None:
        """One command for them all (a worker's batch), unordered: each replace stands alone."""
        if not entries:
            return
        self._reuse.bulk_write(
            [
                ReplaceOne(
                    {"_id": f"{tenant}:{address}"}, _reuse_doc(tenant, address, out), upsert=True
                )
                for tenant, address, out in entries
            ],
            ordered=False,
        )

    def reuse_key(self, tenant: str) -> str | None:
        doc = self._tenants.find_one({"_id": tenant}, projection={"reuseKey": 1})
        if doc is None:
            return None
        if doc.get("reuseKey"):
            return str(doc["reuseKey"])
        # the first to set it wins; everyone reads the winner's
        self._tenants.update_one(
            {"_id": tenant, "reuseKey": {"$exists": False}}, {"$set": {"reuseKey": new_reuse_key()}}
        )
        again = self._tenants.find_one({"_id": tenant}, projection={"reuseKey": 1})
        return str(again["reuseKey"]) if again and again.get("reuseKey") else None


def _reuse_doc(tenant: str, address: str, output: ReusableOutput) -> Document:
    """The `reuse` document of an output (its quality and score only when `auto` made it)."""
    doc: Document = {"_id": f"{tenant}:{address}", "key": output.key, "bytesOut": output.bytes_out}
    if output.quality is not None:
        doc["quality"] = output.quality
    if output.score is not None:
        doc["score"] = output.score
    return doc
