"""Splitting a sequence into lists of a fixed size: a job's rows into the chunks the store
keeps them in (`Job.chunk_size`), messages into the batches a queue takes at once."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def chunks[T](items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Split an iterable into lists of at most `size` items."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
