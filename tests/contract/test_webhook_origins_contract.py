"""The WebhookOrigins contract on the in-memory fake and MongoWebhookOrigins (embedded server,
and `MONGO_URI` when set): an origin that timed out gets one attempt at a time until it
answers in time again, or its cooldown passes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from chalicelib.adapters.mongo_webhook_origins import MongoWebhookOrigins
from chalicelib.ports import Admission, WebhookOrigins
from pymongo import MongoClient
from pymongo.database import Database

from tests.fakes import InMemoryWebhookOrigins
from tests.support.stores import STORE_KINDS

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOLD = timedelta(seconds=20)
COOLDOWN = timedelta(seconds=300)
X = "http://hooks.test:80"


@pytest.fixture(params=STORE_KINDS)
def origins(
    request: pytest.FixtureRequest, new_database: Callable[[MongoClient[Any]], Database[Any]]
) -> WebhookOrigins:
    kind = str(request.param)
    if kind == "memory":
        return InMemoryWebhookOrigins()
    server = "embedded_mongo_client" if kind == "mongoeco" else "external_mongo_client"
    return MongoWebhookOrigins(new_database(request.getfixturevalue(server)))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def settle(origins: WebhookOrigins, admission: Admission, seconds: float, **how: bool) -> None:
    origins.settle(admission, at(seconds), cooldown=COOLDOWN, **how)  # type: ignore[arg-type]


def test_an_origin_never_slow_admits_every_attempt_at_once(origins: WebhookOrigins) -> None:
    held = [origins.admit(X, at(0), HOLD) for _ in range(3)]
    assert all(a is not None and not a.slot for a in held)


def test_a_timeout_leaves_one_attempt_at_a_time(origins: WebhookOrigins) -> None:
    first, second = origins.admit(X, at(0), HOLD), origins.admit(X, at(0), HOLD)
    assert first is not None and second is not None
    settle(origins, first, 10, answered=False, timed_out=True)
    slot = origins.admit(X, at(11), HOLD)
    assert slot is not None and slot.slot
    assert origins.admit(X, at(11), HOLD) is None  # the one slot is taken
    assert origins.admit("http://other.test:80", at(11), HOLD) is not None  # others as before
    settle(origins, second, 12, answered=False, timed_out=True)  # still slow; slot still taken
    assert origins.admit(X, at(12), HOLD) is None
    settle(origins, slot, 21, answered=False, timed_out=True)  # the slot is free again
    again = origins.admit(X, at(21), HOLD)
    assert again is not None and again.slot
    assert origins.admit(X, at(21) + HOLD, HOLD) is not None  # a holder that died lets go


def test_an_answer_in_time_or_the_cooldown_makes_it_fast_again(origins: WebhookOrigins) -> None:
    first = origins.admit(X, at(0), HOLD)
    assert first is not None
    settle(origins, first, 10, answered=False, timed_out=True)
    slot = origins.admit(X, at(11), HOLD)
    assert slot is not None and slot.slot
    settle(origins, slot, 12, answered=True, timed_out=False)
    assert [origins.admit(X, at(13), HOLD) is not None for _ in range(3)] == [True] * 3
    other = origins.admit(X, at(14), HOLD)
    assert other is not None
    settle(origins, other, 20, answered=False, timed_out=True)
    assert origins.admit(X, at(21), HOLD) is not None
    assert origins.admit(X, at(21), HOLD) is None
    later = at(20) + COOLDOWN + timedelta(seconds=1)
    assert [origins.admit(X, later, HOLD) is not None for _ in range(2)] == [True, True]
