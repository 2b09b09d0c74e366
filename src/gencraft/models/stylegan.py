"""A small StyleGAN2 (Karras et al., 2020), optionally class-conditional, sized to train on a CPU.

Read top to bottom: config -> layers -> mapping network -> synthesis network -> discriminator ->
the model.

* Mapping network: z (and a class embedding) -> 8-layer MLP (here 2-4) -> w. Its layers learn
  100x slower (``map_lr_mul``), as in the paper, which keeps w stable (10x in the ``small``
  preset, for runs of a few thousand steps).
* Synthesis: a learned 4x4 constant, then per resolution an up-sampling modulated 3x3 conv and
  a modulated 3x3 conv, each followed by a per-layer noise input; skip "toRGB" outputs are summed
  across resolutions. Every layer reads its own w, so styles can be mixed per layer.
* Modulation with weight demodulation, not AdaIN: AdaIN normalises the *activations* per image,
  which destroys relative feature magnitudes and causes StyleGAN1's droplet artefacts; scaling
  the conv *weights* by the style and then dividing them by their expected output norm
  (demodulation) gives the same style control from statistics of the weights alone, with no
  per-activation normalisation, so no artefacts. (Computed as input scaling + shared-weight conv +
  output scaling, which equals the per-image modulated weights and runs as one batched conv.)
* Style-mixing regularisation: with probability ``mix_prob`` the ws of a batch switch to a
  second z at a random layer, so neighbouring layers cannot rely on sharing a style.
* Truncation: ``w = w_avg + psi * (w - w_avg)``; ``w_avg`` is tracked during training per class,
  so psi = 0 gives the mean style (of the class) and psi < 1 trades variety for typicality.
* Discriminator: residual blocks with average-pool down-sampling, minibatch standard deviation,
  a projection term for the class; trained with the non-saturating loss and the R1 penalty
  (gradient penalty on real images, Mescheder et al., 2018), applied lazily every few steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
from torch.nn import functional as F

from gencraft.config import Limit, Range
from gencraft.models.image_common import check_img_size, make_ema, minibatch_std


@dataclass
class StyleGANConfig:
    img_size: int = 16
    channels: int = 1
    n_classes: int = 0  # > 0: class-conditional
    z_dim: int = 128
    w_dim: int = 128
    n_mlp: int = 4  # mapping network depth
    map_lr_mul: float = 0.01  # learning-rate multiplier of the mapping network (StyleGAN's 0.01)
    ch: int = 64  # channels at full size; doubled at every halving (capped at 8x and max_ch)
    max_ch: int = 256
    d_ch: int = 64
    mix_prob: float = 0.5  # style-mixing regularization (0.9 slowed a 16 px model with 6 ws down)
    r1_gamma: float = 0.01  # small images need little: StyleGAN2-ADA's heuristic 2e-4 * res^2 / batch
    r1_every: int = 16  # lazy R1 (StyleGAN2's interval): every this many D steps, scaled up to match
    ema_halflife: float = 100.0  # steps (ramped up from 0 over the first 10x that)
    w_avg_decay: float = 0.995
    LIMITS: ClassVar[dict[str, Limit]] = {  # allowed values (gencraft.config.validate); memory is checked apart
        "img_size": Range(4, 1024), "channels": Range(1, 4), "n_classes": Range(0, 100_000),
        "z_dim": Range(1, 4096), "w_dim": Range(1, 4096), "n_mlp": Range(1, 32),
        "map_lr_mul": Range(0, 10, lo_open=True), "ch": Range(1, 2048), "max_ch": Range(1, 4096),
        "d_ch": Range(1, 2048), "mix_prob": Range(0, 1), "r1_gamma": Range(0, 1e4), "r1_every": Range(1, 10**6),
        "ema_halflife": Range(0, 1e9), "w_avg_decay": Range(0, 1)}


PRESETS: dict[str, dict] = {
    "tiny": dict(z_dim=32, w_dim=32, n_mlp=2, ch=16, d_ch=16, max_ch=64),
    # 16 px: channels 64/32/16 at 4/8/16 px in G and 16/32/64 in D (ch=d_ch=32 was 2.1x the work per
    # step and converged no faster per step: 2.41x the floor after 2,055 steps in 3 minutes on one
    # thread vs 3.58x after 1,750 steps in 6); 2 mapping layers and a 10x faster mapping network
    # (map_lr_mul 0.1): w, and with it the class, moves faster: conditional accuracy 0.96-0.97 -> 0.98
    # over the last three evaluations of a 3-minute probe, FID-proxy the same
    "small": dict(z_dim=64, w_dim=128, n_mlp=2, map_lr_mul=0.1, ch=16, d_ch=16, max_ch=64),
    "base": dict(z_dim=128, w_dim=256, n_mlp=4, ch=32, d_ch=32, max_ch=256),  # 32-64 px on a CPU
}


def _chs(cfg: StyleGANConfig, base: int, n: int) -> list[int]:
    return [min(base * 2 ** (n - i), cfg.max_ch) for i in range(n + 1)]


class EqualLinear(nn.Module):
    """Linear layer with the equalized learning rate: weights ~ N(0, 1/lr_mul), scaled at run time."""

    def __init__(self, d_in: int, d_out: int, bias_init: float = 0.0, lr_mul: float = 1.0, act: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_out, d_in) / lr_mul)
        self.bias = nn.Parameter(torch.full((d_out,), float(bias_init)))
        self.scale, self.lr_mul, self.act = lr_mul / math.sqrt(d_in), lr_mul, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        return F.leaky_relu(out, 0.2) * math.sqrt(2) if self.act else out


class ModulatedConv(nn.Module):
    """3x3 (or 1x1) conv whose weights are scaled per image by a style and, optionally, demodulated."""

    def __init__(self, c_in: int, c_out: int, w_dim: int, k: int = 3, demod: bool = True, up: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, k, k))
        self.affine = EqualLinear(w_dim, c_in, bias_init=1.0)  # style starts at 1: the plain conv
        self.scale, self.demod, self.up, self.pad = 1 / math.sqrt(c_in * k * k), demod, up, k // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = self.affine(w)  # [B, c_in]
        weight = self.weight * self.scale
        # Scaling the weights' input channels by s is the same as scaling the input by s, and
        # demodulating the weights is the same as scaling the output; written this way the conv
        # is one ordinary batched conv (fast on CPUs) instead of a grouped conv with per-image weights.
        x = x * s[:, :, None, None]
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        out = F.conv2d(x, weight, padding=self.pad)
        if self.demod:  # divide by the expected output std so activations keep unit scale
            d = torch.rsqrt((weight.pow(2).sum(dim=[2, 3])[None] * s.pow(2)[:, None, :]).sum(2) + 1e-8)  # [B, c_out]
            out = out * d[:, :, None, None]
        return out


class StyleLayer(nn.Module):
    """Modulated conv -> + per-layer noise (learned strength) -> + bias -> leaky ReLU."""

    def __init__(self, c_in: int, c_out: int, w_dim: int, size: int, up: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv(c_in, c_out, w_dim, up=up)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.register_buffer("noise_const", torch.randn(1, 1, size, size))
        self.bias = nn.Parameter(torch.zeros(c_out))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        x = self.conv(x, w)
        if noise_mode == "random":
            x = x + torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device) * self.noise_strength
        elif noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        return F.leaky_relu(x + self.bias[None, :, None, None], 0.2) * math.sqrt(2)


class ToRGB(nn.Module):
    def __init__(self, c_in: int, channels: int, w_dim: int) -> None:
        super().__init__()
        self.conv = ModulatedConv(c_in, channels, w_dim, k=1, demod=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias[None, :, None, None]


class Mapping(nn.Module):
    """z (+ class) -> w, and the running average of w per class that truncation pulls towards."""

    def __init__(self, cfg: StyleGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = EqualLinear(cfg.n_classes, cfg.w_dim) if cfg.n_classes else None
        d_in = cfg.z_dim + (cfg.w_dim if cfg.n_classes else 0)
        self.mlp = nn.Sequential(*[EqualLinear(d_in if i == 0 else cfg.w_dim, cfg.w_dim, lr_mul=cfg.map_lr_mul, act=True)
                                   for i in range(cfg.n_mlp)])
        self.register_buffer("w_avg", torch.zeros(max(cfg.n_classes, 1), cfg.w_dim))

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        x = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)  # normalise z to the unit sphere
        if self.embed is not None:
            y = torch.zeros(z.shape[0], dtype=torch.long, device=z.device) if y is None else y
            e = self.embed(F.one_hot(y, self.cfg.n_classes).float())
            x = torch.cat([x, e * torch.rsqrt(e.pow(2).mean(1, keepdim=True) + 1e-8)], dim=1)
        return self.mlp(x)

    @torch.no_grad()
    def update_w_avg(self, w: torch.Tensor, y: torch.Tensor | None) -> None:
        d = self.cfg.w_avg_decay
        if self.embed is None or y is None:
            self.w_avg[0].lerp_(w.mean(0), 1 - d)
            return
        for c in y.unique():
            self.w_avg[c].lerp_(w[y == c].mean(0), 1 - d)

    def truncate(self, w: torch.Tensor, y: torch.Tensor | None, psi: float) -> torch.Tensor:
        if psi == 1.0:
            return w
        avg = self.w_avg[y] if (self.embed is not None and y is not None) else self.w_avg[0].expand_as(w)
        return avg + psi * (w - avg)


class Synthesis(nn.Module):
    def __init__(self, cfg: StyleGANConfig) -> None:
        super().__init__()
        n = check_img_size(cfg.img_size, "stylegan")
        chs = _chs(cfg, cfg.ch, n)
        self.const = nn.Parameter(torch.randn(1, chs[0], 4, 4))
        self.layers = nn.ModuleList([StyleLayer(chs[0], chs[0], cfg.w_dim, 4)])
        self.to_rgbs = nn.ModuleList([ToRGB(chs[0], cfg.channels, cfg.w_dim)])
        for i in range(n):
            size = 4 * 2 ** (i + 1)
            self.layers.append(StyleLayer(chs[i], chs[i + 1], cfg.w_dim, size, up=True))
            self.layers.append(StyleLayer(chs[i + 1], chs[i + 1], cfg.w_dim, size))
            self.to_rgbs.append(ToRGB(chs[i + 1], cfg.channels, cfg.w_dim))
        self.num_ws = 2 * n + 2  # conv at 4x4, then (up-conv, conv) per resolution, + the last toRGB

    def forward(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        """``ws`` [B, num_ws, w_dim] -> images [B, C, H, W] (not squashed; roughly in [-1, 1])."""
        x = self.layers[0](self.const.expand(ws.shape[0], -1, -1, -1), ws[:, 0], noise_mode)
        rgb = self.to_rgbs[0](x, ws[:, 1])
        for i in range(len(self.to_rgbs) - 1):
            x = self.layers[1 + 2 * i](x, ws[:, 1 + 2 * i], noise_mode)
            x = self.layers[2 + 2 * i](x, ws[:, 2 + 2 * i], noise_mode)
            rgb = F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False) + self.to_rgbs[i + 1](x, ws[:, 3 + 2 * i])
        return rgb


class Generator(nn.Module):
    def __init__(self, cfg: StyleGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.mapping = Mapping(cfg)
        self.synthesis = Synthesis(cfg)
        self.num_ws = self.synthesis.num_ws

    def ws(self, z: torch.Tensor, y: torch.Tensor | None = None, truncation: float = 1.0,
           mix_prob: float = 0.0, update_avg: bool = False) -> torch.Tensor:
        """Map z to per-layer styles [B, num_ws, w_dim] (truncated; mixed with a 2nd z with ``mix_prob``)."""
        w = self.mapping(z, y)
        if update_avg:
            self.mapping.update_w_avg(w.detach(), y)
        w = self.mapping.truncate(w, y, truncation)
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        if mix_prob > 0 and torch.rand(()) < mix_prob:
            w2 = self.mapping.truncate(self.mapping(torch.randn_like(z), y), y, truncation)
            cut = int(torch.randint(1, self.num_ws, ()))
            ws[:, cut:] = w2.unsqueeze(1)
        return ws

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None, truncation: float = 1.0,
                noise_mode: str = "random", mix_prob: float = 0.0, update_avg: bool = False) -> torch.Tensor:
        return self.synthesis(self.ws(z, y, truncation, mix_prob, update_avg), noise_mode)


class DBlock(nn.Module):
    """Residual discriminator block: two 3x3 convs then 2x average-pool; a 1x1 skip."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_in, 3, padding=1)
        self.conv2 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.conv1(x), 0.2)
        h = F.avg_pool2d(F.leaky_relu(self.conv2(h), 0.2), 2)
        return (h + self.skip(F.avg_pool2d(x, 2))) / math.sqrt(2)  # pool first: same result, 1/4 the work


