"""Schedule syntax (cron, phrases, errors) and fire times with an injected clock,
across daylight-saving changes."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from tower.core import errors
from tower.core.schedules import (
    next_fire_after,
    next_fire_times,
    parse_schedule,
    plan_fire,
    validate_timezone,
    zone,
)

NEW_YORK = "America/New_York"


@pytest.mark.parametrize(
    ("text", "cron"),
    [
        ("every 15 minutes", "*/15 * * * *"),
        ("every hour", "0 * * * *"),
        ("Every Minute", "* * * * *"),
        ("every 2 hours", "0 */2 * * *"),
        ("hourly", "0 * * * *"),
        ("every day at 8am", "0 8 * * *"),
        ("daily at 20:15", "15 20 * * *"),
        ("every day at 12am", "0 0 * * *"),
        ("every day at noon", "0 12 * * *"),
        ("every monday at 9:30", "30 9 * * 1"),
        ("every mondays and fridays at 5:45pm", "45 17 * * 1,5"),
        ("every mon, wed and fri at 7", "0 7 * * 1,3,5"),
        ("every weekday at 9am", "0 9 * * 1-5"),
        ("every weekend at 10", "0 10 * * 0,6"),
        ("every week", "0 0 * * 0"),
        ("every month on the 15th at 6am", "0 6 15 * *"),
        ("@daily", "0 0 * * *"),
        ("*/15  *  * * *", "*/15 * * * *"),
        ("0 9 * * MON", "0 9 * * MON"),
        ("0 0 6 * * *", "0 6 * * *"),  # 6 fields with seconds 0, as the docs list them
    ],
)
def test_cron_and_phrases_become_the_same_cron_every_time(text: str, cron: str) -> None:
    assert parse_schedule(text) == cron
    assert parse_schedule(text) == parse_schedule(text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("every blue moon", "'blue moon' is not a unit or a day of the week"),
        ("every 30 seconds", "minimum interval is 1 minute"),
        ("30 * * * * *", "seconds field must be 0"),
        ("every 7 minutes", "does not divide the hour evenly"),
        ("every 2 days", "every 2 days"),
        ("every day at 25:00", "'25:00' is not a time of day"),
        ("every day at 13pm", "with am/pm the hour is 1-12"),
        ("every hour at 5pm", "cannot also have an 'at' time"),
        ("61 * * * *", "the minute field '61' is not valid (minute: 0-59)"),
        ("* 24 * * *", "the hour field '24' is not valid"),
        ("* * * *", "5 fields, this one has 4"),
        ("0 0 30 2 *", "no date ever matches"),
        ("tomorrow", "a phrase starts with 'every'"),
        ("", "it is empty"),
    ],
)
def test_what_is_not_understood_is_named_with_accepted_examples(text: str, fragment: str) -> None:
    with pytest.raises(errors.InvalidSchedule) as caught:
        parse_schedule(text)
    assert fragment in caught.value.message
    assert "every 15 minutes" in caught.value.message  # an accepted example
    assert caught.value.status == 422 and caught.value.location == "body.cron"


def test_time_zones_are_iana_names() -> None:
    assert validate_timezone(None) == "UTC"
    assert validate_timezone("Europe/Amsterdam") == "Europe/Amsterdam"
    with pytest.raises(errors.InvalidSchedule, match="IANA"):
        validate_timezone("Mars/Olympus")


def test_fire_times_are_utc_and_strictly_after_the_given_moment() -> None:
    start = datetime(2026, 1, 1, 0, 15, tzinfo=UTC)
    assert next_fire_after("*/15 * * * *", "UTC", start) == start + timedelta(minutes=15)
    ticks = next_fire_times("0 8 * * *", "Europe/Amsterdam", start, 2)
    assert ticks == [datetime(2026, 1, 1, 7, tzinfo=UTC), datetime(2026, 1, 2, 7, tzinfo=UTC)]


def _local(ticks: list[datetime]) -> list[str]:
    return [t.astimezone(zone(NEW_YORK)).strftime("%m-%d %H:%M %Z") for t in ticks]


def test_spring_forward_a_daily_time_in_the_gap_runs_after_it_and_no_day_is_skipped() -> None:
    # 2026-03-08: New York clocks jump from 02:00 to 03:00; 02:30 does not exist.
    ticks = next_fire_times("30 2 * * *", NEW_YORK, datetime(2026, 3, 6, 12, tzinfo=UTC), 3)
    assert _local(ticks) == ["03-07 02:30 EST", "03-08 03:00 EDT", "03-09 02:30 EDT"]


def test_fall_back_a_daily_time_in_the_repeated_hour_runs_once() -> None:
    # 2026-11-01: New York clocks fall back from 02:00 to 01:00; 01:30 happens twice.
    ticks = next_fire_times("30 1 * * *", NEW_YORK, datetime(2026, 10, 30, 12, tzinfo=UTC), 3)
    assert _local(ticks) == ["10-31 01:30 EDT", "11-01 01:30 EDT", "11-02 01:30 EST"]
    # Asked from inside the second 01:xx hour, the day's 01:30 has passed: tomorrow.
    inside = datetime(2026, 11, 1, 6, 10, tzinfo=UTC)  # 01:10 EST
    assert _local([next_fire_after("30 1 * * *", NEW_YORK, inside)]) == ["11-02 01:30 EST"]


def test_repeating_schedules_follow_real_time_across_the_change() -> None:
    ticks = next_fire_times("0 * * * *", NEW_YORK, datetime(2026, 11, 1, 4, tzinfo=UTC), 4)
    assert _local(ticks) == [
        "11-01 01:00 EDT",
        "11-01 01:00 EST",
        "11-01 02:00 EST",
        "11-01 03:00 EST",
    ]
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(ticks))


def test_on_time_the_due_tick_fires_and_the_next_one_is_planned() -> None:
    due = datetime(2026, 1, 1, 9, tzinfo=UTC)
    plan = plan_fire("0 9 * * *", "UTC", due=due, now=due + timedelta(milliseconds=30))
    assert (plan.fire_at, plan.missed, plan.next_fire_at) == (due, 0, due + timedelta(days=1))


def test_after_downtime_only_the_latest_tick_fires_and_the_rest_are_counted() -> None:
    due = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    plan = plan_fire("*/10 * * * *", "UTC", due=due, now=due + timedelta(minutes=35))
    assert plan.fire_at == due + timedelta(minutes=30)
    assert plan.missed == 3
    assert plan.next_fire_at == due + timedelta(minutes=40)


def test_a_tick_later_than_the_maximum_lateness_does_not_fire() -> None:
    due = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    late = plan_fire(
        "0 * * * *", "UTC", due=due, now=due + timedelta(minutes=2), max_lateness=timedelta(60)
    )
    assert late.fire_at == due  # 60 days of lateness allowed
    too_late = plan_fire(
        "0 * * * *",
        "UTC",
        due=due,
        now=due + timedelta(minutes=2),
        max_lateness=timedelta(seconds=60),
    )
    assert (too_late.fire_at, too_late.missed) == (None, 1)
    assert too_late.next_fire_at == due + timedelta(hours=1)


def test_a_very_long_downtime_jumps_ahead_instead_of_counting_forever() -> None:
    due = datetime(2020, 1, 1, tzinfo=UTC)
    now = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
    plan = plan_fire("* * * * *", "UTC", due=due, now=now)
    assert plan.fire_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert plan.next_fire_at == datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    assert plan.missed >= 10_000
