"""DCGAN (Radford et al., 2016) with a spectral-norm discriminator, optionally class-conditional.

Read top to bottom: config -> generator -> discriminator -> losses -> the model.

* Generator: z (+ class embedding) -> linear to 4x4 -> (transposed 4x4 conv, stride 2) stages that
  double the size, with pixel norm and ReLU -> 3x3 conv -> tanh. Pixel norm (ProGAN's) instead of
  DCGAN's batch norm: an image never depends on the rest of its batch, and the EMA generator has
  no running statistics that lag behind its averaged weights (which made EMA samples washed out).
* Discriminator: 3x3 conv, then strided 4x4 convs halving the size, every weight spectrally
  normalised (Miyato et al., 2018) so D stays 1-Lipschitz-ish and its gradients stay useful.
  A minibatch-std channel at 4x4 (ProGAN's) lets D see a lack of variety; the 4x4 map is
  flattened to a feature vector; the class-conditional D adds a projection term
  <embed(y), features> (Miyato & Koyama, 2018), which pushes G to honour the label.
* Losses: ``hinge`` (SNGAN/BigGAN's) or ``ns`` (the original non-saturating loss).
* ``G_ema``: an exponential moving average of G's weights, used for sampling; it averages out
  the oscillation of adversarial training and gives visibly cleaner samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

from gencraft.config import Limit, Range
from gencraft.errors import ConfigError
from gencraft.models.image_common import check_img_size, make_ema, minibatch_std


@dataclass
class DCGANConfig:
    img_size: int = 16
    channels: int = 1
    n_classes: int = 0  # > 0: class-conditional
    z_dim: int = 64
    g_ch: int = 32  # channels at full size; doubled at every halving (capped at 8x)
    d_ch: int = 32
    loss: str = "hinge"  # "hinge" or "ns" (non-saturating)
    ema_halflife: float = 100.0  # steps (ramped up from 0 over the first 10x that)
    emb_dim: int = 32
    mbstd: bool = True  # minibatch-std channel in D (see minibatch_std)
    LIMITS: ClassVar[dict[str, Limit]] = {  # allowed values (gencraft.config.validate); memory is checked apart
        "img_size": Range(4, 1024), "channels": Range(1, 4), "n_classes": Range(0, 100_000),
        "z_dim": Range(1, 4096), "g_ch": Range(1, 2048), "d_ch": Range(1, 2048), "loss": ("hinge", "ns"),
        "ema_halflife": Range(0, 1e9), "emb_dim": Range(1, 4096)}


PRESETS: dict[str, dict] = {
    "tiny": dict(z_dim=32, g_ch=16, d_ch=16),
    "small": dict(z_dim=64, g_ch=32, d_ch=32),  # trains to the real-data floor on 16 px digits on a CPU
    "base": dict(z_dim=128, g_ch=64, d_ch=64),
}


def _chs(base: int, n: int) -> list[int]:
    """Channels from 4x4 (index 0) to full size (index n)."""
    return [base * min(2 ** (n - i), 8) for i in range(n + 1)]


class PixelNorm(nn.Module):
    """Scale each pixel's feature vector to unit RMS."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class Generator(nn.Module):
    def __init__(self, cfg: DCGANConfig) -> None:
        super().__init__()
        n = check_img_size(cfg.img_size, "dcgan")
        chs = _chs(cfg.g_ch, n)
        self.cfg, self.c0 = cfg, chs[0]
        self.embed = nn.Embedding(cfg.n_classes, cfg.emb_dim) if cfg.n_classes else None
        in_dim = cfg.z_dim + (cfg.emb_dim if cfg.n_classes else 0)
        self.fc = nn.Linear(in_dim, chs[0] * 16)
        self.norm0 = PixelNorm()
        ups: list[nn.Module] = []
        for i in range(n):
            ups += [nn.ConvTranspose2d(chs[i], chs[i + 1], 4, stride=2, padding=1, ),
                    PixelNorm(), nn.ReLU(inplace=True)]
        self.ups = nn.Sequential(*ups)
        self.to_rgb = nn.Conv2d(chs[-1], cfg.channels, 3, padding=1)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            y = torch.zeros(z.shape[0], dtype=torch.long, device=z.device) if y is None else y
            z = torch.cat([z, self.embed(y)], dim=1)
        h = F.relu(self.norm0(self.fc(z).view(z.shape[0], self.c0, 4, 4)))
        return torch.tanh(self.to_rgb(self.ups(h)))


class Discriminator(nn.Module):
    def __init__(self, cfg: DCGANConfig) -> None:
        super().__init__()
        n = check_img_size(cfg.img_size, "dcgan")
        chs = _chs(cfg.d_ch, n)[::-1]  # full size -> 4x4
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(cfg.channels, chs[0], 3, padding=1)), nn.LeakyReLU(0.1)]
        for i in range(n):
            layers += [spectral_norm(nn.Conv2d(chs[i], chs[i + 1], 4, stride=2, padding=1)), nn.LeakyReLU(0.1)]
        self.convs = nn.Sequential(*layers)
        self.mbstd = cfg.mbstd
        c = chs[-1]
        self.conv4 = spectral_norm(nn.Conv2d(c + (1 if cfg.mbstd else 0), c, 3, padding=1))
        # flatten the 4x4 map instead of summing it: where a stroke is matters for a glyph
        self.fc = spectral_norm(nn.Linear(c * 16, c))
        self.out = spectral_norm(nn.Linear(c, 1))
        self.embed = spectral_norm(nn.Embedding(cfg.n_classes, c)) if cfg.n_classes else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.convs(x)
        if self.mbstd:
            h = minibatch_std(h)
        h = F.leaky_relu(self.conv4(h), 0.1)
        h = F.leaky_relu(self.fc(h.flatten(1)), 0.1)
        out = self.out(h).squeeze(1)
        if self.embed is not None and y is not None:
            out = out + (self.embed(y) * h).sum(1)  # projection discriminator
        return out


def d_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator loss from its logits on real and generated images."""
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def g_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """Generator loss from D's logits on generated images."""
    if kind == "hinge":
        return -fake.mean()
    return F.softplus(-fake).mean()  # non-saturating: maximise log D(G(z))


class DCGAN(nn.Module):
    """G, D and the EMA generator ``G_ema`` (used for sampling) in one module, saved together."""

    kind = "dcgan"

    def __init__(self, cfg: DCGANConfig) -> None:
        super().__init__()
        if cfg.loss not in ("hinge", "ns"):
            raise ConfigError(f"loss={cfg.loss!r}: expected hinge or ns", param="loss")
        self.cfg = cfg
        self.G = Generator(cfg)
        self.D = Discriminator(cfg)
        self.G_ema = make_ema(self.G)

    def latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.cfg.z_dim, generator=generator)

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None, *, truncation: float = 1.0,
               generator: torch.Generator | None = None, z: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` images from ``G_ema`` in [-1, 1]; ``truncation`` < 1 scales z towards 0 (the mode)."""
        dev = next(self.parameters()).device
        if z is None:
            z = self.latent(n, generator)
        self.G_ema.eval()
        return self.G_ema(z.to(dev) * truncation, y)