class Discriminator(nn.Module):
    def __init__(self, cfg: StyleGANConfig) -> None:
        super().__init__()
        n = check_img_size(cfg.img_size, "stylegan")
        chs = _chs(cfg, cfg.d_ch, n)[::-1]  # full size -> 4x4
        self.from_rgb = nn.Conv2d(cfg.channels, chs[0], 1)
        self.blocks = nn.Sequential(*[DBlock(chs[i], chs[i + 1]) for i in range(n)])
        self.conv = nn.Conv2d(chs[-1] + 1, chs[-1], 3, padding=1)
        self.fc = nn.Linear(chs[-1] * 16, chs[-1])
        self.out = nn.Linear(chs[-1], 1)
        self.embed = nn.Embedding(cfg.n_classes, chs[-1]) if cfg.n_classes else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.blocks(F.leaky_relu(self.from_rgb(x), 0.2))
        h = F.leaky_relu(self.conv(minibatch_std(h)), 0.2)  # + the std channel: D sees a lack of variety
        h = F.leaky_relu(self.fc(h.flatten(1)), 0.2)
        out = self.out(h).squeeze(1)
        if self.embed is not None and y is not None:
            out = out + (self.embed(y) * h).sum(1) / math.sqrt(h.shape[1])  # projection
        return out


