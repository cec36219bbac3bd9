"""`quality: "auto"` around the search: what the worker asks the compressor for, each image's
quality and score through the row's record, a retry and reuse, into the status (and its
OpenAPI shape). The search itself is imaging's (tests of it are its own); here a stand-in
(`searched`) answers in its place, so that what is checked is the plumbing alone."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from chalicelib import openapi, quality_search
from chalicelib.config import Settings
from chalicelib.domain.output_options import OutputFormat, OutputOptions, parse_options
from chalicelib.entrypoints import queue_handlers
from chalicelib.entrypoints.queue_handlers import QueueRecord
from chalicelib.imaging import Compressed, CompressOptions, compress
from chalicelib.services import job_actions, one_image, status, upload
from chalicelib.services.row_messages import Kept, RowTask
from openapi_schema_validator import OAS30Validator

from tests.fakes import FakeWorld, make_world
from tests.support.tenants import add_tenant
from tests.unit.test_pipeline_services import HEADER, drain, jpeg, storage_record

A, B, GONE = "https://a.test/1.jpg", "https://b.test/2.jpg", "https://gone.test/3.jpg"
CSV = HEADER + f'1,A,"{A},{GONE}"\n2,B,{B}\n'


class StandIn:
    """In the search's place: the real encode at the fallback quality, reported as the
    quality `target - 10` reaching `target + 0.34` (a fixed quality: as compress says)."""

    def __init__(self) -> None:
        self.asked: list[tuple[CompressOptions, float | None]] = []

    def __call__(
        self, data: bytes, options: CompressOptions, time_left: Any = None, *, admit: Any = None
    ) -> Compressed:
        self.asked.append((options, None if time_left is None else time_left()))
        made = compress(data, replace(options, target_score=None), admit=admit)
        if options.target_score is None:
            return made
        return replace(
            made, quality=int(options.target_score) - 10, score=options.target_score + 0.34
        )


@pytest.fixture
def searched(monkeypatch: pytest.MonkeyPatch) -> StandIn:
    stand_in = StandIn()
    monkeypatch.setattr(one_image, "compress", stand_in)
    return stand_in


def world(settings: Settings | None = None) -> FakeWorld[Any]:
    made = make_world(settings or Settings(tenant_secrets_prefix="stack/tenants/"))
    add_tenant(made, "shop")
    made.fetcher.responses = {A: jpeg(320, 240), B: jpeg(200, 300)}
    return made


def run(made: FakeWorld[Any], options: OutputOptions) -> dict[str, Any]:
    accepted = upload.submit_csv(made.deps, CSV.encode(), None, None, "shop", options=options)
    queue_handlers.ingest(made.deps, [storage_record(accepted.job.input_key)])
    drain(made)
    return status.job_status(made.deps, accepted.job.request_id, "shop")


def chosen(doc: dict[str, Any]) -> list[tuple[list[Any], list[Any]]]:
    return [(p["outputQualities"], p["outputScores"]) for p in doc["products"]]


def test_an_auto_job_asks_for_its_target_with_the_formats_default_as_fallback(
    searched: StandIn,
) -> None:
    run(world(), parse_options({"format": "webp", "quality": "auto", "targetScore": "80"}))
    assert {(o.format, o.quality, o.target_score) for o, _ in searched.asked} == {
        (OutputFormat.WEBP, 53, 80.0)  # WebP's default quality, what the search falls back to
    }
    assert all(left is not None and left > 0 for _, left in searched.asked)  # the budget's


def test_each_image_shows_its_quality_and_score_aligned_with_its_output_null_when_failed(
    searched: StandIn,
) -> None:
    doc = run(world(), parse_options({"quality": "auto"}))
    assert doc["options"] == {
        "format": "jpeg",
        "quality": "auto",
        "maxWidth": None,
        "maxHeight": None,
        "targetScore": 70,
    }
    assert [p["outputImageUrls"][1:] for p in doc["products"]] == [[""], []]
    assert chosen(doc) == [([60, None], [70.3, None]), ([60], [70.3])]  # 1 decimal
    assert all(type(q) is int for q in doc["products"][1]["outputQualities"])


def test_a_fixed_quality_job_shows_neither_and_asks_no_target(searched: StandIn) -> None:
    doc = run(world(), OutputOptions(quality=40))
    assert all("outputQualities" not in p and "outputScores" not in p for p in doc["products"])
    assert {o.target_score for o, _ in searched.asked} == {None}


def test_an_auto_product_whose_every_image_failed_shows_nulls() -> None:
    made = world()
    made.fetcher.responses = {}  # every fetch fails
    doc = run(made, parse_options({"quality": "auto"}))
    assert chosen(doc) == [([None, None], [None, None]), ([None], [None])]


def test_output_quality_auto_makes_auto_the_default_of_every_format(searched: StandIn) -> None:
    settings = Settings.from_env({"OUTPUT_QUALITY": "auto"})
    assert (settings.output_quality, settings.output_target_score) == (50, 70.0)
    made = world(replace(settings, tenant_secrets_prefix="stack/tenants/"))
    doc = run(made, OutputOptions(OutputFormat.AVIF))
    assert doc["options"]["quality"] is None  # the job named none
    assert chosen(doc)[1] == ([60], [70.3])
    assert {(o.quality, o.target_score) for o, _ in searched.asked} == {(49, 70.0)}
    searched.asked.clear()
    named = run(made, OutputOptions(OutputFormat.AVIF, quality=30))  # a named quality stays
    assert {o.target_score for o, _ in searched.asked} == {None}
    assert "outputQualities" not in named["products"][0]
    assert Settings.from_env({}).output_target_score is None  # the default stays fixed


def test_a_reused_output_reports_the_quality_and_score_of_the_one_it_copies(
    searched: StandIn,
) -> None:
    made = world()
    first = run(made, parse_options({"quality": "auto", "targetScore": 75}))
    calls = len(searched.asked)
    again = run(made, parse_options({"quality": "auto", "targetScore": 75}))
    assert len(searched.asked) == calls  # nothing compressed: both outputs copied
    assert len(made.outputs.copied) == 2
    assert chosen(again) == chosen(first) == [([65, None], [75.3, None]), ([65], [75.3])]


def test_an_auto_output_made_without_a_score_is_not_reused(
    searched: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Time ran short before the search measured anything: the format's default quality, no
    score. The status says so (null), and a later job searches again rather than copy it."""
    made = world()
    unmeasured = StandIn()
    monkeypatch.setattr(
        one_image, "compress", lambda *a, **k: replace(unmeasured(*a, **k), quality=50, score=None)
    )
    first = run(made, parse_options({"quality": "auto"}))
    assert chosen(first) == [([50, None], [None, None]), ([50], [None])]
    monkeypatch.setattr(one_image, "compress", searched)
    again = run(made, parse_options({"quality": "auto"}))
    assert made.outputs.copied == [] and len(searched.asked) == 2  # both searched anew
    assert chosen(again) == [([60, None], [70.3, None]), ([60], [70.3])]
    run(made, parse_options({"quality": "auto"}))
    assert len(made.outputs.copied) == 2  # those, measured, are reused


