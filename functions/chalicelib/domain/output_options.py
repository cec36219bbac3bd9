"""A job's output options: the format, its quality (a number, or `auto`: per image the smallest
output whose SSIMULACRA2 score reaches `targetScore`) and the box the output must fit in, and
the defaults of the image work (each written here once: config.py and imaging.py read them).

Plain data and validation; the defaults per format are measured (docs/performance.md,
"Output formats"). Without options a job's outputs are the seed's: JPEG at OUTPUT_QUALITY
(JPEG_QUALITY, 50), same size."""

from __future__ import annotations

import math
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

# `quality: "auto"`: per image, the smallest output in the job's format whose SSIMULACRA2 score
# against the source (decoded, oriented, fitted, in sRGB) is at least the target (30 low, 50
# medium, 70 high, 90 visually lossless).
AUTO = "auto"
DEFAULT_TARGET_SCORE = 70
MIN_TARGET_SCORE, MAX_TARGET_SCORE = 30, 95

FIELDS = ("format", "quality", "targetScore", "maxWidth", "maxHeight")


@dataclass(frozen=True)
class OutputOptions:
    format: OutputFormat = OutputFormat.JPEG
    quality: int | None = None  # None: the format's default
    max_width: int | None = None
    max_height: int | None = None
    # Not None: `quality: "auto"` aiming at this score (then `quality` is None).
    target_score: float | None = None

    @property
    def auto(self) -> bool:
        return self.target_score is not None

    def quality_or(self, jpeg_default: int) -> int:
        """The quality to encode with (JPEG's default is the OUTPUT_QUALITY setting); for
        `auto`, the format's default quality (what the search falls back to)."""
        if self.quality is not None:
            return self.quality
        return DEFAULT_QUALITY.get(self.format, jpeg_default)

    def target_or(self, deployment_target: float | None) -> float | None:
        """The score `auto` aims at for this job: its own `targetScore`, else the deployment's
        (OUTPUT_QUALITY=auto) when the job names no quality; None: a fixed quality."""
        if self.target_score is not None:
            return self.target_score
        return deployment_target if self.quality is None else None

    @property
    def is_default(self) -> bool:
        return self == OutputOptions()

    def to_dict(self) -> dict[str, object]:
        """The contract's shape (the status's `options`, a row message's, the store's);
        `targetScore` only for `auto`."""
        shape: dict[str, object] = {
            "format": self.format.value,
            "quality": AUTO if self.auto else self.quality,
            "maxWidth": self.max_width,
            "maxHeight": self.max_height,
        }
        if self.target_score is not None:
            shape["targetScore"] = _plain_number(self.target_score)
        return shape

    @classmethod
    def from_dict(cls, raw: Mapping[str, object] | None) -> OutputOptions:
        """Options as stored or sent by us (trusted shape; absent: the defaults)."""
        if not raw:
            return cls()
        return parse_options(raw)


def _plain_number(value: float) -> int | float:
    """70.0 as 70: a whole target shows as the integer it was given as."""
    return int(value) if value.is_integer() else value


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
    auto = False
    given_quality = raw.get("quality")
    if isinstance(given_quality, str) and given_quality.strip().lower() == AUTO:
        auto = True
    elif given_quality not in (None, ""):
        quality = _integer(given_quality)
        if quality is None or not 1 <= quality <= 100:
            problems.append(
                {"field": "quality", "message": 'must be an integer from 1 to 100, or "auto"'}
            )
            quality = None
    target = _target_score(raw.get("targetScore"), auto, problems)
    width = _positive(raw.get("maxWidth"), "maxWidth", problems)
    height = _positive(raw.get("maxHeight"), "maxHeight", problems)
    if problems:
        raise InvalidOptions(problems)
    return OutputOptions(fmt, quality, width, height, target)


def _target_score(raw: object, auto: bool, problems: list[dict[str, object]]) -> float | None:
    """`targetScore`: a number from 30 to 95, only with `quality: "auto"` (default 70 then);
    None for a fixed quality."""
    if raw is None or raw == "":
        return float(DEFAULT_TARGET_SCORE) if auto else None
    if not auto:
        problems.append({"field": "targetScore", "message": 'only with quality "auto"'})
        return None
    value = _number(raw)
    if value is None or not MIN_TARGET_SCORE <= value <= MAX_TARGET_SCORE:
        problems.append(
            {
                "field": "targetScore",
                "message": f"must be a number from {MIN_TARGET_SCORE} to {MAX_TARGET_SCORE}",
            }
        )
        return None
    return value


def _number(raw: object) -> float | None:
    """A finite number, given as one or as its text ("72.5"); a bool is not one."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            return None
    else:
        return None
    return value if math.isfinite(value) else None
