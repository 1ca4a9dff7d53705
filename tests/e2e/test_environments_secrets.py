"""Environments, secrets and catalogs as a user drives them: `tower up`, our CLI, real runs.

The app reports what it sees without printing secret values in the clear: a short
SHA-256 of each value identifies which secret reached it, and printing the value
itself proves the runner masks it.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import write_app
from tests.live import LiveTower

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-environments")]

REPORTER = """\
import hashlib, os, tower

def digest(name):
    return hashlib.sha256(os.environ.get(name, "<unset>").encode()).hexdigest()[:12]

print("ENV=" + tower.info.environment())
print("TOWER_ENVIRONMENT=" + os.environ.get("TOWER_ENVIRONMENT", ""))
print("DB_URL=" + digest("DB_URL"))
print("SHARED=" + digest("SHARED"))
print("LEAK=" + os.environ.get("DB_URL", ""))
"""
TERMINAL = {"exited", "crashed", "errored", "cancelled"}
RUN_WAIT_S = 240.0


def sha12(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:12]


def ok(result: Any) -> Any:
    assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"
    return result


def start_run(tower: LiveTower, app: str, environment: str = "default") -> int:
    with tower.api() as api:
        response = api.post(f"/apps/{app}/runs", json={"environment": environment})
    assert response.status_code == 201, response.text
    return response.json()["run"]["number"]


def finished(tower: LiveTower, app: str, number: int) -> tuple[dict[str, Any], list[str]]:
    """The run once it has ended, and its program output."""
    deadline = time.monotonic() + RUN_WAIT_S
    with tower.api() as api:
        while True:
            run = api.get(f"/apps/{app}/runs/{number}").json()["run"]
            if run["status"] in TERMINAL:
                break
            assert time.monotonic() < deadline, f"{app}#{number} still {run['status']}"
            time.sleep(0.1)
        lines = api.get(f"/apps/{app}/runs/{number}/logs").json()["log_lines"]
    return run, [line["content"] for line in lines]


def report(lines: list[str]) -> dict[str, str]:
    return dict(line.split("=", 1) for line in lines if "=" in line)


def put_secret(tower: LiveTower, name: str, value: str, environment: str = "default") -> None:
    """Create a secret; one another test of this module created already is fine."""
    result = tower.tower(
        "secrets", "create", f"--name={name}", f"--value={value}", "-e", environment
    )
    assert result.returncode == 0 or "already exists" in result.stdout + result.stderr, result


def run_and_report(tower: LiveTower, app: str, environment: str) -> dict[str, str]:
    run, lines = finished(tower, app, start_run(tower, app, environment))
    assert run["status"] == "exited", lines
    assert run["environment"] == environment
    return report(lines)


@pytest.fixture(scope="module")
def production(tower: LiveTower) -> str:
    """The `production` environment, for every test of the module that needs it."""
    ok(tower.tower("environments", "create", "--name=production"))
    return "production"


@pytest.fixture(scope="module")
def reporter(tower: LiveTower, production: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The reporter app, deployed to every environment (production is created first)."""
    app = write_app(tmp_path_factory.mktemp("apps"), "reporter", "main.py", REPORTER)
    ok(tower.tower("deploy", "--create", "--all", cwd=app))
    return "reporter"


def test_default_secrets_are_inherited_and_overridden_per_environment(
    tower: LiveTower, reporter: str
) -> None:
    put_secret(tower, "DB_URL", "postgres://dev-db/app")
    put_secret(tower, "SHARED", "shared-everywhere")
    put_secret(tower, "DB_URL", "postgres://prod-db/app", "production")
    default = run_and_report(tower, reporter, "default")
    production = run_and_report(tower, reporter, "production")
    assert default["ENV"] == default["TOWER_ENVIRONMENT"] == "default"
    assert production["ENV"] == production["TOWER_ENVIRONMENT"] == "production"
    assert default["DB_URL"] == sha12("postgres://dev-db/app")
    assert production["DB_URL"] == sha12("postgres://prod-db/app")
    # Not overridden in production: inherited from default.
    assert default["SHARED"] == production["SHARED"] == sha12("shared-everywhere")
    # The app printed the value itself: the runner masked it before shipping.
    assert default["LEAK"] == production["LEAK"] == "***"
    listed = ok(tower.tower("secrets", "list", "-e", "production")).stdout
    assert "production" in listed and "SHARED" in listed and "prod-db" not in listed


