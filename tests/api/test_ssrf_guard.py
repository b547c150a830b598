"""The SSRF guard of http(s) image URLs (api/guarded_http.py), piece by piece and against real sockets."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from ipaddress import ip_address

import pytest

from moderation_worker.api import guarded_http
from moderation_worker.api.errors import ApiError

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("10.0.0.7", "private"),
        ("172.16.3.4", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),  # AWS, GCP and Azure metadata
        ("fe80::1", "link-local"),
        ("100.100.100.200", "shared"),  # Alibaba's metadata, in the carrier-grade NAT range
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:10.0.0.7", "private"),  # IPv4-mapped IPv6 is judged as the IPv4 address it maps
        ("::ffff:169.254.169.254", "link-local"),
    ],
)
def test_addresses_that_must_not_be_reached_are_refused(address, why):
    refused = guarded_http.address_refused(ip_address(address), allow_loopback=False)
    assert refused is not None and why in refused


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"])
def test_public_addresses_pass(address):
    assert guarded_http.address_refused(ip_address(address), allow_loopback=False) is None


def test_loopback_passes_only_when_opted_in():
    assert guarded_http.address_refused(ip_address("127.0.0.1"), allow_loopback=True) is None
    assert guarded_http.address_refused(ip_address("10.0.0.1"), allow_loopback=True) is not None


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("cdn.example.com", True),
        ("CDN.Example.com.", True),
        ("img.cdn.example.com", False),  # an exact entry admits no subdomain
        ("images.example.org", True),
        ("example.org", True),
        ("evil-example.org", False),  # .example.org is a domain, not a suffix of characters
        ("example.org.evil.net", False),
    ],
)
def test_the_allowlist_matches_hosts_and_domains(host, allowed):
    assert guarded_http.host_allowed(host, ("cdn.example.com", ".example.org")) is allowed


class _Images(http.server.BaseHTTPRequestHandler):
    redirect_to = ""

    def do_GET(self) -> None:
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", self.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def image_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _fetch(url: str, allow_hosts: tuple[str, ...]):
    return guarded_http.fetch(url, allow_hosts=allow_hosts, allow_loopback=True, timeout_s=5, max_bytes=1024)


def test_a_redirect_to_a_metadata_address_is_refused_even_when_its_host_is_listed(image_server):
    _Images.redirect_to = "http://169.254.169.254/latest/meta-data/"
    with pytest.raises(ApiError) as refused:
        _fetch(f"http://127.0.0.1:{image_server}/moved", ("127.0.0.1", "169.254.169.254"))
    assert refused.value.code == "url_not_allowed" and "link-local" in refused.value.message


def test_a_redirect_to_an_unlisted_host_is_refused(image_server):
    _Images.redirect_to = "http://unlisted.example/x.png"
    with pytest.raises(ApiError) as refused:
        _fetch(f"http://127.0.0.1:{image_server}/moved", ("127.0.0.1",))
    assert refused.value.code == "url_not_allowed"


def test_the_connection_goes_to_the_checked_address_so_a_rebinding_answer_is_never_used(
    image_server, monkeypatch
):
    # Given a name whose first answer is loopback (allowed here) and every later one a private address
    answers: list[str] = []
    real = socket.getaddrinfo

    def rebinding(host, port, *args, **kwargs):
        if host == "images.test":
            address = "127.0.0.1" if not answers else "10.0.0.7"
            answers.append(address)
            return real(address, port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    # When the image is fetched by that name
    body, content_type = _fetch(f"http://images.test:{image_server}/image.png", ("images.test",))
    # Then it was resolved once, and fetched from the address that was checked
    assert body == PNG and content_type == "image/png"
    assert answers == ["127.0.0.1"]


def test_a_name_with_one_refused_address_among_its_answers_is_refused_whole(monkeypatch):
    real = socket.getaddrinfo

    def two_answers(host, port, *args, **kwargs):
        if host == "mixed.test":
            return real("93.184.215.14", port, *args, **kwargs) + real("10.0.0.7", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", two_answers)
    with pytest.raises(ApiError) as refused:
        _fetch("http://mixed.test/x.png", ("mixed.test",))
    assert refused.value.code == "url_not_allowed" and "private" in refused.value.message


def test_a_body_over_the_limit_is_refused(image_server):
    with pytest.raises(ApiError) as refused:
        guarded_http.fetch(f"http://127.0.0.1:{image_server}/image.png", allow_hosts=("127.0.0.1",),
                           allow_loopback=True, timeout_s=5, max_bytes=16)  # fmt: skip
    assert refused.value.code == "object_too_large" and refused.value.status == 413
