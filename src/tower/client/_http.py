"""The one place that turns HTTP into Python: base URL, auth headers, error mapping."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx

from tower.core.errors import TowerError

DEFAULT_TIMEOUT_S = 30.0
USER_AGENT = "tower-oss-client"


class ApiError(Exception):
    """The Tower API answered with an error body."""

    def __init__(
        self, status: int, detail: str, *, code: str = "", errors: list[dict] | None = None
    ) -> None:
        self.status = status
        self.detail = detail
        self.code = code
        self.errors = errors or []
        super().__init__(self.describe())

    def describe(self) -> str:
        """The detail plus each listed error message, as a person should read it."""
        extra = [e.get("message", "") for e in self.errors if e.get("message")]
        extra = [m for m in extra if m and m not in self.detail]
        return "\n".join([self.detail, *extra]) if extra else self.detail


class ConnectionFailed(Exception):
    """The Tower API could not be reached."""


class TlsFailed(ConnectionFailed):
    """The TLS handshake failed: retrying will not help until a setting is fixed."""


class TlsSettingsError(TowerError):
    """A CA bundle or client certificate setting names something unusable."""

    code = "tls_settings"


#: (certificate file, key file) a client presents for mutual TLS
ClientCertificate = tuple[str | Path, str | Path]


def ssl_context(
    ca_bundle: str | Path | None = None, client_certificate: ClientCertificate | None = None
) -> ssl.SSLContext:
    """Verification against `ca_bundle` (TOWER_CA_BUNDLE), else the system trust store;
    `client_certificate` is presented when the server asks (mutual TLS)."""
    try:
        context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSettingsError(
            f"TOWER_CA_BUNDLE={ca_bundle} cannot be used ({exc}): it must be a PEM file of "
            "the CA certificate(s) that signed the control plane's certificate."
        ) from exc
    if client_certificate is not None:
        cert, key = client_certificate
        try:
            context.load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError) as exc:
            raise TlsSettingsError(
                f"TOWER_RUNNER_CERT_FILE={cert} and TOWER_RUNNER_KEY_FILE={key} cannot be used "
                f"({exc}): they must be the PEM certificate and private key of the same "
                "`tower runners credentials` output."
            ) from exc
    return context


def _tls_problem(url: str, exc: httpx.TransportError) -> str | None:
    """A clear explanation when `exc` is a TLS failure, naming the setting to fix."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    text = str(cause or exc)
    if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        reason = getattr(cause, "verify_message", None) or text
        return (
            f"The TLS certificate of {url} could not be verified ({reason}). If the control "
            "plane's certificate comes from your own CA, set TOWER_CA_BUNDLE to that CA's PEM "
            "file; check that TOWER_URL names the host the certificate was issued for."
        )
    if "CERTIFICATE_REQUIRED" in text.upper().replace(" ", "_"):
        return (
            f"{url} requires a runner client certificate (mutual TLS) and none was accepted "
            f"({text}). Set TOWER_RUNNER_CERT_FILE and TOWER_RUNNER_KEY_FILE to the "
            "certificate and key of `tower runners credentials`."
        )
    if cause is not None:
        return f"The TLS connection to {url} failed ({text}). Check TOWER_URL and TOWER_CA_BUNDLE."
    return None


def api_base(url: str) -> str:
    """The API root for a server URL: `<scheme>://<host>[:port]/v1` (the path is replaced)."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(path="/v1", query=None, fragment=None))


def raise_for_error(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    detail = body.get("detail") or body.get("message") or response.text or response.reason_phrase
    raise ApiError(
        response.status_code,
        str(detail),
        code=str(body.get("code", "")),
        errors=body.get("errors") if isinstance(body.get("errors"), list) else [],
    )


class HttpClient:
    """An httpx client bound to a Tower server and one credential.

    Args:
        url: the server URL (any path is replaced by `/v1`).
        api_key: sent as `X-API-Key`.
        token: a JWT or runner token, sent as `Authorization: Bearer`.
        ca_bundle: PEM CA certificates to verify HTTPS with (default: the system's).
        client_certificate: (cert file, key file) presented under mutual TLS.
        transport: an httpx transport, for tests.
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
        ca_bundle: str | Path | None = None,
        client_certificate: ClientCertificate | None = None,
    ) -> None:
        headers = {"User-Agent": USER_AGENT}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif api_key:
            headers["X-API-Key"] = api_key
        self.url = url.rstrip("/")
        verify: ssl.SSLContext | bool = True
        if httpx.URL(url).scheme == "https":
            verify = ssl_context(ca_bundle, client_certificate)
        self.http = httpx.Client(
            base_url=api_base(url),
            headers=headers,
            timeout=timeout,
            transport=transport,
            verify=verify,
        )

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            tls_problem = _tls_problem(self.url, exc)
            if tls_problem:
                raise TlsFailed(tls_problem) from exc
            raise ConnectionFailed(
                f"Could not reach the Tower API at {self.url} ({exc}). "
                "Is the server running (`tower up`) and TOWER_URL right?"
            ) from exc
        raise_for_error(response)
        return response

    def get_json(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post_json(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        response = self.request("POST", path, json=body, **kwargs)
        return response.json() if response.content else None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
