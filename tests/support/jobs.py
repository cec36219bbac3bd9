"""Jobs and rows as the ingest leaves them in a JobStore, for the store tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.domain.chunking import chunks
from chalicelib.domain.models import ImageResult, Job, JobStatus, Progress, StoredRow
from chalicelib.domain.timefmt import iso
from chalicelib.ports import JobStore

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)


def new_job(chunk_size: int = 4, **fields: Any) -> Job:
    fields.setdefault("tenant", "default")
    fields.setdefault("created_at", iso(NOW))
    fields.setdefault("updated_at", fields["created_at"])
    return Job(
        request_id=str(uuid.uuid4()),
        status=JobStatus.PENDING,
        input_key="incoming/x.csv",
        chunk_size=chunk_size,
        **fields,
    )


def make_rows(count: int, images: int = 2) -> list[StoredRow]:
    """Positions 0..count-1; serials sparse (10, 20, ...) as after ranking."""
    return [
        StoredRow(
            position=p,
            serial=(p + 1) * 10,
            name=f"Product {p}",
            urls=tuple(f"https://img.test/{p}/{i}.jpg" for i in range(images)),
        )
        for p in range(count)
    ]


def load(store: JobStore, job: Job, rows: list[StoredRow]) -> None:
    """What ingest does: create, write chunks, record totals."""
    assert store.create_job(job)
    for number, chunk in enumerate(chunks(rows, job.chunk_size)):
        store.insert_rows(job.request_id, number, chunk)
    total_images = sum(len(r.urls) for r in rows)
    store.start_processing(job.request_id, Progress(len(rows), 0, total_images), NOW)


def ok_results(row: StoredRow) -> list[ImageResult]:
    return [
        ImageResult(url, output_key=f"outputs/{row.serial}/{i}.jpg")
        for i, url in enumerate(row.urls)
    ]
