"""Pure helpers of the CLI: time formatting, `-p` parsing, run references, lazy imports."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime

import click
import pytest

from tower.cli import output
from tower.cli.common import parse_key_values, parse_run_ref
from tower.cli.deploy import version_label


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (8, "8s"), (8.9, "8s"), (59, "59s"), (60, "1m 0s"), (63, "1m 3s"),
     (3599, "59m 59s"), (3600, "1h 0m 0s"), (7384, "2h 3m 4s"), (-3, "0s"),
     (90061, "1d 1h 1m 1s")],
)  # fmt: skip
def test_format_elapsed(seconds: float, text: str) -> None:
    assert output.format_elapsed(seconds) == text


def test_run_elapsed_finished_running_and_not_started() -> None:
    now = datetime(2025, 1, 1, 0, 10, tzinfo=UTC)
    finished = {"started_at": "2025-01-01T00:00:00Z", "ended_at": "2025-01-01T00:01:03.5Z"}
    running = {"started_at": "2025-01-01T00:09:52Z", "ended_at": None}
    assert output.run_elapsed(finished, now) == "1m 3s"
    assert output.run_elapsed(running, now) == "8s"
    assert output.run_elapsed({"started_at": None}, now) == "-"


def test_format_timestamp_converts_to_utc() -> None:
    assert output.format_timestamp("2024-11-20T09:44:45+01:00") == "2024-11-20 08:44:45"
    assert output.format_timestamp("2024-11-20T08:44:45.123456Z") == "2024-11-20 08:44:45"
    assert output.format_timestamp("2024-11-20T08:44:45") == "2024-11-20 08:44:45"
    assert output.format_timestamp(None) == "-"
    assert output.format_timestamp("yesterday") == "-"


def test_log_line_text() -> None:
    line = {"reported_at": "2025-01-01T00:00:01Z", "content": "hi | there"}
    assert output.log_line_text(line) == "2025-01-01 00:00:01 | hi | there"


def test_print_local_line_keeps_or_adds_a_timestamp(capsys: pytest.CaptureFixture[str]) -> None:
    output.print_local_line("2025-01-01 00:00:01 | ready")
    output.print_local_line("no stamp\n")
    first, second = capsys.readouterr().out.splitlines()
    assert first == "2025-01-01 00:00:01 | ready"
    stamp, _, rest = second.partition(" | ")
    assert rest == "no stamp"
    datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S")


def test_parse_key_values() -> None:
    assert parse_key_values(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    assert parse_key_values([]) == {}


@pytest.mark.parametrize("bad", ["novalue", "=value", " =v"])
def test_parse_key_values_rejects_bad_syntax(bad: str) -> None:
    with pytest.raises(click.BadParameter, match=repr(bad).replace("[", r"\[")):
        parse_key_values([bad])


def test_parse_run_ref_forms() -> None:
    assert parse_run_ref("app#3", None) == ("app", 3)
    assert parse_run_ref("app", "3") == ("app", 3)
    assert parse_run_ref("app", None) == ("app", None)


@pytest.mark.parametrize(
    ("app", "number", "error"),
    [
        ("app#x", None, click.BadParameter),
        ("app", "0", click.BadParameter),
        ("#3", None, click.BadParameter),
        ("app#3", "4", click.UsageError),
    ],
)
def test_parse_run_ref_errors(app: str, number: str | None, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_run_ref(app, number)


def test_version_label() -> None:
    assert version_label("v3") == "v3"
    assert version_label("3") == "v3"
    assert version_label(4) == "v4"


HEAVY = ("fastapi", "sqlalchemy", "uvicorn", "alembic")


@pytest.mark.parametrize(
    "argv", [["--help"], ["apps", "--help"], ["run", "--help"], ["deploy", "--help"]]
)
def test_everyday_commands_do_not_import_the_server(argv: list[str]) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from tower.cli.main import main
        try:
            main({argv!r})
        except SystemExit:
            pass
        heavy = [m for m in {HEAVY!r} if m in sys.modules]
        print("HEAVY:", ",".join(heavy))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    heavy = [line for line in result.stdout.splitlines() if line.startswith("HEAVY:")]
    assert heavy == ["HEAVY: "]
    if argv == ["--help"]:
        assert "up " in result.stdout and "server " in result.stdout
