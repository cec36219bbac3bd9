"""WorkerFunction's handler (template.yaml: `handlers.worker.process_rows`): app's own, with
the worker's batch run imported at init as well (services/rows_batch.py, and through one
image's work, services/one_image.py, imaging: Pillow, simplejpeg, numpy), so that a SnapStart
snapshot holds them and the first batch imports nothing. No other function imports them:
their handlers are app's (`app.<name>`), whose queue glue imports the batch run only when a
rows batch arrives."""

from __future__ import annotations

import chalicelib.services.rows_batch  # noqa: F401 (imported for the import: the worker's init)
from app import process_rows

__all__ = ["process_rows"]
