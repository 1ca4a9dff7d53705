"""How the CLI talks to people: consoles, message styles and time formatting.

Data (app lists, tables, log lines, results) goes to stdout so it can be piped;
decoration (spinners, progress bars, "✔ ... Done!") and errors go to stderr.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.text import Text

# soft_wrap: never re-wrap log lines or URLs; highlight: never recolour user data.
stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def success(message: str) -> None:
    """`Success! <message>` on stdout."""
    stdout.print(Text.assemble(("Success!", "bold green"), " ", message))


def info(message: str, style: str = "") -> None:
    stdout.print(Text(message, style=style))


def error(message: str) -> None:
    """An error for a person, in red, on stderr."""
    stderr.print(Text(message, style="red"))


def warning(message: str) -> None:
    stderr.print(Text(message, style="yellow"))


def done(step: str) -> None:
    """`✔ <step> Done!` on stderr: a finished step of a longer command."""
    stderr.print(Text.assemble(("✔", "green"), f" {step} ", ("Done!", "green")))


@contextmanager
def spinner(step: str) -> Iterator[None]:
    """Show a spinner with `step` while the block runs, then `✔ <step> Done!`.

    On failure the spinner just disappears: the error handler says what went wrong.
    """
    with stderr.status(step):
        yield
    done(step)


def parse_timestamp(value: Any) -> datetime | None:
    """An API timestamp (RFC 3339) as an aware UTC datetime; None when absent or invalid."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        # The contract says timestamps are UTC; a naive one is read as UTC, not local time.
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_timestamp(value: Any) -> str:
    """`YYYY-MM-DD HH:MM:SS` in UTC, or `-` when there is no usable timestamp."""
    parsed = value if isinstance(value, datetime) else parse_timestamp(value)
    if parsed is None:
        return "-"
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC)
    return parsed.strftime(TIME_FORMAT)


def format_elapsed(seconds: float) -> str:
    """A duration the way people read it: `8s`, `1m 3s`, `2h 0m 5s`, `3d 4h 0m 0s`."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m {secs}s"
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def run_elapsed(run: dict[str, Any], now: datetime | None = None) -> str:
    """How long a run ran: until it ended, or until now while it still runs."""
    started = parse_timestamp(run.get("started_at"))
    if started is None:
        return "-"
    ended = parse_timestamp(run.get("ended_at")) or now or datetime.now(UTC)
    return format_elapsed((ended - started).total_seconds())


def log_line_text(line: dict[str, Any]) -> str:
    """`YYYY-MM-DD HH:MM:SS | content` for a RunLogLine (reported_at in UTC)."""
    return f"{format_timestamp(line.get('reported_at'))} | {line.get('content', '')}"


def print_log_line(line: dict[str, Any]) -> None:
    """A remote log line on stdout; the timestamp is yellow as in the official CLI."""
    stamp = format_timestamp(line.get("reported_at"))
    stdout.print(Text.assemble((stamp, "yellow"), " | ", str(line.get("content", ""))))


def print_local_line(line: str) -> None:
    """A line from a local run, timestamp in green.

    The local runner normally stamps lines itself (`YYYY-MM-DD HH:MM:SS | ...`); a
    line without a stamp gets the time it was printed, so every line looks the same.
    """
    stamp, sep, rest = line.rstrip("\n").partition(" | ")
    if not (sep and _looks_like_timestamp(stamp)):
        stamp, rest = format_timestamp(datetime.now(UTC)), line.rstrip("\n")
    stdout.print(Text.assemble((stamp, "green"), " | ", rest))


def _looks_like_timestamp(value: str) -> bool:
    try:
        datetime.strptime(value, TIME_FORMAT)
    except ValueError:
        return False
    return True
