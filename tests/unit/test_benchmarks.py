"""The benchmark corpus is deterministic and photo-like; the ratio arithmetic is right."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from benchmarks import __main__ as suite
from benchmarks import corpus, pipeline
from benchmarks.compressor import batches, paired_ratio, summed, throughput

SMALL = (
    corpus.Spec("t-jpeg", 96, 64, 7, "JPEG"),
    corpus.Spec("t-jpeg-2", 64, 96, 8, "JPEG"),
    corpus.Spec("t-png", 80, 60, 9, "PNG", alpha=True),
)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_same_spec_makes_the_same_bytes_twice() -> None:
    for spec in SMALL:
        assert digest(corpus.encode(spec)) == digest(corpus.encode(spec))


def test_another_seed_makes_another_image() -> None:
    a, b = SMALL[0], corpus.Spec("t-other", 96, 64, 70, "JPEG")
    assert digest(corpus.encode(a)) != digest(corpus.encode(b))


def test_images_are_photo_like_not_flat() -> None:
    image = corpus.photo_like(160, 120, 3)
    assert image.size == (160, 120) and image.mode == "RGB"
    pixels = np.asarray(image)
    for band in range(3):
        assert float(pixels[:, :, band].std()) > 8, "too flat to exercise a JPEG codec"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 5000


def test_build_writes_each_file_once_and_reuses_it(tmp_path: Path) -> None:
    first = corpus.build(tmp_path, SMALL)
    hashes = [digest(item.read()) for item in first]
    stamps = [item.path.stat().st_mtime_ns for item in first]
    again = corpus.build(tmp_path, SMALL)
    assert [digest(item.read()) for item in again] == hashes
    assert [item.path.stat().st_mtime_ns for item in again] == stamps
    for item in again:
        with Image.open(io.BytesIO(item.read())) as image:
            assert image.format == item.spec.fmt
            assert image.size == (item.spec.width, item.spec.height)
    assert Image.open(again[2].path).mode == "RGBA"


def test_a_damaged_cached_file_is_made_again(tmp_path: Path) -> None:
    (item,) = corpus.build(tmp_path, SMALL[:1])
    good = item.read()
    item.path.write_bytes(good[:100])
    (again,) = corpus.build(tmp_path, SMALL[:1])
    assert again.read() == good


def test_the_full_corpus_has_every_size_class() -> None:
    groups = {spec.group for spec in corpus.SPECS}
    assert groups == set(corpus.GROUPS)
    twelve = [s for s in corpus.SPECS if s.group == "12MP"]
    assert all(11.5 < s.megapixels < 12.5 for s in twelve)


def test_paired_ratio_is_the_median_of_per_round_ratios() -> None:
    # A does the work in half the time of B in every round, whatever the drift.
    a = [1.0, 2.0, 4.0, 1.5, 3.0]
    b = [2.0, 4.0, 8.0, 3.0, 6.0]
    assert paired_ratio(a, b) == pytest.approx(2.0)
    assert paired_ratio(b, a) == pytest.approx(0.5)
    # One disturbed round does not move the median.
    assert paired_ratio([1, 1, 1, 1, 10], [2, 2, 2, 2, 2]) == pytest.approx(2.0)


def test_paired_ratio_needs_matching_rounds() -> None:
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        paired_ratio([], [])


def test_summed_and_throughput() -> None:
    times = {"1MP": [1.0, 2.0, 3.0], "3MP": [0.5, 0.5, 0.5], "PNG": [9.0, 9.0, 9.0]}
    assert summed(times, ("1MP", "3MP")) == [1.5, 2.5, 3.5]
    assert throughput(10.0, [1.0, 4.0, 2.0]) == pytest.approx(5.0)


def test_batches_repeat_each_size_class() -> None:
    items = [corpus.Item(spec, Path(spec.filename)) for spec in corpus.SPECS]
    plan = batches(items, {"1MP": 2, "3MP": 1, "12MP": 3, "PNG": 1})
    assert len(plan["1MP"]) == 2 * sum(s.group == "1MP" for s in corpus.SPECS)
    assert len(plan["12MP"]) == 3 * sum(s.group == "12MP" for s in corpus.SPECS)
    assert all(items[i].spec.group == "PNG" for i in plan["PNG"])


def test_steal_is_read_from_proc_stat_where_there_is_one() -> None:
    stolen = pipeline.cpu_steal()
    if Path("/proc/stat").exists():
        assert stolen is not None and stolen >= 0
    else:
        assert stolen is None


def test_pipeline_ratio_is_the_median_of_paired_rounds() -> None:
    rounds = [pipeline.Round(bare=4.0, pipeline=5.0), pipeline.Round(bare=5.0, pipeline=5.0)]
    rounds.append(pipeline.Round(bare=3.0, pipeline=6.0))
    assert pipeline.paired_median(rounds) == 0.8
    with pytest.raises(ValueError):
        pipeline.paired_median([])


def _scale_result(rows: int, rss_mb: float, status_s: float) -> dict[str, object]:
    function = {"rss_peak": rss_mb * 2**20}
    status = [status_s, status_s]
    return {
        "rows": rows,
        **dict.fromkeys(suite.FUNCTIONS, function),
        "status_start": status,
        "status_middle": status,
        "status_end": status,
    }


def test_the_suite_judges_flat_memory_and_status_by_the_largest_size() -> None:
    flat = suite.scale_verdicts(
        [_scale_result(100_000, 130, 0.030), _scale_result(1_000, 120, 0.025)]
    )
    assert len(flat) == len(suite.FUNCTIONS) + 1
    assert all(line.endswith("PASS") for line in flat)
    assert "120 -> 130 MB (1,000 -> 100,000 rows)" in flat[0]
    grown = suite.scale_verdicts(
        [_scale_result(1_000, 120, 0.025), _scale_result(100_000, 400, 2.5)]
    )
    assert all(line.endswith("MISS") for line in grown)


def test_the_suite_keeps_the_target_lines_of_each_benchmark() -> None:
    lines = [
        "round 1/7: bare 5.00s",
        "  ours (optimize=False) vs simplejpeg, JPEG, equal settings   0.960 >= 0.95  PASS",
        "  ours as shipped vs sharp, all, equal bytes                  1.050 >= 1.10  FAIL",
        "RATIO pipeline/bare = 0.885 (median of 7 paired rounds); meets the 0.85 target",
        "load average 2.40 1.40 1.47 at end",
        "  FAILED is not a word the suite looks for",
    ]
    assert suite.verdicts(lines) == [lines[1].strip(), lines[2].strip(), lines[3]]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_pool_process_ends_when_the_benchmark_is_killed(tmp_path: Path) -> None:
    """A parent asks for a child that calls die_with_parent, then is killed: the child goes."""
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', "
            "'import sys, time; sys.path.insert(0, sys.argv[1]); "
            "from benchmarks._parent import die_with_parent; "
            "assert die_with_parent(); "
            'open(sys.argv[2], "w").write("ready"); time.sleep(60)\', '
            f"{str(Path(__file__).resolve().parents[2])!r}, {str(pid_file)!r}])\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pid_file.exists()
    parent.kill()
    parent.wait()
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(child, signal.SIGKILL)
    raise AssertionError("the child outlived its killed parent")


# ------------------------------------------------------------------ cold starts


def _fake_bundle(root: Path, handler_body: str = "") -> Path:
    """A bundle with what the cold-start child needs: a handler module, a wiring module with
    dependencies(), and a stand-in boto3."""
    (root / "chalicelib").mkdir(parents=True)
    (root / "boto3").mkdir()
    (root / "chalicelib" / "__init__.py").write_text("")
    (root / "chalicelib" / "bootstrap.py").write_text(
        "import json\ndef dependencies():\n    return json.dumps({})\n"
    )
    (root / "boto3" / "__init__.py").write_text(
        "class _Session:\n    def client(self, name):\n        return name\n"
        "class session:\n    Session = _Session\n"
    )
    (root / "fake_app.py").write_text(f"{handler_body}\ndef handler(event, context):\n    pass\n")
    return root


def test_a_cold_start_sees_only_its_bundle(tmp_path: Path) -> None:
    from benchmarks.cold_start import time_imports

    bundle = _fake_bundle(tmp_path / "ok", "import decimal")
    timing = time_imports([bundle], "fake_app.handler", ("fractions",), runs=2)
    assert timing.runs == 2 and timing.handler_import > 0 and timing.first_invocation > 0
    assert timing.total == timing.handler_import + timing.first_invocation
    assert {"fake_app", "decimal", "fractions", "chalicelib", "boto3"} <= set(timing.modules)
    # yaml is installed here, not in the bundle: the handler cannot import it
    lacking = _fake_bundle(tmp_path / "lacking", "import yaml")
    with pytest.raises(RuntimeError, match="No module named 'yaml'"):
        time_imports([lacking], "fake_app.handler", runs=1)


def _row(function: str, arm64: float | None, heavy: tuple[str, ...] = (), error: str = "") -> Any:
    from benchmarks.cold_start import Row, Timing

    timing = None if error else Timing(0.2, 0.3, 3, ("boto3", *heavy))
    return Row(function, arm64, 40.0, timing, error)


def test_the_cold_start_targets_are_ratios_with_verdicts() -> None:
    from benchmarks.cold_start import describe, verdicts

    lines = verdicts(
        [
            _row("ApiFunction", 42.0),
            _row("WorkerFunction", 131.0, ("PIL", "numpy")),
            _row("IngestFunction", None, ("PIL",)),
            _row("SweepFunction", 40.0, error="ModuleNotFoundError: No module named 'PIL'"),
        ]
    )
    assert "ApiFunction unzipped 42.0 MiB (arm64) / target 80 MiB = 0.53 <= 1  PASS" in lines
    assert "ApiFunction loads no PIL/numpy/simplejpeg: none loaded  PASS" in lines
    assert "WorkerFunction unzipped 131.0 MiB (arm64) / target 130 MiB = 1.01 <= 1  MISS" in lines
    assert not [line for line in lines if line.startswith("WorkerFunction loads")]
    assert "IngestFunction loads no PIL/numpy/simplejpeg: PIL  MISS" in lines
    assert any(
        line.startswith("IngestFunction unzipped 40.0 MiB (x86_64 here, no arm64 build)")
        for line in lines
    )
    assert "SweepFunction bundle imports its handler  FAIL (ModuleNotFoundError" in lines[-1]
    assert suite.verdicts(lines) == lines  # the suite keeps every one
    assert "import   200 ms + first invocation   300 ms =   500 ms (median of 3)" in describe(
        _row("ApiFunction", 42.0)
    )
    assert "no arm64 build" in describe(_row("ApiFunction", None))


def test_the_suite_runs_the_cold_start_benchmark(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[tuple[str, list[str]]] = []

    def run(module: str, args: list[str], env: Any = None) -> list[str]:
        ran.append((module, list(args)))
        return [f"{module} target  PASS"]

    monkeypatch.setattr(suite, "run", run)
    monkeypatch.setattr(suite, "scale", lambda rows, env=None: [])
    assert suite.main(["--quick"]) == 0
    assert ("benchmarks.cold_start", ["--quick"]) in ran
