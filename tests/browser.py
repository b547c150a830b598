"""Debian's Chromium driven by Playwright for Python, for the tests of pages in a real browser.

Playwright's own browser download cannot reach its servers here, so the system ``chromium`` is
launched by path, with the flags that keep it off the (closed) network. Without a chromium the tests
skip with the reason, except where ``MODERATION_TEST_REQUIRE_BROWSER=1`` (CI sets it): there they fail.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REQUIRE_BROWSER_ENV = "MODERATION_TEST_REQUIRE_BROWSER"
ARTIFACTS = Path(__file__).resolve().parents[1] / ".test-artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


def chromium_or_skip() -> str:
    path = shutil.which("chromium")
    if path is None:
        reason = "no chromium on PATH (apt-get install chromium)"
        if os.environ.get(REQUIRE_BROWSER_ENV) == "1":
            pytest.fail(f"{REQUIRE_BROWSER_ENV}=1 but {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield instance
        finally:
            instance.close()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


class ServerThread:
    """A uvicorn server on 127.0.0.1 in a thread, stopped by ``stop()`` (and waited for)."""

    def __init__(self, config) -> None:
        import uvicorn

        self.server = uvicorn.Server(config)  # in a thread, uvicorn leaves the process's signals alone
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="uvicorn-under-test")

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            if not self.thread.is_alive():
                raise RuntimeError("the server thread died while starting")
            time.sleep(0.02)
        if not self.server.started:
            raise RuntimeError("the server did not start within 30 s")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
