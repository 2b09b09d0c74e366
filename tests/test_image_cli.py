"""The image commands end to end, post-processing and the FID-proxy metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from gencraft.guard.provenance import read_png_manifest
from gencraft.post.image import background_to_alpha, make_grid, quantize, read_png_text, save_png, upscale
from gencraft.train.image_eval import frechet_distance, kernel_distance, nearest_distance, precision_recall


def test_train_imagine_evaluate(cli, tmp_path):
    assert cli("data", "images", "sklearn:digits", "--size", "8", "--out", "d8").code == 0
    r = cli("train-image", "d8", "--model", "dcgan", "--preset", "tiny", "--steps", "12", "--out", "g", "-q",
            "--set", "eval_every=6", "--set", "batch_size=16")
    assert r.code == 0, r.err
    assert "FID-proxy" in r.out and "floor" in r.out and "conditional accuracy" in r.out
    # grid with a label, provenance metadata in the PNG
    out = tmp_path / "grid.png"
    r = cli("imagine", "g", "--n", "6", "--seed", "1", "--label", "3", "--out", out, "--upscale", "2")
    assert r.code == 0, r.err
    with Image.open(out) as im:
        assert im.size == (3 * 17 + 1, 2 * 17 + 1)  # each 8 px image upscaled to 16, 1 px padding
    _, meta = read_png_manifest(out.read_bytes())  # released: the manifest in the PNG's iTXt chunk
    assert meta["kind"] == "image" and meta["parameters"]["label"] == "3" and meta["seed"] == 1
    assert meta["sources"][0]["license"] == "BSD-3-Clause" and len(meta["model_digest"]) == 64
    # same seed, same pixels
    out2 = tmp_path / "grid2.png"
    cli("imagine", "g", "--n", "6", "--seed", "1", "--label", "3", "--out", out2, "--upscale", "2")
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(out2)))
    # separate files
    r = cli("imagine", "g", "--n", "3", "--separate", "--out", tmp_path / "sep" / "s.png")
    assert r.code == 0 and sorted(p.name for p in (tmp_path / "sep").iterdir()) == ["s_000.png", "s_001.png", "s_002.png"]
    # interpolation GIF
    r = cli("imagine", "g", "--interpolate", "1", "2", "--frames", "5", "--out", tmp_path / "walk.gif")
    assert r.code == 0, r.err
    with Image.open(tmp_path / "walk.gif") as im:
        assert im.n_frames == 5
    # one-line errors
    for args, needle in ((["--label", "cat"], "--label"), (["--mix", "1", "2"], "--mix"),
                         (["--truncation", "5"], "--truncation"), (["--reconstruct", str(out)], "--reconstruct")):
        r = cli("imagine", "g", "--out", tmp_path / "x.png", *args)
        assert r.code == 2 and needle in r.err and r.err.strip().count("\n") == 0, (args, r.err)
    r = cli("imagine", "nope")
    assert r.code == 2 and "not found" in r.err
    # evaluate-image: every metric beside its floor
    r = cli("evaluate-image", "g", "--json", tmp_path / "ev.json")
    assert r.code == 0, r.err
    for k in ("fid", "kid", "precision", "recall", "cond_acc", "nn_dist_mean"):
        assert k in r.out
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert len(ev["nn_dist_per_sample"]) == ev["n_samples"] and ev["floor"]["fid"] >= 0


def test_stylegan_mix_and_vae_reconstruct(cli, tmp_path):
    assert cli("data", "images", "sklearn:digits", "--size", "8", "--out", "d8").code == 0
    for kind in ("stylegan", "vae"):
        r = cli("train-image", "d8", "--model", kind, "--preset", "tiny", "--steps", "3", "--out", kind, "-q",
                "--set", "eval_every=3", "--set", "batch_size=8")
        assert r.code == 0, r.err
    r = cli("imagine", "stylegan", "--mix", "1", "2", "--n", "3", "--out", tmp_path / "mix.png", "--truncation", "0.7")
    assert r.code == 0, r.err
    with Image.open(tmp_path / "mix.png") as im:
        assert im.size == (4 * 9 + 1, 4 * 9 + 1)  # (n + 1) x (n + 1) cells
    src = tmp_path / "in.png"
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(src)
    r = cli("imagine", "vae", "--reconstruct", src, "--out", tmp_path / "rec.png")
    assert r.code == 0, r.err
    with Image.open(tmp_path / "rec.png") as im:
        assert im.size == (2 * 9 + 1, 9 + 1)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    r = cli("imagine", "vae", "--reconstruct", bad, "--out", tmp_path / "rec2.png")
    assert r.code == 2 and "bad.png" in r.err


def test_post_processing():
    img = np.zeros((4, 4, 3), np.uint8)
    img[1:3, 1:3] = (200, 10, 10)
    big = upscale(img, 3, "nearest")
    assert big.shape == (12, 12, 3) and set(map(tuple, big.reshape(-1, 3))) == {(0, 0, 0), (200, 10, 10)}
    smooth = upscale(np.repeat(np.repeat(img, 16, 0), 16, 1), 2, "auto")  # 64 px -> Lanczos: new in-between values
    assert len(set(map(tuple, smooth.reshape(-1, 3)))) > 2
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert len(np.unique(quantize(noisy, 4).reshape(-1, 3), axis=0)) <= 4
    rgba = background_to_alpha(img, "auto")
    assert rgba.shape == (4, 4, 4) and rgba[0, 0, 3] == 0 and rgba[1, 1, 3] == 255
    assert make_grid(np.zeros((5, 2, 2, 1), np.uint8), nrow=3).shape == (7, 10, 1)


def test_png_metadata_text_and_itxt(tmp_path):
    p = tmp_path / "m.png"
    save_png(np.zeros((2, 2, 3), np.uint8), p, metadata={"short": "abc", "uni": "模型 ✓", "long": "x" * 5000})
    text = read_png_text(p)
    assert text["short"] == "abc" and text["uni"] == "模型 ✓" and text["long"] == "x" * 5000
    assert not list(tmp_path.glob(".*tmp"))


def test_metrics_behave():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    shifted = b + 3.0
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, b) < 0.5 < 8 * 9 * 0.9 < frechet_distance(a, shifted)  # ||mu diff||² = 72
    assert abs(kernel_distance(a, b)) < 0.05 < kernel_distance(a, shifted)
    p, r = precision_recall(a, b)
    assert p > 0.8 and r > 0.8
    collapsed = np.repeat(b[:1], 400, axis=0) + rng.normal(scale=1e-3, size=(400, 8))
    p, r = precision_recall(a, collapsed)
    assert r < 0.1  # mode collapse shows as low recall
    imgs = rng.integers(0, 256, (5, 4, 4, 1), dtype=np.uint8)
    d = nearest_distance(imgs, imgs)
    assert np.allclose(d, 0, atol=1e-6)
    assert (nearest_distance(255 - imgs, imgs) > 0).all()
