"""The MongoJobStore's queries of row chunks: store them, record a row's results once (one
row, or a worker's batch in one update per chunk), read them by page or as a stream, cancel
the pending ones, reset the failed ones for a retry, recount the job from them, delete them.

Recording a row is one guarded update of its slot (it must still be pending: a redelivery
counts nothing) and one `$inc` of the job's counters; what a row records and counts is the
domain's (`RowOutcome`, `StoredRow.counted`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from chalicelib.adapters.mongo_codecs import (
    EXPIRE_AT,
    Document,
    chunk_id,
    processed_counters,
    progress_from,
    row_doc,
    row_from,
    slot_changes,
)
from chalicelib.adapters.mongo_collections import BUMP, MongoCollections, utcnow
from chalicelib.domain.models import (
    ImageResult,
    Progress,
    RowOutcome,
    RowStatus,
    StoredRow,
    counted_rows,
)
from chalicelib.domain.timefmt import iso
from chalicelib.errors import JobGone

_ROWS_BATCH = 8  # chunk documents per cursor batch when streaming rows


class RowQueries(MongoCollections):
    def insert_rows(self, request_id: str, chunk: int, rows: Sequence[StoredRow]) -> None:
        """Writes the chunk if it is absent: a re-run never resets rows already recorded."""
        self.ensure_indexes()
        ordered = sorted(rows, key=lambda r: r.position)
        document: Document = {
            "jobId": request_id,
            "chunk": chunk,
            "rows": [row_doc(r) for r in ordered],
        }
        expire_at = self._expire_at(utcnow())
        if expire_at is not None:
            document[EXPIRE_AT] = expire_at
        try:
            self._rows.update_one(
                {"_id": chunk_id(request_id, chunk)},
                {"$setOnInsert": document},
                upsert=True,
            )
        except DuplicateKeyError:  # a concurrent upsert of the same chunk won
            return

    # recording

    def record_row(
        self, request_id: str, position: int, results: Sequence[ImageResult], now: datetime
    ) -> Progress | None:
        size = self._chunk_size(request_id)
        if size is None:
            raise JobGone(request_id)
        chunk, index = divmod(position, size)
        outcome = RowOutcome.of(results)
        if not self._record_slot(
            request_id, chunk_id(request_id, chunk), f"rows.{index}", position, outcome
        ):
            return None
        return self._count_rows(request_id, [outcome], now)

    def record_rows(
        self,
        request_id: str,
        rows: Sequence[tuple[int, Sequence[ImageResult]]],
        now: datetime,
    ) -> list[Progress | None]:
        """`record_row` for several rows of one job in few operations: one guarded update per
        chunk (every slot of the batch must still be pending, so it is all or nothing) and one
        `$inc` of the job for all of them. When a slot was recorded before (a redelivery), that
        chunk's rows fall back to one guarded update each. Per row, as `record_row`: the job's
        progress after counting it, or None when it had been recorded already."""
        size = self._chunk_size(request_id)
        if size is None:
            raise JobGone(request_id)
        by_chunk: dict[int, list[tuple[int, int, RowOutcome]]] = {}
        seen: set[int] = set()
        for n, (position, results) in enumerate(rows):
            if position in seen:  # the same row twice in one batch: the second is a repeat
                continue
            seen.add(position)
            chunk, index = divmod(position, size)
            by_chunk.setdefault(chunk, []).append((n, index, RowOutcome.of(results)))
        counted: list[tuple[int, RowOutcome]] = []
        for chunk, members in by_chunk.items():
            cid = chunk_id(request_id, chunk)
            guard: Document = {"_id": cid}
            changes: Document = {}
            for n, index, outcome in members:
                slot = f"rows.{index}"
                guard[f"{slot}.p"] = rows[n][0]
                guard[f"{slot}.st"] = str(RowStatus.PENDING)
                changes.update(slot_changes(slot, outcome))
            if self._rows.update_one(guard, {"$set": changes}).modified_count == 1:
                counted += [(n, outcome) for n, _, outcome in members]
                continue
            for n, index, outcome in members:  # some were recorded before: one by one
                if self._record_slot(request_id, cid, f"rows.{index}", rows[n][0], outcome):
                    counted.append((n, outcome))
        if not counted:
            return [None] * len(rows)
        progress = self._count_rows(request_id, [outcome for _, outcome in counted], now)
        out: list[Progress | None] = [None] * len(rows)
        for n, _ in counted:
            out[n] = progress
        return out

    def _record_slot(
        self, request_id: str, cid: str, slot: str, position: int, outcome: RowOutcome
    ) -> bool:
        """One row's guarded update: True when it changed the row (first recording)."""
        result = self._rows.update_one(
            {"_id": cid, f"{slot}.p": position, f"{slot}.st": str(RowStatus.PENDING)},
            {"$set": slot_changes(slot, outcome)},
        )
        if result.modified_count == 1:
            return True
        if self._rows.find_one({"_id": cid, f"{slot}.p": position}, {"_id": 1}) is None:
            raise JobGone(request_id)  # its rows deleted (a deletion's first step)
        return False  # recorded before: a redelivery counts nothing

    def _count_rows(
        self, request_id: str, recorded: Sequence[RowOutcome], now: datetime
    ) -> Progress:
        """Move the job's counters by the rows just recorded, in one `$inc`."""
        counted = Progress()
        for outcome in recorded:
            counted = counted.plus(outcome.counted())
        doc = self._jobs.find_one_and_update(
            {"_id": request_id},
            {
                "$inc": {**processed_counters(counted), "version": 1},
                "$set": {"updatedAt": iso(now)},
            },
            projection={"progress": 1},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            raise JobGone(request_id)
        return progress_from(doc.get("progress"))

    # reading

    def iter_rows(self, request_id: str) -> Iterator[StoredRow]:
        cursor = (
            self._rows.find({"jobId": request_id}, {"rows": 1})
            .sort("chunk", ASCENDING)
            .batch_size(_ROWS_BATCH)
        )
        with cursor:
            for doc in cursor:
                for row in doc.get("rows", []):
                    yield row_from(row)

    def list_rows(self, request_id: str, start: int, limit: int) -> list[StoredRow]:
        if limit <= 0 or start < 0:
            return []
        size = self._chunk_size(request_id)
        if size is None:
            return []
        end = start + limit  # exclusive
        first, last = start // size, (end - 1) // size
        cursor = self._rows.find(
            {"jobId": request_id, "chunk": {"$gte": first, "$lte": last}}, {"rows": 1}
        ).sort("chunk", ASCENDING)
        rows: list[StoredRow] = []
        with cursor:
            for doc in cursor:
                rows.extend(row_from(r) for r in doc.get("rows", []) if start <= r["p"] < end)
        return rows

    # repairs, retries and cancels

    def recount(self, request_id: str, now: datetime) -> Progress | None:
        counted = counted_rows(self.iter_rows(request_id))
        doc = self._jobs.find_one_and_update(
            {"_id": request_id},
            {"$set": {**processed_counters(counted), "updatedAt": iso(now)}, **BUMP},
            projection={"progress": 1},
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else progress_from(doc.get("progress"))

    def reset_failed_rows(self, request_id: str, now: datetime) -> Iterator[StoredRow]:
        failed = str(RowStatus.FAILED)
        cursor = self._rows.find({"jobId": request_id, "rows.st": failed}, {"rows": 1}).sort(
            "chunk", ASCENDING
        )
        with cursor:
            for doc in cursor:
                for index, raw in enumerate(doc.get("rows", [])):
                    if raw.get("st") != failed:
                        continue
                    row = row_from(raw)
                    slot = f"rows.{index}"
                    reset = self._rows.update_one(
                        {"_id": doc["_id"], f"{slot}.p": row.position, f"{slot}.st": failed},
                        {"$set": {f"{slot}.st": str(RowStatus.PENDING)}},
                    )
                    if reset.modified_count == 1:
                        self._jobs.update_one(
                            {"_id": request_id},
                            {
                                "$inc": {**processed_counters(row.counted(), -1), "version": 1},
                                "$set": {"updatedAt": iso(now)},
                            },
                        )
                    yield replace(row, status=RowStatus.PENDING)

    def cancel_rows(
        self, request_id: str, now: datetime, positions: Sequence[int] | None = None
    ) -> None:
        """One update of every chunk with a pending row (of the chunks of `positions`): each
        slot still pending becomes cancelled, by an array filter, so that a row recorded
        meanwhile is left as it is."""
        pending = str(RowStatus.PENDING)
        query: Document = {"jobId": request_id, "rows.st": pending}
        slot: Document = {"r.st": pending}
        if positions is not None:
            wanted = sorted(set(positions))
            if not wanted:
                return
            slot["r.p"] = {"$in": wanted}
            size = self._chunk_size(request_id)
            if size is not None:
                query["chunk"] = {"$in": sorted({p // size for p in wanted})}
        changed = self._rows.update_many(
            query,
            {"$set": {"rows.$[r].st": str(RowStatus.CANCELLED)}},
            array_filters=[slot],
        )
        if changed.modified_count:  # after the rows: a status read between shows them early
            self._jobs.update_one({"_id": request_id}, BUMP)

    def delete_rows(self, request_id: str) -> None:
        self._rows.delete_many({"jobId": request_id})
