"""Fetching an image from an http(s) URL without letting the URL reach what it must not (SSRF).

- Only hosts on the allowlist (``MODERATION_API_HTTP_ALLOW_HOSTS``; ``.example.com`` admits the domain
  and its subdomains); an empty list means no http(s) at all.
- The name is resolved first, and every address it resolves to is checked: loopback, private,
  link-local (the cloud metadata service at 169.254.169.254 among them), shared (100.64/10, another
  metadata range), multicast, reserved and unspecified addresses are refused, IPv4-mapped IPv6 too.
- The connection goes to the address that was checked, never to a second resolution of the name,
  so DNS rebinding cannot swap it; TLS still verifies the certificate against the host name.
- Redirects are followed (at most 3) only through the same checks; a redirect to a refused host or
  address is refused.
- The whole fetch, headers and body, has a deadline enforced on the socket (a watchdog shuts it
  down), and the body a byte limit.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from urllib.parse import urljoin, urlsplit

from moderation_worker.api.errors import ApiError

_SHARED = ip_network("100.64.0.0/10")  # carrier-grade NAT; Alibaba's metadata service lives here
MAX_REDIRECTS = 3


def host_allowed(host: str, allow: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    for entry in allow:
        entry = entry.lower().rstrip(".")
        if entry.startswith(".") and (host == entry[1:] or host.endswith(entry)):
            return True
        if host == entry:
            return True
    return False


def address_refused(address: IPv4Address | IPv6Address, *, allow_loopback: bool) -> str | None:
    """Why a connection to this address is refused, or None when it may be used."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return None if allow_loopback else "a loopback address"
    # The most specific reason first: Python counts 0.0.0.0/8 and 240.0.0.0/4 as private too.
    for test, why in (
        (address.is_unspecified, "an unspecified address"),
        (address.is_link_local, "a link-local address (the cloud metadata service is one)"),
        (isinstance(address, IPv4Address) and address in _SHARED, "a shared (carrier-grade NAT) address"),
        (address.is_multicast, "a multicast address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
    ):
        if test:
            return why
    return None


def fetch(
    url: str, *, allow_hosts: tuple[str, ...], allow_loopback: bool, timeout_s: float, max_bytes: int
) -> tuple[bytes, str | None]:
    """(the body, its content type), or ApiError with a stable code."""
    deadline = time.monotonic() + timeout_s
    for _ in range(MAX_REDIRECTS + 1):
        status, location, body, content_type = _get_once(
            url, allow_hosts, allow_loopback, deadline, max_bytes
        )
        if status in (301, 302, 303, 307, 308) and location:
            url = urljoin(url, location)
            continue
        if status != 200:
            raise ApiError(422, "fetch_failed", f"the image URL answered HTTP {status}")
        return body, content_type
    raise ApiError(422, "fetch_failed", f"more than {MAX_REDIRECTS} redirects")


def _get_once(url, allow_hosts, allow_loopback, deadline, max_bytes):
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError(400, "unsupported_url", "image URLs are s3://, data: or http(s)://")
    host = parts.hostname
    if not host_allowed(host, allow_hosts):
        raise ApiError(403, "url_not_allowed", f"the host {host!r} is not on this server's allowlist")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = _checked_address(host, port, allow_loopback)
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ApiError(504, "fetch_timeout", "fetching the image URL took too long")
    sock = socket.create_connection((str(address), port), timeout=min(remaining, 10.0))
    current = [sock]  # TLS wraps the socket into a new object: the watchdog shuts whichever is current
    watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), lambda: _shut(current[0]))
    watchdog.daemon = True
    watchdog.start()
    try:
        if parts.scheme == "https":
            sock = current[0] = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        connection = http.client.HTTPConnection(host, port, timeout=min(remaining, 10.0))
        connection.sock = sock  # connected to the checked address; Host and SNI name the host
        path = parts.path or "/"
        target = path + (f"?{parts.query}" if parts.query else "")
        headers = {"Host": parts.netloc, "Accept": "image/*", "User-Agent": "moderation-worker"}
        connection.request("GET", target, headers=headers)
        response = connection.getresponse()
        length = response.getheader("Content-Length")
        if length and length.isdigit() and int(length) > max_bytes:
            raise ApiError(413, "object_too_large", f"the image is {length} bytes; the limit is {max_bytes}")
        body = response.read(max_bytes + 1) if response.status == 200 else b""
        if len(body) > max_bytes:
            raise ApiError(413, "object_too_large", f"the image is over the limit of {max_bytes} bytes")
        return response.status, response.getheader("Location"), body, response.getheader("Content-Type")
    except (OSError, http.client.HTTPException) as exc:
        if time.monotonic() >= deadline:
            raise ApiError(504, "fetch_timeout", "fetching the image URL took too long") from exc
        raise ApiError(
            502, "fetch_failed", f"fetching the image URL failed: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        watchdog.cancel()
        with contextlib.suppress(OSError):
            sock.close()


def _checked_address(host: str, port: int, allow_loopback: bool):
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ApiError(422, "fetch_failed", f"the host {host!r} does not resolve") from exc
    addresses = [ip_address(info[4][0]) for info in infos]
    for address in addresses:  # every answer: a name resolving to one bad address is refused whole
        why = address_refused(address, allow_loopback=allow_loopback)
        if why:
            raise ApiError(403, "url_not_allowed", f"the host {host!r} resolves to {why}")
    return addresses[0]


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
