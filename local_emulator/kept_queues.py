"""moto's SQS messages kept on disk, as SQS keeps them: a journal (`DIR/queues.jsonl`, one
JSON line a record) of every message added to a queue (sent, or moved to its dead-letter
queue) and of every message deleted or purged. A line is written before the call returns:
before the message is in its queue, so a SendMessage acknowledged is never lost and a
delete is never journaled before its message; after a delete succeeded, so a message whose
delete was cut short comes back (at least once, as SQS delivers).

A start replays the journal: each message added and not deleted goes back into its queue
(visible at once, or when its delay ends), with its body, attributes, group and sent time; its
receive count starts again at 0. The journal is then rewritten with only those messages, and
again whenever it grows past COMPACT_BYTES and four times what it holds.

The hooks sit on moto's `Queue` (every way in: its HTTP server, the functions' in-process
adapters, the dispatcher's pollers, S3's events) and do nothing until a `QueueJournal` is
active.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from local_emulator.provision import ACCOUNT_ID

COMPACT_BYTES = 8 * 1024 * 1024


class _Hooks:
    """The hooks' state, one per process: installed once, active while a stack keeps."""

    active: QueueJournal | None = None
    installed = False
    lock = threading.Lock()


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):  # a binary message attribute: base64, as SQS's API carries it
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _record(queue: Any, message: Any) -> tuple[tuple[str, str], bytes]:
    body: dict[str, Any] = {
        "op": "add",
        "id": message.id,
        "region": queue.region,
        "queue": queue.name,
        "body": message.body,
        "sent": message.sent_timestamp,
        "until": message.delayed_until,
    }
    if message.message_attributes:
        body["attributes"] = message.message_attributes
    if message.system_attributes:
        body["system"] = message.system_attributes
    if message.group_id is not None:
        body["group"] = message.group_id
    if message.deduplication_id is not None:
        body["dedup"] = message.deduplication_id
    line = json.dumps(body, separators=(",", ":"), default=_jsonable) + "\n"
    return (queue.region, queue.name), line.encode()


def _holder(queue: Any, receipt_handle: str) -> Any:
    """The message a receipt handle deletes: among those in flight, else any of the queue."""
    for message in list(queue.pending_messages):
        if message.had_receipt_handle(receipt_handle):
            return message
    if receipt_handle in queue.deleted_messages:
        return None
    for message in list(queue._messages):
        if message.had_receipt_handle(receipt_handle):
            return message
    return None


