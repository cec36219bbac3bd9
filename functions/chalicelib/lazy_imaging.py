"""Imaging's entry points for modules every function imports (the worker's service, which the
ingest, sweeper and dead-letter functions share): each imports `chalicelib.imaging`, and so
Pillow, simplejpeg and numpy, on its first call, not when the module that names it is
imported. The API and the light functions never call them and never load those libraries;
the worker imports imaging at init anyway (functions/handlers/worker.py), so its calls find
it loaded.

A name the worker's service takes from imaging is added here (tests/unit/test_cold_imports.py
fails when a light function loads Pillow, numpy or simplejpeg)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

IMAGING = "chalicelib.imaging"

if TYPE_CHECKING:  # the type checker sees imaging's own signatures
    from chalicelib.imaging import CompressOptions, compress, work_allowance
else:

    def _on_call(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            return getattr(importlib.import_module(IMAGING), name)(*args, **kwargs)

        call.__name__ = call.__qualname__ = name
        call.__doc__ = f"`{IMAGING}.{name}`, imported on the first call."
        return call

    CompressOptions = _on_call("CompressOptions")
    compress = _on_call("compress")
    work_allowance = _on_call("work_allowance")

__all__ = ["CompressOptions", "compress", "work_allowance"]
