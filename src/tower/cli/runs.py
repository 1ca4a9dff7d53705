"""`tower runs ...`: list runs (of one app or of all), show one run with its attempts,
and draw the graph of runs an app started with `run_app`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from tower.cli import output
from tower.cli.common import api, new_table, parse_run_ref
from tower.client import ApiError
from tower.client.api import TowerApi
from tower.core.runs import RunStatus

RUN_STATUSES = tuple(str(status) for status in RunStatus)
DEFAULT_PAGE_SIZE = 20
#: The server refuses bigger pages; saying so here gives the error before a round trip.
MAX_PAGE_SIZE = 1000

F = TypeVar("F", bound=Callable[..., Any])
RunKey = tuple[str, int]

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the API's JSON answer instead of a table."
)


@dataclass(frozen=True, slots=True)
class RunQuery:
    """The filters and page of a run listing, as the user gave them."""

    statuses: tuple[str, ...] = ()
    environment: str | None = None
    page: int = 1
    page_size: int = DEFAULT_PAGE_SIZE

    @property
    def filtered(self) -> bool:
        return bool(self.statuses or self.environment)

    def params(self) -> dict[str, Any]:
        return {
            "page": self.page,
            "page_size": self.page_size,
            "statuses": self.statuses,
            "environment": self.environment,
        }


def run_list_options(command: F) -> F:
    """The filter, page and --json options shared by `runs list` and `apps runs`."""
    options = [
        click.option(
            "-s",
            "--status",
            "statuses",
            multiple=True,
            type=click.Choice(RUN_STATUSES, case_sensitive=False),
            help="Only runs with this status; repeat for several.",
        ),
        click.option("-e", "--environment", default=None, help="Only runs in this environment."),
        click.option(
            "--page",
            type=click.IntRange(min=0),
            default=1,
            show_default=True,
            help="Which page of runs to show, newest first; 0 shows every run.",
        ),
        click.option(
            "--page-size",
            type=click.IntRange(1, MAX_PAGE_SIZE),
            default=DEFAULT_PAGE_SIZE,
            show_default=True,
            help="How many runs a page holds.",
        ),
        json_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.group("runs")
def runs_group() -> None:
    """Look at runs: list them, inspect one and its attempts."""


@runs_group.command("list")
@click.argument("app", required=False)
@run_list_options
def list_command(
    app: str | None,
    statuses: tuple[str, ...],
    environment: str | None,
    page: int,
    page_size: int,
    as_json: bool,
) -> None:
    """List runs, newest first.

    Lists the runs of APP, or of every app when APP is left out.
    """
    query = RunQuery(tuple(statuses), environment, page, page_size)
    show_runs(app, query, as_json=as_json)


def show_runs(app: str | None, query: RunQuery, *, as_json: bool) -> None:
    """Fetch one page of runs and print it as a table (or as the API's JSON)."""
    client = api()
    if app is None:
        body = client.search_runs(**query.params())
    else:
        body = client.list_runs(app, **query.params())
    if as_json:
        output.print_json(body)
        return
    runs = body.get("runs") or []
    pages = body.get("pages") or {}
    if not runs:
        output.info(no_runs_message(app, query, pages))
        return
    output.print_table(runs_list_table(runs, now=datetime.now(UTC)))
    hint = next_page_hint(query, pages)
    if hint:
        output.note(hint)


def runs_list_table(runs: list[dict[str, Any]], *, now: datetime) -> Table:
    """App, #, status, environment, attempts, start and elapsed time; the server's order
    (newest first) is kept, since across apps run numbers do not sort by time."""
    table = new_table()
    table.add_column("App")
    table.add_column("#", justify="right")
    table.add_column("Status")
    table.add_column("Environment")
    table.add_column("Attempts", justify="right")
    table.add_column("Start Time")
    table.add_column("Elapsed Time")
    for run in runs:
        table.add_row(
            Text(str(run.get("app_name", ""))),
            str(run.get("number", "")),
            output.status_text(run.get("status")),
            Text(str(run.get("environment", ""))),
            _count(run.get("num_attempts")),
            output.format_timestamp(run.get("started_at")),
            output.run_elapsed(run, now),
        )
    return table


def no_runs_message(app: str | None, query: RunQuery, pages: dict[str, Any]) -> str:
    num_pages = _int(pages.get("num_pages"))
    if query.page > 1 and _int(pages.get("total")) > 0:
        return f"No runs on page {query.page}: there are {num_pages} page(s)."
    subject = f"No runs of app `{app}`" if app else "No runs"
    if query.filtered:
        return f"{subject} match these filters."
    return f"{subject} yet. Start one with `tower run`."


def next_page_hint(query: RunQuery, pages: dict[str, Any]) -> str | None:
    """Where to look next when this page is not the last one; None otherwise."""
    num_pages = _int(pages.get("num_pages"))
    if query.page < 1 or num_pages <= query.page:
        return None
    total = _int(pages.get("total"))
    return f"Page {query.page} of {num_pages} ({total} runs). Next: --page {query.page + 1}"


# -- one run ------------------------------------------------------------------------------


@runs_group.command("show")
@click.argument("app")
@click.argument("number", required=False)
@json_option
def show_command(app: str, number: str | None, as_json: bool) -> None:
    """Show one run with its retry policy and attempts.

    Name the run as `APP#N` or `APP N`, or just `APP` for its latest run.
    """
    name, run_number = parse_run_ref(app, number)
    client = api()
    if run_number is None:
        run_number = latest_run_number(client, name)
        if run_number is None:
            output.info(f"No runs of app `{name}` yet.")
            return
    body = client.describe_run(name, run_number)
    if as_json:
        output.print_json(body)
        return
    run = body.get("run") or {}
    now = datetime.now(UTC)
    output.stdout.print(
        Text(f"Run #{run.get('number', run_number)} of app `{run.get('app_name', name)}`"),
        style="bold",
    )
    output.print_details(run_details(run, parent_label(client, run), now))
    output.stdout.print()
    print_attempts(run.get("attempts") or [])


def latest_run_number(client: TowerApi, name: str) -> int | None:
    """The number of the app's newest run; one run of one page is all it takes."""
    runs = client.list_runs(name, page=1, page_size=1).get("runs") or []
    number = runs[0].get("number") if runs else None
    return number if isinstance(number, int) else None


def run_details(
    run: dict[str, Any], parent: str | None, now: datetime
) -> list[tuple[str, str | Text]]:
    """The `Label: value` rows of `runs show`; rows that would only say "-" about a
    failure (reason, parent) are left out."""
    rows: list[tuple[str, str | Text]] = [("Status", output.status_text(run.get("status")))]
    if run.get("status_message"):
        rows.append(("Reason", str(run["status_message"])))
    rows += [
        ("Exit code", _optional(run.get("exit_code"))),
        ("Environment", str(run.get("environment", ""))),
        ("Version", _optional(run.get("app_version"))),
        ("Scheduled", output.format_timestamp(run.get("scheduled_at"))),
        ("Started", output.format_timestamp(run.get("started_at"))),
        ("Ended", output.format_timestamp(run.get("ended_at"))),
        ("Elapsed", output.run_elapsed(run, now)),
        ("Attempts", _count(run.get("num_attempts"))),
        ("Retry policy", describe_retry_policy(run.get("retry_policy"))),
    ]
    if parent:
        rows.append(("Parent run", parent))
    if run.get("$link"):
        rows.append(("Link", str(run["$link"])))
    return rows


def describe_retry_policy(policy: Any) -> str:
    """A RunRetryPolicy in words: `up to 3 retries, 30s apart, doubling each time`."""
    if not isinstance(policy, dict):
        return "-"
    retries = _int(policy.get("max_retries"))
    if retries <= 0:
        return "no retries"
    noun = "retry" if retries == 1 else "retries"
    delay = output.format_elapsed(_int(policy.get("retry_delay_seconds")))
    text = f"up to {retries} {noun}, {delay} apart"
    if policy.get("use_exponential_backoff"):
        text += ", doubling each time"
    return text


def parent_label(client: TowerApi, run: dict[str, Any]) -> str | None:
    """The run that started this one, as `app#N` when the run graph says which it is.

    Runs only carry their parent's id, which no command accepts; the graph names
    it. A server without the graph endpoint still gets the id shown.
    """
    parent_id = run.get("parent_run_id")
    if not parent_id:
        return None
    key = _run_key({"app_name": run.get("app_name"), "number": run.get("number")})
    if key is None:
        return str(parent_id)
    try:
        edges = client.run_graph(*key)
    except ApiError:
        return str(parent_id)
    parents = graph_parents(edges)
    return _ref(parents[key]) if parents.get(key) else str(parent_id)


def print_attempts(attempts: list[dict[str, Any]]) -> None:
    if not attempts:
        output.info("No attempts yet.")
        return
    output.print_table(attempts_table(attempts))


def attempts_table(attempts: list[dict[str, Any]]) -> Table:
    table = new_table()
    table.add_column("Attempt", justify="right")
    table.add_column("Status")
    table.add_column("Start Time")
    table.add_column("End Time")
    table.add_column("Exit Code", justify="right")
    for attempt in sorted(attempts, key=lambda a: _int(a.get("seq"))):
        table.add_row(
            str(attempt.get("seq", "")),
            output.status_text(attempt.get("status")),
            output.format_timestamp(attempt.get("started_at")),
            output.format_timestamp(attempt.get("ended_at")),
            _optional(attempt.get("exit_code")),
        )
    return table


# -- run graph ----------------------------------------------------------------------------


@runs_group.command("graph")
@click.argument("app")
@click.argument("number", required=False)
@json_option
def graph_command(app: str, number: str | None, as_json: bool) -> None:
    """Show which runs a run started, and which run started it.

    Prints the tree of runs started with `run_app` that `APP#N` belongs to.
    """
    name, run_number = parse_run_ref(app, number)
    if run_number is None:
        raise click.UsageError("Name the run, e.g. `tower runs graph my-app#3`.")
    edges = api().run_graph(name, run_number)
    if as_json:
        output.print_json({"runs": edges})
        return
    parents = graph_parents(edges)
    if not any(parents.values()):
        output.info(f"Run #{run_number} of app `{name}` neither started nor was started by a run.")
        return
    for tree in graph_trees(parents, highlight=(name, run_number)):
        output.stdout.print(tree)


def graph_parents(edges: Iterable[dict[str, Any]]) -> dict[RunKey, RunKey | None]:
    """Every run named by the graph's edges → the run that started it (None for roots)."""
    parents: dict[RunKey, RunKey | None] = {}
    for edge in edges:
        child = _run_key(edge.get("id"))
        if child is None:
            continue
        parent = _run_key(edge.get("parent_id"))
        parents[child] = parent
        if parent is not None:
            parents.setdefault(parent, None)
    return parents


def graph_trees(parents: dict[RunKey, RunKey | None], *, highlight: RunKey) -> list[Tree]:
    """One Rich tree per root; the run asked about is bold."""
    children: dict[RunKey, list[RunKey]] = {}
    for child, parent in parents.items():
        if parent is not None:
            children.setdefault(parent, []).append(child)
    roots = sorted(key for key, parent in parents.items() if parent is None)
    # A server bug could send a cycle, which has no root: start from any of its runs.
    roots = roots or sorted(parents)[:1]
    seen: set[RunKey] = set()

    def label(key: RunKey) -> Text:
        return Text(_ref(key), style="bold" if key == highlight else "")

    def grow(node: Tree, key: RunKey) -> None:
        for child in sorted(children.get(key, [])):
            if child not in seen:
                seen.add(child)
                grow(node.add(label(child)), child)

    trees = []
    for root in roots:
        seen.add(root)
        tree = Tree(label(root), guide_style="dim")
        grow(tree, root)
        trees.append(tree)
    return trees


# -- small helpers ------------------------------------------------------------------------


def _run_key(value: Any) -> RunKey | None:
    """`{app_name, number}` → `(app_name, number)`; None when it is not a run id."""
    if not isinstance(value, dict):
        return None
    app, number = value.get("app_name"), value.get("number")
    if not isinstance(app, str) or isinstance(number, bool) or not isinstance(number, int):
        return None
    return app, number


def _ref(key: RunKey) -> str:
    return f"{key[0]}#{key[1]}"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _count(value: Any) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else "-"


def _optional(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)
