"""Free loopback ports and who listens on them (from /proc, no extra packages)."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Sequence
from pathlib import Path

from moderation_worker.localstack.common import _MAX_PORT, LOOPBACK, LocalStackError

# ---------------------------------------------------------------------------------------------------
# Ports and sockets
# ---------------------------------------------------------------------------------------------------


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True if a server could listen on ``host:port`` now.

    SO_REUSEADDR mirrors what tansu and weed do themselves, so connections of a stopped server lingering
    in TIME_WAIT do not count as taken (they do not stop a restart on the same port either).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(offsets: Sequence[int] = (0,), *, attempts: int = 50) -> int:
    """A port P such that P + each offset is free on 127.0.0.1.

    The kernel picks P (bind to port 0), so two callers racing are unlikely to get the same one; the other
    offsets are checked by binding too. A later conflict is still possible and is handled by retrying
    the start.
    """
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            base = sock.getsockname()[1]
        if base + max(offsets) <= _MAX_PORT and all(port_is_free(base + off) for off in offsets):
            return base
    raise LocalStackError(f"no free block of ports at offsets {list(offsets)} on {LOOPBACK}")


def _decode_proc_address(hex_addr: str) -> tuple[str, int]:
    # /proc/net/tcp{,6} prints addresses as native-endian 32-bit words in hex, the port big-endian.
    host_hex, port_hex = hex_addr.split(":")
    raw = bytes.fromhex(host_hex)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    host = ipaddress.IPv4Address(words) if len(words) == 4 else ipaddress.IPv6Address(words)
    return str(host), int(port_hex, 16)


def _listening_inodes() -> dict[str, tuple[str, int]]:
    inodes: dict[str, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                inodes[fields[9]] = _decode_proc_address(fields[1])
    return inodes


def listening_addresses(pid: int) -> list[tuple[str, int]] | None:
    """The (host, port) pairs process ``pid`` listens on, from /proc; None where /proc cannot tell."""
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        links = [os.readlink(fd) for fd in fd_dir.iterdir()]
    except OSError:
        return None
    inodes = _listening_inodes()
    found = {inodes[link[8:-1]] for link in links if link.startswith("socket:[") and link[8:-1] in inodes}
    return sorted(found)


def _listens_on(pid: int, port: int) -> bool:
    # Guards against a readiness probe answered by someone else's server on "our" port.
    addresses = listening_addresses(pid)
    return addresses is None or any(p == port for _, p in addresses)
