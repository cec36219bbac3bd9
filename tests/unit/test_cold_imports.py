"""What each function imports at init: its handler module, as template.yaml names it, imported
in a fresh interpreter that sees functions/ first (as Lambda's runtime does).

- Only the worker loads the imaging libraries (Pillow, numpy, simplejpeg, the HEIF and JPEG XL
  decoders, whose Pillow openers imaging registers at import) and the batch run
  that uses them (services/rows_batch.py, services/one_image.py): the API and the light
  functions never use them, and they were most of a cold start's imports. The worker's light
  parts, which those functions share (row messages, row records, the cancel watch), import
  without them.
- Every function loads the wiring's libraries (boto3, botocore, pymongo, requests) at init, so
  that a SnapStart snapshot holds them and a first invocation imports nothing more.
- Nothing is built at init: no client, no connection (no socket), no thread, no wiring."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.cfn_yaml import load_template

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "functions"
IMAGING_LIBRARIES = {"PIL", "numpy", "simplejpeg", "pi_heif", "pillow_jxl"}
WIRING_LIBRARIES = {"boto3", "botocore", "pymongo", "requests"}
WORKER_MODULES = {"chalicelib.services.rows_batch", "chalicelib.services.one_image"}
WITH_IMAGING = {"WorkerFunction"}
LIGHT_MODULES = [
    "chalicelib.services.row_messages",
    "chalicelib.services.row_records",
    "chalicelib.services.cancel_watch",
    "chalicelib.services.job_url_cache",
    "chalicelib.services.reuse",
    "chalicelib.services.ingest",
    "chalicelib.services.sweeper",
    "chalicelib.entrypoints.queue_handlers",
]

PROBE = """
import gc, importlib, json, socket, sys, threading
sys.path.insert(0, sys.argv[1])
module, _, attribute = sys.argv[2].rpartition(".")
handler = getattr(importlib.import_module(module), attribute)
from chalicelib import bootstrap
print(json.dumps({
    "callable": callable(handler),
    "loaded": sorted(name for name in json.loads(sys.argv[3]) if name in sys.modules),
    "threads": [thread.name for thread in threading.enumerate()],
    "sockets": sum(isinstance(o, socket.socket) for o in gc.get_objects()),
    "wired": bootstrap._deps is not None,
}))
"""


def _handlers() -> dict[str, str]:
    resources = load_template(ROOT / "template.yaml")["Resources"]
    return {
        logical_id: str(resource["Properties"]["Handler"])
        for logical_id, resource in resources.items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


HANDLERS = _handlers()


def init_of(handler: str) -> dict[str, Any]:
    """What importing `handler` did, in a fresh interpreter."""
    watched = json.dumps(sorted(IMAGING_LIBRARIES | WIRING_LIBRARIES | WORKER_MODULES))
    answer = subprocess.run(
        [sys.executable, "-c", PROBE, str(FUNCTIONS), handler, watched],
        capture_output=True,
        text=True,
        cwd=FUNCTIONS,
        timeout=120,
        check=False,
    )
    assert answer.returncode == 0, answer.stderr
    return json.loads(answer.stdout)  # type: ignore[no-any-return]


def test_every_function_is_probed() -> None:
    assert set(HANDLERS) >= {"ApiFunction", "AuthorizerFunction", *WITH_IMAGING}


@pytest.mark.parametrize("logical_id", sorted(HANDLERS))
def test_a_function_imports_what_it_uses_at_init_and_builds_nothing(logical_id: str) -> None:
    init = init_of(HANDLERS[logical_id])
    assert init["callable"]
    loaded = set(init["loaded"])
    heavy = IMAGING_LIBRARIES | WORKER_MODULES
    if logical_id in WITH_IMAGING:
        assert loaded >= heavy, f"{logical_id} imports {heavy - loaded} on its first batch"
    else:
        assert not loaded & heavy, f"{logical_id} loads {loaded & heavy}"
    assert loaded >= WIRING_LIBRARIES, f"{logical_id} leaves {WIRING_LIBRARIES - loaded}"
    assert init["threads"] == ["MainThread"]  # a pymongo client would have started monitors
    assert init["sockets"] == 0
    assert not init["wired"]


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_the_worker_s_light_parts_import_without_imaging(module: str) -> None:
    """What the API, the ingest, the sweeper and the dead-letter function share with the
    worker imports neither imaging nor the batch run (which the queue glue imports only when
    a rows batch arrives)."""
    loaded = set(init_of(f"{module}.__name__")["loaded"])
    assert not loaded & (IMAGING_LIBRARIES | WORKER_MODULES), f"{module} loads {loaded}"


def test_the_batch_run_brings_imaging() -> None:
    """The probe sees imaging when it is there: the batch run's import loads it."""
    loaded = set(init_of("chalicelib.services.rows_batch.process_rows")["loaded"])
    assert loaded >= IMAGING_LIBRARIES | WORKER_MODULES
