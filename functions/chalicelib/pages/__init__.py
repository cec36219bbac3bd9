"""The HTML pages the API serves: the docs page (`/api-docs`, docs_page.py) and the watch page
(`/`, watch_page.py). Their files are in chalicelib/web (the API's bundle alone carries it)."""

from __future__ import annotations

from pathlib import Path

WEB = Path(__file__).resolve().parent.parent / "web"
