"""Job lifecycle events to Amazon EventBridge."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

SOURCE = "image-pipeline"


class EventBridgePublisher:
    """One `PutEvents` entry per event on the configured bus. A failure is logged, never
    raised: events inform other systems and must not fail the job's own step."""

    def __init__(self, client: Any, bus_name: str) -> None:
        self._client = client
        self._bus = bus_name

    def publish(self, detail_type: str, detail: Mapping[str, object]) -> None:
        entry = {
            "Source": SOURCE,
            "DetailType": detail_type,
            "Detail": json.dumps(dict(detail), separators=(",", ":")),
            "EventBusName": self._bus,
        }
        try:
            answer = self._client.put_events(Entries=[entry])
        except Exception:
            log.exception("event %s could not be published to %s", detail_type, self._bus)
            return
        if answer.get("FailedEntryCount"):
            log.error("event %s refused by %s: %s", detail_type, self._bus, answer["Entries"])
