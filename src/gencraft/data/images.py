"""Image datasets: a folder of pictures (sub-folders = class labels) -> one uint8 array on disk.

``prepare_images(source, size=32, out=NAME)`` reads PNG, JPEG, WebP, BMP and GIF (first frame),
composites transparency on a background colour, fits each picture to ``size``x``size`` by a crop or
pad policy and writes, atomically (:func:`gencraft.io.atomic_dir`)::

    datasets/NAME/
      images.npy       uint8 [N, size, size, C] (C = 1 grayscale or 3 RGB)
      labels.npy       int64 [N] class index into manifest["classes"] (-1 when unlabelled)
      manifest.json    kind "images", sources (path, sha256, bytes, license, label), skipped files, digest

The built-in source ``sklearn:digits`` is the 1,797 8x8 handwritten digits shipped inside
scikit-learn (no download): labels 0-9, upscaled to ``size``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gencraft import __version__
from gencraft.errors import DataError, NotFoundError, UsageError
from gencraft.io import atomic_dir, write_json
from gencraft.paths import dataset_path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}
MIN_SIZE, MAX_SIZE = 8, 128
BUILTIN_DIGITS = "sklearn:digits"
LICENSE_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "license.txt")


@dataclass
class ImageDataset:
    """A prepared image dataset in memory."""

    path: Path
    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray  # int64 [N]; -1 = no label
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return list(self.manifest.get("classes", []))

    @property
    def n_classes(self) -> int:
        """Number of classes usable for conditioning (0 when the dataset is unlabelled)."""
        return len(self.classes) if len(self.classes) >= 2 and (self.labels >= 0).all() else 0

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[3])


def parse_color(text: str, param: str = "background") -> tuple[int, int, int]:
    """``"#rrggbb"``, ``"rrggbb"``, ``"white"``/``"black"`` -> an RGB triple."""
    named = {"white": (255, 255, 255), "black": (0, 0, 0)}
    t = text.strip().lower()
    if t in named:
        return named[t]
    t = t.lstrip("#")
    if len(t) == 3:
        t = "".join(c * 2 for c in t)
    try:
        if len(t) != 6:
            raise ValueError
        return (int(t[0:2], 16), int(t[2:4], 16), int(t[4:6], 16))
    except ValueError:
        raise UsageError(f"--{param} {text!r}: expected a colour like #ffffff, white or black", param=param) from None


def check_size(size: int) -> None:
    if not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise UsageError(f"--size {size}: images must be between {MIN_SIZE} and {MAX_SIZE} pixels", param="size")


def fit_image(img: Any, size: int, fit: str, background: tuple[int, int, int], mode: str) -> np.ndarray:
    """Composite transparency on ``background``, convert to ``mode`` (L or RGB), crop or pad to a square.

    ``crop``: scale the short side to ``size`` and cut the centre. ``pad``: scale the long side to
    ``size`` and fill the rest with the background. Downscaling uses Lanczos; upscaling small
    pictures (pixel art) uses nearest so the pixels stay sharp.
    """
    from PIL import Image

    if img.mode in ("P", "PA", "LA", "RGBA", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        img = Image.alpha_composite(base, rgba)
    img = img.convert(mode)
    w, h = img.size
    if fit == "crop":
        scale = size / min(w, h)
    else:
        scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resample = Image.Resampling.NEAREST if scale >= 2 and scale.is_integer() else Image.Resampling.LANCZOS
    img = img.resize((nw, nh), resample)
    if fit == "crop":
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    else:
        fill = background if mode == "RGB" else int(round(0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]))
        canvas = Image.new(mode, (size, size), fill)
        canvas.paste(img, ((size - nw) // 2, (size - nh) // 2))
        img = canvas
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _read_license(folder: Path) -> str:
    for name in LICENSE_FILES:
        p = folder / name
        if p.is_file():
            first = p.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            return first[0].strip()[:80] if first else "unknown"
    return "unknown"


def _scan_folder(folder: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    """(image files with their label, class names). Sub-folders are labels; files at the top have label ''."""
    files: list[tuple[Path, str]] = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if any(part.startswith(".") for part in p.relative_to(folder).parts):
            continue
        rel = p.relative_to(folder)
        label = rel.parts[0] if len(rel.parts) > 1 else ""
        files.append((p, label))
    classes = sorted({lab for _, lab in files if lab})
    return files, classes


def _digits(size: int, mode: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    raw = (d.images / 16.0 * 255.0).round().clip(0, 255).astype(np.uint8)  # ink = bright, on black
    out = []
    for a in raw:
        im = Image.fromarray(a, "L")
        if size != 8:
            im = im.resize((size, size), Image.Resampling.BICUBIC)
        if mode == "RGB":
            im = im.convert("RGB")
        arr = np.asarray(im, dtype=np.uint8)
        out.append(arr[:, :, None] if arr.ndim == 2 else arr)
    images = np.stack(out)
    digest = hashlib.sha256(raw.tobytes()).hexdigest()
    source = {"path": BUILTIN_DIGITS, "sha256": digest, "bytes": int(raw.nbytes), "license": "BSD-3-Clause",
              "images": int(len(raw)), "note": "UCI optical recognition of handwritten digits, as shipped in scikit-learn"}
    return images, d.target.astype(np.int64), source


def prepare_images(source: str | os.PathLike[str], *, size: int = 32, out: str | os.PathLike[str] | None = None,
                   fit: str = "crop", background: str = "#ffffff", channels: str = "auto",
                   license: str | None = None) -> dict[str, Any]:
    """Build an image dataset from a folder (or ``sklearn:digits``); returns the manifest (with ``skipped``).

    ``channels``: ``auto`` (grayscale when every picture is grayscale, else RGB), ``gray`` or ``rgb``.
    Unreadable or truncated files are skipped and listed in ``manifest["skipped"]``; a folder with no
    usable picture is a :class:`DataError`. Nothing is left behind on any error.
    """
    check_size(size)
    if fit not in ("crop", "pad"):
        raise UsageError(f"--fit {fit!r}: expected crop or pad", param="fit")
    if channels not in ("auto", "gray", "rgb"):
        raise UsageError(f"--channels {channels!r}: expected auto, gray or rgb", param="channels")
    bg = parse_color(background)
    src = os.fspath(source)
    name = os.fspath(out) if out is not None else (
        "digits" if src == BUILTIN_DIGITS else Path(src).expanduser().resolve().name)
    sources: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []

    if src == BUILTIN_DIGITS:
        images, labels, s = _digits(size, "RGB" if channels == "rgb" else "L")
        sources.append(s)
        classes = [str(i) for i in range(10)]
    else:
        from PIL import Image, UnidentifiedImageError

        folder = Path(src).expanduser()
        if not folder.exists():
            raise NotFoundError(f"{folder}: no such folder; give a folder of images or {BUILTIN_DIGITS}", param="source")
        if not folder.is_dir():
            raise DataError(f"{folder}: not a folder; give a folder of images (sub-folders = classes)", param="source")
        files, classes = _scan_folder(folder)
        if not files:
            raise DataError(f"{folder}: no image files (.png .jpg .webp .bmp .gif) found; "
                            "put images in it or in one sub-folder per class", param="source")
        lic = license or _read_license(folder)
        if classes and any(lab == "" for _, lab in files):
            loose = [str(p.relative_to(folder)) for p, lab in files if lab == ""]
            skipped += [{"path": p, "reason": "outside the class sub-folders"} for p in loose]
            files = [(p, lab) for p, lab in files if lab]
        decoded: list[tuple[Any, str, Path, bytes]] = []
        any_color = False
        for p, lab in files:
            data = p.read_bytes()
            try:
                from io import BytesIO

                im = Image.open(BytesIO(data))
                im.seek(0)  # GIF: first frame
                im.load()
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
                skipped.append({"path": str(p.relative_to(folder)), "reason": f"unreadable ({type(e).__name__}: {e})"[:200]})
                continue
            if im.mode not in ("L", "1", "LA", "I", "I;16", "F") and not (
                    im.mode == "P" and _palette_is_gray(im)):
                any_color = any_color or not _is_gray_content(im)
            decoded.append((im, lab, p, data))
        if not decoded:
            raise DataError(f"{folder}: none of its {len(files)} image files could be read "
                            f"(first: {skipped[0]['path']}: {skipped[0]['reason']})", param="source")
        mode = {"gray": "L", "rgb": "RGB"}.get(channels, "RGB" if any_color else "L")
        arrays, labs = [], []
        for im, lab, p, data in decoded:
            arrays.append(fit_image(im, size, fit, bg, mode))
            labs.append(classes.index(lab) if lab else -1)
            sources.append({"path": str(p.relative_to(folder)), "sha256": hashlib.sha256(data).hexdigest(),
                            "bytes": len(data), "license": lic, "label": lab or None})
        images = np.stack(arrays)
        labels = np.asarray(labs, dtype=np.int64)
        if len(classes) < 2:
            classes = []
            labels[:] = -1

    options = {"size": size, "fit": fit, "background": "#{:02x}{:02x}{:02x}".format(*bg), "channels": channels}
    h = hashlib.sha256()
    for s in sorted(x["sha256"] for x in sources):
        h.update(s.encode())
    h.update(json.dumps(options, sort_keys=True).encode())
    manifest: dict[str, Any] = {
        "format": 1, "kind": "images", "gencraft_version": __version__,
        "created": _now(), "name": Path(name).name,
        "source": src if src == BUILTIN_DIGITS else str(Path(src).expanduser().resolve()),
        "sources": sources, "options": options,
        "images": int(images.shape[0]), "shape": list(images.shape[1:]),
        "classes": classes,
        "class_counts": {c: int((labels == i).sum()) for i, c in enumerate(classes)},
        "skipped": skipped,
        "digest": h.hexdigest(),
    }
    dest = dataset_path(name)
    with atomic_dir(dest) as tmp:
        np.save(tmp / "images.npy", images, allow_pickle=False)
        np.save(tmp / "labels.npy", labels, allow_pickle=False)
        write_json(tmp / "manifest.json", manifest)
    manifest["path"] = str(dest)
    return manifest


def _palette_is_gray(im: Any) -> bool:
    pal = im.getpalette() or []
    trip = [pal[i:i + 3] for i in range(0, len(pal), 3)]
    return all(t[0] == t[1] == t[2] for t in trip if len(t) == 3)


def _is_gray_content(im: Any) -> bool:
    a = np.asarray(im.convert("RGB"), dtype=np.int16)
    return bool((np.abs(a[..., 0] - a[..., 1]).max() <= 2) and (np.abs(a[..., 1] - a[..., 2]).max() <= 2))


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).replace(microsecond=0).isoformat()


def load_image_dataset(name: str | os.PathLike[str]) -> ImageDataset:
    """Load a dataset written by :func:`prepare_images`; anything else is a one-line error."""
    p = dataset_path(name)
    mf = p / "manifest.json"
    if not mf.is_file():
        raise NotFoundError(f"image dataset {os.fspath(name)!r} not found at {p} (no manifest.json); "
                            "create it with `gencraft data images FOLDER --out NAME`", param="dataset")
    from gencraft.schemas import ImageDatasetManifest, read_json, validate_data

    manifest = read_json(mf, error=DataError, hint="prepare the dataset again")
    if not isinstance(manifest, dict) or manifest.get("kind") != "images":
        raise DataError(f"{p}: not an image dataset (manifest kind {manifest.get('kind')!r}); "
                        "create one with `gencraft data images FOLDER --out NAME`", param="dataset")
    try:
        images = np.load(p / "images.npy", allow_pickle=False)
        labels = np.load(p / "labels.npy", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{p}: cannot read images.npy/labels.npy ({e}); prepare the dataset again") from None
    validate_data(manifest, ImageDatasetManifest, mf, DataError)
    if images.dtype != np.uint8 or images.ndim != 4 or len(labels) != len(images):
        raise DataError(f"{p}: images.npy must be uint8 [N, H, W, C] with one label each; prepare the dataset again")
    if manifest.get("images") is not None and manifest["images"] != len(images):
        raise DataError(f"{p / 'images.npy'}: holds {len(images)} images but manifest.json records "
                        f"{manifest['images']}; prepare the dataset again")
    if labels.size and (labels.min() < -1 or labels.max() >= max(len(manifest.get("classes", [])), 1)):
        raise DataError(f"{p / 'labels.npy'}: labels outside the manifest's {len(manifest.get('classes', []))} "
                        "classes; prepare the dataset again")
    return ImageDataset(path=p, images=images, labels=labels.astype(np.int64), manifest=manifest)


def split_indices(n: int, val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed (train, held-out) split of ``n`` items; the held-out part selects checkpoints and measures."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_val = int(round(n * val_fraction)) if n >= 10 else 0
    n_val = min(max(n_val, 1 if n >= 10 else 0), n - 1) if n > 1 else 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
