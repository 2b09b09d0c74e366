"""Post-processing of generated images: grids, upscaling, palette quantization, transparency, PNG/GIF.

Each function takes and returns plain uint8 numpy arrays ``[H, W, C]`` (C = 1, 3 or 4), so they
compose in any order::

    img = upscale(img, 8, "nearest"); img = quantize(img, 16); img = background_to_alpha(img, "#000000")
    save_png(img, "out.png", metadata={"gencraft": json.dumps(provenance)})
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from gencraft.data.images import parse_color
from gencraft.errors import UsageError
from gencraft.io import atomic_path


def to_pil(img: np.ndarray) -> Any:
    from PIL import Image

    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    mode = "L" if img.ndim == 2 else {3: "RGB", 4: "RGBA"}[img.shape[2]]
    return Image.fromarray(np.ascontiguousarray(img), mode)


def from_pil(im: Any) -> np.ndarray:
    a = np.asarray(im, dtype=np.uint8)
    return a[:, :, None] if a.ndim == 2 else a


def make_grid(images: np.ndarray, nrow: int | None = None, pad: int = 1, pad_value: int = 0) -> np.ndarray:
    """Tile uint8 images [N, H, W, C] into one image, ``nrow`` per row (default: a near-square grid)."""
    n, h, w, c = images.shape
    nrow = nrow or max(1, int(np.ceil(np.sqrt(n))))
    rows = int(np.ceil(n / nrow))
    out = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), pad_value, dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, nrow)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = img
    return out


def upscale(img: np.ndarray, factor: int, method: str = "auto") -> np.ndarray:
    """Enlarge by an integer ``factor``: ``nearest`` keeps pixel art crisp, ``lanczos`` is smooth.

    ``auto`` picks nearest for small images (<= 32 px: sprites, icons) and Lanczos otherwise.
    """
    from PIL import Image

    if factor < 1:
        raise UsageError(f"--upscale {factor}: expected an integer of at least 1", param="upscale")
    if factor == 1:
        return img
    if method == "auto":
        method = "nearest" if max(img.shape[:2]) <= 32 else "lanczos"
    if method not in ("nearest", "lanczos"):
        raise UsageError(f"--resample {method!r}: expected auto, nearest or lanczos", param="resample")
    res = Image.Resampling.NEAREST if method == "nearest" else Image.Resampling.LANCZOS
    im = to_pil(img)
    return from_pil(im.resize((im.width * factor, im.height * factor), res))


def quantize(img: np.ndarray, colors: int) -> np.ndarray:
    """Reduce to a palette of at most ``colors`` colours (median cut; alpha kept as is)."""
    from PIL import Image

    if not 2 <= colors <= 256:
        raise UsageError(f"--colors {colors}: expected 2 to 256", param="colors")
    alpha = img[:, :, 3:4] if img.shape[2] == 4 else None
    rgb = to_pil(img[:, :, :3] if img.shape[2] >= 3 else np.repeat(img, 3, axis=2))
    q = rgb.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).convert("RGB")
    out = from_pil(q)
    if img.shape[2] == 1:
        out = out[:, :, :1]
    return np.concatenate([out, alpha], axis=2) if alpha is not None else out


def background_to_alpha(img: np.ndarray, color: str | tuple[int, int, int] = "auto", tolerance: int = 16) -> np.ndarray:
    """Make pixels within ``tolerance`` of the background colour transparent -> RGBA.

    ``auto`` takes the most common colour of the border as the background.
    """
    rgb = img[:, :, :3] if img.shape[2] >= 3 else np.repeat(img[:, :, :1], 3, axis=2)
    if color == "auto":
        border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
        vals, counts = np.unique(border, axis=0, return_counts=True)
        bg = vals[counts.argmax()].astype(np.int16)
    else:
        bg = np.array(parse_color(color) if isinstance(color, str) else color, dtype=np.int16)
    dist = np.abs(rgb.astype(np.int16) - bg).max(axis=2)
    alpha = np.where(dist <= tolerance, 0, img[:, :, 3] if img.shape[2] == 4 else 255).astype(np.uint8)
    return np.concatenate([rgb, alpha[:, :, None]], axis=2)


def _pnginfo(metadata: dict[str, Any] | None) -> Any:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for k, v in (metadata or {}).items():
        text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
        if text.isascii() and len(text) < 2000:
            info.add_text(k, text)  # tEXt: plain Latin-1
        else:
            info.add_itxt(k, text, zip=True)  # iTXt: UTF-8, compressed
    return info


def save_png(img: np.ndarray, path: str | os.PathLike[str], metadata: dict[str, Any] | None = None) -> None:
    """Write a PNG atomically with ``metadata`` as text chunks (tEXt, or iTXt for long/non-ASCII values)."""
    with atomic_path(path) as tmp:
        to_pil(img).save(tmp, format="PNG", pnginfo=_pnginfo(metadata))


def gif_bytes(frames: list[Any], duration_ms: int = 80) -> bytes:
    """An animated, looping GIF of ``frames`` (PIL images or ``[H, W, C]`` uint8 arrays)."""
    import io

    ims = [(f if not isinstance(f, np.ndarray) else to_pil(f if f.shape[2] != 1 else np.repeat(f, 3, axis=2)))
           .convert("RGB") for f in frames]
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=duration_ms, loop=0)
    return buf.getvalue()


def read_png_text(path: str | os.PathLike[str]) -> dict[str, str]:
    """The text chunks of a PNG (what :func:`save_png` wrote as metadata)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return dict(getattr(im, "text", {}) or {})