def test_secrets_and_source_never_rest_in_the_clear(
    tower: LiveTower, tmp_path: Path, reporter: str
) -> None:
    secret_marker = f"secret-marker-{uuid.uuid4().hex}"
    source_marker = f"source-marker-{uuid.uuid4().hex}"
    ok(tower.tower("secrets", "create", "--name=MARKED", f"--value={secret_marker}"))
    body = f'MARKER = "{source_marker}"\nimport os\nprint("got", os.environ["MARKED"])\n'
    app = write_app(tmp_path, "marked", "main.py", body)
    ok(tower.tower("deploy", "--create", cwd=app))
    run, lines = finished(tower, "marked", start_run(tower, "marked"))
    assert run["status"] == "exited" and "got ***" in lines, lines
    home = tower.home
    at_rest = [p for p in home.glob("*.db*") if p.is_file()]
    at_rest += [p for p in (home / "blobs").rglob("*") if p.is_file()]
    assert at_rest, f"no database or blob files under {home}"
    for path in at_rest:
        data = path.read_bytes()
        assert secret_marker.encode() not in data, f"secret in the clear in {path}"
        assert source_marker.encode() not in data, f"app source in the clear in {path}"
    logs = tower.output()
    assert secret_marker not in logs and source_marker not in logs


def test_promote_and_rollback_change_the_next_run_and_not_a_running_one(
    tower: LiveTower, production: str, tmp_path: Path
) -> None:
    def version(text: str) -> Path:
        root = tmp_path / text
        return write_app(
            root, "versioned", "main.py", f"import time\nprint('{text}')\ntime.sleep(1.5)\n"
        )

    ok(tower.tower("deploy", "--create", "--all", cwd=version("one")))  # v1 everywhere
    ok(tower.tower("deploy", cwd=version("two")))  # v2 to default only
    first = start_run(tower, "versioned", "production")
    ok(tower.tower("apps", "promote", "versioned", "--version=v2", "--environment=production"))
    second = start_run(tower, "versioned", "production")
    ok(tower.tower("apps", "promote", "versioned", "--version=v1", "--environment=production"))
    third = start_run(tower, "versioned", "production")
    outputs = [finished(tower, "versioned", n)[1] for n in (first, second, third)]
    assert [("one" in out, "two" in out) for out in outputs] == [
        (True, False),
        (False, True),
        (True, False),
    ]


CATALOG_APP = """\
import pyarrow as pa
from pyiceberg.catalog import load_catalog

for slug in ("default", "analytics"):
    catalog = load_catalog(slug)
    catalog.create_namespace_if_not_exists("demo")
    schema = pa.schema([("n", pa.int64())])
    table = catalog.create_table_if_not_exists("demo.numbers", schema=schema)
    table.append(pa.table({"n": [1, 2, 3]}))
    print(f"{slug}: {table.scan().to_arrow().num_rows} rows")
"""


def test_apps_reach_the_default_catalog_and_another_slug_with_no_configuration(
    tower: LiveTower, tmp_path: Path
) -> None:
    warehouse = tmp_path / "analytics-warehouse"
    warehouse.mkdir()
    ok(
        tower.tower(
            "catalogs",
            "create",
            "analytics",
            "--type=pyiceberg-sql",
            f"--property=uri=sqlite:///{tmp_path}/analytics.db",
            f"--property=warehouse=file://{warehouse}",
        )
    )
    app = write_app(
        tmp_path,
        "tables",
        "main.py",
        CATALOG_APP,
        **{"requirements__txt": "pyiceberg[sql-sqlite]\npyarrow\n"},
    )
    ok(tower.tower("deploy", "--create", cwd=app))
    run, lines = finished(tower, "tables", start_run(tower, "tables"))
    assert run["status"] == "exited", "\n".join(lines)
    assert "default: 3 rows" in lines and "analytics: 3 rows" in lines


def test_local_runs_report_the_local_environment_and_get_the_secrets(
    tower: LiveTower, reporter: str, tmp_path: Path
) -> None:
    put_secret(tower, "DB_URL", "postgres://dev-db/app")
    app = write_app(tmp_path, "reporter", "main.py", REPORTER)
    result = ok(tower.tower("run", "--local", cwd=app))
    seen = report([line.split(" | ", 1)[-1] for line in result.stdout.splitlines()])
    assert seen["ENV"] == seen["TOWER_ENVIRONMENT"] == "local"
    assert seen["DB_URL"] == sha12("postgres://dev-db/app")
    assert seen["LEAK"] == "***"
