"""Work not done twice: a tenant's image made before from the same bytes and options is
copied in the store, not decoded and encoded again; another tenant's, or other options,
are made anew."""

from __future__ import annotations

import io
from dataclasses import fields, replace
from typing import Any

import pytest
from chalicelib.config import Settings
from chalicelib.domain.output_options import OutputFormat, OutputOptions
from chalicelib.entrypoints import queue_handlers
from chalicelib.services import status, upload
from PIL import Image

from tests.fakes import FakeWorld, make_world
from tests.support.tenants import add_tenant
from tests.unit.test_pipeline_services import HEADER, drain, jpeg, storage_record

CSV = HEADER + "1,A,https://a.test/1.jpg\n2,B,https://b.test/2.jpg\n"


def world_with(*tenants: str) -> FakeWorld:
    world = make_world(Settings(tenant_secrets_prefix="stack/tenants/"))
    for tenant in tenants:
        add_tenant(world, tenant)
    world.fetcher.responses = {
        "https://a.test/1.jpg": jpeg(320, 240),
        "https://b.test/2.jpg": jpeg(200, 300),
    }
    return world


def run(world: FakeWorld, tenant: str, options: OutputOptions | None = None) -> list[Any]:
    accepted = upload.submit_csv(
        world.deps, CSV.encode(), None, None, tenant, options=options or OutputOptions()
    )
    queue_handlers.ingest(world.deps, [storage_record(accepted.job.input_key)])
    drain(world)
    doc = status.job_status(world.deps, accepted.job.request_id, tenant)
    assert doc["status"] == "completed"
    products: list[Any] = doc["products"]  # type: ignore[assignment]
    return products


def key_of(url: str) -> str:
    return url.split("/", 3)[3]


def test_a_resubmitted_job_copies_its_outputs_instead_of_compressing_again() -> None:
    world = world_with("shop")
    first = run(world, "shop")
    assert world.outputs.copied == []
    second = run(world, "shop")
    assert len(world.outputs.copied) == 2  # both images: copied in the store
    for before, after in zip(first, second, strict=True):
        old, new = key_of(before["outputImageUrls"][0]), key_of(after["outputImageUrls"][0])
        assert old != new and (old, new) in world.outputs.copied
        assert world.outputs.objects[new] == world.outputs.objects[old]
        assert after["outputBytes"] == before["outputBytes"]


def test_other_options_or_another_tenant_make_the_image_anew() -> None:
    world = world_with("shop", "other")
    run(world, "shop")
    run(world, "shop", OutputOptions(OutputFormat.WEBP, None, 100, None))
    run(world, "other")
    assert world.outputs.copied == []


# Each output option changed alone, from a job that named none.
CHANGED_ALONE = {
    "format": OutputOptions(format=OutputFormat.WEBP),
    "quality": OutputOptions(quality=40),
    "max_width": OutputOptions(max_width=100),
    "max_height": OutputOptions(max_height=100),
    "target_score": OutputOptions(target_score=70.0),  # quality "auto"
}


def test_every_output_option_is_one_of_those_changed_alone() -> None:
    assert set(CHANGED_ALONE) == {option.name for option in fields(OutputOptions)}


@pytest.mark.parametrize("options", CHANGED_ALONE.values(), ids=CHANGED_ALONE.keys())
def test_a_job_asking_another_output_gets_it_made_not_the_earlier_one(
    options: OutputOptions,
) -> None:
    """The content address covers every output option: a job asking for another format,
    quality, width or height gets that output, never a copy of an earlier job's."""
    world = world_with("shop")
    run(world, "shop")
    products = run(world, "shop", options)
    assert world.outputs.copied == []
    for product in products:
        data, _ = world.outputs.objects[key_of(product["outputImageUrls"][0])]
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == str(options.format.value).upper()
            assert image.width <= (options.max_width or image.width)
            assert image.height <= (options.max_height or image.height)
            assert max(image.size) < 320 or not (options.max_width or options.max_height)


def test_a_changed_default_quality_makes_the_image_anew_and_a_named_equal_one_reuses() -> None:
    """The address holds the quality used, not the job's "default": after OUTPUT_QUALITY
    changes, a default job makes new outputs; a job naming the quality used before reuses."""
    world = world_with("shop")
    run(world, "shop")  # OUTPUT_QUALITY 50
    world.deps.settings = replace(world.deps.settings, output_quality=80)
    run(world, "shop")
    assert world.outputs.copied == []
    run(world, "shop", OutputOptions(OutputFormat.JPEG, 50, None, None))
    assert len(world.outputs.copied) == 2


def test_a_changed_huffman_setting_makes_the_image_anew() -> None:
    """OUTPUT_OPTIMIZE changes a JPEG's bytes: outputs made under the other setting are not
    handed out."""
    world = world_with("shop")
    run(world, "shop")
    world.deps.settings = replace(world.deps.settings, output_optimize=False)
    run(world, "shop")
    assert world.outputs.copied == []
    run(world, "shop")
    assert len(world.outputs.copied) == 2


def test_an_earlier_output_gone_since_is_made_again() -> None:
    world = world_with("shop")
    first = run(world, "shop")
    for product in first:
        del world.outputs.objects[key_of(product["outputImageUrls"][0])]
    second = run(world, "shop")
    assert world.outputs.copied == []
    for product in second:
        assert key_of(product["outputImageUrls"][0]) in world.outputs.objects


def test_a_job_of_a_tenant_without_a_record_is_never_reused() -> None:
    world = world_with()  # the default tenant has no record, hence no reuse key
    run(world, "default")
    run(world, "default")
    assert world.outputs.copied == []


class CountingIndex:
    """The world's reuse index, counting the calls that point addresses at outputs."""

    def __init__(self, inner: Any, fail: bool = False) -> None:
        self.inner = inner
        self.fail = fail
        self.one_by_one = 0
        self.together: list[int] = []

    def find(self, tenant: str, address: str) -> Any:
        return self.inner.find(tenant, address)

    def remember(self, tenant: str, address: str, output: Any) -> None:
        self.one_by_one += 1
        self.inner.remember(tenant, address, output)

    def remember_all(self, entries: Any) -> None:
        self.together.append(len(entries))
        if self.fail:
            raise ConnectionError("the index is down")
        self.inner.remember_all(entries)

    def reuse_key(self, tenant: str) -> str | None:
        key: str | None = self.inner.reuse_key(tenant)
        return key


def test_a_batch_remembers_its_outputs_in_one_call_and_the_next_job_copies_them() -> None:
    world = world_with("shop")
    index = CountingIndex(world.deps.reuse)
    world.deps.reuse = index  # type: ignore[assignment]
    run(world, "shop")  # both rows in one batch of the rows queue
    assert (index.one_by_one, index.together) == (0, [2])
    run(world, "shop")
    assert len(world.outputs.copied) == 2  # found through what the first batch remembered
    assert index.together == [2, 2]  # the copies are the newest: remembered too


def test_a_failed_remember_costs_a_remake_not_the_job() -> None:
    world = world_with("shop")
    world.deps.reuse = CountingIndex(world.deps.reuse, fail=True)  # type: ignore[assignment]
    run(world, "shop")  # completes: the outputs are stored and the rows recorded
    run(world, "shop")
    assert world.outputs.copied == []  # nothing was remembered: made anew
