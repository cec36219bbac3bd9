"""moto's S3 objects kept on disk, as S3 keeps them: every object is a file under
`DIR/objects/<bucket>/` (named by the SHA-256 of its key; a JSON header line with its key,
metadata and dates, then its bytes), written before the call that stored it returns, so a
PUT, a POST upload, a copy or an in-process put the stack acknowledged survives the stack
being killed. A start reads them back into moto, without storage events.

The hooks sit on moto's S3 backend (every way in: its HTTP server and the functions'
in-process adapters) and do nothing until a `KeptObjects` is active:
- `put_object` (PUT, POST, copy, multipart completion): the object's file, written before the
  storage event goes out (an event never names an object the disk lacks) or, for a bucket
  without events, when moto has stored it;
- `FakeKey.set_metadata` (moto sets an object's Content-Type and Cache-Control after storing
  it): the file again, when its header changed;
- `delete_object` (DELETE, DeleteObjects): the file removed.

Inside `one_write` (the functions' in-process put; every request to the storage endpoint,
through `OneWritePerRequest`) these writes wait for the end of the block, so an object stored
and then given its headers is written once, before the call answers. Writing a file costs
about its creation (docs/performance.md, *Keeping the stack*).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from local_emulator.provision import ACCOUNT_ID

STRIPES = 64
SUFFIX = ".obj"


class _Hooks:
    """The hooks' state, one per process: installed once, active while a stack keeps."""

    active: KeptObjects | None = None
    deferred = threading.local()  # one_write's keys, in the thread that opened it
    installed = False
    lock = threading.Lock()


def _backend() -> Any:
    from moto.s3.models import s3_backends

    return s3_backends[ACCOUNT_ID]["aws"]


def _current(backend: Any, bucket_name: str, key_name: str) -> Any:
    """The object now stored under this key, None when there is none (or a delete marker)."""
    from moto.s3.models import FakeKey

    bucket = backend.buckets.get(bucket_name)
    if bucket is None:
        return None
    found = bucket.keys.get(key_name)
    return found if isinstance(found, FakeKey) else None


def _header(key: Any) -> str:
    header: dict[str, Any] = {
        "key": key.name,
        "metadata": dict(key.metadata),
        "lastModified": key.last_modified.isoformat(),
        "storageClass": key.storage_class,
    }
    etag = getattr(key, "_etag", None)
    if etag and "-" in etag:  # a multipart ETag: not the MD5 a restore would compute
        header["etag"] = etag
    return json.dumps(header, sort_keys=True, separators=(",", ":"))


@contextlib.contextmanager
def one_write() -> Iterator[None]:
    """Calls that store an object and then set its headers (the functions' in-process put)
    write its file once, when the block ends, instead of once per call; an object whose
    storage event goes out inside the block is still written before the event."""
    kept = _Hooks.active
    if kept is None or getattr(_Hooks.deferred, "keys", None) is not None:
        yield
        return
    keys: dict[tuple[int, str, str], Any] = {}
    _Hooks.deferred.keys = keys
    try:
        yield
    finally:
        _Hooks.deferred.keys = None
        for (_, bucket, key), backend in keys.items():
            kept.sync(backend, bucket, key)


