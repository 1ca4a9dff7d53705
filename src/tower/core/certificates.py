"""X.509 for runner mutual TLS: the control plane's own CA and the client certificates
it issues to runners with their credentials.

Pure (no I/O): keys and certificates go in and come out as objects or PEM text. Keys
are ECDSA P-256: small, fast to make on every mint, and accepted by every TLS stack.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tower.core.errors import InvalidInput

CA_COMMON_NAME = "Tower runner CA"
#: the CA outlives any credential it signs; it is never rotated automatically
CA_LIFETIME = timedelta(days=3650 * 3)
#: client certificates of credentials without an expiry
DEFAULT_CLIENT_LIFETIME = timedelta(days=3650)
#: tolerate clocks a little behind ours
BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True)
class IssuedCertificate:
    certificate_pem: str
    private_key_pem: str
    #: hex of the certificate's serial number: how the control plane recognises it
    serial: str


def generate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidInput("The runner CA key is not an EC key.")
    return key


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_identifier(key: ec.EllipticCurvePrivateKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def _key_usage(*, certificate_authority: bool) -> x509.KeyUsage:
    """A CA's key signs certificates and CRLs only; a client's key signs (the TLS
    handshake) only."""
    return x509.KeyUsage(
        digital_signature=not certificate_authority,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=certificate_authority,
        crl_sign=certificate_authority,
        encipher_only=False,
        decipher_only=False,
    )


def _serial_of(key: ec.EllipticCurvePrivateKey) -> int:
    # Derived from the key, so the CA certificate made from one key is always the same
    # subject/serial (its signature still differs; only the stored one is served).
    digest = hashlib.sha256(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).digest()
    return int.from_bytes(digest[:16], "big") >> 1


def ca_certificate_pem(key: ec.EllipticCurvePrivateKey, now: datetime | None = None) -> str:
    """A self-signed CA certificate for `key`, allowed to sign end-entity certificates only."""
    start = (now or datetime.now(UTC)) - BACKDATE
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(CA_COMMON_NAME))
        .issuer_name(_name(CA_COMMON_NAME))
        .public_key(key.public_key())
        .serial_number(_serial_of(key))
        .not_valid_before(start)
        .not_valid_after(start + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(certificate_authority=True), critical=True)
        .add_extension(_key_identifier(key), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def issue_client_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert_pem: str,
    common_name: str,
    *,
    not_after: datetime | None,
    now: datetime | None = None,
) -> IssuedCertificate:
    """A client certificate (clientAuth only) with a fresh key, signed by the CA.

    It expires with its credential (`not_after`), never after the CA itself.
    """
    ca_cert = load_certificate(ca_cert_pem)
    start = (now or datetime.now(UTC)) - BACKDATE
    end = min(not_after or start + DEFAULT_CLIENT_LIFETIME, ca_cert.not_valid_after_utc)
    key = generate_key()
    serial = x509.random_serial_number()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name[:64] or "tower-runner"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(certificate_authority=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(_key_identifier(key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return IssuedCertificate(
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        private_key_pem=key_to_pem(key).decode(),
        serial=serial_hex(serial),
    )


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def load_certificate(pem: str | bytes) -> x509.Certificate:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise InvalidInput(f"Not a PEM certificate: {exc}") from exc


def serial_of_der(der: bytes) -> str:
    """The serial (hex) of a DER certificate, as a TLS peer presented it."""
    return serial_hex(x509.load_der_x509_certificate(der).serial_number)
