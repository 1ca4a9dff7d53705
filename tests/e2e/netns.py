"""A second "host" for end-to-end tests: a network namespace joined to this one by a
veth pair, so a runner started in it reaches the control plane only over that link.

Needs root (or CAP_NET_ADMIN) and `ip` (iproute2); `veth_namespace` skips the test,
saying why, where the machine does not allow it. Names and addresses are unique per
use, and the namespace and link are removed however the test ends.
"""

from __future__ import annotations

import ipaddress
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

#: the /16 the /30 links are carved from (private, and unlikely to be routed here)
LINK_POOL = ipaddress.ip_network("10.231.0.0/16")
IP_TIMEOUT_S = 10.0


class NetnsUnavailable(Exception):
    """This machine does not let the test create a namespace or a veth pair."""


@dataclass(frozen=True)
class Namespace:
    name: str
    #: the host side of the link: what a control plane listens on
    host_address: str
    #: the namespace's side: what its processes connect from
    inner_address: str

    @property
    def exec_prefix(self) -> list[str]:
        """Prefix a command with this to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]


def _ip(*args: str) -> None:
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False
    )
    if result.returncode != 0:
        raise NetnsUnavailable(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")


def _free_link() -> ipaddress.IPv4Network:
    """A /30 of the pool that no interface of this host uses yet."""
    used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    for _ in range(100):
        index = secrets.randbelow(LINK_POOL.num_addresses // 4)
        link = ipaddress.ip_network(f"{LINK_POOL.network_address + 4 * index}/30")
        if (
            f"{link.network_address + 1}/" not in used
            and f"{link.network_address + 2}/" not in used
        ):
            return link
    raise NetnsUnavailable(f"no free /30 left in {LINK_POOL}")


def _remove(name: str, host_side: str) -> None:
    # Deleting one end of a veth pair deletes both; then the namespace itself.
    for args in (["link", "del", host_side], ["netns", "del", name]):
        subprocess.run(["ip", *args], capture_output=True, timeout=IP_TIMEOUT_S, check=False)


def _connect(name: str, host_side: str, inner_side: str, link: ipaddress.IPv4Network) -> Namespace:
    host, inner = link.network_address + 1, link.network_address + 2
    _ip("link", "add", host_side, "type", "veth", "peer", "name", inner_side)
    _ip("link", "set", inner_side, "netns", name)
    _ip("addr", "add", f"{host}/30", "dev", host_side)
    _ip("link", "set", host_side, "up")
    inside = ["netns", "exec", name, "ip"]
    _ip(*inside, "addr", "add", f"{inner}/30", "dev", inner_side)
    _ip(*inside, "link", "set", inner_side, "up")
    _ip(*inside, "link", "set", "lo", "up")
    return Namespace(name, str(host), str(inner))


@contextmanager
def veth_namespace() -> Iterator[Namespace]:
    """A fresh namespace linked to this one; skips the test where that is not allowed."""
    if shutil.which("ip") is None:
        pytest.skip("needs `ip` (iproute2) to create a network namespace")
    tag = secrets.token_hex(4)
    # Interface names are at most 15 characters.
    name, host_side, inner_side = f"tower-e2e-{tag}", f"tw{tag}h", f"tw{tag}n"
    try:
        _ip("netns", "add", name)
    except NetnsUnavailable as exc:
        pytest.skip(f"this machine does not allow network namespaces: {exc}")
    try:
        try:
            namespace = _connect(name, host_side, inner_side, _free_link())
        except NetnsUnavailable as exc:
            pytest.skip(f"this machine does not allow a veth pair into a namespace: {exc}")
        yield namespace
    finally:
        _remove(name, host_side)


def namespace_exists(name: str) -> bool:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return any(line.split()[0] == name for line in listed.splitlines() if line.strip())
