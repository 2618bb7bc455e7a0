"""The page in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright.

Uploads a held-out photo, sees k thumbnails with the right label, clicks one and gets its
neighbours, browses a label; saves a screenshot under the test's tmp dir. Then the page's
rough edges: a search started before the index summary has loaded (token prompt open), an
upload that is not an image, the query preview while browsing, similarity bars on label cards,
long labels, "hide this image". Without Chromium (or Playwright) these tests are skipped, with
the command that installs it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest
from serve_support import QUERIES, served_count, shared_server, wait_for
from test_index_cli import invoke

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




def open_page(browser, url: str | None, errors: list[str], **options):
    """A new tab (at `url` unless None) whose uncaught errors and console errors (CSP violations too) land in `errors`."""
    page = browser.new_page(viewport={"width": 1280, "height": 860}, **options)  # the page's CSP stays on
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    if url:
        page.goto(url)
    return page


def test_upload_see_neighbours_click_one_and_browse_a_label(browser, served, tmp_path):
    from playwright.sync_api import expect

    server, _ = served
    errors: list[str] = []
    page = open_page(browser, server.url, errors)
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
    """`count` cards, each showing its decoded picture (the page marks a card `loaded` on its image's load event)."""
    from playwright.sync_api import expect

    expect(page.locator("#grid .card")).to_have_count(count, timeout=timeout * 1000)
    expect(page.locator("#grid .card.loaded")).to_have_count(count, timeout=timeout * 1000)


def as_with_token(page, token: str) -> list[str | None]:
    """The API answers the page as a server started with --token would (401 without it); returns
    the Authorization header of every API call, in order."""
    seen: list[str | None] = []

    def guard(route, request):
        seen.append(request.headers.get("authorization"))
        if request.headers.get("authorization") != f"Bearer {token}":
            return route.fulfill(status=401, json={"detail": "missing or wrong token"}, headers={"WWW-Authenticate": "Bearer"})
        return route.continue_()

    page.route("**/api/v1/**", guard)
    return seen


def test_the_page_asks_for_the_token_once_and_sends_it(browser, served):
    """A 401 from the API opens the token dialog; the token then goes with every API call."""
    from playwright.sync_api import expect

    server, _ = served
    token = "a-token-for-the-page"
    page = browser.new_page()
    seen = as_with_token(page, token)
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


def test_a_search_started_before_the_index_summary_loaded_raises_nothing(browser, served):
    """A wrong token, then a file chosen while the prompt is open again: one prompt for both
    requests, no uncaught error, and once the token is right the summary, the labels and the
    search's answer all arrive."""
    from playwright.sync_api import expect

    server, _ = served
    token = "a-token-for-the-page"
    errors: list[str] = []
    page = open_page(browser, None, errors)
    as_with_token(page, token)
    page.goto(server.url)
    page.locator("#token-input").fill("wrong")
    page.locator("#token-ok").click()
    expect(page.locator("#token-error")).to_be_visible()
    page.locator("#file").set_input_files(str(QUERIES / "s7_10.png"))  # GET /api/v1/index has not answered yet
    expect(page.locator("#title")).to_have_text("Searching…")
    page.locator("#token-input").fill(token)
    page.locator("#token-ok").click()
    expect(page.locator("#token-dialog")).to_be_hidden()
    expect(page.locator("#summary")).to_contain_text("108 images · 12 labels")
    expect(page.locator("#labels li")).to_have_count(12)
    expect(page.locator("#title")).to_have_text("8 nearest to s7_10.png")
    wait_for_thumbnails(page, 8)
    assert [e for e in errors if "status of 401" not in e] == []  # the console notes the refused requests, nothing else


def test_a_file_that_is_not_an_image_leaves_no_broken_picture(browser, served):
    from playwright.sync_api import expect

    server, _ = served
    errors: list[str] = []
    page = open_page(browser, server.url, errors)
    expect(page.locator("#summary")).to_contain_text("108 images")
    notes = {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"milk, eggs, bread\n" * 10}
    page.locator("#file").set_input_files(notes)
    expect(page.locator("#title")).to_have_text("No answer")
    expect(page.locator("#message")).to_contain_text("notes.txt:")  # the server's reason, as `siamcli query` gives it
    expect(page.locator("#preview")).to_be_hidden()  # not a broken-image icon
    expect(page.locator("#drop .drop-hint")).to_be_visible()
    expect(page.locator("#query-caption")).to_have_text("notes.txt (no preview)")
    assert [e for e in errors if "400" not in e] == []  # the console notes the refused request, nothing else


def test_browsing_a_label_drops_the_query_and_shows_no_similarity(browser, served):
    from playwright.sync_api import expect

    server, _ = served
    errors: list[str] = []
    page = open_page(browser, server.url, errors)
    page.locator("#file").set_input_files(str(QUERIES / "s3_10.png"))
    expect(page.locator("#title")).to_have_text("8 nearest to s3_10.png")
    expect(page.locator("#preview")).to_be_visible()
    assert all(sim.is_visible() for sim in page.locator("#grid .card .sim").all())  # a search shows similarities
    page.locator("#labels button", has_text="s4").click()
    expect(page.locator("#title")).to_have_text("s4")
    wait_for_thumbnails(page, 9)
    expect(page.locator("#preview")).to_be_hidden()  # the upload is no longer what the grid shows
    expect(page.locator("#query-caption")).to_have_text("")
    assert [sim.is_visible() for sim in page.locator("#grid .card .sim").all()] == [False] * 9  # no empty bar
    assert not errors, errors


def test_hide_this_image_leaves_the_item_out_of_its_own_results(browser, served):
    from playwright.sync_api import expect

    server, _ = served
    errors: list[str] = []
    page = open_page(browser, server.url, errors)
    page.locator("#labels button", has_text="s5").click()
    wait_for_thumbnails(page, 9)
    first = page.locator("#grid .card").first
    item = first.get_attribute("data-id")
    first.click()
    expect(page.locator("#title")).to_have_text(f"8 nearest to item {item}")
    wait_for_thumbnails(page, 8)
    assert page.locator("#grid .card").first.get_attribute("data-id") == item  # itself first, similarity 1
    page.locator("#exclude-self").check()
    expect(page.locator("#subtitle")).to_contain_text("The image itself is hidden.")
    wait_for_thumbnails(page, 8)
    shown = [card.get_attribute("data-id") for card in page.locator("#grid .card").all()]
    assert item not in shown and len(set(shown)) == 8  # eight others
    assert page.locator("#grid .card .rank").first.inner_text() == "#1"
    assert float(page.locator("#grid .card .sim-value").first.inner_text()) < 1
    assert not errors, errors


LONG_LABEL = "objet obj10 · the blue ceramic teapot from the second shelf"


@contextlib.contextmanager
def a_label_added(tmp_path_factory, tiny_run, scratch: Path, label: str, photos: list[Path]):
    """`label` with `photos` added to the shared server's gallery and index (`--append`) for the
    block; then the gallery and the index directory are put back exactly as they were (the
    directory swapped whole, as `--force` does), so the other tests see what they expect."""
    server, run, gallery = shared_server(tmp_path_factory, tiny_run)
    served, before = run / "index", served_count(server.url)
    shutil.copytree(served, scratch / "index-before")
    folder = gallery / label
    folder.mkdir()
    for number, photo in enumerate(photos, 1):
        shutil.copy(photo, folder / f"{number}.png")
    try:
        assert invoke("index", gallery, "--model", run, "--append").exit_code == 0
        wait_for(lambda: served_count(server.url) == before + len(photos))
        yield server
    finally:
        shutil.rmtree(folder)
        os.replace(served, scratch / "index-appended")
        os.replace(scratch / "index-before", served)
        wait_for(lambda: served_count(server.url) == before)


def test_a_long_label_is_shown_whole_on_every_card(browser, served, tmp_path_factory, tiny_run, tmp_path):
    from playwright.sync_api import expect

    photos = [QUERIES / "s9_10.png", QUERIES / "s8_10.png"]
    with a_label_added(tmp_path_factory, tiny_run, tmp_path, LONG_LABEL, photos) as server:
        errors: list[str] = []
        page = open_page(browser, server.url, errors)
        page.locator("#labels button", has_text="objet obj10").click()
        wait_for_thumbnails(page, 2)
        page.locator("#grid .card").first.click()  # a search: rank and similarity share the card with the label
        expect(page.locator("#title")).to_contain_text("nearest to item")
        wait_for_thumbnails(page, 8)
        labels = page.locator("#grid .card .label")
        long = [label for label in labels.all() if label.inner_text() == LONG_LABEL]
        assert long, labels.all_inner_texts()
        for label in long:  # all of it on screen: not clipped by its box, and the box inside its card
            box = label.evaluate("e => [e.scrollWidth, e.clientWidth, e.getBoundingClientRect().right, e.closest('.card').getBoundingClientRect().right]")
            assert box[0] <= box[1] and box[2] <= box[3], box
        assert not errors, errors
