"""HTTPS for the control plane, and the mutual-TLS listener runners connect to.

* `TOWER_TLS_CERT_FILE` / `TOWER_TLS_KEY_FILE`: the API serves HTTPS.
* `TOWER_RUNNER_MTLS=required` (needs the two above and `TOWER_RUNNER_PORT`): a second
  listener on the runner port asks every client for a certificate issued by the control
  plane's own CA (`services.vault.runner_ca`); a certificate of anyone else fails the
  handshake. `/v1/runner/*` answers only there, and only to a client that presented one
  (`RunnerListenerGuard`); without one the runner gets a 403 saying what to set, which
  a refused handshake could not tell it.

uvicorn does not pass the peer certificate to the app, so the runner listener uses
`ClientCertH11Protocol`, which adds it as the ASGI "tls" extension
(`scope["extensions"]["tls"]["client_cert_chain"]`); `services.auth` then checks that
the certificate is the one issued with the runner's token.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from tower.core import errors
from tower.server.settings import ServerSettings

RUNNER_PATH_PREFIX = "/v1/runner/"
MTLS_MODES = ("off", "required")
CA_FILE_NAME = "runner-ca.pem"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


def check_settings(settings: ServerSettings) -> None:
    """Refuse to start with TLS settings that cannot work, saying which one to fix."""
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if (cert is None) != (key is None):
        raise errors.InvalidInput(
            "Set both TOWER_TLS_CERT_FILE and TOWER_TLS_KEY_FILE to serve HTTPS (or neither "
            "for plain HTTP)."
        )
    if cert is not None and key is not None:
        _check_key_pair(cert.expanduser(), key.expanduser())
    mode = settings.runner_mtls.strip().lower()
    if mode not in MTLS_MODES:
        raise errors.InvalidInput(
            f"TOWER_RUNNER_MTLS must be one of {', '.join(MTLS_MODES)}, got {mode!r}."
        )
    if not settings.runner_mtls_required:
        return
    if cert is None:
        raise errors.InvalidInput(
            "TOWER_RUNNER_MTLS=required needs HTTPS: set TOWER_TLS_CERT_FILE and "
            "TOWER_TLS_KEY_FILE."
        )
    if not settings.runner_port or settings.runner_port == settings.port:
        raise errors.InvalidInput(
            "TOWER_RUNNER_MTLS=required needs its own listener: set TOWER_RUNNER_PORT to a "
            "port other than TOWER_PORT."
        )


def _check_key_pair(cert: Path, key: Path) -> None:
    for path, variable in ((cert, "TOWER_TLS_CERT_FILE"), (key, "TOWER_TLS_KEY_FILE")):
        if not path.is_file():
            raise errors.InvalidInput(f"{variable}={path}: no such file.")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise errors.InvalidInput(
            f"TOWER_TLS_CERT_FILE={cert} and TOWER_TLS_KEY_FILE={key} cannot be used together "
            f"({exc.reason or exc}): check that both are PEM and that the key belongs to the "
            "certificate."
        ) from exc
    except OSError as exc:
        raise errors.InvalidInput(f"Cannot read the TLS certificate or key: {exc}.") from exc


def ssl_options(settings: ServerSettings) -> dict[str, Any]:
    """uvicorn.Config arguments for the API listener (empty: plain HTTP)."""
    if not settings.tls_enabled:
        return {}
    assert settings.tls_cert_file is not None and settings.tls_key_file is not None
    return {
        "ssl_certfile": str(settings.tls_cert_file.expanduser()),
        "ssl_keyfile": str(settings.tls_key_file.expanduser()),
    }


def runner_listener_options(settings: ServerSettings, ca_certificate_pem: str) -> dict[str, Any]:
    """uvicorn.Config arguments for the runner listener: a client certificate, if one is
    presented, must come from our CA (the guard then requires one for runner paths)."""
    ca_file = settings.home_dir / CA_FILE_NAME
    ca_file.write_text(ca_certificate_pem)
    return {
        **ssl_options(settings),
        "port": settings.runner_port,
        "ssl_cert_reqs": ssl.CERT_OPTIONAL,
        "ssl_ca_certs": str(ca_file),
        "http": ClientCertH11Protocol,
    }


class ClientCertH11Protocol(H11Protocol):
    """h11, plus the verified client certificate in each request's ASGI "tls" extension."""

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            self.app = _with_client_cert(self.app, ssl.DER_cert_to_PEM_cert(der))


def _with_client_cert(app: Asgi, certificate_pem: str) -> Asgi:
    async def with_cert(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            extensions = scope.setdefault("extensions", {}) or {}
            extensions["tls"] = {"client_cert_chain": [certificate_pem], "server_cert": None}
            scope["extensions"] = extensions
        await app(scope, receive, send)

    return with_cert


def client_certificate(scope: Scope) -> str | None:
    """The PEM client certificate the runner listener verified, if any."""
    chain = ((scope.get("extensions") or {}).get("tls") or {}).get("client_cert_chain")
    return chain[0] if chain else None


class RunnerListenerGuard:
    """Under mutual TLS, `/v1/runner/*` only on the runner listener: elsewhere nobody
    checked a client certificate."""

    def __init__(self, app: Asgi, runner_port: int) -> None:
        self.app = app
        self.runner_port = runner_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(RUNNER_PATH_PREFIX):
            server = scope.get("server")
            if not (server and server[1] == self.runner_port):
                await _refuse(send, _WRONG_LISTENER)
                return
            if client_certificate(scope) is None:
                await _refuse(send, _NO_CERTIFICATE)
                return
        await self.app(scope, receive, send)


_WRONG_LISTENER = (
    "Runner endpoints require mutual TLS on this control plane: point the runner's "
    "TOWER_URL at the runner listener (the runner_service_url of `tower runners "
    "credentials`) and give it TOWER_RUNNER_CERT_FILE and TOWER_RUNNER_KEY_FILE."
)
_NO_CERTIFICATE = (
    "This runner listener requires a client certificate (mutual TLS): set "
    "TOWER_RUNNER_CERT_FILE and TOWER_RUNNER_KEY_FILE to the certificate and key of "
    "`tower runners credentials`."
)


async def _refuse(send: Send, message: str) -> None:
    body = json.dumps({"message": message, "error_id": "mtls_required"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
