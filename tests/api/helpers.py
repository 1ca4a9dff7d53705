"""Small builders shared by the API tests."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import httpx

from tower.core import crypto
from tower.core.package import BuiltPackage, build_package
from tower.core.towerfile import load_towerfile

HELLO_TOWERFILE = """\
[app]
name = "{name}"
script = "./main.py"

[[parameters]]
name = "friend"
default = "Steve"

[[parameters]]
name = "token"
hidden = true
"""


def make_package(root: Path, name: str = "hello", body: str = "print('hi')\n") -> BuiltPackage:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Towerfile").write_text(HELLO_TOWERFILE.format(name=name))
    (root / "main.py").write_text(body)
    return build_package(load_towerfile(root))


def deploy(client: httpx.Client, app: str, pkg: BuiltPackage, **headers: str) -> httpx.Response:
    return client.post(
        f"/apps/{app}/deploy",
        content=pkg.data,
        headers={
            "Content-Type": "application/tar",
            "Content-Encoding": "gzip",
            "X-Tower-Checksum-SHA256": pkg.sha256,
            **headers,
        },
    )


class FakeRunnerKeys:
    """The key pair a runner registers; used to open what the server hands out."""

    def __init__(self) -> None:
        self.private = crypto.generate_rsa_private_key()
        self.public_pem = crypto.public_key_pem_spki(self.private)

    def open_package(self, assignment: dict, blob: bytes) -> bytes:
        key = crypto.rsa_unwrap(self.private, assignment["package_key"])
        return crypto.open_sealed(key, blob, assignment["package_aad"].encode())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class FakeRunner:
    """Drives the runner protocol by hand, as a runner on another host would."""

    def __init__(
        self, server: Any, *, token: str | None = None, environment: str | None = None
    ) -> None:
        self.keys = FakeRunnerKeys()
        self.http = httpx.Client(
            base_url=f"{server.url}/v1/runner",
            headers={"Authorization": f"Bearer {token or server.runner_token()}"},
            timeout=60,
        )
        registration = {"name": "fake", "public_key": self.keys.public_pem, "capacity": 1}
        registered = self.http.post("/register", json={**registration, "environment": environment})
        registered.raise_for_status()
        self.runner_id = registered.json()["runner_id"]

    def claim(self, wait: float = 0) -> dict | None:
        response = self.http.post(
            "/claim", json={"runner_id": self.runner_id, "wait_seconds": wait}
        )
        if response.status_code == 204:
            return None
        response.raise_for_status()
        return response.json()["assignment"]

    def claim_many(self, max_runs: int, wait: float = 0) -> list[dict]:
        body = {"runner_id": self.runner_id, "wait_seconds": wait, "max_runs": max_runs}
        response = self.http.post("/claim", json=body)
        if response.status_code == 204:
            return []
        response.raise_for_status()
        return response.json()["assignments"]

    def status(self, a: dict, status: str, **extra: object) -> httpx.Response:
        body = {
            "attempt_seq": a["attempt_seq"],
            "fencing_token": a["fencing_token"],
            "status": status,
            **extra,
        }
        return self.http.post(f"/runs/{a['run_id']}/status", json=body)

    def logs(self, a: dict, *lines: tuple[int, str, str], seq: int | None = None) -> httpx.Response:
        body = {
            "attempt_seq": seq or a["attempt_seq"],
            "fencing_token": a["fencing_token"],
            "lines": [
                {
                    "line_num": n,
                    "channel": ch,
                    "content": text,
                    "reported_at": "2026-01-01T00:00:00Z",
                }
                for n, ch, text in lines
            ],
        }
        return self.http.post(f"/runs/{a['run_id']}/logs", json=body)
