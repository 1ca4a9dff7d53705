"""Run listings, statistics and app health at a million runs, on SQLite (and PostgreSQL).

Loads --runs runs (default 1,000,000) spread over --apps apps (default 50) in two
accounts and a year of history, with one INSERT … SELECT per app (a recursive CTE on
SQLite, generate_series on PostgreSQL). Then, in process through FastAPI's
TestClient as the first account (half of the runs), times each request ~20 times:
pages of GET /v1/runs and GET /v1/apps/{name}/runs with and without filters,
GET /v1/stats/runs over 30 days and 48 hours, GET /v1/stats/apps and GET /v1/apps.
Prints JSON, then a readable table of p50/p95 in ms.

    .venv/bin/python bench/listing.py [--runs 1000000] [--apps 50] [--repeat 20]
        [--postgres URL | --postgres auto]

`--postgres URL` needs a role that may CREATE DATABASE (a scratch database is made
and dropped); `auto` starts a throwaway cluster like the test suite does.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from _common import percentiles, report
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, Uuid, bindparam, select, text
from sqlalchemy.engine import make_url
from tests import pg

from tower.server.app import build_context, create_app
from tower.server.services import accounts, auth
from tower.server.services.context import ServerContext
from tower.server.settings import ServerSettings
from tower.server.store import db, models

HISTORY = timedelta(days=365)
ACTIVE_APPS = 5  # every 5th app has its 2 newest runs still queued or running

# Per dialect: a sequence of :n integers `i`, a random id, and epoch seconds `e` → created_at.
_SEQUENCE = {
    "sqlite": "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < :n) "
    "SELECT {columns} FROM seq",
    "postgresql": "SELECT {columns} FROM generate_series(1, :n) AS seq(i)",
}
# Run ids ordered by (app, number): appending to the primary key is ~3x faster than
# random uuid4s, and no timed request looks runs up by id.
_NEW_ID = {
    "sqlite": "printf('%08x%024x', :k, i)",
    "postgresql": "(lpad(to_hex(CAST(:k AS integer)), 8, '0') || lpad(to_hex(i), 24, '0'))::uuid",
}
_AT = {
    # The text SQLAlchemy stores for a UTC datetime on SQLite.
    "sqlite": "strftime('%Y-%m-%d %H:%M:%S', {e}, 'unixepoch') || '.000000'",
    "postgresql": "to_timestamp({e})",
}
# 80 % exited, 8 % crashed, 5 % errored, 7 % cancelled; the newest ones active.
_STATUS = (
    "CASE WHEN i > :n - :active THEN (CASE i % 2 WHEN 0 THEN 'running' ELSE 'pending' END) "
    "WHEN (i * 37 + :salt) % 100 < 80 THEN 'exited' "
    "WHEN (i * 37 + :salt) % 100 < 88 THEN 'crashed' "
    "WHEN (i * 37 + :salt) % 100 < 93 THEN 'errored' ELSE 'cancelled' END"
)


def _insert_runs_sql(dialect: str) -> str:
    epoch = ":t0 + i * :step + :salt"
    at = _AT[dialect].format(e=epoch)
    columns = ", ".join(
        [
            _NEW_ID[dialect],
            ":account",
            ":app",
            ":version",
            "CASE WHEN i % 10 = 0 THEN :prod ELSE :default END",
            "i",
            _STATUS,
            "'[]'",
            """'{"type": "tower_cli", "details": {}}'""",
            "1",
            "0",
            "0",
            "false" if dialect == "postgresql" else "0",
            at,
            at,
        ]
    )
    return (
        "INSERT INTO runs (id, account_id, app_id, version_id, environment_id, number, "
        "status, parameters, initiator, num_attempts, max_retries, retry_delay_seconds, "
        "use_exponential_backoff, created_at, scheduled_at) "
        + _SEQUENCE[dialect].format(columns=columns)
    )


@dataclass
class Tenant:
    account_id: uuid.UUID
    api_key: str
    environments: dict[str, uuid.UUID]


def _tenants(ctx: ServerContext) -> list[Tenant]:
    """The admin's account and a second user's, each with `default` and `prod`."""
    admin_key = accounts.bootstrap(ctx).api_key or ""
    with ctx.sessions.begin() as session:
        other = accounts.create_user(ctx, session, email="bench@example.com", password="pw-bench1")
        other_key = accounts.create_api_key(session, user=other, name="bench")
    return [_tenant(ctx, key) for key in (admin_key, other_key)]


def _tenant(ctx: ServerContext, api_key: str) -> Tenant:
    account_id = auth.authenticate(ctx, api_key=api_key, bearer=None).account_id
    with ctx.sessions.begin() as session:
        prod = models.Environment(account_id=account_id, name="prod")
        session.add(prod)
        session.flush()
        default = session.scalar(
            select(models.Environment.id).where(
                models.Environment.account_id == account_id, models.Environment.name == "default"
            )
        )
        return Tenant(account_id, api_key, {"default": default, "prod": prod.id})


def _app_with_version(ctx: ServerContext, tenant: Tenant, name: str) -> tuple[uuid.UUID, ...]:
    with ctx.sessions.begin() as session:
        app = models.App(account_id=tenant.account_id, name=name, last_version_number=1)
        session.add(app)
        session.flush()
        version = models.AppVersion(
            account_id=tenant.account_id,
            app_id=app.id,
            number=1,
            towerfile=f'[app]\nname = "{name}"\nscript = "main.py"\n',
            invoke="main.py",
            content_checksum="0" * 64,
            package_sha256="0" * 64,
            package_size=1,
            blob_key=f"packages/bench/{name}",
            wrapped_data_key=b"\0" * 60,
        )
        session.add(version)
        session.flush()
        return app.id, version.id


def load(ctx: ServerContext, runs: int, apps: int, now: datetime) -> list[Tenant]:
    """Two accounts, `apps` apps split between them, `runs` runs over HISTORY to `now`."""
    tenants = _tenants(ctx)
    per_app = runs // apps
    step = int(HISTORY.total_seconds()) // per_app
    t0 = int((now - HISTORY).timestamp())
    engine = ctx.sessions.kw["bind"]
    statement = text(_insert_runs_sql(engine.dialect.name)).bindparams(
        *(bindparam(k, type_=Uuid()) for k in ("account", "app", "version", "prod", "default"))
    )
    apps_made = [
        (tenants[index % 2], *_app_with_version(ctx, tenants[index % 2], f"app-{index:02d}"))
        for index in range(apps)
    ]
    with _bulk_load(engine) as conn:
        for index, (tenant, app_id, version_id) in enumerate(apps_made):
            conn.execute(
                statement,
                {
                    "n": per_app,
                    "k": index,
                    "active": 2 if index % ACTIVE_APPS == 0 else 0,
                    "t0": t0,
                    "step": step,
                    "salt": index * 37,
                    "account": tenant.account_id,
                    "app": app_id,
                    "version": version_id,
                    "prod": tenant.environments["prod"],
                    "default": tenant.environments["default"],
                },
            )
            conn.execute(
                text("UPDATE apps SET last_run_number = :n WHERE id = :id").bindparams(
                    bindparam("id", type_=Uuid())
                ),
                {"n": per_app, "id": app_id},
            )
    return tenants


@contextmanager
def _bulk_load(engine: Engine) -> Iterator[Connection]:
    """One transaction without the secondary indexes of `runs`, rebuilt at the end: a
    sorted build is many times faster than a million random index inserts."""
    indexes = list(models.Run.__table__.indexes)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA cache_size = -262144")  # 256 MiB for the load
        for index in indexes:
            index.drop(conn)
        yield conn
        for index in indexes:
            index.create(conn)
        if engine.dialect.name == "sqlite":  # back to the default: measure what a server gets
            conn.exec_driver_sql("PRAGMA cache_size = -2000")


def _requests(now: datetime) -> dict[str, tuple[str, dict[str, object]]]:
    def iso(delta: timedelta) -> str:
        return (now - delta).isoformat().replace("+00:00", "Z")

    month = {"start_at": iso(timedelta(days=30)), "end_at": iso(timedelta(0))}
    return {
        "runs page 1": ("/v1/runs", {"page": 1, "page_size": 20}),
        "runs page 500": ("/v1/runs", {"page": 500, "page_size": 20}),
        "app runs page 1": ("/v1/apps/app-00/runs", {"page": 1, "page_size": 20}),
        "runs crashed|errored p1": ("/v1/runs", {"status": ["crashed", "errored"]}),
        "runs pending|running p1": ("/v1/runs", {"status": ["pending", "running"]}),
        "runs one week p1": (
            "/v1/runs",
            {"start_at": iso(timedelta(days=60)), "end_at": iso(timedelta(days=53))},
        ),
        "app runs errored one week": (
            "/v1/apps/app-00/runs",
            {
                "status": "errored",
                "start_at": iso(timedelta(days=60)),
                "end_at": iso(timedelta(days=53)),
            },
        ),
        "stats runs 30 d (UTC)": ("/v1/stats/runs", month),
        "stats runs 30 d (Paris)": ("/v1/stats/runs", {**month, "timezone": "Europe/Paris"}),
        "stats runs 30 d prod": ("/v1/stats/runs", {**month, "environment": "prod"}),
        "stats runs 48 h hourly": (
            "/v1/stats/runs",
            {"start_at": iso(timedelta(hours=48)), "end_at": iso(timedelta(0))},
        ),
        "stats apps": ("/v1/stats/apps", {}),
        "describe app": ("/v1/apps/app-00", {}),
        "list apps": ("/v1/apps", {"page": 0}),
    }


def time_requests(ctx: ServerContext, api_key: str, now: datetime, repeat: int) -> dict:
    client = TestClient(create_app(ctx.settings, ctx), headers={"X-API-Key": api_key})
    results = {}
    for name, (path, params) in _requests(now).items():
        first = client.get(path, params=params)
        first.raise_for_status()
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            client.get(path, params=params).raise_for_status()
            samples.append(time.perf_counter() - started)
        results[name] = percentiles(samples) | {"total": _total(first.json())}
    return results


def _total(body: dict) -> int | None:
    """What the answer counted (for the table: shows the query did real work)."""
    if "pages" in body:
        return body["pages"]["total"]
    if "stats" in body:
        return body["stats"]["total_runs"]
    if "statistics" in body:
        return body["statistics"]["all_apps"]
    return None


def measure(url: str, home: Path, runs: int, apps: int, repeat: int) -> dict[str, object]:
    ctx = build_context(ServerSettings(home=home, database_url=url))
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    started = time.perf_counter()
    tenants = load(ctx, runs, apps, now)
    loaded = time.perf_counter() - started
    _analyze(ctx)
    return {
        "runs": runs,
        "apps": apps,
        "load_s": round(loaded, 1),
        "requests": time_requests(ctx, tenants[0].api_key, now, repeat),
    }


def _analyze(ctx: ServerContext) -> None:
    """PostgreSQL: what autovacuum does soon after a bulk load anyway (statistics, and
    the visibility map index-only scans need). SQLite is measured as a server runs it:
    without ANALYZE."""
    engine = ctx.sessions.kw["bind"]
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE runs"))


@contextmanager
def postgres_database(spec: str) -> Iterator[str]:
    """A scratch database on the server of `spec` (or on a throwaway cluster)."""
    cluster = pg.start_cluster() if spec == "auto" else None
    base = cluster.url() if cluster else spec
    name = f"tower_bench_{uuid.uuid4().hex[:8]}"
    admin_url = make_url(db.normalize_url(base)).set(drivername="postgresql")
    with psycopg.connect(admin_url.render_as_string(hide_password=False), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield (
            make_url(db.normalize_url(base))
            .set(database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with psycopg.connect(admin_url.render_as_string(hide_password=False), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if cluster:
            cluster.stop()


def _table(results: dict[str, dict]) -> str:
    lines = []
    for dialect, result in results.items():
        lines.append(
            f"{dialect}: {result['runs']:,} runs, {result['apps']} apps, "
            f"loaded in {result['load_s']} s"
        )
        lines.append(f"  {'request':<28}{'p50 ms':>9}{'p95 ms':>9}{'matched':>10}")
        for name, p in result["requests"].items():
            total = "" if p["total"] is None else f"{p['total']:,}"
            lines.append(f"  {name:<28}{p['p50_ms']:>9}{p['p95_ms']:>9}{total:>10}")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--apps", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--postgres", metavar="URL|auto", help="also measure PostgreSQL")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="tower-bench-") as tmp:
        sqlite_url = f"sqlite:///{tmp}/tower.db"
        results["sqlite"] = measure(sqlite_url, Path(tmp) / "s", args.runs, args.apps, args.repeat)
        if args.postgres:
            with postgres_database(args.postgres) as url:
                results["postgresql"] = measure(
                    url, Path(tmp) / "p", args.runs, args.apps, args.repeat
                )
    report(results, _table)


if __name__ == "__main__":
    main()
