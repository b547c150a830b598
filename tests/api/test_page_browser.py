"""The try-it page in a real browser (Playwright driving Debian's chromium): upload a photo, see the bars."""

from __future__ import annotations

import pytest

from moderation_worker import samples
from tests.browser import screenshot

pytestmark = [pytest.mark.integration]


def test_uploading_a_photo_shows_the_decision_and_a_bar_per_policy(browser, serve_api, tmp_path):
    served = serve_api()
    photo = tmp_path / "chelsea.png"
    photo.write_bytes(samples.sample_photos(("chelsea.png",))["chelsea.png"])
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    try:
        page.goto(served.url + "/")
        assert page.locator("#policy-list input").count() == 10  # the pack's policies, all chosen
        page.locator("#policy-list input").nth(9).uncheck()  # ask for nine
        page.set_input_files("#file", str(photo))
        page.click("#submit")
        page.wait_for_selector("#answer:not([hidden])")

        assert page.locator("#decision").inner_text() in ("allow", "review", "block")
        bars = page.locator("#bars tbody tr")
        assert bars.count() == 9
        assert page.locator("#bars .threshold").count() == 9  # each threshold marked
        assert "451×300 PNG" in page.locator("#facts").inner_text()
        screenshot(page, "api-try-it")
    finally:
        page.close()
