"""Work not done twice (domain/reuse.py has the rule): before compressing an image, look its
content address up among the tenant's outputs; when the same image was made before, copy that
output in the store (no decode, no encode) to this job's key, which also makes a fresh copy for
the retention to count from. The newest copy is remembered each time."""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from chalicelib import observability
from chalicelib.domain.reuse import ReusableOutput, content_address
from chalicelib.services.deps import Dependencies

if TYPE_CHECKING:  # the light functions never load imaging
    from chalicelib.imaging import CompressOptions

log = logging.getLogger(__name__)
# Bumped when our own encoding changes in a way the library versions do not show.
PIPELINE_ENCODING = 2


@functools.cache
def encoder_version() -> str:
    """What makes two outputs of the same bytes and options differ: our encoding and the
    codecs' versions."""
    import PIL  # noqa: PLC0415 (the worker's only: the API never imports Pillow for this)
    from PIL import features  # noqa: PLC0415

    codecs = ",".join(f"{name}={features.version(name) or '-'}" for name in ("jpg", "webp", "avif"))
    return f"pipeline={PIPELINE_ENCODING};pillow={PIL.__version__};{codecs}"


def encoding(options: CompressOptions) -> dict[str, object]:
    """What decides an output besides its source and the encoder: everything the compressor
    is asked but its pixel cap (which only decides whether an image is refused). The quality
    is the one used (OUTPUT_QUALITY or the format's default when the job names none), so a
    changed setting makes new outputs rather than copying old ones. An `auto` output is
    keyed by its target and the metric's and search's version as well (a fixed quality's
    keys stay as they were)."""
    shape: dict[str, object] = {
        "format": str(options.format),
        "quality": options.quality,
        "maxWidth": options.max_width,
        "maxHeight": options.max_height,
        "optimize": options.optimize,
    }
    if options.target_score is not None:
        from chalicelib.quality_search import AUTO_SEARCH_VERSION  # noqa: PLC0415 (worker's)

        shape["auto"] = {"targetScore": options.target_score, "search": AUTO_SEARCH_VERSION}
    return shape


def address(deps: Dependencies, tenant: str, options: CompressOptions, data: bytes) -> str | None:
    """The image's content address among the tenant's outputs; None when it has no reuse key
    (no tenant record, or a message from before tenants).

    The address (`domain/reuse.py:content_address`) is an HMAC-SHA256 under the tenant's own
    reuse key of the encoder's version, every output option as used (format, quality, box)
    and the downloaded bytes: the same image asked for the same output by the same tenant,
    and nothing else, finds an earlier output; another tenant never can."""
    if not tenant:
        return None
    key = _tenant_key(deps, tenant)
    if key is None:
        return None
    return content_address(key, encoder_version(), encoding(options), data)


_KEYS: dict[tuple[int, str], str] = {}  # per container: a tenant's key never changes
_KEYS_LOCK = threading.Lock()  # a new tenant's images ask at once: one of them reads it


def forget_reuse_keys() -> None:
    """Read each tenant's key again on next use (a SnapStart restore:
    chalicelib/snapshot_hooks.py)."""
    _KEYS.clear()


def _tenant_key(deps: Dependencies, tenant: str) -> str | None:
    cached = _KEYS.get((id(deps.reuse), tenant))
    if cached is not None:
        return cached
    with _KEYS_LOCK:
        cached = _KEYS.get((id(deps.reuse), tenant))
        if cached is None:
            cached = deps.reuse.reuse_key(tenant)
            if cached is not None:
                _KEYS[(id(deps.reuse), tenant)] = cached
    return cached


class Pending:
    """The newest copies of a worker's batch, remembered together at its end (`flush`): one
    store call for the batch's images, not one per image (on the embedded MongoDB each call cost the
    pipeline benchmark speed; docs/performance.md). A copy not remembered (the invocation
    ended first, or the write failed) is only made again the next time: the index is a saving,
    never the truth about an output."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[tuple[str, str, ReusableOutput]] = []

    def add(self, tenant: str, where: str, output: ReusableOutput) -> None:
        with self._lock:
            self._entries.append((tenant, where, output))

    def flush(self, deps: Dependencies) -> None:
        with self._lock:
            entries, self._entries = self._entries, []
        if not entries:
            return
        try:
            deps.reuse.remember_all(entries)
        except Exception:
            log.exception("could not remember %d output(s) for reuse", len(entries))


def reuse(
    deps: Dependencies, tenant: str, where: str | None, key: str, pending: Pending
) -> ReusableOutput | None:
    """Copy the tenant's earlier output of this content to `key`: the copy (its size, and
    for `auto` the quality and score of the output it copies), or None when there is none to
    copy (never made, or expired or deleted since)."""
    if where is None:
        return None
    found = deps.reuse.find(tenant, where)
    if found is None or not deps.outputs.copy(found.key, key):
        return None
    copied = replace(found, key=key)
    pending.add(tenant, where, copied)
    observability.record_reused_image()
    return copied


def remember(tenant: str, where: str | None, output: ReusableOutput, pending: Pending) -> None:
    if where is not None:
        pending.add(tenant, where, output)
