"""Small pieces the image models share: DiffAugment, minibatch std, weight EMA, pixel scaling, size checks.

DiffAugment (Zhao et al., 2020) applies the *same kind* of random, differentiable augmentation to
real and generated images before the discriminator sees them. The discriminator then cannot
memorise a small training set, and because the augmentations are differentiable the generator
still gets gradients — without the generator ever learning to produce augmented images.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.nn import functional as F

from gencraft.errors import ConfigError

SUPPORTED_SIZES = (8, 16, 32, 64, 128)


def check_img_size(size: int, model: str) -> int:
    """Number of 2x up-sampling stages from 4x4 to ``size`` (sizes must be 4 * 2**k)."""
    if size not in SUPPORTED_SIZES:
        raise ConfigError(f"{model}: image size {size} is not supported; prepare the dataset with "
                          f"--size one of {', '.join(map(str, SUPPORTED_SIZES))}", param="img_size")
    return size.bit_length() - 3  # 8 -> 1, 16 -> 2, ...


def to_unit(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, C] -> float [N, C, H, W] in [-1, 1]."""
    return images_u8.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [N, C, H, W] in [-1, 1] -> uint8 [N, H, W, C]."""
    return x.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


# ---- DiffAugment: colour, translation, cutout (all differentiable) -------------------------

def _color(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    x = x + (torch.rand(n, 1, 1, 1, device=x.device) - 0.5)  # brightness
    if x.shape[1] > 1:  # saturation only means something in colour
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device) * 2) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device) + 0.5) + mean  # contrast


def _translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    sh, sw = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    ty = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    tx = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy = (gy.unsqueeze(0) + ty).clamp(-1, h)  # padded by one zero row/column on each side
    gx = (gx.unsqueeze(0) + tx).clamp(-1, w)
    padded = F.pad(x, [1, 1, 1, 1])
    idx = ((gy + 1) * (w + 2) + (gx + 1)).view(n, 1, h * w).expand(-1, x.shape[1], -1)
    return padded.flatten(2).gather(2, idx).view_as(x)


def _cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    dy = gy.unsqueeze(0) - (cy - ch // 2)
    dx = gx.unsqueeze(0) - (cx - cw // 2)
    inside = (dy >= 0) & (dy < ch) & (dx >= 0) & (dx < cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def diff_augment(x: torch.Tensor, policy: str = "color,translation,cutout", cutout: float = 0.5) -> torch.Tensor:
    """Apply the comma-separated DiffAugment ``policy`` (``color``, ``translation``, ``cutout``).

    ``cutout`` is the side of the erased square as a fraction of the image side.
    """
    for p in [p for p in policy.split(",") if p]:
        if p == "color":
            x = _color(x)
        elif p == "translation":
            x = _translation(x)
        elif p == "cutout":
            x = _cutout(x, cutout)
        else:
            raise ConfigError(f"diffaug_policy: unknown augmentation {p!r}; use color, translation, cutout",
                              param="diffaug_policy")
    return x


def minibatch_std(h: torch.Tensor, group: int = 4) -> torch.Tensor:
    """Append one channel: the feature std across groups of ``group`` images (ProGAN).

    A generator that makes the same digit for every z has a near-zero std, which a discriminator
    with this channel sees at once; without it D judges images one at a time and G could drop
    most of the variety of each class (recall 0.16 at precision 0.94 on 16 px digits).
    (The std is written out: ``Tensor.std(dim=0)`` over the group axis was ~9x slower on a CPU.)
    """
    g = min(group, h.shape[0])
    while h.shape[0] % g:
        g -= 1
    v = h.view(g, -1, *h.shape[1:])
    v = v - v.mean(dim=0)
    s = (v.pow(2).mean(dim=0) + 1e-8).sqrt().mean(dim=[1, 2, 3])  # [B/g]
    return torch.cat([h, s.repeat(g).view(-1, 1, 1, 1).expand(-1, 1, *h.shape[2:])], dim=1)


# ---- EMA of generator weights ----------------------------------------------------------------

def make_ema(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` that :func:`update_ema` moves towards the live weights."""
    ema = copy.deepcopy(module)
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema.eval()


def ema_decay(step: int, halflife: float, rampup: float = 0.1) -> float:
    """Decay of the weight EMA at ``step``: half-life ``halflife`` steps, ramped up as ``rampup * step``.

    Early in training the weights move fast; a fixed long half-life would average in the
    random initial weights for thousands of steps (StyleGAN2-ADA ramps it up the same way).
    """
    hl = min(halflife, rampup * step)
    return 0.5 ** (1.0 / hl) if hl > 0 else 0.0


@torch.no_grad()
def update_ema(ema: nn.Module, live: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * live`` for parameters; buffers are copied."""
    for pe, pl in zip(ema.parameters(), live.parameters(), strict=True):
        pe.lerp_(pl.detach(), 1.0 - decay)
    for be, bl in zip(ema.buffers(), live.buffers(), strict=True):
        be.copy_(bl)
