"""The benchmark corpus is deterministic and photo-like; the ratio arithmetic is right."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
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
from benchmarks import corpus, format_defaults, formats, pipeline, ssim
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


def test_the_suite_keeps_the_ratio_lines_of_the_formats_benchmark() -> None:
    lines = [
        "targets",
        "  webp: ours vs sharp's default effort, equal bytes      1.200 >= 1.00  PASS",
        "  RATIO webp bytes at the SSIM of sharp's defaults, ours/sharp = 0.950 (no target)",
        "  a RATIO in the middle of a line is not one",
    ]
    assert suite.verdicts(lines) == [lines[1].strip(), lines[2].strip()]


# -- output formats: SSIM, the searches, the defaults' rule, tiny runs -------------------------


def test_ssim_is_one_for_the_same_image_and_falls_with_noise() -> None:
    image = corpus.photo_like(64, 40, 5)
    assert ssim.ssim(image, image) == pytest.approx(1.0)
    plane = ssim.luma(image)
    rng = np.random.default_rng(1)
    slightly = ssim.ssim_planes(plane, plane + rng.normal(0, 2, plane.shape))
    badly = ssim.ssim_planes(plane, plane + rng.normal(0, 20, plane.shape))
    assert 1.0 > slightly > badly > 0.0
    with pytest.raises(ValueError):
        ssim.ssim(image, image.resize((32, 20)))


def test_ssim_in_bands_is_the_ssim_of_the_whole_window_map(monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the formula computed at once in float64 with a 2-D window (the map's mean)."""
    rng = np.random.default_rng(2)
    x = ssim.luma(corpus.photo_like(40, 70, 6))
    y = x + rng.normal(0, 8, x.shape)
    weights = ssim._window()
    window = np.outer(weights, weights)
    views = np.lib.stride_tricks.sliding_window_view

    def blur(p: np.ndarray) -> np.ndarray:
        return np.einsum("ijkl,kl->ij", views(p, window.shape), window)

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    index = ((2 * mx * my + ssim.C1) * (2 * cov + ssim.C2)) / (
        (mx * mx + my * my + ssim.C1) * (vx + vy + ssim.C2)
    )
    monkeypatch.setattr(ssim, "_BAND", 16)  # several bands, the last one short
    assert ssim.ssim_planes(x, y) == pytest.approx(float(index.mean()), abs=1e-6)


def test_calibrate_finds_the_quality_of_the_closest_bytes() -> None:
    def bytes_at(quality: int) -> int:
        return 100 * quality + (quality * quality) // 3

    assert formats.calibrate(bytes_at, bytes_at(37)) == 37
    assert formats.calibrate(bytes_at, bytes_at(37) + 40) == 37
    assert formats.calibrate(bytes_at, bytes_at(38) - 10) == 38
    assert formats.calibrate(bytes_at, 0) == 1
    assert formats.calibrate(bytes_at, 10**9) == 100


def test_equal_ssim_interpolates_quality_and_bytes_between_the_two_around_it() -> None:
    def measure(quality: int) -> tuple[int, float]:
        return 1000 * quality, 0.5 + quality / 200  # SSIM 0.5 at q0 to 1.0 at q100

    found = formats.at_equal_ssim(measure, 0.8025)
    assert found is not None
    assert found.quality == pytest.approx(60.5)
    assert found.size == pytest.approx(60_500)
    assert formats.at_equal_ssim(measure, 1.5) is None


def _rows(*table: tuple[str, int, int, int, float, float]) -> list[Any]:
    """Rows of (format, quality, effort, bytes, SSIM, CPU ms/MP); the worst image 1.2x."""
    return [
        format_defaults.Row(format_defaults.Setting(f, q, e), size, score, ms, ms * 1.2, "img")
        for f, q, e, size, score, ms in table
    ]


