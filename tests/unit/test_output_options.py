"""A job's output options: parsed from the request with every bad field named, stored with
the job, shown in its status and carried by its row messages."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from chalicelib.config import Settings
from chalicelib.domain.output_options import (
    InvalidOptions,
    OutputFormat,
    OutputOptions,
    parse_options,
)
from chalicelib.entrypoints import queue_handlers
from chalicelib.errors import InvalidRequest
from chalicelib.services import status, upload
from chalicelib.services.row_messages import RowTask
from PIL import Image

from tests.fakes import make_world
from tests.support.jobs import new_job
from tests.support.stores import StoreUnderTest
from tests.unit.test_pipeline_services import drain, jpeg, storage_record

HEADER = "S. No.,Product Name,Input Image Urls\n"


def test_no_options_are_the_seeds_jpeg_at_output_quality_same_size() -> None:
    options = parse_options({})
    assert options == OutputOptions() and options.is_default
    assert options.quality_or(50) == 50 and options.quality_or(70) == 70
    assert (options.max_width, options.max_height) == (None, None)


def test_options_as_multipart_fields_or_json_keys() -> None:
    assert parse_options(
        {"format": "webp", "quality": "40", "maxWidth": "300", "other": "ignored"}
    ) == OutputOptions(OutputFormat.WEBP, 40, 300, None)
    assert parse_options({"format": "AVIF", "maxHeight": 200, "quality": 90}) == OutputOptions(
        OutputFormat.AVIF, 90, None, 200
    )
    assert parse_options({"format": "jpg"}).format == OutputFormat.JPEG


@pytest.mark.parametrize(
    ("raw", "fields"),
    [
        ({"format": "gif"}, ["format"]),
        ({"quality": "0"}, ["quality"]),
        ({"quality": "101"}, ["quality"]),
        ({"quality": "high"}, ["quality"]),
        ({"quality": True}, ["quality"]),
        ({"maxWidth": "0"}, ["maxWidth"]),
        ({"maxWidth": "-5"}, ["maxWidth"]),
        ({"maxHeight": "1.5"}, ["maxHeight"]),
        ({"maxHeight": 100_000}, ["maxHeight"]),
        (
            {"format": "png", "quality": "x", "maxWidth": "y", "maxHeight": "z"},
            ["format", "quality", "maxWidth", "maxHeight"],
        ),
    ],
)
def test_bad_options_name_every_bad_field(raw: dict[str, object], fields: list[str]) -> None:
    with pytest.raises(InvalidOptions) as refused:
        parse_options(raw)
    assert [p["field"] for p in refused.value.problems] == fields
    with pytest.raises(InvalidRequest) as answered:
        upload.output_options(raw)
    assert [d["field"] for d in answered.value.details] == fields


def test_quality_auto_with_or_without_a_target_score() -> None:
    """`quality: "auto"` (any case; multipart text or JSON) aims at 70 unless `targetScore`
    (30-95, a number or its text) says otherwise; the quality is then the format's default,
    what the search falls back to."""
    assert parse_options({"quality": "auto"}) == OutputOptions(target_score=70.0)
    assert parse_options({"quality": " AUTO ", "targetScore": ""}).target_score == 70.0
    for given, target in (("30", 30.0), ("95", 95.0), (72.5, 72.5), (50, 50.0), ("88.8", 88.8)):
        options = parse_options({"format": "webp", "quality": "auto", "targetScore": given})
        assert (options.auto, options.quality, options.target_score) == (True, None, target)
        assert options.quality_or(50) == 53  # WebP's default: the fallback
    fixed = parse_options({"quality": "40"})
    assert (fixed.auto, fixed.target_score) == (False, None)


def test_auto_options_show_and_round_trip_as_the_contract_shapes_them() -> None:
    auto = parse_options({"format": "avif", "quality": "auto", "targetScore": "80"})
    assert auto.to_dict() == {
        "format": "avif",
        "quality": "auto",
        "maxWidth": None,
        "maxHeight": None,
        "targetScore": 80,
    }
    half = parse_options({"quality": "auto", "targetScore": 72.5})
    assert half.to_dict()["targetScore"] == 72.5
    for options in (auto, half):
        assert OutputOptions.from_dict(json.loads(json.dumps(options.to_dict()))) == options
        task = RowTask("r", 0, 1, ("https://a.test/1.jpg",), options=options)
        assert RowTask.from_message(json.loads(json.dumps(task.to_message()))).options == options
    assert "targetScore" not in parse_options({"quality": 40}).to_dict()


def test_the_target_of_a_job_and_of_the_deployment() -> None:
    """OUTPUT_QUALITY=auto (a deployment target) applies to a job that names no quality; a
    job's own target wins; a job naming a quality stays fixed."""
    assert OutputOptions().target_or(None) is None
    assert OutputOptions().target_or(70.0) == 70.0
    assert OutputOptions(OutputFormat.WEBP).target_or(70.0) == 70.0
    assert OutputOptions(quality=40).target_or(70.0) is None
    assert OutputOptions(target_score=55.0).target_or(70.0) == 55.0
    assert OutputOptions(target_score=55.0).target_or(None) == 55.0


