"""Schedules without I/O: cron and natural-language syntax, time zones, next fire times.

Syntax. A schedule is stored as a standard 5-field cron expression (minute hour
day-of-month month day-of-week). Users may also write a phrase ("every 15 minutes",
"every day at 8am", "every monday at 9:30"); `parse_schedule` turns it into cron the
same way every time, and the cron form is what is stored and shown. The cron library
(cronsim) evaluates the expression; nothing here hand-evaluates cron.

Time zones and daylight saving. Ticks are computed in the schedule's IANA time zone
(UTC by default) and stored in UTC. On a daylight-saving change:

- a schedule at a fixed wall-clock time (specific minute *and* hour, e.g. `30 2 * * *`)
  runs once per matching day: when that time does not exist (clocks jump forward) it
  runs at the first minute after the gap (03:00), so no day is silently skipped; when
  it exists twice (clocks fall back) it runs at the first occurrence only, never twice;
- a repeating schedule (minute or hour field starting with `*`, e.g. `*/15 * * * *`,
  `0 * * * *`) follows real elapsed time: every wall-clock minute that exists matches
  once, so the repeated hour runs again (it is another hour) and the skipped hour has
  no ticks.

This is the rule Debian's cron follows, and the one cronsim implements.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from tower.core.errors import InvalidSchedule

DEFAULT_TIMEZONE = "UTC"
ACCEPTED_EXAMPLES = (
    "'*/15 * * * *', '0 9 * * 1', 'every 15 minutes', 'every hour', "
    "'every day at 8am' or 'every monday at 9:30'"
)
#: ticks counted one by one after downtime; beyond this the count is a lower bound
MAX_COUNTED_MISSED_TICKS = 10_000

CRON_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
CRON_RANGES = ("0-59", "0-23", "1-31", "1-12 or JAN-DEC", "0-7 or SUN-SAT")
MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
DAYS = {
    "sunday": 0,
    "monday": 1,
    "tuesday": 2,
    "wednesday": 3,
    "thursday": 4,
    "friday": 5,
    "saturday": 6,
}
DAY_ABBREVIATIONS = {name[:3]: number for name, number in DAYS.items()} | {
    "tue": 2,
    "tues": 2,
    "wed": 3,
    "thu": 4,
    "thur": 4,
    "thurs": 4,
}
ADVERBS = {"hourly": "hour", "daily": "day", "weekly": "week", "monthly": "month"}
# Whole-phrase forms; `{time}` is a clock time ("8am", "9:30", "20:15", "noon").
_EVERY_N = re.compile(r"^every (?:(\d+) )?(second|minute|min|hour|hr|day|week|month)s?$")
_AT_TIME = re.compile(r"^(?P<what>.+?) at (?P<time>.+)$")
_MONTH_DAY = re.compile(r"^every month on (?:the |day )?(\d{1,2})(?:st|nd|rd|th)?$")
_CLOCK = re.compile(r"^(\d{1,2})(?::(\d{2}))?\s*(am|pm|a\.m\.|p\.m\.)?$")


def _invalid(text: str, reason: str) -> InvalidSchedule:
    return InvalidSchedule(
        f"Could not understand the schedule {text!r}: {reason}. Use a 5-field cron "
        f"expression (minute hour day-of-month month day-of-week) or a phrase; accepted "
        f"examples: {ACCEPTED_EXAMPLES}.",
        location="body.cron",
        value=text,
    )


# ----------------------------------------------------------------------- syntax


def parse_schedule(text: str) -> str:
    """The cron expression to store for `text` (cron, `@daily`-style macro or phrase)."""
    cleaned = " ".join((text or "").split())
    if not cleaned:
        raise _invalid(text, "it is empty")
    if cleaned.lower() in MACROS:
        return MACROS[cleaned.lower()]
    first = cleaned[0]
    if first.isdigit() or first in "*?":
        return validate_cron(cleaned)
    return _phrase_to_cron(text, cleaned.lower().rstrip("."))


def validate_cron(expr: str) -> str:
    """A valid 5-field cron expression, single-spaced; 6 fields only with seconds `0`."""
    fields = expr.split()
    if len(fields) == 6:
        if fields[0] != "0":
            raise _invalid(
                expr,
                "schedules run at most once a minute (the minimum interval), so a seconds "
                "field must be 0; drop it and use 5 fields",
            )
        fields = fields[1:]
    if len(fields) != 5:
        raise _invalid(expr, f"a cron expression has 5 fields, this one has {len(fields)}")
    for position, (name, allowed) in enumerate(zip(CRON_FIELDS, CRON_RANGES, strict=True)):
        alone = ["*"] * 5
        alone[position] = fields[position]
        try:
            CronSim(" ".join(alone), datetime(2000, 1, 1, tzinfo=UTC))
        except (CronSimError, ValueError):
            raise _invalid(
                expr, f"the {name} field {fields[position]!r} is not valid ({name}: {allowed})"
            ) from None
    normalized = " ".join(fields)
    try:
        next(CronSim(normalized, datetime(2000, 1, 1, tzinfo=UTC)))
    except (CronSimError, StopIteration):
        raise _invalid(expr, "no date ever matches it (e.g. day 30 of February)") from None
    return normalized


def _phrase_to_cron(original: str, phrase: str) -> str:
    first, _, rest = phrase.partition(" ")
    if first in ADVERBS:
        phrase = " ".join(("every", ADVERBS[first], rest)).strip()
    if phrase.endswith(" at") or not phrase.startswith("every "):
        raise _invalid(original, "a phrase starts with 'every' (or 'hourly', 'daily'…)")
    hour, minute = 0, 0
    timed = _AT_TIME.match(phrase)
    if timed:
        phrase = timed.group("what")
        hour, minute = _clock_time(original, timed.group("time"))
    interval = _EVERY_N.match(phrase)
    if interval:
        return _interval_cron(original, interval, hour, minute, timed is not None)
    month_day = _MONTH_DAY.match(phrase)
    if month_day:
        day = int(month_day.group(1))
        if not 1 <= day <= 28:
            raise _invalid(
                original,
                f"day {day} is not in every month; use 1-28, or cron for the last days",
            )
        return f"{minute} {hour} {day} * *"
    weekdays = _weekdays(original, phrase.removeprefix("every "))
    return f"{minute} {hour} * * {weekdays}"


def _interval_cron(original: str, match: re.Match[str], hour: int, minute: int, timed: bool) -> str:
    count = int(match.group(1) or 1)
    unit = {"min": "minute", "hr": "hour"}.get(match.group(2), match.group(2))
    if count < 1:
        raise _invalid(original, "the interval must be at least 1")
    if unit == "second":
        raise _invalid(original, "the minimum interval is 1 minute")
    if timed and unit in ("minute", "hour"):
        raise _invalid(original, f"'every {unit}' cannot also have an 'at' time")
    if unit in ("minute", "hour"):
        per = 60 if unit == "minute" else 24
        if per % count:
            raise _invalid(
                original,
                f"every {count} {unit}s does not divide the {'hour' if per == 60 else 'day'} "
                f"evenly, so the gap would change at each new {'hour' if per == 60 else 'day'}; "
                f"pick a divisor of {per} or write the cron yourself",
            )
        step = "*" if count == 1 else f"*/{count}"
        return f"{step} * * * *" if unit == "minute" else f"0 {step} * * *"
    if count != 1:
        raise _invalid(
            original,
            f"'every {count} {unit}s' restarts at each month or year boundary in cron; "
            f"use 'every {unit}' or write the cron yourself",
        )
    if unit == "day":
        return f"{minute} {hour} * * *"
    if unit == "week":
        return f"{minute} {hour} * * 0"
    return f"{minute} {hour} 1 * *"


def _clock_time(original: str, text: str) -> tuple[int, int]:
    """(hour, minute) of "8am", "8:30 pm", "08:30", "20:15", "noon", "midnight"."""
    text = text.strip()
    if text in ("noon", "midday"):
        return 12, 0
    if text == "midnight":
        return 0, 0
    match = _CLOCK.match(text)
    if not match:
        raise _invalid(original, f"{text!r} is not a time of day (e.g. 8am, 9:30, 20:15)")
    hour, minute = int(match.group(1)), int(match.group(2) or 0)
    suffix = (match.group(3) or "").replace(".", "")
    if suffix:
        if not 1 <= hour <= 12:
            raise _invalid(original, f"{text!r}: with am/pm the hour is 1-12")
        hour = hour % 12 + (12 if suffix == "pm" else 0)
    if hour > 23 or minute > 59:
        raise _invalid(original, f"{text!r} is not a time of day (hours 0-23, minutes 0-59)")
    return hour, minute


def _weekdays(original: str, text: str) -> str:
    """`monday`, `mondays and fridays`, `mon, wed, fri`, `weekday`, `weekend` → cron DOW."""
    if text in ("weekday", "weekdays"):
        return "1-5"
    if text in ("weekend", "weekends", "weekend day"):
        return "0,6"
    numbers = []
    for word in re.split(r"\s*(?:,|\band\b)\s*", text):
        day = word.strip().removesuffix("s") if word.strip() not in DAYS else word.strip()
        number = DAYS.get(day, DAY_ABBREVIATIONS.get(day))
        if number is None:
            raise _invalid(original, f"{word.strip() or text!r} is not a unit or a day of the week")
        if number not in numbers:
            numbers.append(number)
    return ",".join(str(n) for n in sorted(numbers))


# ----------------------------------------------------------------------- time zones


def validate_timezone(name: str | None) -> str:
    """An IANA time zone name (`Europe/Amsterdam`); None or empty means UTC."""
    if not name:
        return DEFAULT_TIMEZONE
    try:
        zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(
            f"Unknown time zone {name!r}: use an IANA name such as 'UTC', "
            "'Europe/Amsterdam' or 'America/New_York'.",
            location="body.timezone",
            value=name,
        ) from None
    return name


def zone(name: str) -> tzinfo:
    # UTC as the fixed-offset zone: cronsim then skips its daylight-saving handling.
    return UTC if name in ("UTC", "Etc/UTC") else ZoneInfo(name)


# ----------------------------------------------------------------------- fire times


def fire_times(cron: str, timezone: str, after: datetime) -> Iterator[datetime]:
    """The ticks strictly after `after`, in order, as UTC datetimes."""
    last = after.astimezone(UTC)
    for local in CronSim(cron, after.astimezone(zone(timezone))):
        tick = local.astimezone(UTC)
        # A fixed-time tick in a repeated (fall-back) hour maps to its first occurrence,
        # which may lie before `after`: that tick has passed, never run it again.
        if tick > last:
            last = tick
            yield tick


def next_fire_after(cron: str, timezone: str, after: datetime) -> datetime:
    return next(fire_times(cron, timezone, after))


def next_fire_times(cron: str, timezone: str, after: datetime, count: int) -> list[datetime]:
    ticks = fire_times(cron, timezone, after)
    return [next(ticks) for _ in range(count)]


@dataclass(frozen=True)
class FirePlan:
    """What to do about a schedule whose tick `due` has come (see `plan_fire`)."""

    #: the tick to run now; None when every passed tick is too late to run
    fire_at: datetime | None
    #: passed ticks that get no run (downtime beyond one run, or too late)
    missed: int
    #: the first tick after now: where the schedule waits next
    next_fire_at: datetime


def plan_fire(
    cron: str,
    timezone: str,
    *,
    due: datetime,
    now: datetime,
    max_lateness: timedelta | None = None,
) -> FirePlan:
    """Decide which passed tick runs: only the latest one (no pile-up after downtime),
    and only if it is no later than `max_lateness` (default: one interval, the gap
    from that tick to the next). Every other passed tick is counted as missed."""
    ticks = fire_times(cron, timezone, due)
    latest, missed = due, 0
    following = next(ticks)
    while following <= now and missed < MAX_COUNTED_MISSED_TICKS:
        latest, missed = following, missed + 1
        following = next(ticks)
    if following <= now:  # a very long downtime: jump instead of counting every tick
        latest = _latest_at_or_before(cron, timezone, now)
        following = next_fire_after(cron, timezone, now)
    limit = (
        max_lateness
        if max_lateness is not None
        else next_fire_after(cron, timezone, latest) - latest
    )
    if now - latest > limit:
        return FirePlan(fire_at=None, missed=missed + 1, next_fire_at=following)
    return FirePlan(fire_at=latest, missed=missed, next_fire_at=following)


def _latest_at_or_before(cron: str, timezone: str, moment: datetime) -> datetime:
    local = moment.astimezone(zone(timezone)) + timedelta(seconds=1)
    return next(CronSim(cron, local, reverse=True)).astimezone(UTC)