class QueueJournal:
    """The messages of moto's queues, journaled at `path`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._live: dict[str, tuple[tuple[str, str], bytes]] = {}
        self._size = 0  # the journal's bytes
        self._live_bytes = 0  # of them, those of messages still queued

    # -- the hooks' side -------------------------------------------------------------
    def added(self, queue: Any, message: Any) -> None:
        where, line = _record(queue, message)
        with self._lock:
            self._write(line)
            replaced = self._live.get(message.id)
            self._live_bytes += len(line) - (len(replaced[1]) if replaced else 0)
            self._live[message.id] = (where, line)
            if self._size > COMPACT_BYTES and self._size > 4 * self._live_bytes:
                self._rewrite([line for _, line in self._live.values()])

    def deleted(self, message_id: str) -> None:
        with self._lock:
            gone = self._live.pop(message_id, None)
            if gone is not None:
                self._live_bytes -= len(gone[1])
                self._write(json.dumps({"op": "del", "id": message_id}).encode() + b"\n")

    def purged(self, region: str, queue_name: str) -> None:
        with self._lock:
            gone = [i for i, (where, _) in self._live.items() if where == (region, queue_name)]
            for message_id in gone:
                self._live_bytes -= len(self._live.pop(message_id)[1])
            self._write(
                json.dumps({"op": "purge", "region": region, "queue": queue_name}).encode() + b"\n"
            )

    def _write(self, line: bytes) -> None:
        if self._fd is None:
            raise RuntimeError("the queue journal is closed")
        os.write(self._fd, line)
        self._size += len(line)

    def _rewrite(self, lines: list[bytes]) -> None:
        temporary = self.path.with_name(f"{self.path.name}.tmp{os.getpid()}")
        temporary.write_bytes(b"".join(lines))
        os.replace(temporary, self.path)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = self._live_bytes = sum(len(line) for line in lines)

    # -- start and stop --------------------------------------------------------------
    def restore(self, warn: Callable[[str], None]) -> int:
        """Every message journaled and not deleted back in its queue; the journal rewritten
        with them alone. The count restored."""
        from moto.sqs.models import sqs_backends

        kept = self._replay(warn)
        lines: list[bytes] = []
        missing: dict[str, int] = {}
        for record in kept.values():
            backend = sqs_backends[ACCOUNT_ID][record["region"]]
            name = record["queue"]
            if name not in backend.queues:
                missing[name] = missing.get(name, 0) + 1
                continue
            message = backend.send_message(
                name,
                record["body"],
                message_attributes=record.get("attributes"),
                delay_seconds=0,
                deduplication_id=record.get("dedup"),
                group_id=record.get("group"),
                system_attributes=record.get("system"),
                validate_group_id=False,
            )
            message.sent_timestamp = record.get("sent") or message.sent_timestamp
            message.delayed_until = float(record.get("until") or 0.0)
            where, line = _record(backend.queues[name], message)
            self._live[message.id] = (where, line)
            lines.append(line)
        for name, count in missing.items():
            warn(
                f"data-dir: {count} message(s) of queue {name}, which the template no longer "
                "makes, are dropped"
            )
        with self._lock:
            self._rewrite(lines)
        return len(lines)

    def _replay(self, warn: Callable[[str], None]) -> dict[str, dict[str, Any]]:
        kept: dict[str, dict[str, Any]] = {}
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return kept
        lines = raw.split(b"\n")
        for n, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                if n < len(lines) - 1:  # only the last line may be cut short (a power cut)
                    warn(f"data-dir: line {n + 1} of {self.path} is not JSON; skipped")
                continue
            op = record.get("op") if isinstance(record, dict) else None
            if op == "add" and not {"id", "region", "queue", "body"} <= record.keys():
                warn(f"data-dir: line {n + 1} of {self.path} is not a message; skipped")
            elif op == "add":
                kept.pop(record["id"], None)  # a move to the dead-letter queue: last one wins
                kept[record["id"]] = record
            elif op == "del":
                kept.pop(record.get("id"), None)
            elif op == "purge":
                where = (record.get("region"), record.get("queue"))
                for message_id in [
                    i for i, r in kept.items() if (r["region"], r["queue"]) == where
                ]:
                    del kept[message_id]
        return kept

    def activate(self) -> None:
        _install()
        _Hooks.active = self

    def close(self) -> None:
        if _Hooks.active is self:
            _Hooks.active = None
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _install() -> None:
    """The hooks on moto's SQS, once per process."""
    with _Hooks.lock:
        if _Hooks.installed:
            return
        from moto.sqs.models import Queue, SQSBackend

        add_message = Queue.add_message
        delete_message = Queue.delete_message
        purge_queue = SQSBackend.purge_queue
        delete_queue = SQSBackend.delete_queue

        def kept_add_message(queue: Any, message: Any) -> None:
            journal = _Hooks.active
            if journal is None:
                add_message(queue, message)
                return
            journal.added(queue, message)
            add_message(queue, message)
            if queue.fifo_queue and not any(m is message for m in queue._messages):
                journal.deleted(message.id)  # a FIFO duplicate, dropped by its dedup id

        def kept_delete_message(queue: Any, receipt_handle: str) -> None:
            journal = _Hooks.active
            if journal is None:
                delete_message(queue, receipt_handle)
                return
            found = _holder(queue, receipt_handle)
            delete_message(queue, receipt_handle)
            if found is not None:
                journal.deleted(found.id)

        def kept_purge_queue(backend: Any, queue_name: str) -> None:
            purge_queue(backend, queue_name)
            journal = _Hooks.active
            if journal is not None:
                journal.purged(backend.region_name, queue_name)

        def kept_delete_queue(backend: Any, queue_name: str) -> None:
            delete_queue(backend, queue_name)
            journal = _Hooks.active
            if journal is not None:
                journal.purged(backend.region_name, queue_name)

        Queue.add_message = kept_add_message  # type: ignore[method-assign, assignment]
        Queue.delete_message = kept_delete_message  # type: ignore[method-assign, assignment]
        SQSBackend.purge_queue = kept_purge_queue  # type: ignore[method-assign, assignment]
        SQSBackend.delete_queue = kept_delete_queue  # type: ignore[method-assign, assignment]
        _Hooks.installed = True
