"""A throwaway PostgreSQL cluster for the test suite: `initdb` + `pg_ctl` on loopback.

The cluster lives in a temporary directory, listens on a free port of
127.0.0.1 (plus a Unix socket in that directory), trusts every local
connection, and trades durability for speed (fsync off). It is stopped with
`pg_ctl stop -m immediate` and its directory deleted when the test session
ends, or at interpreter exit if the session did not get that far.

PostgreSQL refuses to run as root, so as root the cluster runs as the OS user
`postgres` when it exists (Debian's package creates it), else as `towertest`,
created on first use.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

SUPERUSER = "postgres"  # the database role tests connect as
DEBIAN_OS_USER = "postgres"
FALLBACK_OS_USER = "towertest"
NOLOGIN_SHELL = "/usr/sbin/nologin"
START_ATTEMPTS = 3
START_TIMEOUT_S = 30
SERVER_OPTIONS = "-F -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")
MISSING_BINARIES = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or in "
    "/usr/lib/postgresql/*/bin: run `make system-deps` (Debian package `postgresql`)"
)
MAX_PARENT_PATH = 60  # + "/tower-pg-XXXXXXXX/sock/.s.PGSQL.NNNNN" stays under 107


class PgUnavailable(RuntimeError):
    """The PostgreSQL server binaries are not installed on this machine."""


def _version_key(path: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<major>/bin: sort numerically so 16 beats 9.6.
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def find_bin_dir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres: PATH first, then Debian's newest."""
    candidates: list[Path] = []
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for candidate in candidates:
        if all(os.access(candidate / name, os.X_OK) for name in REQUIRED_BINARIES):
            return candidate
    return None


def _os_user() -> str | None:
    """Who runs the server: None = this process's user (never root)."""
    if os.geteuid() != 0:
        return None
    for name in (DEBIAN_OS_USER, FALLBACK_OS_USER):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    # Another xdist worker may create it at the same moment: check again on failure.
    created = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", NOLOGIN_SHELL, FALLBACK_OS_USER],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        pwd.getpwnam(FALLBACK_OS_USER)
    except KeyError:
        raise RuntimeError(
            f"running as root and could not create the OS user {FALLBACK_OS_USER!r} "
            f"for PostgreSQL: {created.stderr.strip()}"
        ) from None
    return FALLBACK_OS_USER


def _base_parent(os_user: str | None) -> str:
    """Where to create the cluster directory: the temp dir, unless the server's user cannot
    reach it or its path is too long for a Unix socket (107 bytes); then /tmp."""
    parent = Path(tempfile.gettempdir()).resolve()
    reachable = os_user is None or all(
        os.stat(path).st_mode & stat.S_IXOTH for path in (parent, *parent.parents)
    )
    return str(parent) if reachable and len(str(parent)) <= MAX_PARENT_PATH else "/tmp"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PgCluster:
    """A running throwaway cluster; `url(dbname)` gives SQLAlchemy URLs into it."""

    bin_dir: Path
    base_dir: Path
    os_user: str | None
    port: int = 0
    startup_s: float = 0.0
    _stopped: bool = field(default=False, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "sock"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        """A plain autocommit psycopg connection (CREATE/DROP DATABASE need one)."""
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=dbname, autocommit=True
        )

    def create_database(self, name: str, *, template: str | None = None) -> None:
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with self.connect() as conn:
            conn.execute(statement)

    def drop_database(self, name: str) -> None:
        """Drop a database even if a test left connections open to it."""
        with self.connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def _run(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(arg) for arg in args]
        if self.os_user is not None:
            argv = ["runuser", "-u", self.os_user, "--", *argv]
        result = subprocess.run(
            argv, cwd=self.base_dir, capture_output=True, text=True, check=False
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{Path(args[0]).name} failed (exit {result.returncode}): {' '.join(argv)}\n"
                f"{result.stdout}{result.stderr}"
                f"{self._log_tail()}"
            )
        return result

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()[-20:]
        except OSError:
            return ""
        return "\n--- postgres.log ---\n" + "\n".join(lines)

    def init(self) -> None:
        self.socket_dir.mkdir()
        if self.os_user is not None:
            account = pwd.getpwnam(self.os_user)
            for path in (self.base_dir, self.socket_dir):
                os.chown(path, account.pw_uid, account.pw_gid)
        self._run(
            self.bin_dir / "initdb",
            "--pgdata", self.data_dir,
            "--username", SUPERUSER,
            "--auth", "trust",
            "--encoding", "UTF8",
            "--locale", "C",
            "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        # Another process may grab the port between _free_port() and bind: retry.
        for _attempt in range(START_ATTEMPTS):
            self.port = _free_port()
            options = (
                f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.socket_dir} "
                f"{SERVER_OPTIONS}"
            )
            result = self._run(
                self.bin_dir / "pg_ctl", "start",
                "--pgdata", self.data_dir,
                "--log", self.log_file,
                "--wait", "--timeout", str(START_TIMEOUT_S),
                "-o", options,
                check=False,
            )  # fmt: skip
            if result.returncode == 0:
                return
        raise RuntimeError(
            f"pg_ctl could not start PostgreSQL in {self.data_dir}:\n"
            f"{result.stdout}{result.stderr}{self._log_tail()}"
        )

    def stop(self) -> None:
        """Stop the server and delete its directory; safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        if (self.data_dir / "postmaster.pid").exists():
            self._run(
                self.bin_dir / "pg_ctl", "stop", "--pgdata", self.data_dir, "-m", "immediate",
                check=False,
            )  # fmt: skip
        shutil.rmtree(self.base_dir, ignore_errors=True)


def start_cluster(bin_dir: Path | None = None) -> PgCluster:
    """initdb + start a fresh cluster; raises PgUnavailable when PostgreSQL is not installed."""
    bin_dir = bin_dir or find_bin_dir()
    if bin_dir is None:
        raise PgUnavailable(MISSING_BINARIES)
    began = time.monotonic()
    os_user = _os_user()
    base_dir = Path(tempfile.mkdtemp(prefix="tower-pg-", dir=_base_parent(os_user)))
    cluster = PgCluster(bin_dir, base_dir, os_user)
    atexit.register(cluster.stop)
    try:
        cluster.init()
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    cluster.startup_s = time.monotonic() - began
    return cluster
