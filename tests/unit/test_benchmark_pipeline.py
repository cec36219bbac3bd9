"""benchmarks.pipeline's like-with-like: every image of a round has bytes of its own with the
same pixels (benchmarks._distinct), the image host serves exactly those bytes, and the
functions' metric lines are summed as CloudWatch would chart them."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import requests
from PIL import Image

from benchmarks import _distinct, corpus, pipeline, pipeline_timeline


def image(kind: str) -> bytes:
    out = io.BytesIO()
    picture = corpus.photo_like(64, 48, 7, alpha=kind == "PNG")
    picture.save(out, kind)
    return out.getvalue()


def pixels(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as decoded:
        return decoded.convert("RGBA").tobytes()


@pytest.mark.parametrize("kind", ["JPEG", "PNG"])
def test_tags_make_distinct_bytes_of_the_same_pixels(kind: str) -> None:
    data = image(kind)
    one, two = _distinct.tagged(data, "r1-0-0"), _distinct.tagged(data, "r1-0-1")
    assert len({data, one, two}) == 3
    assert pixels(one) == pixels(data) == pixels(two)
    assert _distinct.tagged(data, "") == data
    with Image.open(io.BytesIO(one)) as decoded:
        decoded.load()  # a PNG's chunk CRC is checked on load


def test_a_file_that_is_neither_jpeg_nor_png_is_refused() -> None:
    with pytest.raises(ValueError, match="neither"):
        _distinct.tagged(b"GIF89a" + bytes(40), "x")


def test_the_image_host_serves_the_tagged_bytes(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(image("JPEG"))
    (tmp_path / "b.png").write_bytes(image("PNG"))
    with pipeline.file_server(tmp_path) as (base, _), requests.Session() as session:
        for name in ("a.jpg", "b.png"):
            served = session.get(f"{base}/{name}?tag=t-1-0", timeout=10)
            again = session.get(f"{base}/{name}", timeout=10)  # the same connection
            assert served.content == _distinct.tagged((tmp_path / name).read_bytes(), "t-1-0")
            assert again.content == (tmp_path / name).read_bytes()


def test_every_image_of_a_round_has_its_own_tag() -> None:
    items = [corpus.Item(spec, Path(spec.filename)) for spec in corpus.SPECS]
    plan = pipeline.plan_for(items, 2, 2)
    tags = [tag for _, tag in plan.tags("round-1")]
    assert len(tags) == len(set(tags)) == len(plan.indices)
    text = pipeline.csv_for(plan, items, "http://h", "round-1").decode()
    assert all(f"?tag={tag}" in text for tag in tags)


def emf(**values: object) -> str:
    names = [k for k in values if k != "Phase"]
    metrics = [{"Name": n, "Unit": "Count"} for n in names]
    return json.dumps({"_aws": {"CloudWatchMetrics": [{"Metrics": metrics}]}, **values})


def test_metric_lines_are_summed_by_name_and_phase() -> None:
    sums = pipeline.MetricSums()
    assert not sums.feed("INFO something else")
    assert sums.feed(emf(ImagesProcessed=3, ImagesReused=1))
    assert sums.feed(emf(ImagesReused=2))
    assert sums.feed(emf(PhaseCpuSeconds=0.5, Phase="compress"))
    assert sums.feed(emf(PhaseCpuSeconds=0.25, Phase="compress"))
    before = sums.snapshot()
    sums.feed(emf(PhaseCpuSeconds=0.1, Phase="download"))
    assert before == {"ImagesProcessed": 3, "ImagesReused": 3, "PhaseCpuSeconds:compress": 0.75}
    assert pipeline.difference(sums.snapshot(), before) == {"PhaseCpuSeconds:download": 0.1}
    job = pipeline.Job(1.0, 0.1, 1.1, 10, {"ImagesReused": 3.0})
    assert job.reused == 3


def test_the_timeline_counts_the_time_with_fewer_images_in_flight_than_cores() -> None:
    # two images from 0 to 4 and 1 to 3, a third from 5 to 6: with two cores, fewer than two
    # are in flight from 0 to 1, from 3 to 4 (one left) and from 4 to 6 (none, then one)
    starts, ends = [0.0, 1.0, 5.0], [4.0, 3.0, 6.0]
    assert pipeline_timeline.starved(starts, ends, cores=2) == pytest.approx(4.0)
    assert pipeline_timeline.starved(starts, ends, cores=1) == pytest.approx(1.0)  # 4 to 5


def test_the_breakdown_names_the_database_process_and_the_cores_each_side_used() -> None:
    job = pipeline.Job(2.0, 0.1, 2.1, 100, {"PhaseCpuSeconds:compress": 2.5}, 3.6, 0.4)
    rounds = [pipeline.Round(bare=1.5, pipeline=2.0, bare_cpu=2.7, job=job)]
    lines = pipeline.breakdown(rounds)
    text = "\n".join(lines)
    assert "decode and encode                              25.0 ms" in text
    assert "the rest (MongoDB server, moto, dispatch)      11.0 ms" in text
    assert "  of which the MongoDB server process           4.0 ms" in text
    assert lines[-1] == "  cores used: the pipeline 1.80, the bare compressor 1.80"


def test_cpu_between_counts_only_the_processes_asked_for() -> None:
    before = {1: 1.0, 2: 5.0}
    after = {1: 1.5, 2: 6.0, 3: 0.25}  # 3 is new since: counted whole
    assert pipeline.cpu_between(before, after) == pytest.approx(1.75)
    assert pipeline.cpu_between(before, after, lambda pid: pid != 2) == pytest.approx(0.75)
    assert not pipeline.is_mongo_server(os.getpid())
