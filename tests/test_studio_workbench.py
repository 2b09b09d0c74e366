"""The studio as a workbench, in headless Chromium: upload a tiny corpus in the Data tab and prepare it,
train a few dozen steps in the Train tab while the live chart receives points and samples, then
overlay two runs' curves and compare their samples on the same prompt and seed in the Runs tab.

Screenshots go to ``test-artifacts/studio-data.png``, ``-train.png``, ``-runs.png``. Skips like
``test_studio_browser.py`` when Playwright or Chromium is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not installed")
from test_jobs import corpus  # noqa: E402
from test_server import LiveServer  # noqa: E402
from test_studio_browser import browser, shot  # noqa: E402,F401 - the shared browser fixture

from gencraft.server import ServerConfig  # noqa: E402

FAST = "n_layer=1, n_embd=32, n_head=2, block_size=32, batch_size=8, eval_interval=10, eval_iters=2, log_interval=5"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """A home with one run trained beforehand (the other side of the comparison)."""
    from gencraft.data import prepare
    from gencraft.train.loop import train

    home = tmp_path_factory.mktemp("workbench")
    src = home / "first.txt"
    src.write_text(corpus(seed=1), encoding="utf-8")
    ds = prepare([src], home / "datasets" / "first", unit="line", license="CC0-1.0")
    train(ds, model="gpt", out=home / "runs" / "baseline", progress=False,
          overrides=[s.strip() for s in FAST.split(",")] + ["max_iters=20", "num_threads=1"])
    with LiveServer(ServerConfig(auth=False, home=home, rate_per_minute=0)) as s:
        yield s


def test_upload_train_watch_and_compare(browser, server: LiveServer, tmp_path: Path) -> None:  # noqa: F811
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelectorAll('#text-model option').length > 0")

    # Data: upload a corpus (and a binary that claims to be text), prepare it, see the manifest
    page.click("button[data-tab=data]")
    (tmp_path / "stories.txt").write_text(corpus(), encoding="utf-8")
    (tmp_path / "junk.txt").write_bytes(bytes(range(256)) * 4)
    page.set_input_files("#data-pick", [str(tmp_path / "stories.txt"), str(tmp_path / "junk.txt")])
    page.wait_for_selector("#data-files li.uploaded")
    page.wait_for_selector("#data-files li.rejected")
    assert "binary" in page.inner_text("#data-files li.rejected")
    page.fill("#data-name", "stories")
    page.fill("#data-license", "CC0-1.0")
    page.select_option("#data-unit", "line")
    page.click("#data-go")
    page.wait_for_selector("#data-manifest h4", timeout=90_000)
    assert "read" in page.inner_text("#data-manifest table") and "CC0-1.0" in page.inner_text("#data-manifest")
    assert page.locator("#data-list tr[data-name=stories]").count() == 1
    shot(page, "data")

    # Game: a batch as a job (it runs beside the training below; checked at the end)
    page.click("button[data-tab=game]")
    page.select_option("#text-model", "baseline")
    page.select_option("#game-kind", "names")
    page.fill("#game-batch-n", "2")
    page.click("#game-batch")

    # Train: a few dozen steps; the chart receives points as they come, samples at each evaluation
    page.click("button[data-tab=train]")
    page.wait_for_function("[...document.querySelectorAll('#train-dataset option')].some(o => o.value === 'stories')")
    page.select_option("#train-dataset", "stories")
    page.select_option("#train-family", "gpt")
    page.fill("#train-steps", "40")
    page.fill("#train-set", FAST + ", num_threads=1")
    page.fill("#train-out", "mine")
    page.click("#train-go")
    page.wait_for_function("Number(document.getElementById('train-chart').dataset.points || 0) >= 2", timeout=90_000)
    first = int(page.get_attribute("#train-chart", "data-points"))
    page.wait_for_function(f"Number(document.getElementById('train-chart').dataset.points) > {first}", timeout=60_000)
    page.wait_for_function("document.getElementById('train-progress').dataset.state === 'succeeded'", timeout=90_000)
    assert int(page.get_attribute("#train-chart", "data-points")) == 8 + 4  # train every 5 steps, val every 10
    assert page.locator("#train-samples .sample").count() == 4
    assert page.locator("#train-chart .series").count() == 2
    shot(page, "train")

    # Runs: both runs, curves overlaid, samples side by side on the same prompt and seed
    page.click("button[data-tab=runs]")
    page.wait_for_selector("#runs-list tr[data-name=mine]")
    for name in ("mine", "baseline"):
        page.check(f"#runs-list tr[data-name={name}] .run-pick")
    page.click("#runs-compare")
    page.wait_for_function("document.querySelectorAll('#runs-chart .series').length === 4")
    page.fill("#runs-prompt", "the cat")
    page.fill("#runs-seed", "3")
    page.fill("#runs-tokens", "16")  # the runs' context is 32 tokens
    page.click("#runs-sample")
    page.wait_for_function("document.querySelectorAll('#runs-samples .compare-col pre').length === 2")
    texts = page.locator("#runs-samples .compare-col pre").all_inner_texts()
    assert len(texts) == 2 and all(t.startswith("the cat") for t in texts)  # (a sample may end at once)
    page.click("#runs-list tr[data-name=mine] .run-name")
    page.wait_for_function("document.querySelector('#runs-detail img.curves') && "
                           "document.querySelector('#runs-detail img.curves').naturalWidth > 300")
    assert "curves.png" in page.inner_text("#runs-detail .model-card")
    shot(page, "runs")

    page.click("button[data-tab=game]")
    page.wait_for_selector("#game-batch-out[data-state]", timeout=60_000)
    assert page.get_attribute("#game-batch-out", "data-state") == "succeeded", page.inner_text("#game-batch-out")
    assert "2 stored in the library" in page.inner_text("#game-batch-out")
    assert page.locator("#game-batch-out a.batch-file").all_inner_texts() == ["names.json"]
    assert not errors, errors
    page.close()
