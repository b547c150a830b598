"""`moderation-worker serve` as a process: it starts, answers, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from moderation_worker.localstack import free_port
from tests.api.conftest import data_url, png

pytestmark = [pytest.mark.integration]


def _wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"serve was not ready within {timeout_s} s")


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_answers_then_exits_zero_on_a_stop_signal(tmp_path, stop_signal):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODERATION_")}
    env |= {"MODERATION_API_PORT": str(port), "MODERATION_LOG_FORMAT": "json"}
    process = subprocess.Popen(
        [sys.executable, "-m", "moderation_worker", "serve", "--scorer", "fake"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, process)
        answer = httpx.post(
            f"{url}/v1/moderate", json={"event_id": "p", "image_url": data_url(png())}, timeout=30
        )
        assert answer.status_code == 200 and answer.json()["model"]["id"] == "fake-scorer"

        process.send_signal(stop_signal)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    assert process.returncode == 0, output[-2000:]
    assert '"api_serving"' in output
