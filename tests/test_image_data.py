"""Image datasets: formats, transparency, crop/pad, labels, skipped files, one-line errors."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from gencraft.data.images import load_image_dataset, prepare_images
from gencraft.errors import DataError, UsageError


def _save(path, arr, fmt=None, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path, format=fmt)


@pytest.fixture
def sprite_folder(tmp_path):
    root = tmp_path / "sprites"
    red = np.zeros((20, 10, 3), np.uint8)
    red[..., 0] = 255
    _save(root / "red" / "a.png", red)
    _save(root / "red" / "b.jpg", red, "JPEG")
    _save(root / "red" / "c.bmp", red, "BMP")
    rgba = np.zeros((12, 12, 4), np.uint8)
    rgba[..., 2] = 255
    rgba[:6, :, 3] = 255  # top half opaque blue, bottom half transparent
    _save(root / "blue" / "d.png", rgba, mode="RGBA")
    _save(root / "blue" / "e.webp", rgba[..., :3].copy(), "WEBP")
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(root / "blue" / "f.gif", save_all=True, append_images=frames[1:])
    (root / "blue" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = root / "red" / "a.png"
    (root / "red" / "truncated.png").write_bytes(good.read_bytes()[:40])
    (root / "notes.txt").write_text("not an image")
    (root / "LICENSE").write_text("CC-BY-4.0\n")
    return root


def test_folder_dataset_formats_labels_and_manifest(sprite_folder):
    m = prepare_images(sprite_folder, size=16, out="sprites", background="#00ff00")
    ds = load_image_dataset("sprites")
    assert ds.images.shape == (6, 16, 16, 3) and ds.images.dtype == np.uint8
    assert ds.classes == ["blue", "red"] and ds.n_classes == 2
    assert sorted(ds.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    skipped = {s["path"] for s in m["skipped"]}
    assert skipped == {"blue/broken.png", "red/truncated.png"}
    src = {s["path"]: s for s in m["sources"]}
    assert src["red/a.png"]["sha256"] == hashlib.sha256((sprite_folder / "red" / "a.png").read_bytes()).hexdigest()
    assert all(s["license"] == "CC-BY-4.0" for s in m["sources"])
    on_disk = json.loads((ds.path / "manifest.json").read_text())
    assert on_disk["digest"] == m["digest"] and on_disk["kind"] == "images"
    # RGBA composited on the chosen background: the transparent half became green
    i = [k for k, s in enumerate(m["sources"]) if s["path"] == "blue/d.png"][0]
    img = ds.images[i]
    assert tuple(img[2, 8]) == (0, 0, 255) and tuple(img[13, 8]) == (0, 255, 0)
    # GIF: first frame
    j = [k for k, s in enumerate(m["sources"]) if s["path"] == "blue/f.gif"][0]
    assert abs(int(ds.images[j].mean()) - 10) <= 2


def test_crop_and_pad_policies(tmp_path):
    arr = np.zeros((10, 20), np.uint8)
    arr[:, :5] = 255  # white strip on the left, cut off by a centre crop
    _save(tmp_path / "f" / "x.png", arr)
    crop = prepare_images(tmp_path / "f", size=8, out="c", fit="crop")
    pad = prepare_images(tmp_path / "f", size=8, out="p", fit="pad", background="black")
    c, p = load_image_dataset("c").images[0, :, :, 0], load_image_dataset("p").images[0, :, :, 0]
    assert crop["shape"] == [8, 8, 1] and pad["shape"] == [8, 8, 1]
    assert c[:, 0].max() < 128  # the strip was cropped away
    assert p[4, 0] > 200 and p[0, 4] == 0  # the strip is kept; the pad rows are background


def test_digits_builtin():
    m = prepare_images("sklearn:digits", size=8, out="d8")
    ds = load_image_dataset("d8")
    assert ds.images.shape == (1797, 8, 8, 1) and ds.n_classes == 10
    assert m["sources"][0]["license"] == "BSD-3-Clause"


def test_bad_inputs_raise_one_line_errors(tmp_path):
    with pytest.raises(UsageError, match="--size"):
        prepare_images("sklearn:digits", size=200, out="x")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no image files"):
        prepare_images(empty, out="x")


@pytest.mark.parametrize("case", ["bad_size", "empty", "all_corrupt", "missing", "file"])
def test_cli_errors_exit_2_and_leave_nothing(cli, tmp_path, gencraft_home, case):
    folder = tmp_path / "in"
    folder.mkdir()
    args = ["data", "images", str(folder), "--out", "bad"]
    if case == "bad_size":
        _save(folder / "a.png", np.zeros((8, 8), np.uint8))
        args += ["--size", "4"]
    elif case == "all_corrupt":
        (folder / "a.png").write_bytes(b"garbage")
        (folder / "b.jpg").write_bytes(b"\xff\xd8\xff garbage")
    elif case == "missing":
        args[2] = str(tmp_path / "nope")
    elif case == "file":
        (tmp_path / "f.png").write_bytes(b"x")
        args[2] = str(tmp_path / "f.png")
    r = cli(*args)
    assert r.code == 2, r
    assert r.err.strip().count("\n") == 0 and "Traceback" not in r.err
    assert str(args[2]).split("/")[-1] in r.err or "--size" in r.err
    ds_dir = gencraft_home / "datasets"
    assert not ds_dir.exists() or not any(ds_dir.iterdir())  # nothing half-written


def test_cli_reports_skipped(cli, sprite_folder):
    r = cli("data", "images", str(sprite_folder), "--size", "8", "--out", "sp")
    assert r.code == 0, r.err
    assert "6 images" in r.out and "2 classes" in r.out
    assert "skipped blue/broken.png" in r.err
