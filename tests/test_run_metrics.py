"""The one metrics place of every training loop: metrics.jsonl, TensorBoard event files read back by
TensorBoard's own reader, job progress events, text samples and sample grids, curves.png in the model
card, resumes that do not repeat steps, and ``gencraft runs list|compare``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from gencraft.data import prepare  # noqa: E402
from gencraft.io import read_jsonl  # noqa: E402
from gencraft.train import metrics  # noqa: E402
from gencraft.train.curves import read_metrics, summarize  # noqa: E402

WORDS = "the cat sat on a mat while seven old dogs ran past the silver gate of the quiet town".split()
FAST = ["n_layer=1", "n_head=2", "n_embd=32", "block_size=24", "batch_size=8", "eval_iters=2", "log_interval=5",
        "warmup_iters=2", "num_threads=1", "eval_interval=10"]


def lines(n: int = 80) -> list[str]:
    rng = np.random.default_rng(0)
    return [" ".join(WORDS[(int(rng.integers(len(WORDS))) + j) % len(WORDS)] for j in range(int(rng.integers(5, 10))))
            for _ in range(n)]


@pytest.fixture
def text_ds(tmp_path: Path) -> Path:
    f = tmp_path / "c.txt"
    f.write_text("\n".join(lines()) + "\n", encoding="utf-8")
    return prepare([f], "lines", unit="line", val_fraction=0.2, license="CC0-1.0")


def tb(run: Path) -> EventAccumulator:
    ea = EventAccumulator(str(run), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    ea.Reload()
    return ea


def png_ok(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


def test_text_run_reports_everywhere_and_resumes_without_repeats(text_ds: Path, tmp_path: Path) -> None:
    from gencraft.train.loop import train

    events = tmp_path / "events.jsonl"
    metrics.set_job_events(events)
    try:
        run = train(text_ds, model="gpt", out="r", overrides=FAST + ["max_iters=20"], progress=False)
    finally:
        metrics.set_job_events(None)
    recs = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in recs if r["split"] == "train"] == [5, 10, 15, 20]
    assert [r["step"] for r in recs if r["split"] == "val"] == [10, 20]

    ea = tb(run)  # TensorBoard's own reader finds the scalars beside metrics.jsonl
    assert [e.step for e in ea.Scalars("train/loss")] == [5, 10, 15, 20]
    assert [e.step for e in ea.Scalars("val/loss")] == [10, 20]
    assert ea.Scalars("val/loss")[-1].value == pytest.approx(recs[-1]["loss"], rel=1e-5)
    assert "samples/text_summary" in ea.Tags()["tensors"]

    ev = read_jsonl(events)  # what a studio job streams: progress with ETA, metrics, text samples
    prog = [e for e in ev if e["type"] == "progress"]
    assert [p["step"] for p in prog] == [5, 10, 15, 20] and prog[0]["total"] == 20
    assert prog[0]["unit"] == "tokens/s" and prog[0]["rate"] > 0 and prog[0]["eta_s"] >= 0 and prog[-1]["eta_s"] == 0
    samples = [e for e in ev if e["type"] == "sample"]
    assert [s["step"] for s in samples] == [10, 20] and all(isinstance(t, str) for t in samples[0]["texts"])
    assert sum(e["type"] == "metrics" for e in ev) == 6

    assert png_ok(run / "curves.png")[0] > 300
    card = (run / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "![Loss curves of r](curves.png)" in card

    # an interrupted session logged step 25 past its checkpoint at 20: the resume's records replace it
    from gencraft.io import append_jsonl

    append_jsonl(run / "metrics.jsonl", {"step": 25, "split": "train", "loss": 9.0})
    train(text_ds, model="gpt", out="r", overrides=["max_iters=30"], resume=True, progress=False)
    steps = [r["step"] for r in read_metrics(run) if r["split"] == "train"]
    assert steps == [5, 10, 15, 20, 25, 30]
    assert all(r["loss"] != 9.0 for r in read_metrics(run))
    assert [e.step for e in tb(run).Scalars("val/loss")] == [10, 20, 30]
    s = summarize(run)
    assert s["kind"] == "gpt" and s["step"] == 30 and s["best"] > 0 and s["params"] > 1000 and s["curves"]


def test_music_samples_are_drawn_and_heard(tmp_path: Path) -> None:
    """A music run's samples are event tokens: each is also a piano roll and a WAV, in TensorBoard
    and in the job's sample event (what the Train tab shows instead of the raw events)."""
    import wave

    run = tmp_path / "m"
    events = tmp_path / "events.jsonl"
    metrics.set_job_events(events)
    try:
        log = metrics.RunLog(run, total=10)
        log.text_samples(10, ["TS_3/4 Bar Pos_0 Pitch_60 Dur_4 Pitch_64 Dur_4 Pos_4 Pitch_67 Dur_8 Bar",
                              "Bar Pos_2 Pitch_300 Dur_4", ""], music=True)  # a broken event is skipped
        log.close(curves=False)
    finally:
        metrics.set_job_events(None)
    music = read_jsonl(events)[-1]["music"]
    assert [m["summary"] for m in music] == ["2 bars of 3/4, 3 notes, C4-G4", "1 bar of 4/4, no notes",
                                             "0 bars of 4/4, no notes"]
    assert music[2]["audio"] is None and (run / music[2]["roll"]).is_file()  # nothing to hear, still a picture
    width, height = png_ok(run / music[0]["roll"])
    assert width == 2 * 12 * 6 and height >= 13 * 4  # two bars of 12 sixteenths, at least an octave
    with wave.open(str(run / music[0]["audio"])) as w:
        assert w.getnframes() == round(4.0 * w.getframerate())  # 6 quarters at 90 bpm
    tags = tb(run).Tags()
    assert {"music/0", "music/1", "music/2"} <= set(tags["images"]) and {"music/0", "music/1"} <= set(tags["audio"])


