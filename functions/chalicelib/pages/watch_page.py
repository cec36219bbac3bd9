"""The watch page at `/` (web/index.html): upload a CSV straight to storage through the
presigned POST, then watch the job's progress and each image before and after."""

from __future__ import annotations

from functools import cache

from chalicelib.pages import WEB


@cache
def watch_page() -> str:
    """The watch page: upload through the presigned POST, then progress and before/after."""
    return (WEB / "index.html").read_text(encoding="utf-8")