def test_the_defaults_rule_takes_the_fastest_effort_near_the_fewest_bytes() -> None:
    rows = _rows(
        ("jpeg", 50, 0, 1000, 0.90, 50),
        # effort 6: fewest bytes, slow; effort 8: 2% more, 4x faster; effort 10: 10% more
        ("avif", 40, 6, 500, 0.88, 800),
        ("avif", 50, 6, 700, 0.92, 900),
        ("avif", 40, 8, 510, 0.88, 200),
        ("avif", 50, 8, 714, 0.92, 220),
        ("avif", 40, 10, 550, 0.88, 100),
        ("avif", 50, 10, 770, 0.92, 110),
    )
    choice = format_defaults.choose(rows, "avif", (6, 8, 10))
    assert choice is not None
    assert (choice.effort, choice.quality) == (8, 45)  # SSIM 0.90 half way from q40 to q50
    assert choice.seconds_per_megapixel == pytest.approx(0.34)  # 220 * 1.2 ms, JPEG's margin


def test_the_defaults_rule_leaves_out_an_effort_too_slow_for_the_worker() -> None:
    rows = _rows(
        ("jpeg", 50, 0, 1000, 0.90, 50),
        ("avif", 40, 6, 500, 0.88, 3000),
        ("avif", 50, 6, 700, 0.92, 3000),
        ("avif", 40, 8, 600, 0.88, 200),
        ("avif", 50, 8, 800, 0.92, 220),
    )
    choice = format_defaults.choose(rows, "avif", (6, 8))
    assert choice is not None and choice.effort == 8


def test_the_format_defaults_sweep_runs_on_a_tiny_corpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tiny images cost far more per megapixel than photos (per-call overhead), more still on
    # a busy machine: the time gate is tested on its own above, not by this run's clock.
    monkeypatch.setattr(format_defaults, "MAX_ALLOWANCE", float("inf"))
    items = corpus.build(tmp_path, SMALL)
    wanted = [
        format_defaults.Setting("jpeg", 50),
        format_defaults.Setting("webp", 40, 4),
        format_defaults.Setting("webp", 90, 4),
        format_defaults.Setting("avif", 30, 8),
        format_defaults.Setting("avif", 70, 8),
    ]
    measures = format_defaults.run(items, wanted, workers=0)
    assert len(measures) == len(items) * len(wanted)
    assert all(m.size > 0 and 0 < m.ssim <= 1 and m.seconds >= 0 for m in measures)
    rows = format_defaults.summarise(measures)
    assert len(format_defaults.table(rows)) == len(wanted) + 1
    assert any(
        line.startswith("webp at JPEG q50's SSIM") for line in format_defaults.verdicts(rows)
    )
    path = tmp_path / "measures.json"
    path.write_text(json.dumps([dataclasses.asdict(m) for m in measures]))
    assert format_defaults.load(path) == measures


def test_the_formats_benchmark_runs_on_a_tiny_corpus_without_sharp(tmp_path: Path) -> None:
    specs = (*SMALL, corpus.Spec("t-large", 200, 150, 10, "JPEG"))
    items = corpus.build(tmp_path, specs)
    said: list[str] = []
    found = formats.run(
        items,
        processes=0,
        count=formats.MIN_ROUNDS,
        repeats=1,
        sharp_folder=None,
        inflight=1,
        box=60,
        parts=formats.PARTS,
        say=said.append,
        encode_groups=("0MP", "PNG"),
    )
    assert found.problems == []
    text = "\n".join(found.lines)
    assert "1. encoding at full size: 4 images" in text
    assert "2. a 60 x 60 box on the largest photos: 2 images" in text
    assert "ours, box (pixels)" in text and "ours, AVIF default" in text
    assert [line.split(":")[0] for line in found.targets] == [
        "60 px box, 12 MP",
        "60 px box",
    ]
    assert all(line.endswith(("PASS", "FAIL")) for line in found.targets)


def test_the_dct_scales_are_listed_for_the_largest_photos(tmp_path: Path) -> None:
    items = corpus.build(tmp_path, (*SMALL, corpus.Spec("t-large", 200, 150, 10, "JPEG")))
    lines = formats.dct_factors(items, repeats=1)
    assert len(lines) == 1 + 8
    assert [line.split()[2] for line in lines[1:]] == [
        f"{-(-200 * m // 8)}x{-(-150 * m // 8)}" for m in range(8, 0, -1)
    ]
