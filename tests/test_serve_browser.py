"""The page in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright.

Uploads a held-out photo, sees k thumbnails with the right label, clicks one and gets its
neighbours, browses a label; saves a screenshot under the test's tmp dir. Without Chromium (or
Playwright) this test alone is skipped, with the command that installs it.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from serve_support import QUERIES

CHROMIUM = os.environ.get("SIAMCLI_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
K = 6


@pytest.fixture(scope="module")  # not the session: Playwright's event loop runs until it exits, and asyncio.run() refuses to run beside it
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip("Chromium not found: install it with `apt-get install -y chromium` (or set SIAMCLI_CHROMIUM to its path)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright not installed: pip install playwright (no browser download needed)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()




def test_upload_see_neighbours_click_one_and_browse_a_label(browser, served, tmp_path):
    from playwright.sync_api import expect

    server, _ = served
    page = browser.new_page(viewport={"width": 1280, "height": 860})  # the page's CSP stays on: no eval, so no wait_for_function
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))  # CSP violations too
    page.goto(server.url)
    expect(page.locator("#summary")).to_contain_text("108 images · 12 labels")
    expect(page.locator("#labels li")).to_have_count(12)

    page.locator("#k").fill(str(K))
    page.locator("#file").set_input_files(str(QUERIES / "s7_10.png"))
    expect(page.locator("#title")).to_have_text(f"{K} nearest to s7_10.png")
    wait_for_thumbnails(page, K)
    labels = page.locator("#grid .card .label").all_inner_texts()
    with server.client() as client, open(QUERIES / "s7_10.png", "rb") as image:  # what the API answers, the page shows
        answer = client.post("/api/v1/query", files={"images": ("s7_10.png", image, "image/png")}, data={"k": str(K)}).json()
    assert labels == [row["label"] for row in answer[0]["results"]], (labels, answer)
    expect(page.locator("#preview")).to_be_visible()
    page.screenshot(path=str(tmp_path / "serve.png"))

    second = page.locator("#grid .card").nth(1)
    clicked = second.get_attribute("data-id")
    second.click()
    expect(page.locator("#title")).to_have_text(f"{K} nearest to item {clicked}")
    wait_for_thumbnails(page, K)
    assert page.locator("#grid .card").first.get_attribute("data-id") == clicked  # an item is its own nearest
    assert page.locator("#grid .card .sim-value").first.inner_text() == "1.000"

    page.locator("#labels button", has_text="s3").click()
    expect(page.locator("#title")).to_have_text("s3")
    wait_for_thumbnails(page, 9)
    assert set(page.locator("#grid .card .label").all_inner_texts()) == {"s3"}
    page.screenshot(path=str(tmp_path / "serve-label.png"))
    assert not errors, errors
    assert (tmp_path / "serve.png").stat().st_size > 10_000


def wait_for_thumbnails(page, count: int, timeout: float = 30) -> None:
    """Every card shows a decoded picture (polled from Python: the page's CSP forbids eval)."""
    loaded = "images => images.filter(i => i.complete && i.naturalWidth > 0).length"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cards = page.locator("#grid .card img")
        if cards.count() == count and cards.evaluate_all(loaded) == count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{count} thumbnails did not load in {timeout} s")


def test_the_page_asks_for_the_token_once_and_sends_it(browser, served):
    """A 401 from the API opens the token dialog; the token then goes with every API call."""
    from playwright.sync_api import expect

    server, _ = served
    token = "a-token-for-the-page"
    page = browser.new_page()
    seen: list[str | None] = []

    def guard(route, request):  # the API as a server started with --token would answer it
        seen.append(request.headers.get("authorization"))
        if request.headers.get("authorization") != f"Bearer {token}":
            return route.fulfill(status=401, json={"detail": "missing or wrong token"}, headers={"WWW-Authenticate": "Bearer"})
        return route.continue_()

    page.route("**/api/v1/**", guard)
    page.goto(server.url)
    expect(page.locator("#token-dialog")).to_be_visible()
    page.locator("#token-input").fill("wrong")
    page.locator("#token-ok").click()
    expect(page.locator("#token-error")).to_be_visible()  # refused: asked again, saying so
    page.locator("#token-input").fill(token)
    page.locator("#token-ok").click()
    expect(page.locator("#summary")).to_contain_text("108 images")
    page.locator("#labels button", has_text="s2").click()
    expect(page.locator("#title")).to_have_text("s2")
    wait_for_thumbnails(page, 9)
    assert seen[:3] == [None, "Bearer wrong", f"Bearer {token}"] and set(seen[3:]) == {f"Bearer {token}"}
