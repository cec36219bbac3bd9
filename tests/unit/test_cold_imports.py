"""What each function imports at init: its handler module, as template.yaml names it, imported
in a fresh interpreter that sees functions/ first (as Lambda's runtime does).

- Only the worker loads the imaging libraries (Pillow, numpy, simplejpeg): the API and the
  light functions never use them, and they were most of a cold start's imports.
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
from chalicelib import imaging, lazy_imaging

from infra.cfn_yaml import load_template

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "functions"
IMAGING_LIBRARIES = {"PIL", "numpy", "simplejpeg"}
WIRING_LIBRARIES = {"boto3", "botocore", "pymongo", "requests"}
WITH_IMAGING = {"WorkerFunction"}

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
    watched = json.dumps(sorted(IMAGING_LIBRARIES | WIRING_LIBRARIES))
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
    if logical_id in WITH_IMAGING:
        assert loaded >= IMAGING_LIBRARIES, f"{logical_id} imports imaging on its first batch"
    else:
        assert not loaded & IMAGING_LIBRARIES, f"{logical_id} loads {loaded & IMAGING_LIBRARIES}"
    assert loaded >= WIRING_LIBRARIES, f"{logical_id} leaves {WIRING_LIBRARIES - loaded}"
    assert init["threads"] == ["MainThread"]  # a pymongo client would have started monitors
    assert init["sockets"] == 0
    assert not init["wired"]


def test_the_light_imaging_names_are_imagings() -> None:
    """The worker's service takes imaging's names from chalicelib.lazy_imaging: each is the
    same callable, imported on its first call."""
    for name in lazy_imaging.__all__:
        assert callable(getattr(imaging, name)), name
        assert getattr(lazy_imaging, name).__name__ == name
    options = lazy_imaging.CompressOptions(quality=61)
    assert isinstance(options, imaging.CompressOptions)
    assert options == imaging.CompressOptions(quality=61)
    assert lazy_imaging.work_allowance(4_000_000) == imaging.work_allowance(4_000_000)