def test_output_quality_may_be_auto() -> None:
    assert Settings.from_env({"OUTPUT_QUALITY": "auto"}).output_target_score == 70.0
    assert Settings.from_env({"OUTPUT_QUALITY": " Auto "}).output_quality == 50
    fixed = Settings.from_env({"OUTPUT_QUALITY": "80"})
    assert (fixed.output_quality, fixed.output_target_score) == (80, None)
    assert Settings.from_env({"OUTPUT_QUALITY": "200"}).output_quality == 95  # clamped, as ever
    with pytest.raises(ValueError, match="OUTPUT_QUALITY"):
        Settings.from_env({"OUTPUT_QUALITY": "best"})


@pytest.mark.parametrize(
    ("raw", "fields"),
    [
        ({"targetScore": "70"}, ["targetScore"]),  # without auto
        ({"quality": "40", "targetScore": "70"}, ["targetScore"]),
        ({"quality": 40, "targetScore": 70}, ["targetScore"]),  # JSON
        ({"quality": "auto", "targetScore": "29.9"}, ["targetScore"]),
        ({"quality": "auto", "targetScore": "95.1"}, ["targetScore"]),
        ({"quality": "auto", "targetScore": "high"}, ["targetScore"]),
        ({"quality": "auto", "targetScore": True}, ["targetScore"]),
        ({"quality": "auto", "targetScore": "nan"}, ["targetScore"]),
        ({"quality": "auto", "targetScore": "inf"}, ["targetScore"]),
        ({"quality": "auto", "targetScore": [70]}, ["targetScore"]),
        ({"quality": "automatic"}, ["quality"]),
        ({"quality": "auto70"}, ["quality"]),
        ({"quality": "x", "targetScore": "70"}, ["quality", "targetScore"]),
        ({"format": "png", "quality": "auto", "targetScore": "5"}, ["format", "targetScore"]),
    ],
)
def test_every_bad_auto_combination_is_a_400_naming_its_field(
    raw: dict[str, object], fields: list[str]
) -> None:
    with pytest.raises(InvalidRequest) as answered:
        upload.output_options(raw)
    assert [d["field"] for d in answered.value.details] == fields


def test_a_target_score_without_auto_says_so() -> None:
    with pytest.raises(InvalidOptions) as refused:
        parse_options({"quality": 40, "targetScore": 70})
    assert refused.value.problems == [
        {"field": "targetScore", "message": 'only with quality "auto"'}
    ]


def test_each_format_has_its_extension_content_type_and_default_quality() -> None:
    assert [(f.extension, f.content_type) for f in OutputFormat] == [
        ("jpg", "image/jpeg"),
        ("webp", "image/webp"),
        ("avif", "image/avif"),
    ]
    for fmt in (OutputFormat.WEBP, OutputFormat.AVIF):
        assert 1 <= OutputOptions(fmt).quality_or(50) <= 100


