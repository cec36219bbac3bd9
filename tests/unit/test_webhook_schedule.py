"""The webhook's schedule as a setting, and the arithmetic of its delays: Retry-After within
the schedule's bounds, hops no longer than SQS allows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from chalicelib.config import Settings
from chalicelib.domain.webhook_schedule import (
    MAX_DELAY,
    MAX_RETRIES,
    SQS_MAX_DELAY,
    hop_delay,
    next_delay,
    parse_retry_after,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SCHEDULE = (5, 300, 1800, 7200)


def test_the_default_schedule_retries_for_about_three_days_as_standard_webhooks_does() -> None:
    schedule = Settings.from_env({}).webhook_retry_schedule
    assert schedule[:6] == (5, 300, 1800, 7200, 18000, 36000)
    assert set(schedule[5:]) == {36000}
    span = timedelta(seconds=sum(schedule))
    assert timedelta(days=2, hours=12) < span <= timedelta(days=3), span
    assert len(schedule) + 1 == 12  # attempts, every one in the status's history (20 kept)


def test_a_schedule_may_hold_delays_longer_than_sqs_allows() -> None:
    settings = Settings.from_env({"WEBHOOK_RETRY_SCHEDULE": "5, 900,3600,86400"})
    assert settings.webhook_retry_schedule == (5, 900, 3600, 86400)
    assert Settings.from_env({"WEBHOOK_RETRY_SCHEDULE": ""}).webhook_retry_schedule == (
        Settings().webhook_retry_schedule
    )
    assert Settings.from_env({"WEBHOOK_RETRY_SCHEDULE": "0"}).webhook_retry_schedule == (0,)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (f"5,{MAX_DELAY + 1}", f"between 0 and {MAX_DELAY} seconds"),
        ("5,-1", "between 0 and"),
        ("5,ten", "comma-separated seconds"),
        (",".join(["1"] * (MAX_RETRIES + 1)), f"at most {MAX_RETRIES} delays"),
    ],
)
def test_a_bad_schedule_is_refused_naming_the_setting(raw: str, problem: str) -> None:
    with pytest.raises(ValueError, match="WEBHOOK_RETRY_SCHEDULE") as refused:
        Settings.from_env({"WEBHOOK_RETRY_SCHEDULE": raw})
    assert problem in str(refused.value)


def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    assert parse_retry_after("120", NOW) == 120
    assert parse_retry_after(" 0 ", NOW) == 0
    later = NOW + timedelta(minutes=40)
    assert parse_retry_after(format_datetime(later, usegmt=True), NOW) == 2400
    assert parse_retry_after("Sat, 28 Nov 2026 12:00:30 GMT", NOW) == 30
    assert parse_retry_after("Sat, 28 Nov 2026 11:00:00 GMT", NOW) == 0  # already past
    for unreadable in ("", "soon", "-5", "1.5", "Sat, 99 Nov 2026 12:00:00 GMT"):
        assert parse_retry_after(unreadable, NOW) is None, unreadable
    assert parse_retry_after("9" * 40, NOW) == 999_999_999  # huge, and capped below


def test_retry_after_is_honoured_only_when_longer_and_never_past_the_longest_delay() -> None:
    assert next_delay(SCHEDULE, 1, None) == 5
    assert next_delay(SCHEDULE, 1, 2) == 5  # shorter: the schedule's delay
    assert next_delay(SCHEDULE, 1, 60.2) == 61  # longer: the receiver's, whole seconds up
    assert next_delay(SCHEDULE, 2, 86400) == 7200  # past the schedule's longest: capped
    assert next_delay(SCHEDULE, 4, 86400) == 7200
    assert next_delay(SCHEDULE, 5, 10) is None  # the schedule is spent, whatever is asked
    assert next_delay((), 1, 10) is None


def test_hops_are_never_longer_than_sqs_allows_nor_shorter_than_a_second() -> None:
    assert hop_delay(5 * 3600) == SQS_MAX_DELAY == 900
    assert hop_delay(900) == 900
    assert hop_delay(120.1) == 121
    assert hop_delay(0.2) == 1
    assert hop_delay(-3) == 1


def test_the_emulators_default_makes_its_first_three_attempts_within_a_minute() -> None:
    """The contract: locally the schedule is short (not AWS's three days), and scaled."""
    from local_emulator.stack import LOCAL_PARAMETERS
    from local_emulator.timescale import DEFAULT_TIME_SCALE, scaled_app_durations

    local = LOCAL_PARAMETERS["WebhookRetrySchedule"]
    env = {"WEBHOOK_RETRY_SCHEDULE": local}
    scaled = scaled_app_durations(env, DEFAULT_TIME_SCALE)["WEBHOOK_RETRY_SCHEDULE"]
    schedule = Settings.from_env({"WEBHOOK_RETRY_SCHEDULE": scaled}).webhook_retry_schedule
    assert sum(schedule[:2]) < 60, schedule  # attempts 2 and 3, after the first
    assert max(schedule) <= SQS_MAX_DELAY  # and no hop locally, unless asked for
    assert schedule != Settings().webhook_retry_schedule
