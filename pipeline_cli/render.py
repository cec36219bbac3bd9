"""What the CLI prints: API errors with their line and column, the status and the list of
jobs as tables."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline_cli.client import ApiError, KeyRefused


def detail_line(detail: Any) -> str:
    if not isinstance(detail, Mapping):
        return json.dumps(detail)
    message = str(detail.get("message", ""))
    where = []
    if "row" in detail:
        where.append(f"line {detail['row']}")
    if detail.get("column") not in (None, ""):
        where.append(f"column {detail['column']!s}")
    if "field" in detail and not where:
        where.append(str(detail["field"]))
    rest = {k: v for k, v in detail.items() if k not in {"row", "column", "message", "field"}}
    text = ", ".join(where)
    if message:
        text = f"{text}: {message}" if text else message
    if rest:
        text = f"{text} {json.dumps(rest)}" if text else json.dumps(rest)
    return text


def error_lines(error: ApiError) -> list[str]:
    head = f"error: {error.message}"
    if error.status is not None:
        head += f" (HTTP {error.status})"
    if error.retry_after is not None:
        head += f"; retry after {error.retry_after:g}s"
    return [head] + [f"  {detail_line(d)}" for d in error.details]


def key_refused_line(error: KeyRefused, key_env: str) -> str:
    """A 401 in one line that says what to do; never the key itself."""
    if error.key_sent:
        return (
            f"error: the API refused the API key (HTTP 401): pass a valid one with "
            f"--api-key, set {key_env} or run 'image-pipeline configure'"
        )
    return (
        f"error: this API needs an API key (HTTP 401): pass --api-key, set {key_env} "
        "or run 'image-pipeline configure'"
    )


def key_label(key: str) -> str:
    """A key as it may be shown: its public prefix (`ipk_<id>_…`), never its secret part;
    a key of another form shows its first 4 characters at most."""
    match = re.match(r"^(ipk_[a-z0-9]{12}_)", key)
    if match:
        return match.group(1) + "…"
    return key[: min(4, len(key) // 4)] + "…"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*header).rstrip(), fmt.format(*("-" * w for w in widths))] + [
        fmt.format(*row).rstrip() for row in rows
    ]


def jobs_lines(listing: Mapping[str, Any]) -> list[str]:
    """`GET /api/jobs` as a table, newest first, with the cursor of the next page."""
    jobs: Sequence[Mapping[str, Any]] = listing.get("jobs") or []
    if not jobs:
        lines = ["no jobs"]
    else:
        rows = []
        for job in jobs:
            progress: Mapping[str, Any] = job.get("progress") or {}
            rows.append(
                [
                    str(job.get("requestId", "")),
                    str(job.get("status", "")),
                    f"{progress.get('processedImages', 0)}/{progress.get('totalImages', 0)}",
                    str(progress.get("failedImages", 0)),
                    f"{progress.get('percent', 0)}%",
                    str(job.get("createdAt", "")),
                ]
            )
        lines = _table(["Job", "Status", "Images", "Failed", "Done", "Created"], rows)
    if listing.get("nextCursor"):
        lines.append(f"(more jobs: --cursor {listing['nextCursor']})")
    return lines


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def options_text(options: Any) -> str:
    """A job's output options in a few words ("" for the defaults: JPEG, same size)."""
    if not isinstance(options, Mapping):
        return ""
    words = []
    fmt = options.get("format")
    if fmt and (fmt != "jpeg" or options.get("quality") is not None):
        words.append(str(fmt))
    if options.get("quality") is not None:
        words.append(f"quality {options['quality']}")
    if options.get("targetScore") is not None:
        words.append(f"target score {options['targetScore']}")
    width, height = options.get("maxWidth"), options.get("maxHeight")
    if width is not None or height is not None:
        words.append(f"fit {width or '-'}x{height or '-'}")
    return ", ".join(words)


def status_lines(document: Mapping[str, Any]) -> list[str]:
    progress: Mapping[str, Any] = document.get("progress") or {}
    webhook: Mapping[str, Any] = document.get("webhook") or {}
    lines = [
        f"job        {document.get('requestId')}",
        f"status     {document.get('status')}",
        f"created    {document.get('createdAt')}",
        f"updated    {document.get('updatedAt')}",
        f"products   {progress.get('processedProducts', 0)}/{progress.get('totalProducts', 0)}",
        f"images     {progress.get('processedImages', 0)}/{progress.get('totalImages', 0)}"
        f" ({progress.get('failedImages', 0)} failed, {progress.get('percent', 0)}%)",
    ]
    options = options_text(document.get("options"))
    if options:
        lines.append(f"options    {options}")
    if document.get("outputCsvUrl"):
        lines.append(f"output     {document['outputCsvUrl']}")
    if webhook and webhook.get("state") not in (None, "none"):
        last = webhook.get("lastStatusCode")
        lines.append(
            f"webhook    {webhook.get('state')}, {webhook.get('attempts', 0)} attempt(s)"
            + (f", last answer {last}" if last is not None else "")
        )
    for error in document.get("errors") or []:
        lines.append(f"error      {detail_line(error)}")
    products: Sequence[Mapping[str, Any]] = document.get("products") or []
    if products:
        rows = [
            [
                str(p.get("serialNumber", "")),
                _short(str(p.get("productName", ""))),
                str(p.get("status", "")),
                str(len(p.get("inputImageUrls") or [])),
                str(len(p.get("errors") or [])),
            ]
            for p in products
        ]
        lines += ["", *_table(["S. No.", "Product", "Status", "Images", "Failed"], rows)]
    failures = [(p, e) for p in products for e in (p.get("errors") or [])]
    if failures:
        lines += ["", "failed images:"]
        lines += [
            f"  #{p.get('serialNumber')} {e.get('url')}: {e.get('code')}: {e.get('message')}"
            for p, e in failures
        ]
    if document.get("nextCursor"):
        lines.append(f"(more products: --cursor {document['nextCursor']})")
    return lines