def test_options_go_with_the_job_into_its_status_and_its_row_messages() -> None:
    world = make_world(Settings())
    chosen = OutputOptions(OutputFormat.WEBP, None, 300, None)
    accepted = upload.submit_csv(
        world.deps,
        (HEADER + "1,A,https://a.test/1.jpg\n").encode(),
        None,
        None,
        "default",
        options=chosen,
    )
    doc = status.job_status(world.deps, accepted.job.request_id, "default")
    assert doc["options"] == {"format": "webp", "quality": None, "maxWidth": 300, "maxHeight": None}
    task = RowTask("r", 0, 1, ("https://a.test/1.jpg",), options=chosen)
    assert RowTask.from_message(json.loads(json.dumps(task.to_message()))).options == chosen
    plain = RowTask("r", 0, 1, ("https://a.test/1.jpg",))
    assert "options" not in plain.to_message()  # the seed's messages, unchanged


def test_the_same_body_with_other_options_is_another_request_for_its_idempotency_key() -> None:
    world = make_world(Settings())
    body = (HEADER + "1,A,https://a.test/1.jpg\n").encode()
    upload.submit_csv(world.deps, body, None, "k", "default")
    with pytest.raises(Exception, match="different request body"):
        upload.submit_csv(
            world.deps, body, None, "k", "default", options=OutputOptions(OutputFormat.AVIF)
        )


def test_the_store_keeps_a_jobs_options(job_store: StoreUnderTest) -> None:
    chosen = OutputOptions(OutputFormat.AVIF, 40, None, 800)
    job = new_job(options=chosen)
    assert job_store.store.create_job(job)
    stored = job_store.store.get_job(job.request_id)
    assert stored is not None and stored.options == chosen
    plain = new_job()
    assert job_store.store.create_job(plain)
    again = job_store.store.get_job(plain.request_id)
    assert again is not None and again.options == OutputOptions()


def _run_job(options: OutputOptions, width: int, height: int) -> tuple[Any, list[str]]:
    world = make_world(Settings())
    world.fetcher.responses = {"https://a.test/1.jpg": jpeg(width, height)}
    accepted = upload.submit_csv(
        world.deps,
        (HEADER + "1,A,https://a.test/1.jpg\n").encode(),
        None,
        None,
        "default",
        options=options,
    )
    queue_handlers.ingest(world.deps, [storage_record(accepted.job.input_key)])
    drain(world)
    doc = status.job_status(world.deps, accepted.job.request_id, "default")
    products: Any = doc["products"]
    return world, products[0]["outputImageUrls"]


@pytest.mark.parametrize(
    ("options", "size", "kind", "expected"),
    [
        (OutputOptions(OutputFormat.WEBP, None, 300, None), (1600, 1200), "WEBP", (300, 225)),
        (OutputOptions(OutputFormat.AVIF, 40, None, None), (160, 120), "AVIF", (160, 120)),
        (OutputOptions(OutputFormat.JPEG, None, None, 90), (400, 1200), "JPEG", (30, 90)),
        (OutputOptions(OutputFormat.WEBP, None, 2000, 2000), (160, 120), "WEBP", (160, 120)),
    ],
    ids=["webp-fit-300", "avif-q40", "jpeg-fit-height", "never-enlarged"],
)
def test_a_jobs_outputs_are_in_its_format_and_fit_its_box(
    options: OutputOptions, size: tuple[int, int], kind: str, expected: tuple[int, int]
) -> None:
    world, urls = _run_job(options, *size)
    (url,) = urls
    assert url.endswith(f".{options.format.extension}")
    key = url.split("/", 3)[3]
    data, content_type = world.outputs.objects[key]
    assert content_type == options.format.content_type
    with Image.open(io.BytesIO(data)) as made:
        assert made.format == kind
        assert made.size == expected


def test_quality_changes_the_bytes() -> None:
    world_low, (low,) = _run_job(OutputOptions(OutputFormat.WEBP, 10, None, None), 320, 240)
    world_high, (high,) = _run_job(OutputOptions(OutputFormat.WEBP, 95, None, None), 320, 240)
    small = world_low.outputs.objects[low.split("/", 3)[3]][0]
    large = world_high.outputs.objects[high.split("/", 3)[3]][0]
    assert len(small) < len(large)
