"""WorkerFunction's handler (template.yaml: `handlers.worker.process_rows`): app's own, with
imaging imported at init as well (Pillow, simplejpeg, numpy), so that a SnapStart snapshot
holds them and the first batch imports nothing. No other function imports them: their
handlers are app's (`app.<name>`), and the worker's service reaches imaging through
chalicelib.lazy_imaging."""

from __future__ import annotations

import chalicelib.imaging  # noqa: F401 (imported for the import: the worker's init)
from app import process_rows

__all__ = ["process_rows"]