@pytest.mark.parametrize(
    "other",
    [
        {"quality": "auto", "targetScore": 76},  # another target
        {"quality": 65},  # the quality auto chose, named: not auto's output
    ],
)
def test_auto_outputs_are_reused_only_for_the_same_target(
    searched: StandIn, other: dict[str, object]
) -> None:
    made = world()
    run(made, parse_options({"quality": "auto", "targetScore": 75}))
    run(made, parse_options(other))
    assert made.outputs.copied == []


def test_a_new_search_version_makes_auto_outputs_anew(
    searched: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = world()
    run(made, parse_options({"quality": "auto"}))
    monkeypatch.setattr(quality_search, "AUTO_SEARCH_VERSION", "another-metric/search")
    run(made, parse_options({"quality": "auto"}))
    assert made.outputs.copied == []
    run(made, parse_options({"quality": "auto"}))
    assert len(made.outputs.copied) == 2


def test_a_retry_keeps_the_quality_and_score_of_the_images_that_succeeded(
    searched: StandIn,
) -> None:
    made = world()
    first = run(made, parse_options({"quality": "auto"}))
    request_id = first["requestId"]
    calls = len(searched.asked)
    made.fetcher.responses[GONE] = jpeg(100, 100)
    job_actions.retry_failed(made.deps, request_id)
    (body,) = [m.body for m in made.ingest_queue.drain()]
    queue_handlers.ingest(made.deps, [QueueRecord("retry", json.dumps(body))])
    drain(made)
    again = status.job_status(made.deps, request_id, "shop")
    assert again["status"] == "completed"
    assert len(searched.asked) == calls + 1  # only the failed image was made
    assert chosen(again)[0] == ([60, 60], [70.3, 70.3])  # the kept one's, and the new one's


def test_a_continuation_message_carries_each_kept_images_quality_and_score() -> None:
    task = RowTask("r", 0, 1, (A, B), options=parse_options({"quality": "auto"}))
    kept = Kept("outputs/r/1/0.jpg", 10, 5, quality=61, score=70.25)
    body = json.loads(json.dumps(task.continuation({0: kept.result(A)}, {})))
    read = RowTask.from_message(body)
    assert read.kept(0) == kept and read.kept(1) is None
    assert read.options == task.options
    assert "quality" not in body["keep"][1]  # nothing of them for an image not done


def test_the_status_of_an_auto_job_matches_its_openapi_shape(searched: StandIn) -> None:
    doc = run(world(), parse_options({"quality": "auto", "targetScore": 72.5}))
    assert doc["options"]["targetScore"] == 72.5
    spec = openapi.document()
    schema = {"$ref": "#/components/schemas/Status", "components": spec["components"]}
    OAS30Validator(schema).validate(doc)
    plain = run(world(), OutputOptions())
    OAS30Validator(schema).validate(plain)
    product = spec["components"]["schemas"]["Product"]["properties"]
    bad = {**doc, "products": [{**doc["products"][0], "outputScores": ["high", None]}]}
    with pytest.raises(Exception, match="high"):
        OAS30Validator(schema).validate(bad)
    assert {"outputQualities", "outputScores"} <= set(product)
