"""Webhook receivers' origins in MongoDB, behind the WebhookOrigins port: one document per
origin that has timed out lately (`slowUntil`), with its one slot (`busyUntil`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database

from chalicelib.ports import Admission

ORIGINS = "webhookOrigins"
Document = dict[str, Any]


def _utc(value: object) -> datetime | None:
    """A stored date as an aware UTC datetime (pymongo reads BSON dates as naive UTC)."""
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class MongoWebhookOrigins:
    """`WebhookOrigins`: an origin never slow costs one read per attempt and no write."""

    def __init__(self, db: Database[Document]) -> None:
        self._origins: Collection[Document] = db[ORIGINS]

    def admit(self, origin: str, now: datetime, hold: timedelta) -> Admission | None:
        doc = self._origins.find_one({"_id": origin}, {"slowUntil": 1})
        if doc is None:
            return Admission(origin)
        slow_until = _utc(doc.get("slowUntil"))
        if slow_until is None or slow_until <= now:
            return Admission(origin, known=True)
        free = {"$or": [{"busyUntil": {"$exists": False}}, {"busyUntil": {"$lte": now}}]}
        taken = self._origins.update_one(
            {"_id": origin, **free}, {"$set": {"busyUntil": now + hold}}
        )
        return Admission(origin, slot=True, known=True) if taken.matched_count else None

    def settle(
        self,
        admission: Admission,
        now: datetime,
        *,
        answered: bool,
        timed_out: bool,
        cooldown: timedelta,
    ) -> None:
        key = {"_id": admission.origin}
        if timed_out:
            update: Document = {"$set": {"slowUntil": now + cooldown}}
            if admission.slot:
                update["$set"]["busyUntil"] = now
            self._origins.update_one(key, update, upsert=True)
        elif answered and admission.known:
            self._origins.delete_one(key)  # fast again: no record
        elif admission.slot:
            self._origins.update_one(key, {"$set": {"busyUntil": now}})