class OneWritePerRequest:
    """A WSGI layer: each request to moto writes an object's file once (`one_write`), when
    moto has answered and before the answer is sent (a PUT stores, then sets headers)."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    def __call__(self, environ: Any, start_response: Any) -> Any:
        with one_write():
            return self.app(environ, start_response)


def _sync_or_defer(kept: KeptObjects, backend: Any, bucket: str, key: str) -> None:
    deferred: dict[tuple[int, str, str], Any] | None = getattr(_Hooks.deferred, "keys", None)
    if deferred is None:
        kept.sync(backend, bucket, key)
    else:
        deferred[(id(backend), bucket, key)] = backend


class KeptObjects:
    """Every object of moto's S3, one file each under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._stripes = [threading.Lock() for _ in range(STRIPES)]
        self._made: set[str] = set()  # directories known to exist

    def sync(self, backend: Any, bucket_name: str, key_name: str) -> None:
        """The file of this key as moto holds it now: written, or removed when it is gone."""
        digest = hashlib.sha256(key_name.encode("utf-8", "surrogatepass")).hexdigest()
        folder = os.path.join(self.root, bucket_name, digest[:2])
        path = os.path.join(folder, digest + SUFFIX)
        with self._stripes[int(digest[:8], 16) % STRIPES]:
            key = _current(backend, bucket_name, key_name)
            if key is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                return
            header = _header(key)
            if getattr(key, "_kept_as", None) == header:
                return
            if folder not in self._made:
                os.makedirs(folder, exist_ok=True)
                self._made.add(folder)
            temporary = f"{path}.tmp{threading.get_ident()}"
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"".join((header.encode(), b"\n", key.value)))
            finally:
                os.close(fd)
            os.replace(temporary, path)
            key._kept_as = header

    def restore(self, warn: Callable[[str], None]) -> int:
        """Every kept object back into moto (no storage event); the count restored."""
        if not self.root.is_dir():
            return 0
        backend = _backend()
        restored = 0
        for bucket_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            files = sorted(bucket_dir.glob(f"*/*{SUFFIX}*"))
            if bucket_dir.name not in backend.buckets:
                warn(
                    f"data-dir: {len(files)} object(s) of bucket {bucket_dir.name}, which the "
                    "template no longer makes, are left on disk"
                )
                continue
            for path in files:
                if not path.name.endswith(SUFFIX):  # a write cut short: never acknowledged
                    path.unlink(missing_ok=True)
                    continue
                try:
                    self._restore_one(backend, bucket_dir.name, path)
                except (ValueError, KeyError, TypeError) as exc:
                    warn(f"data-dir: {path} is not an object this stack wrote ({exc}); skipped")
                    continue
                restored += 1
        return restored

    @staticmethod
    def _restore_one(backend: Any, bucket: str, path: Path) -> None:
        raw = path.read_bytes()
        line, _, data = raw.partition(b"\n")
        header = json.loads(line)
        key = backend.put_object(
            bucket,
            header["key"],
            data,
            storage=header.get("storageClass"),
            etag=header.get("etag"),
            disable_notification=True,
        )
        key.set_metadata(dict(header.get("metadata", {})))
        key.last_modified = datetime.datetime.fromisoformat(header["lastModified"])
        key._kept_as = _header(key)

    def activate(self) -> None:
        _install()
        _Hooks.active = self

    def deactivate(self) -> None:
        if _Hooks.active is self:
            _Hooks.active = None


def _install() -> None:
    """The hooks on moto's S3, once per process."""
    with _Hooks.lock:
        if _Hooks.installed:
            return
        from moto.s3 import models, notifications

        put_object = models.S3Backend.put_object
        delete_object = models.S3Backend.delete_object
        set_metadata = models.FakeKey.set_metadata
        send_event = notifications.send_event

        def kept_put_object(
            backend: Any, bucket_name: str, key_name: str, *a: Any, **k: Any
        ) -> Any:
            stored = put_object(backend, bucket_name, key_name, *a, **k)
            kept = _Hooks.active
            if kept is not None:
                _sync_or_defer(kept, backend, bucket_name, key_name)
            return stored

        def kept_delete_object(
            backend: Any, bucket_name: str, key_name: str, *a: Any, **k: Any
        ) -> Any:
            answer = delete_object(backend, bucket_name, key_name, *a, **k)
            kept = _Hooks.active
            if kept is not None:
                kept.sync(backend, bucket_name, key_name)
            return answer

        def kept_set_metadata(key: Any, *a: Any, **k: Any) -> None:
            set_metadata(key, *a, **k)
            kept = _Hooks.active
            if kept is None or not key.bucket_name:
                return
            backend = models.s3_backends[key.account_id][key.partition]
            if getattr(_Hooks.deferred, "keys", None) is not None:
                _sync_or_defer(kept, backend, key.bucket_name, key.name)
            elif hasattr(key, "_kept_as"):
                kept.sync(backend, key.bucket_name, key.name)

        def kept_send_event(account_id: str, event_name: Any, bucket: Any, key: Any) -> None:
            kept = _Hooks.active
            if (
                kept is not None
                and bucket.notification_configuration is not None
                and str(getattr(event_name, "value", event_name)).startswith("s3:ObjectCreated")
                and key is not None
            ):
                kept.sync(models.s3_backends[account_id][key.partition], bucket.name, key.name)
            send_event(account_id, event_name, bucket, key)

        models.S3Backend.put_object = kept_put_object  # type: ignore[method-assign, assignment]
        models.S3Backend.delete_object = kept_delete_object  # type: ignore[method-assign, assignment]
        models.FakeKey.set_metadata = kept_set_metadata  # type: ignore[method-assign, assignment]
        notifications.send_event = kept_send_event
        _Hooks.installed = True
