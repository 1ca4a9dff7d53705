"""Typed client of the runner ↔ control plane protocol (docs/runner-protocol.md).

Every call is authenticated with the runner token (`Authorization: Bearer rt-…`).
Errors surface as :class:`tower.client.ApiError` (the server answered with an error)
or :class:`tower.client.ConnectionFailed` (the server could not be reached).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx

from tower.client._http import DEFAULT_TIMEOUT_S, ClientCertificate, HttpClient

#: extra read time on top of a long-poll wait, so the server answers before we give up (s)
CLAIM_READ_MARGIN_S = 15.0
#: the longest long poll the protocol allows, for claims and heartbeats (s)
MAX_CLAIM_WAIT_S = 60.0
#: how long a runner that is stopping waits for its "no more claims" call (s)
STOP_TIMEOUT_S = 5.0
#: read timeout for package downloads, which may be large (s)
DOWNLOAD_TIMEOUT_S = 300.0
#: a replaced connection pool is closed this long after rotation, once the long polls
#: and downloads still using it are over (s)
RETIRED_CLIENT_CLOSE_S = MAX_CLAIM_WAIT_S + CLAIM_READ_MARGIN_S + DOWNLOAD_TIMEOUT_S


class RunnerApi:
    """The runner's side of `/v1/runner/*`.

    Args:
        url: the control plane URL (any path is replaced by `/v1`).
        token: the runner token (`rt-…`).
        transport: an httpx transport, for tests.
        ca_bundle: PEM CA certificates to verify the control plane with (TOWER_CA_BUNDLE).
        client_certificate: (cert file, key file) for mutual TLS.
    """

    def __init__(
        self,
        url: str,
        token: str,
        transport: httpx.BaseTransport | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        ca_bundle: str | Path | None = None,
        client_certificate: ClientCertificate | None = None,
    ) -> None:
        self.timeout_s = timeout
        self._transport = transport
        self._ca_bundle = ca_bundle
        self.http = self._client(url, token, client_certificate)

    def _client(
        self, url: str, token: str, client_certificate: ClientCertificate | None
    ) -> HttpClient:
        return HttpClient(
            url,
            token=token,
            timeout=self.timeout_s,
            transport=self._transport,
            ca_bundle=self._ca_bundle,
            client_certificate=client_certificate,
        )

    def use_credentials(
        self, token: str, client_certificate: ClientCertificate | None = None
    ) -> None:
        """Send every later request with a new (rotated) token and certificate.

        Calls already in flight finish on the old connections, which close later.
        """
        retired = self.http
        self.http = self._client(retired.url, token, client_certificate)
        closer = threading.Timer(RETIRED_CLIENT_CLOSE_S, retired.close)
        closer.daemon = True
        closer.start()

    @property
    def url(self) -> str:
        return self.http.url

    def register(
        self,
        *,
        name: str,
        hostname: str,
        version: str,
        public_key: str,
        environment: str | None,
        capacity: int,
    ) -> dict[str, Any]:
        """Announce this runner; the answer holds `runner_id` and `heartbeat_interval_seconds`."""
        body = {
            "name": name,
            "hostname": hostname,
            "version": version,
            "public_key": public_key,
            "environment": environment,
            "capacity": capacity,
        }
        return self.http.post_json("/runner/register", body)

    def claim(self, runner_id: str, wait_seconds: float, max_runs: int = 1) -> list[dict[str, Any]]:
        """Long-poll for up to `max_runs` runs: their assignments, none when
        `wait_seconds` passed idle."""
        wait = _long_poll_wait(wait_seconds)
        response = self.http.request(
            "POST",
            "/runner/claim",
            json={"runner_id": runner_id, "wait_seconds": wait, "max_runs": max_runs},
            timeout=self._long_poll_timeout(wait),
        )
        if response.status_code == 204 or not response.content:
            return []
        body = response.json()
        if not isinstance(body, dict):
            return []
        if isinstance(body.get("assignments"), list):
            return [item for item in body["assignments"] if isinstance(item, dict)]
        # A control plane that hands out one run at a time.
        return [body["assignment"]] if isinstance(body.get("assignment"), dict) else []

    def stop_claims(self, runner_id: str) -> None:
        """Take no more runs: the claim long-poll in flight ends at once, empty."""
        self.http.request(
            "POST", "/runner/claims/stop", json={"runner_id": runner_id}, timeout=STOP_TIMEOUT_S
        )

    def download_package(self, run_id: str) -> bytes:
        """The run's package as stored: `nonce(12) ‖ AES-256-GCM ciphertext+tag`."""
        timeout = httpx.Timeout(self.timeout_s, read=DOWNLOAD_TIMEOUT_S)
        response = self.http.request("GET", f"/runner/runs/{run_id}/package", timeout=timeout)
        return response.content

    def report_status(self, run_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send one status report (`status_report_body(...)`); a 409 ApiError means the
        attempt is stale."""
        return self.http.post_json(f"/runner/runs/{run_id}/status", body) or {}

    def report_statuses(
        self,
        runner_id: str,
        reports: list[dict[str, Any]],
        claim_max_runs: int = 0,
        *,
        logs: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Several status reports (`status_report_body(...)` plus `run_id`) and log
        batches (`send_logs`'s body plus `run_id`) in one request, and a claim of up
        to `claim_max_runs` runs without waiting.

        The answer: `results` and `log_results` (in order: `{run_id, status}` or
        `{run_id, accepted}`, or `{run_id, error}` where `error.status` is the HTTP
        status the single call would have answered) and `assignments`."""
        body: dict[str, Any] = {
            "runner_id": runner_id,
            "reports": reports,
            "claim_max_runs": claim_max_runs,
        }
        if logs:
            body["logs"] = logs
        return self.http.post_json("/runner/reports", body) or {}

    def send_logs(
        self,
        run_id: str,
        attempt_seq: int,
        lines: list[dict[str, Any]],
        *,
        fencing_token: str | None,
    ) -> int:
        """Ship a batch of log lines; returns how many the server accepted (409: stale)."""
        body = {"attempt_seq": attempt_seq, "fencing_token": fencing_token, "lines": lines}
        answer = self.http.post_json(f"/runner/runs/{run_id}/logs", body) or {}
        return int(answer.get("accepted", 0))

    def heartbeat(self, runner_id: str, run_ids: list[str], wait_seconds: float = 0.0) -> list[str]:
        """Renew the leases of `run_ids`, then wait up to `wait_seconds` for a run to stop.

        The server answers as soon as one of this runner's runs must stop; the answer
        lists the runs to stop (empty when `wait_seconds` passed quietly).
        """
        wait = _long_poll_wait(wait_seconds)
        body = {"runner_id": runner_id, "run_ids": list(run_ids), "wait_seconds": wait}
        answer = self.http.post_json(
            "/runner/heartbeat", body, timeout=self._long_poll_timeout(wait)
        )
        return [str(run_id) for run_id in (answer or {}).get("cancel") or []]

    def rotate_credentials(self) -> dict[str, Any]:
        """A new credential replacing this one: `{token, certificate, private_key, root_ca,
        expires_at, credential_rotate_after, …}`; the current one keeps working briefly."""
        return self.http.post_json("/runner/credentials/rotate")["credentials"]

    def _long_poll_timeout(self, wait: float) -> httpx.Timeout:
        return httpx.Timeout(self.timeout_s, read=wait + CLAIM_READ_MARGIN_S)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RunnerApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _long_poll_wait(wait_seconds: float) -> float:
    return max(0.0, min(float(wait_seconds), MAX_CLAIM_WAIT_S))


def status_report_body(
    attempt_seq: int,
    status: str,
    exit_code: int | None = None,
    message: str | None = None,
    *,
    fencing_token: str | None,
    lines: list[dict[str, Any]] | None = None,
    started_seconds_ago: float | None = None,
) -> dict[str, Any]:
    """The JSON of one status report: move the attempt to `status`.

    `lines`: the attempt's last log lines, stored with the status.
    `started_seconds_ago`: when the app started, if `running` was not reported.
    """
    body: dict[str, Any] = {
        "attempt_seq": attempt_seq,
        "fencing_token": fencing_token,
        "status": str(status),
    }
    if exit_code is not None:
        body["exit_code"] = exit_code
    if message is not None:
        body["message"] = message
    if lines:
        body["lines"] = lines
    if started_seconds_ago is not None:
        body["started_seconds_ago"] = round(max(0.0, started_seconds_ago), 6)
    return body