def test_text_vae_and_image_runs_use_the_same_place(tmp_path: Path) -> None:
    from gencraft.data.images import prepare_images
    from gencraft.paths import run_path
    from gencraft.train.image import train_image
    from gencraft.train.text_vae import train_text_vae

    f = tmp_path / "v.txt"
    f.write_text("\n".join(lines(60)) + "\n", encoding="utf-8")
    ds = prepare([f], "vae-lines", unit="line", val_fraction=0.3, license="CC0-1.0")
    run = train_text_vae(ds, out="tv", overrides=["num_threads=1", "log_interval=5", "max_iters=10",
                                                  "eval_interval=10", "eval_iters=2"], progress=False)
    ea = tb(run)
    assert {"train/loss", "train/kl", "val/loss", "val/active_units"} <= set(ea.Tags()["scalars"])
    assert "samples/text_summary" in ea.Tags()["tensors"] and (run / "curves.png").is_file()

    rng = np.random.default_rng(0)
    for i in range(12):
        for name, mu in (("dark", 30), ("bright", 220)):
            (tmp_path / "toy" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(rng.normal(mu, 10, (8, 8)), 0, 255).astype(np.uint8), "L").save(
                tmp_path / "toy" / name / f"{i}.png")
    prepare_images(tmp_path / "toy", size=8, out="toy")
    train_image("toy", "dcgan", out="img", preset="tiny", steps=8, seed=0,
                overrides=["eval_every=4", "sample_every=4", "log_every=2", "batch_size=8", "diffaug=off"])
    run = run_path("img")
    ea = tb(run)
    assert [e.step for e in ea.Scalars("heldout/fid")] == [4, 8]
    assert {"train/loss_d", "train/loss_g", "train/images_per_s"} <= set(ea.Tags()["scalars"])
    assert len(ea.Images("samples")) == 2
    assert png_ok(run / "curves.png")[0] > 600  # losses and the FID-proxy side by side
    card = (run / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "(curves.png)" in card and "(samples/step_000008.png)" in card


def test_runs_list_and_compare_cli(cli, tmp_path: Path, text_ds: Path) -> None:
    from gencraft.train.loop import train

    for name, lr in (("a", "3e-3"), ("b", "1e-4")):
        train(text_ds, model="gpt", out=name, overrides=FAST + ["max_iters=10", f"learning_rate={lr}"], progress=False)
    r = cli("runs", "list", "--json")
    assert r.code == 0, r.err
    rows = {x["name"]: x for x in json.loads(r.out)}
    assert set(rows) == {"a", "b"} and rows["a"]["best"] < rows["b"]["best"]
    out = tmp_path / "cmp.png"
    r = cli("runs", "compare", "a", "b", "--out", out)
    assert r.code == 0, r.err
    assert png_ok(out)[1] > 300 and "best" in r.out and "a" in r.out
    r = cli("runs", "compare", "a", "nope", "--out", out)
    assert r.code == 2 and "nope" in r.err
    r = cli("runs", "compare", "a", "--out", out)
    assert r.code == 2 and "two or more" in r.err
