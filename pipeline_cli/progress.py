"""The live progress line of `submit --wait`: products and images done, failures, rate, ETA."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

BAR_WIDTH = 24


def _int(progress: Mapping[str, Any], name: str) -> int:
    value = progress.get(name, 0)
    return int(value) if isinstance(value, int | float) else 0


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclass
class ProgressMeter:
    """Fed each status document with the time it was read; renders one line."""

    started: float
    first_seen: tuple[float, int] | None = None
    samples: list[tuple[float, int]] = field(default_factory=list)

    def update(self, now: float, document: Mapping[str, Any]) -> str:
        progress: Mapping[str, Any] = document.get("progress") or {}
        done_images = _int(progress, "processedImages")
        if self.first_seen is None and document.get("status") == "processing":
            self.first_seen = (now, done_images)
        self.samples.append((now, done_images))
        return self.render(now, document)

    def rate(self) -> float | None:
        """Images per second since processing was first seen."""
        if self.first_seen is None or not self.samples:
            return None
        (t0, n0), (t1, n1) = self.first_seen, self.samples[-1]
        if t1 - t0 <= 0 or n1 <= n0:
            return None
        return (n1 - n0) / (t1 - t0)

    def render(self, now: float, document: Mapping[str, Any]) -> str:
        progress: Mapping[str, Any] = document.get("progress") or {}
        total_images = _int(progress, "totalImages")
        done_images = _int(progress, "processedImages")
        raw_percent = progress.get("percent", 0)
        percent = float(raw_percent) if isinstance(raw_percent, int | float) else 0.0
        filled = round(BAR_WIDTH * percent / 100)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        rate = self.rate()
        status = str(document.get("status", "?"))
        if status in {"completed", "completed_with_errors", "failed"}:
            eta = "done"
        elif rate and total_images:
            eta = "ETA " + duration((total_images - done_images) / rate)
        else:
            eta = "ETA --"
        rate_text = f"{rate:.1f} img/s" if rate else "-- img/s"
        return (
            f"[{bar}] {percent:5.1f}% {status:<21} "
            f"products {_int(progress, 'processedProducts')}/{_int(progress, 'totalProducts')}  "
            f"images {done_images}/{total_images}  "
            f"failed {_int(progress, 'failedImages')}  "
            f"{rate_text}  {eta}  {duration(now - self.started)}"
        )
