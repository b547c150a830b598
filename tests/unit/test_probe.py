"""The images' HEALTHCHECK (moderation_worker.probe) asks /livez on the port of the command that runs."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from moderation_worker.localstack import free_port
from moderation_worker.probe import arguments_of, main, url_for

TINI = ["/usr/bin/tini", "--", "moderation-worker"]


@pytest.mark.parametrize(
    ("arguments", "env", "port"),
    [
        ([], {}, 8080),  # the image's CMD: run
        (["run"], {"MODERATION_HEALTH_PORT": "9100"}, 9100),
        (["serve"], {}, 8000),
        (["serve"], {"MODERATION_API_PORT": "9000"}, 9000),
        (["serve", "--api-port", "9001"], {"MODERATION_API_PORT": "9000"}, 9001),  # the flag wins
        (["serve", "--api-port=9002"], {}, 9002),
        (["review"], {}, 8090),
        (["review", "web", "--review-port", "8091"], {}, 8091),
        (["run", "--log-level", "DEBUG"], {}, 8080),
    ],
)
def test_the_port_follows_the_command_its_setting_and_its_flag(arguments, env, port):
    assert url_for(arguments, env) == f"http://127.0.0.1:{port}/livez"


@pytest.mark.parametrize(
    ("arguments", "env"),
    [
        (["review", "ingest"], {}),
        (["review", "migrate"], {}),
        (["policies", "validate", "p.yaml"], {}),
        (["run"], {"MODERATION_HEALTH_PORT": "none"}),
    ],
)
def test_commands_without_an_http_server_have_nothing_to_ask(arguments, env):
    assert url_for(arguments, env) is None


def test_the_command_line_is_found_after_the_console_script_or_the_module():
    assert arguments_of([*TINI, "serve", "--api-port", "1"]) == ["serve", "--api-port", "1"]
    assert arguments_of(["python", "-m", "moderation_worker", "review"]) == ["review"]
    assert arguments_of(["/bin/sh"]) == []


class _Livez(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/livez" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def livez_server() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Livez)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _cmdline(tmp_path: Path, *arguments: str) -> Path:
    path = tmp_path / "cmdline"
    path.write_bytes("\0".join([*TINI, *arguments]).encode() + b"\0")  # as /proc/1/cmdline reads
    return path


def test_the_probe_passes_on_200_and_fails_on_an_error_or_a_closed_port(livez_server, tmp_path, monkeypatch):
    port = livez_server.server_address[1]
    monkeypatch.setenv("MODERATION_API_PORT", str(port))
    assert main(_cmdline(tmp_path, "serve")) == 0
    _Livez.status = 503
    try:
        assert main(_cmdline(tmp_path, "serve")) == 1
    finally:
        _Livez.status = 200
    # `run` asks the health port, where nothing listens here
    monkeypatch.setenv("MODERATION_HEALTH_PORT", str(free_port()))
    assert main(_cmdline(tmp_path, "run")) == 1
    assert main(_cmdline(tmp_path, "review", "ingest")) == 0
