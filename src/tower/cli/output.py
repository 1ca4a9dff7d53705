"""How the CLI talks to people: consoles, message styles and time formatting.

Data (app lists, tables, log lines, results) goes to stdout so it can be piped;
decoration (spinners, progress bars, "✔ ... Done!") and errors go to stderr.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from tower.client.timestamps import parse_timestamp

# soft_wrap: never re-wrap log lines or URLs; highlight: never recolour user data.
stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
#: No table of ours is wider; a cap keeps a runaway cell from producing absurd lines.
MAX_TABLE_WIDTH = 1000

STATUS_STYLES = {
    "exited": "green",
    "crashed": "red",
    "errored": "red",
    "cancelled": "dim",
    "running": "cyan",
    "retrying": "yellow",
}


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


def note(message: str) -> None:
    """A hint beside the data (e.g. "more on the next page"), dimmed on stderr."""
    stderr.print(Text(message, style="dim"))


def print_json(value: Any) -> None:
    """`value` as indented JSON on stdout, untouched by Rich markup or emoji codes."""
    stdout.out(json.dumps(value, indent=2, ensure_ascii=False), highlight=False)


def print_table(table: Table) -> None:
    """A table on stdout; whole values even when stdout is a pipe or a file.

    Rich assumes 80 columns when it cannot ask a terminal and squeezes wider tables
    into `…`-cut cells, which would break `grep` and scripts, so off a terminal the
    table gets its natural width.
    """
    if stdout.is_terminal:
        stdout.print(table)
        return
    natural = stdout.measure(table, options=stdout.options.update_width(MAX_TABLE_WIDTH))
    wide = Console(file=stdout.file, width=max(natural.maximum, 1), highlight=False, soft_wrap=True)
    wide.print(table)


def status_text(status: Any) -> Text:
    """A run or attempt status, coloured the way every command colours it."""
    value = str(status or "")
    return Text(value, style=STATUS_STYLES.get(value, ""))


def print_details(rows: Iterable[tuple[str, str | Text]]) -> None:
    """`Label:  value` lines on stdout with the values aligned, for one object's details.

    Plain strings are shown as they are (never parsed as Rich markup): they are user
    data such as names, messages and links. Written line by line rather than as a Rich
    grid, which would pad every line with trailing spaces.
    """
    rows = list(rows)
    width = max((len(label) for label, _ in rows), default=0) + 3  # "label:" and 2 spaces
    for label, value in rows:
        text = value if isinstance(value, Text) else Text(value)
        first, *more = text.split("\n", allow_blank=True)
        stdout.print(Text.assemble((f"{label}:".ljust(width), "bold"), first))
        # A multi-line value (a long error message) stays in the value column.
        for line in more:
            stdout.print(Text.assemble(" " * width, line))


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
