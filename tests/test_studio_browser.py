"""The web studio in headless Chromium (Debian's ``chromium`` driven by Playwright): write with streaming,
game records, ad variants, an image grid, then find, rate and inspect it all in the library.

Screenshots of each page go to ``test-artifacts/studio-*.png``. Skips (with the reason) when
Playwright or ``/usr/bin/chromium`` is missing: ``apt-get install chromium`` and
``pip install playwright``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not installed")
from test_server import LiveServer, make_image_run, make_text_run  # noqa: E402

from gencraft.server import ServerConfig  # noqa: E402

CHROMIUM = os.environ.get("GENCRAFT_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install -y chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("browser")
    make_text_run(home, "tiny", block_size=256)
    make_image_run(home, "pixels")
    with LiveServer(ServerConfig(auth=False, home=home, rate_per_minute=0)) as s:
        yield s


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"studio-{name}.png"), full_page=True)


def test_studio_write_game_ads_images_library(browser, server: LiveServer) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelectorAll('#text-model option').length > 0")
    assert page.locator("#image-model option").count() == 1

    # write: streaming continuation with memory and an author's note
    page.fill("#memory", "A quiet story about a cat.")
    page.fill("#note", "calm")
    page.fill("#draft", "The cat sat")
    page.fill("#write-tokens", "40")
    page.fill("#write-seed", "4")
    page.click("#write-go")
    page.wait_for_function("document.getElementById('write-item').textContent.includes('saved to the library')")
    draft = page.input_value("#draft")
    assert draft.startswith("The cat sat") and len(draft) > len("The cat sat")
    shot(page, "write")

    # game records, validated
    page.click("button[data-tab=game]")
    page.select_option("#game-kind", "item")
    page.fill("#game-n", "2")
    page.click("#game-go")
    page.wait_for_selector(".game-record")
    assert page.locator(".game-record").count() == 2
    assert page.locator(".game-record .ok").count() == 2
    shot(page, "game")

    # ad variants with their checks
    page.click("button[data-tab=ads]")
    page.fill("#ads-n", "2")
    page.click("#ads-go")
    page.wait_for_selector(".ad-variant")
    assert page.locator(".ad-variant").count() == 2 and "Zap" in page.locator(".ad-variant").first.inner_text()
    shot(page, "ads")

    # an image grid
    page.click("button[data-tab=images]")
    page.fill("#img-prompt", "a")
    page.fill("#img-n", "4")
    page.click("#img-go")
    page.wait_for_selector("#img-out img.generated")
    assert page.locator("#img-out img.generated").count() == 4
    page.wait_for_function("[...document.querySelectorAll('#img-out img')].every(i => i.naturalWidth === 64)")
    shot(page, "images")

    # the library: find the written piece, rate it, see its provenance and guard results
    page.click("button[data-tab=library]")
    page.wait_for_selector(".lib-item")
    page.select_option("#lib-kind", "image")
    page.click("#lib-go")
    page.wait_for_function("document.getElementById('lib-count').textContent === '4 items'")
    # the listing carries no bytes: each picture is fetched from its content URL as its card comes into view
    listed = page.evaluate("fetch('/v1/gencraft/library?kind=image').then((r) => r.json())")["data"]
    assert listed and all("image_b64" not in d and d["content_url"] and d["content_bytes"] > 0 for d in listed)
    page.wait_for_function("document.querySelector('.lib-item img').naturalWidth > 0")
    assert page.evaluate("document.querySelector('.lib-item img').src").startswith("blob:")
    page.select_option("#lib-kind", "")
    page.fill("#lib-q", "The cat sat")
    page.click("#lib-go")
    page.wait_for_function("document.getElementById('lib-count').textContent === '1 items'")
    item = page.locator(".lib-item").first
    item.locator("button.up").click()
    page.wait_for_function("document.querySelector('.lib-item button.up').classList.contains('on')")
    item.locator("pre").click()
    page.wait_for_selector("#lib-detail .provenance")
    assert "gencraft" in page.inner_text("#lib-detail .provenance")
    assert "moderation" in page.inner_text("#lib-detail .guard")
    shot(page, "library")

    lib = server.gc.library
    rows, total = lib.search(text="The cat sat", kind="write")
    assert total == 1 and rows[0].rating == 1 and rows[0].text == draft
    assert not errors, errors
    page.close()


def test_studio_speaks_and_plays_speech_from_the_library(browser, server: LiveServer) -> None:
    """The Speech tab says a text through /v1/audio/speech and plays it; the clip is in the library,
    where it plays too."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")
    page.click("button[data-tab=speech]")
    page.wait_for_function("document.querySelectorAll('#speech-voice option').length > 1")
    page.select_option("#speech-voice", "shimmer")
    page.fill("#speech-text", "The ferry leaves at noon. Bring a warm coat.")
    page.click("#speech-go")
    page.wait_for_selector(".speech-clip audio")
    meta = page.inner_text(".speech-clip .meta")
    assert "espeak" in meta and "library item" in meta
    # the clip decodes and plays: its length is what the server said, and playback moves on
    seconds = float(meta.split(" · ")[2].split(" s")[0])
    page.wait_for_function("document.querySelector('.speech-clip audio').readyState >= 1")
    duration = page.evaluate("document.querySelector('.speech-clip audio').duration")
    assert seconds > 1.5 and abs(duration - seconds) < 0.1, (duration, seconds)
    page.evaluate("document.querySelector('.speech-clip audio').play()")
    page.wait_for_function("document.querySelector('.speech-clip audio').currentTime > 0.3")
    shot(page, "speech")

    page.click("button[data-tab=library]")
    page.select_option("#lib-kind", "speech")
    page.click("#lib-go")
    page.wait_for_function("document.getElementById('lib-count').textContent === '1 items'")
    assert "Bring a warm coat" in page.inner_text(".lib-item")
    page.wait_for_function("document.querySelector('.lib-item audio').readyState >= 1")
    assert abs(page.evaluate("document.querySelector('.lib-item audio').duration") - seconds) < 0.1
    page.evaluate("document.querySelector('.lib-item audio').play()")
    page.wait_for_function("document.querySelector('.lib-item audio').currentTime > 0.3")
    page.locator(".lib-item .meta").first.click()
    page.wait_for_selector("#lib-detail .provenance")
    assert "audio/wav" in page.inner_text("#lib-detail")
    shot(page, "speech-library")
    rows, total = server.gc.library.search(kind="speech")
    assert total == 1 and rows[0].media_type == "audio/wav" and rows[0].prompt.startswith("The ferry")
    assert not errors, errors
    page.close()
