"""The CLI's progress line (rate, ETA) and its rendering of API errors."""

from __future__ import annotations

from pipeline_cli.client import ApiError
from pipeline_cli.progress import ProgressMeter, duration
from pipeline_cli.render import error_lines, options_text


def doc(status: str, done: int, total: int = 100, failed: int = 0) -> dict[str, object]:
    return {
        "status": status,
        "progress": {
            "totalProducts": 10,
            "processedProducts": done // 10,
            "totalImages": total,
            "processedImages": done,
            "failedImages": failed,
            "percent": round(100 * done / total, 1),
        },
    }


def test_rate_and_eta_come_from_images_done_since_processing_began() -> None:
    meter = ProgressMeter(started=0.0)
    assert "ETA --" in meter.update(1.0, doc("pending", 0))
    meter.update(2.0, doc("processing", 10))
    line = meter.update(6.0, doc("processing", 50, failed=2))
    # 40 images in 4 s: 10 img/s; 50 left: 5 s.
    assert "10.0 img/s" in line and "ETA 5s" in line
    assert "images 50/100" in line and "products 5/10" in line and "failed 2" in line
    assert "[############------------]  50.0%" in line
    assert line.endswith(" 6s")
    assert "done" in meter.update(8.0, doc("completed", 100))


def test_durations_read_naturally() -> None:
    assert [duration(s) for s in (0, 59.4, 61, 3600 + 120)] == ["0s", "59s", "1m01s", "1h02m"]


def test_api_errors_keep_the_apis_words_with_line_and_column() -> None:
    error = ApiError(
        "the CSV has 2 problem(s)",
        400,
        [
            {"row": 3, "column": "Product Name", "message": "is empty"},
            {"field": "webhookUrl", "message": "must be http(s)"},
            "odd",
        ],
    )
    assert error_lines(error) == [
        "error: the CSV has 2 problem(s) (HTTP 400)",
        "  line 3, column Product Name: is empty",
        "  webhookUrl: must be http(s)",
        '  "odd"',
    ]


def test_an_auto_jobs_options_name_its_target() -> None:
    auto = {"format": "webp", "quality": "auto", "targetScore": 80, "maxWidth": None}
    assert options_text(auto) == "webp, quality auto, target score 80"
    assert options_text({"format": "jpeg", "quality": 40}) == "jpeg, quality 40"
