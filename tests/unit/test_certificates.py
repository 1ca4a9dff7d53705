"""The runner CA, the client certificates it issues, and the TLS settings of both planes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from tests.tls_certs import make_server_certificate

from tower.client._http import TlsSettingsError, ssl_context
from tower.core import certificates
from tower.core.errors import InvalidInput
from tower.runner.settings import RunnerSettings, SettingsError
from tower.server import tls
from tower.server.settings import ServerSettings


def _ca() -> tuple[object, x509.Certificate, str]:
    key = certificates.generate_key()
    pem = certificates.ca_certificate_pem(key)
    return key, certificates.load_certificate(pem), pem


def test_the_runner_ca_is_a_self_signed_ca_that_signs_certificates_only() -> None:
    _, ca, _ = _ca()
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and not usage.digital_signature
    ca.verify_directly_issued_by(ca)
    assert ca.not_valid_after_utc - ca.not_valid_before_utc > timedelta(days=3650)


def test_a_client_certificate_is_for_client_auth_expires_with_its_credential_and_chains() -> None:
    ca_key, ca, ca_pem = _ca()
    expires = datetime.now(UTC) + timedelta(days=30)
    issued = certificates.issue_client_certificate(ca_key, ca_pem, "edge-1", not_after=expires)
    cert = certificates.load_certificate(issued.certificate_pem)

    cert.verify_directly_issued_by(ca)
    assert cert.issuer == ca.subject
    assert abs(cert.not_valid_after_utc - expires) < timedelta(seconds=1)
    assert cert.not_valid_before_utc < datetime.now(UTC)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert certificates.serial_hex(cert.serial_number) == issued.serial
    key = serialization.load_pem_private_key(issued.private_key_pem.encode(), None)
    assert key.public_key() == cert.public_key()
    # Every mint gets its own key and serial.
    again = certificates.issue_client_certificate(ca_key, ca_pem, "edge-1", not_after=expires)
    assert again.serial != issued.serial and again.private_key_pem != issued.private_key_pem


def test_a_certificate_of_another_ca_does_not_chain() -> None:
    _, ca, _ = _ca()
    other_key, _, other_pem = _ca()
    foreign = certificates.issue_client_certificate(other_key, other_pem, "x", not_after=None)
    with pytest.raises((ValueError, InvalidSignature)):
        certificates.load_certificate(foreign.certificate_pem).verify_directly_issued_by(ca)


def test_a_credential_without_expiry_gets_a_certificate_within_the_ca_lifetime() -> None:
    ca_key, ca, ca_pem = _ca()
    issued = certificates.issue_client_certificate(ca_key, ca_pem, "forever", not_after=None)
    cert = certificates.load_certificate(issued.certificate_pem)
    assert cert.not_valid_after_utc <= ca.not_valid_after_utc
    assert cert.not_valid_after_utc > datetime.now(UTC) + timedelta(days=3000)


def _server(tmp_path: Path, **values: object) -> ServerSettings:
    return ServerSettings(home=tmp_path, **values)


@pytest.fixture
def server_cert(tmp_path: Path):  # type: ignore[no-untyped-def]
    return make_server_certificate(tmp_path / "tls")


def test_https_settings_make_the_public_url_https(tmp_path: Path, server_cert) -> None:  # type: ignore[no-untyped-def]
    settings = _server(
        tmp_path, tls_cert_file=server_cert.cert_file, tls_key_file=server_cert.key_file
    )
    tls.check_settings(settings)
    assert settings.resolved_public_url == "https://127.0.0.1:8000"
    assert _server(tmp_path).resolved_public_url == "http://127.0.0.1:8000"
    assert tls.ssl_options(_server(tmp_path)) == {}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"tls_cert_file": "CERT"}, "Set both TOWER_TLS_CERT_FILE and TOWER_TLS_KEY_FILE"),
        ({"tls_cert_file": "/nope.crt", "tls_key_file": "KEY"}, "/nope.crt: no such file"),
        ({"tls_cert_file": "CERT", "tls_key_file": "OTHER_KEY"}, "cannot be used together"),
        ({"runner_mtls": "sometimes"}, "TOWER_RUNNER_MTLS must be one of off, required"),
        ({"runner_mtls": "required"}, "TOWER_RUNNER_MTLS=required needs HTTPS"),
        (
            {"runner_mtls": "required", "tls_cert_file": "CERT", "tls_key_file": "KEY"},
            "set TOWER_RUNNER_PORT",
        ),
    ],
)
def test_tls_settings_that_cannot_work_are_refused_at_start(
    tmp_path: Path,
    server_cert,
    values: dict,
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    other = make_server_certificate(tmp_path / "other", "other")
    files = {
        "CERT": server_cert.cert_file,
        "KEY": server_cert.key_file,
        "OTHER_KEY": other.key_file,
    }
    resolved = {k: files.get(v, v) if isinstance(v, str) else v for k, v in values.items()}
    with pytest.raises(InvalidInput) as info:
        tls.check_settings(_server(tmp_path, **resolved))
    assert message in info.value.message


def test_the_runner_url_is_the_runner_listener_under_mutual_tls(
    tmp_path: Path, server_cert
) -> None:  # type: ignore[no-untyped-def]
    settings = _server(
        tmp_path,
        tls_cert_file=server_cert.cert_file,
        tls_key_file=server_cert.key_file,
        runner_mtls="required",
        runner_port=8443,
    )
    tls.check_settings(settings)
    assert settings.resolved_runner_url == "https://127.0.0.1:8443"
    assert _server(tmp_path).resolved_runner_url == "http://127.0.0.1:8000"


def test_runner_tls_settings(tmp_path: Path, server_cert) -> None:  # type: ignore[no-untyped-def]
    env = {
        "TOWER_CA_BUNDLE": str(server_cert.ca_file),
        "TOWER_RUNNER_CERT_FILE": str(server_cert.cert_file),
        "TOWER_RUNNER_KEY_FILE": str(server_cert.key_file),
    }
    settings = RunnerSettings.from_env(env, dotenv_path=tmp_path / "none")
    assert settings.ca_bundle == server_cert.ca_file
    assert settings.client_certificate == (server_cert.cert_file, server_cert.key_file)

    missing = {"TOWER_CA_BUNDLE": str(tmp_path / "missing.pem")}
    with pytest.raises(SettingsError, match=r"TOWER_CA_BUNDLE=.*missing\.pem: no such file"):
        RunnerSettings.from_env(missing, dotenv_path=tmp_path / "none")
    half = {"TOWER_RUNNER_CERT_FILE": str(server_cert.cert_file)}
    with pytest.raises(SettingsError, match="Set both TOWER_RUNNER_CERT_FILE and TOWER_RUNNER_KEY"):
        RunnerSettings.from_env(half, dotenv_path=tmp_path / "none")


def test_client_tls_errors_name_the_setting(tmp_path: Path, server_cert) -> None:  # type: ignore[no-untyped-def]
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    with pytest.raises(TlsSettingsError, match="TOWER_CA_BUNDLE="):
        ssl_context(not_pem)
    other = make_server_certificate(tmp_path / "other", "other")
    with pytest.raises(TlsSettingsError, match="TOWER_RUNNER_CERT_FILE="):
        ssl_context(server_cert.ca_file, (server_cert.cert_file, other.key_file))
    assert ssl_context(server_cert.ca_file, (server_cert.cert_file, server_cert.key_file))
