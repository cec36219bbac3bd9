"""A job's output options: the format, its quality and the box the output must fit in, and
the defaults of the image work (each written here once: config.py and imaging.py read them).

Plain data and validation; the defaults per format are measured (docs/performance.md,
"Output formats"). Without options a job's outputs are the seed's: JPEG at OUTPUT_QUALITY
(JPEG_QUALITY, 50), same size."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class InvalidOptions(ValueError):
    """Bad output options; `problems` names each field (the API's 400 details)."""

    def __init__(self, problems: list[dict[str, object]]) -> None:
        fields = ", ".join(str(p["field"]) for p in problems)
        super().__init__(f"invalid output options: {fields}")
        self.problems = problems


MAX_DIMENSION = 16_384  # larger than any bound a shop needs; WebP's own limit is 16,383


class OutputFormat(StrEnum):
    JPEG = "jpeg"
    WEBP = "webp"
    AVIF = "avif"

    @property
    def extension(self) -> str:
        return {"jpeg": "jpg", "webp": "webp", "avif": "avif"}[self.value]

    @property
    def content_type(self) -> str:
        return f"image/{self.value}"


# JPEG's quality when a job names none: OUTPUT_QUALITY's default, the seed's.
JPEG_QUALITY = 50
# Default quality per format when a job names none (JPEG: OUTPUT_QUALITY): the quality at
# which the format matches JPEG q50's SSIM on the benchmark corpus, for fewer bytes
# (`python -m benchmarks.format_defaults`; docs/performance.md, "Output formats").
DEFAULT_QUALITY = {OutputFormat.WEBP: 53, OutputFormat.AVIF: 49}
# The most pixels an input image may have (MAX_IMAGE_PIXELS' default), read from its header
# before anything is decoded.
MAX_IMAGE_PIXELS = 50_000_000

FIELDS = ("format", "quality", "maxWidth", "maxHeight")


@dataclass(frozen=True)
class OutputOptions:
    format: OutputFormat = OutputFormat.JPEG
    quality: int | None = None  # None: the format's default
    max_width: int | None = None
    max_height: int | None = None

    def quality_or(self, jpeg_default: int) -> int:
        """The quality to encode with (JPEG's default is the OUTPUT_QUALITY setting)."""
        if self.quality is not None:
            return self.quality
        return DEFAULT_QUALITY.get(self.format, jpeg_default)

    @property
    def is_default(self) -> bool:
        return self == OutputOptions()

    def to_dict(self) -> dict[str, object]:
        """The contract's shape (the status's `options`, a row message's, the store's)."""
        return {
            "format": self.format.value,
            "quality": self.quality,
            "maxWidth": self.max_width,
            "maxHeight": self.max_height,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, object] | None) -> OutputOptions:
        """Options as stored or sent by us (trusted shape; absent: the defaults)."""
        if not raw:
            return cls()
        return parse_options(raw)


def _positive(raw: object, name: str, problems: list[dict[str, object]]) -> int | None:
    if raw is None or raw == "":
        return None
    value = _integer(raw)
    if value is None or not 1 <= value <= MAX_DIMENSION:
        problems.append({"field": name, "message": f"must be an integer from 1 to {MAX_DIMENSION}"})
        return None
    return value


def _integer(raw: object) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw.strip())
    return None


def parse_options(raw: Mapping[str, object]) -> OutputOptions:
    """Options from multipart fields or JSON keys; unknown keys are ignored. Every bad value
    is reported at once (InvalidOptions: the API's 400 names each field)."""
    problems: list[dict[str, object]] = []
    fmt = OutputFormat.JPEG
    given = raw.get("format")
    if given not in (None, ""):
        text = str(given).strip().lower()
        if text == "jpg":
            text = "jpeg"
        try:
            fmt = OutputFormat(text)
        except ValueError:
            names = ", ".join(f.value for f in OutputFormat)
            problems.append({"field": "format", "message": f"must be one of {names}"})
    quality: int | None = None
    if raw.get("quality") not in (None, ""):
        quality = _integer(raw.get("quality"))
        if quality is None or not 1 <= quality <= 100:
            problems.append({"field": "quality", "message": "must be an integer from 1 to 100"})
            quality = None
    width = _positive(raw.get("maxWidth"), "maxWidth", problems)
    height = _positive(raw.get("maxHeight"), "maxHeight", problems)
    if problems:
        raise InvalidOptions(problems)
    return OutputOptions(fmt, quality, width, height)
