"""Sampling image runs: grids, labels, truncation, latent interpolation, style mixing, reconstruction.

Every function returns uint8 numpy images ``[N, H, W, C]``; :mod:`gencraft.post.image` turns
them into files. The same run, arguments and ``seed`` give the same pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gencraft.data.images import fit_image, parse_color
from gencraft.errors import UsageError
from gencraft.models.image_common import to_uint8, to_unit
from gencraft.runs import load_model


@dataclass
class ImageRun:
    """A loaded image run: the model (eval mode), its gencraft.json and where it lives."""

    model: torch.nn.Module
    info: dict[str, Any]
    path: Path

    @property
    def kind(self) -> str:
        return self.info["kind"]

    @property
    def classes(self) -> list[str]:
        return list(self.info.get("image", {}).get("classes", []))

    @property
    def n_classes(self) -> int:
        return int(self.model.cfg.n_classes)


def load_image_run(run: str | os.PathLike[str]) -> ImageRun:
    """Load a vae/dcgan/stylegan run (its best checkpoint, ``model.safetensors``)."""
    model, info, path = load_model(run, modality="image", usage="give a vae, dcgan or stylegan run")
    return ImageRun(model, info, path)


def label_index(run: ImageRun, label: str | int | None) -> int | None:
    """A class name (or index) -> its index; None for unconditional sampling."""
    if label is None:
        return None
    if not run.n_classes:
        raise UsageError(f"--label {label}: {run.path} is not a conditional model (its dataset had no classes)",
                         param="label")
    names = run.classes
    if str(label) in names:
        return names.index(str(label))
    raise UsageError(f"--label {label}: unknown class; this model knows {', '.join(names)}", param="label")


def _labels(run: ImageRun, n: int, label: int | None) -> torch.Tensor | None:
    if not run.n_classes:
        return None
    if label is None:  # no label asked: cycle through the classes
        return torch.arange(n) % run.n_classes
    return torch.full((n,), label, dtype=torch.long)


def _check_truncation(truncation: float) -> None:
    if not 0.0 <= truncation <= 2.0:
        raise UsageError(f"--truncation {truncation}: expected 0 to 2 (1 = none, 0 = the mean)", param="truncation")


@torch.no_grad()
def sample_images(run: ImageRun, n: int = 16, *, seed: int = 0, truncation: float = 1.0,
                  label: int | None = None) -> np.ndarray:
    """``n`` new images (``label``: class index; conditional models without one cycle through classes)."""
    if n < 1:
        raise UsageError(f"--n {n}: expected at least 1", param="n")
    _check_truncation(truncation)
    g = torch.Generator().manual_seed(seed)
    y = _labels(run, n, label)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return to_uint8(run.model.sample(n, y, truncation=truncation, generator=g)).numpy()


def _slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation: Gaussian latents keep their typical norm all along the way."""
    an, bn = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((an * bn).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


@torch.no_grad()
def interpolate(run: ImageRun, seed_a: int, seed_b: int, frames: int = 16, *, truncation: float = 1.0,
                label: int | None = None) -> np.ndarray:
    """``frames`` images walking from seed A's latent to seed B's (slerp in z; in w for StyleGAN)."""
    if frames < 2:
        raise UsageError(f"--frames {frames}: expected at least 2", param="frames")
    _check_truncation(truncation)
    m = run.model
    za = m.latent(1, torch.Generator().manual_seed(seed_a))
    zb = m.latent(1, torch.Generator().manual_seed(seed_b))
    y = _labels(run, 1, label if label is not None else (0 if run.n_classes else None))
    out = []
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for i in range(frames):
            t = i / (frames - 1)
            if run.kind == "stylegan":  # w space is where StyleGAN's styles are (roughly) linear
                g = m.G_ema
                wa, wb = g.ws(za, y, truncation), g.ws(zb, y, truncation)
                img = g.synthesis(torch.lerp(wa, wb, t), noise_mode="const").clamp(-1, 1)
            else:
                img = m.sample(1, y, truncation=truncation, z=_slerp(za, zb, t))
            out.append(to_uint8(img))
    return torch.cat(out).numpy()


@torch.no_grad()
def style_mix(run: ImageRun, seed_coarse: int, seed_fine: int, n: int = 4, *, truncation: float = 1.0,
              label: int | None = None, cutoff: int | None = None) -> np.ndarray:
    """StyleGAN style mixing as a grid: row 0 = fine sources, column 0 = coarse sources, the rest mixed.

    ``n`` coarse seeds (``seed_coarse``, +1, ...) x ``n`` fine seeds (``seed_fine``, +1, ...): each
    mixed image takes layout/shape from its row and colour/texture from its column. The top-left
    cell is blank. Returns the (n+1)^2 images in row order.
    """
    if run.kind != "stylegan":
        raise UsageError(f"--mix: only StyleGAN runs have per-layer styles ({run.path} is {run.kind})", param="mix")
    _check_truncation(truncation)
    m = run.model
    zc = torch.cat([m.latent(1, torch.Generator().manual_seed(seed_coarse + i)) for i in range(n)])
    zf = torch.cat([m.latent(1, torch.Generator().manual_seed(seed_fine + i)) for i in range(n)])
    y = _labels(run, n, label)
    with torch.random.fork_rng():
        coarse = m.sample(n, y, truncation=truncation, z=zc)
        fine = m.sample(n, y, truncation=truncation, z=zf)
        cells = [torch.full_like(coarse[:1], -1), fine]
        for i in range(n):
            yi = y[i:i + 1].expand(n) if y is not None else None
            cells += [coarse[i:i + 1], m.mix(zc[i:i + 1].expand(n, -1), zf, yi, truncation, cutoff)]
    return to_uint8(torch.cat(cells)).numpy()


@torch.no_grad()
def reconstruct(run: ImageRun, image_path: str | os.PathLike[str], label: int | None = None) -> np.ndarray:
    """VAE: the picture as the model sees it, and its reconstruction -> 2 images."""
    from PIL import Image, UnidentifiedImageError

    if run.kind != "vae":
        raise UsageError(f"--reconstruct: only VAE runs have an encoder ({run.path} is {run.kind})", param="reconstruct")
    p = Path(image_path)
    if not p.is_file():
        raise UsageError(f"--reconstruct {p}: no such file", param="reconstruct")
    opts = run.info.get("image", {}).get("options", {})
    try:
        with Image.open(p) as im:
            im.seek(0)
            im.load()
            arr = fit_image(im, run.model.cfg.img_size, opts.get("fit", "crop"),
                            parse_color(opts.get("background", "#ffffff")), "L" if run.model.cfg.channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise UsageError(f"--reconstruct {p}: not a readable image ({e})", param="reconstruct") from None
    x = to_unit(torch.from_numpy(np.array(arr[None])))
    y = torch.tensor([label]) if (run.n_classes and label is not None) else (
        torch.zeros(1, dtype=torch.long) if run.n_classes else None)
    return np.concatenate([arr[None], to_uint8(run.model.reconstruct(x, y)).numpy()])
