"""Small builders shared by the API tests."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

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
