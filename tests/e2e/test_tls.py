"""The control plane on real HTTPS (a certificate made here), runners and the CLI that
verify it through TOWER_CA_BUNDLE, and runner endpoints behind mutual TLS with the
client certificates the control plane issues with runner credentials."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from tests.e2e.cluster import ADMIN_KEY, Cluster
from tests.e2e.conftest import write_app
from tests.live import BIN, free_port
from tests.tls_certs import ServerCertificate, make_server_certificate
from tower.server.app import build_context
from tower.server.settings import ServerSettings
from tower.server.store import models

EXIT_WAIT_S = 20.0


def _tls_cluster(root: Path, cert: ServerCertificate, **extra: str) -> Cluster:
    cluster = Cluster(
        root,
        server_env={
            "TOWER_TLS_CERT_FILE": str(cert.cert_file),
            "TOWER_TLS_KEY_FILE": str(cert.key_file),
            **extra,
        },
        verify=ssl.create_default_context(cafile=cert.ca_file),
    )
    cluster.start_server()
    return cluster


def _stop(cluster: Cluster) -> None:
    # A graceful runner stop waits out its claim long poll; nothing here needs one.
    for runner in cluster.runners:
        if runner.poll() is None:
            cluster.kill_runner(runner)
    cluster.stop()


@pytest.fixture
def cert(tmp_path: Path) -> ServerCertificate:
    return make_server_certificate(tmp_path / "tls")


@pytest.fixture
def https_cluster(tmp_path: Path, cert: ServerCertificate) -> Iterator[Cluster]:
    cluster = _tls_cluster(tmp_path, cert)
    try:
        yield cluster
    finally:
        _stop(cluster)


def _run_app_to_the_end(cluster: Cluster, root: Path) -> dict:
    app = write_app(root, "hello-tls", "main.py", "print('over tls')\n")
    with cluster.api() as api:
        cluster.deploy(api, app)
        answer = api.post("/apps/hello-tls/runs", json={"parameters": {}})
        answer.raise_for_status()
        return cluster.wait_run(api, "hello-tls", answer.json()["run"]["number"], timeout=90)


def _exits_with(runner: subprocess.Popen[bytes], cluster: Cluster, log: str) -> str:
    try:
        code = runner.wait(EXIT_WAIT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the runner kept going:\n{cluster.log(log)}")
    assert code == 1, cluster.log(log)
    return cluster.log(log)


def test_a_runner_trusting_the_ca_bundle_runs_an_app_over_https(
    https_cluster: Cluster, cert: ServerCertificate, tmp_path: Path
) -> None:
    assert https_cluster.url.startswith("https://")
    https_cluster.start_runner(TOWER_CA_BUNDLE=str(cert.ca_file))
    run = _run_app_to_the_end(https_cluster, tmp_path / "apps")
    assert run["status"] == "exited", https_cluster.logs()


def test_a_runner_without_the_ca_bundle_stops_with_a_clear_error(
    https_cluster: Cluster,
) -> None:
    runner = https_cluster.start_runner()
    log = _exits_with(runner, https_cluster, "runner-0.log")
    assert "could not be verified" in log and "TOWER_CA_BUNDLE" in log


def test_the_cli_verifies_the_server_with_the_ca_bundle(
    https_cluster: Cluster, cert: ServerCertificate
) -> None:
    env = {**https_cluster.env, "TOWER_URL": https_cluster.url, "TOWER_API_KEY": ADMIN_KEY}
    tower = [str(BIN / "tower"), "runners", "list"]
    trusted = subprocess.run(
        tower, env={**env, "TOWER_CA_BUNDLE": str(cert.ca_file)}, capture_output=True, text=True
    )
    assert trusted.returncode == 0, trusted.stderr + trusted.stdout
    untrusted = subprocess.run(tower, env=env, capture_output=True, text=True)
    assert untrusted.returncode == 1
    assert "TOWER_CA_BUNDLE" in untrusted.stderr + untrusted.stdout


@pytest.fixture
def mtls_cluster(tmp_path: Path, cert: ServerCertificate) -> Iterator[Cluster]:
    cluster = _tls_cluster(
        tmp_path, cert, TOWER_RUNNER_MTLS="required", TOWER_RUNNER_PORT=str(free_port())
    )
    try:
        yield cluster
    finally:
        _stop(cluster)


def _mint(cluster: Cluster, directory: Path, name: str) -> dict[str, str]:
    """Runner credentials with their certificate and key written to files."""
    with cluster.api() as api:
        answer = api.post("/runners/credentials", json={"name": name})
    answer.raise_for_status()
    body = answer.json()["credentials"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.crt").write_text(body["certificate"])
    (directory / f"{name}.key").write_text(body["private_key"])
    return {
        "url": body["runner_service_url"],
        "token": body["token"],
        "cert": str(directory / f"{name}.crt"),
        "key": str(directory / f"{name}.key"),
    }


def test_with_mutual_tls_only_a_runner_with_its_issued_certificate_is_served(
    mtls_cluster: Cluster, cert: ServerCertificate, tmp_path: Path
) -> None:
    edge = _mint(mtls_cluster, tmp_path / "creds", "edge")
    assert edge["url"].startswith("https://127.0.0.1:") and edge["url"] != mtls_cluster.url
    runner_env = {
        "TOWER_URL": edge["url"],
        "TOWER_RUNNER_TOKEN": edge["token"],
        "TOWER_CA_BUNDLE": str(cert.ca_file),
    }

    # No client certificate: the runner listener refuses the connection.
    without = mtls_cluster.start_runner(**runner_env)
    log = _exits_with(without, mtls_cluster, "runner-0.log")
    assert "TOWER_RUNNER_CERT_FILE" in log

    mtls_cluster.start_runner(
        **runner_env, TOWER_RUNNER_CERT_FILE=edge["cert"], TOWER_RUNNER_KEY_FILE=edge["key"]
    )
    run = _run_app_to_the_end(mtls_cluster, tmp_path / "apps")
    assert run["status"] == "exited", mtls_cluster.logs()


def test_with_mutual_tls_runner_endpoints_refuse_the_api_port_and_foreign_certificates(
    mtls_cluster: Cluster, cert: ServerCertificate, tmp_path: Path
) -> None:
    edge = _mint(mtls_cluster, tmp_path / "creds", "edge")
    other = _mint(mtls_cluster, tmp_path / "creds", "other")
    register = {"name": "r", "public_key": "not checked before the credential"}
    bearer = {"Authorization": f"Bearer {edge['token']}"}

    on_api_port = httpx.post(
        f"{mtls_cluster.url}/v1/runner/register",
        json=register,
        headers=bearer,
        verify=ssl.create_default_context(cafile=cert.ca_file),
    )
    assert on_api_port.status_code == 403
    assert "mutual TLS" in on_api_port.json()["message"]

    # Another credential's certificate does not go with this token.
    foreign = httpx.Client(verify=_context(cert, other["cert"], other["key"]))
    with foreign:
        answer = foreign.post(f"{edge['url']}/v1/runner/register", json=register, headers=bearer)
    assert answer.status_code == 401
    assert "not issued with this runner token" in answer.json()["message"]


def _context(cert: ServerCertificate, client_cert: str, client_key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert.ca_file))
    context.load_cert_chain(client_cert, client_key)
    return context


def _make_rotation_due(cluster: Cluster, name: str) -> None:
    """Age the credential so that two thirds of its lifetime have passed (instead of
    waiting 16 hours)."""
    ctx = build_context(ServerSettings(home=Path(cluster.env["TOWER_HOME"])))
    now = datetime.now(UTC)
    with ctx.sessions.begin() as session:
        session.execute(
            update(models.RunnerCredential)
            .where(models.RunnerCredential.name == name)
            .values(created_at=now - timedelta(hours=20), expires_at=now + timedelta(hours=4))
        )


def _credential_count(cluster: Cluster, name: str) -> int:
    ctx = build_context(ServerSettings(home=Path(cluster.env["TOWER_HOME"])))
    with ctx.sessions.begin() as session:
        rows = session.scalars(
            select(models.RunnerCredential).where(models.RunnerCredential.name == name)
        ).all()
        return len(rows)


def test_a_runner_rotates_its_credential_and_certificate_and_keeps_working(
    tmp_path: Path, cert: ServerCertificate
) -> None:
    cluster = _tls_cluster(
        tmp_path,
        cert,
        TOWER_RUNNER_MTLS="required",
        TOWER_RUNNER_PORT=str(free_port()),
        TOWER_RUNNER_CREDENTIAL_OVERLAP_SECONDS="1",
    )
    try:
        edge = _mint(cluster, tmp_path / "creds", "edge")
        _make_rotation_due(cluster, "edge")
        runner_env = {
            "TOWER_URL": edge["url"],
            "TOWER_RUNNER_TOKEN": edge["token"],
            "TOWER_CA_BUNDLE": str(cert.ca_file),
            "TOWER_RUNNER_CERT_FILE": edge["cert"],
            "TOWER_RUNNER_KEY_FILE": edge["key"],
        }
        runner = cluster.start_runner(**runner_env)
        saved = Path(cluster.env["TOWER_HOME"]) / "runner" / "credential.json"
        deadline = time.monotonic() + EXIT_WAIT_S
        while not saved.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert saved.exists(), cluster.log("runner-0.log")
        rotated = json.loads(saved.read_text())
        assert rotated["token"] != edge["token"] and _credential_count(cluster, "edge") == 2
        assert oct(saved.stat().st_mode & 0o777) == "0o600"
        time.sleep(1.5)  # the overlap passes: the configured token no longer works

        with httpx.Client(verify=_context(cert, edge["cert"], edge["key"])) as old:
            refused = old.post(
                f"{edge['url']}/v1/runner/register",
                json={"name": "r", "public_key": "x"},
                headers={"Authorization": f"Bearer {edge['token']}"},
            )
        assert refused.status_code == 401 and "expired" in refused.json()["message"]
        run = _run_app_to_the_end(cluster, tmp_path / "apps")
        assert run["status"] == "exited", cluster.logs()

        # Restarted with the same (now retired) configuration, it goes on with the
        # rotated credential: the configured token alone would be refused.
        cluster.kill_runner(runner)
        cluster.start_runner(**runner_env)
        deadline = time.monotonic() + EXIT_WAIT_S
        while "registered as" not in cluster.log("runner-1.log"):
            assert time.monotonic() < deadline, cluster.log("runner-1.log")
            time.sleep(0.1)
    finally:
        _stop(cluster)


def test_a_key_that_does_not_match_the_certificate_stops_the_server_with_a_clear_error(
    tmp_path: Path, cert: ServerCertificate
) -> None:
    other = make_server_certificate(tmp_path / "other", "other")
    cluster = Cluster(tmp_path)
    env = {
        **cluster.env,
        "TOWER_TLS_CERT_FILE": str(cert.cert_file),
        "TOWER_TLS_KEY_FILE": str(other.key_file),
    }
    started = subprocess.run(
        [str(BIN / "tower"), "server", "--port", str(cluster.port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = started.stdout + started.stderr
    assert started.returncode == 1, output
    assert "cannot be used together" in output and "TOWER_TLS_KEY_FILE" in output
    assert "Traceback" not in output
