"""`tower runners credentials` writes the client certificate, key and CA of an HTTPS
control plane to files and prints the `.env` lines naming them."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from tests.unit.cli_fakes import isolate_config, serve, tower


class CredentialsServer:
    def __init__(self, runner_service_url: str) -> None:
        self.url = runner_service_url

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/runners/credentials"
        credentials = {
            "name": "edge 1",
            "token": "rt-secret",
            "runner_service_url": self.url,
            "expires_at": None,
            "package_signing_key": None,
            "certificate": "-----BEGIN CERTIFICATE-----\nCERT\n",
            "private_key": "-----BEGIN PRIVATE KEY-----\nKEY\n",
            "root_ca": "-----BEGIN CERTIFICATE-----\nCA\n",
        }
        return httpx.Response(201, json={"credentials": credentials})


def test_https_credentials_are_written_to_files_the_env_lines_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolate_config(tmp_path, monkeypatch)
    serve(CredentialsServer("https://tower.example:8443"), monkeypatch)
    result = tower("runners", "credentials", "--cert-dir", str(tmp_path / "certs"))
    assert result.exit_code == 0, result.output
    cert = Path(re.search(r"^TOWER_RUNNER_CERT_FILE=(\S+)$", result.output, re.M).group(1))
    key = Path(re.search(r"^TOWER_RUNNER_KEY_FILE=(\S+)$", result.output, re.M).group(1))
    assert cert.read_text().endswith("CERT\n") and key.read_text().endswith("KEY\n")
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "certs" / "edge-1-runner-ca.pem").read_text().endswith("CA\n")
    assert "TOWER_URL=https://tower.example:8443" in result.output


def test_plain_http_credentials_write_no_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolate_config(tmp_path, monkeypatch)
    serve(CredentialsServer("http://127.0.0.1:8000"), monkeypatch)
    result = tower("runners", "credentials", "--cert-dir", str(tmp_path / "certs"))
    assert result.exit_code == 0, result.output
    assert "TOWER_RUNNER_CERT_FILE" not in result.output
    assert not (tmp_path / "certs").exists()