class StyleGAN(nn.Module):
    """G, D and the EMA generator ``G_ema`` (used for sampling) in one module, saved together."""

    kind = "stylegan"

    def __init__(self, cfg: StyleGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.G = Generator(cfg)
        self.D = Discriminator(cfg)
        self.G_ema = make_ema(self.G)

    def latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.cfg.z_dim, generator=generator)

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None, *, truncation: float = 1.0,
               generator: torch.Generator | None = None, z: torch.Tensor | None = None,
               noise_mode: str = "const") -> torch.Tensor:
        """``n`` images from ``G_ema`` in [-1, 1] (fixed noise by default, so a seed fixes the image)."""
        dev = next(self.parameters()).device
        if z is None:
            z = self.latent(n, generator)
        return self.G_ema(z.to(dev), y, truncation=truncation, noise_mode=noise_mode).clamp(-1, 1)

    @torch.no_grad()
    def mix(self, z_coarse: torch.Tensor, z_fine: torch.Tensor, y: torch.Tensor | None = None,
            truncation: float = 1.0, cutoff: int | None = None) -> torch.Tensor:
        """Coarse styles (layers below ``cutoff``: pose, shape) from ``z_coarse``, fine ones (colour, texture) from ``z_fine``."""
        g = self.G_ema
        cutoff = g.num_ws // 2 if cutoff is None else cutoff
        ws = g.ws(z_coarse, y, truncation)
        ws[:, cutoff:] = g.ws(z_fine, y, truncation)[:, cutoff:]
        return g.synthesis(ws, noise_mode="const").clamp(-1, 1)
