"""Convolutional variational autoencoder (Kingma & Welling, 2014), optionally class-conditional.

Read top to bottom: config -> encoder -> decoder -> the likelihoods -> the model.

* Encoder: strided 4x4 convolutions halve the image down to 4x4, then a linear layer gives the
  mean and log-variance of a diagonal Gaussian posterior q(z | x, y).
* Decoder: a linear layer to 4x4, then (nearest up-sample + 3x3 conv) stages back to full size.
  Up-sample + conv instead of transposed convolutions avoids checkerboard artefacts.
* Likelihood p(x | z, y): ``logistic`` = a discretized logistic per sub-pixel over the 256 levels
  (PixelCNN++'s, single component), a proper likelihood, so the negative ELBO in bits/dim is
  comparable across models; ``bernoulli`` = cross-entropy on intensities in [0, 1] (classic for
  near-binary images such as digits; on grey levels it is not a normalised likelihood).
* ``beta`` weighs the KL term (beta-VAE); the *reported* negative ELBO always uses beta = 1.
* Conditional: a learned class embedding is concatenated to the encoder features and to z, and the
  one-hot class to the input of every decoder conv (see :class:`Decoder` for why). With
  ``class_prior`` the prior is learned per class, p(z | y) = N(mu_y, diag sigma_y^2) (Sohn et al.,
  2015's conditional VAE with a table for the prior network): the KL term compares the posterior
  with its own class's prior and samples of class y come from where that class's images were
  encoded, instead of from one N(0, I) shared by all classes. It is still a proper ELBO.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
from torch.nn import functional as F

from gencraft.config import Limit, Range
from gencraft.errors import ConfigError
from gencraft.models.image_common import check_img_size


@dataclass
class VAEConfig:
    img_size: int = 16
    channels: int = 1
    n_classes: int = 0  # > 0: class-conditional
    z_dim: int = 32
    ch: int = 32  # channels of the first stage; doubled at every halving (capped at 8x)
    likelihood: str = "logistic"  # "logistic" (discretized, 256 levels) or "bernoulli"
    beta: float = 1.0
    emb_dim: int = 16
    class_prior: bool = False  # conditional: learned prior p(z | y) = N(mu_y, sigma_y) instead of N(0, I)
    LIMITS: ClassVar[dict[str, Limit]] = {  # allowed values (gencraft.config.validate); memory is checked apart
        "img_size": Range(4, 1024), "channels": Range(1, 4), "n_classes": Range(0, 100_000),
        "z_dim": Range(1, 4096), "ch": Range(1, 2048), "likelihood": ("logistic", "bernoulli"),
        "beta": Range(0, 1e4), "emb_dim": Range(1, 4096)}


PRESETS: dict[str, dict] = {
    "tiny": dict(z_dim=16, ch=16),
    # beta 4: with beta 1 prior samples fell where the posterior put no mass (blobs; 38% of conditional
    # samples classified as asked, FID-proxy 11x the floor); beta 4 gave 96% and 2.2x on 16 px digits.
    # A learned prior per class and beta 6 (2-minute probes, one thread, 16 px digits): beta 4 with
    # N(0, I) 94.7% / 2.59x / -ELBO 732 nats; with the class prior 96.7% / 2.34x / 722; with beta 6
    # too 98.9% / 2.21x / 752 (recall 0.82 -> 0.67: beta trades likelihood and variety for clean samples)
    "small": dict(z_dim=32, ch=32, beta=6.0, class_prior=True),
    "base": dict(z_dim=64, ch=64, beta=6.0, class_prior=True),
}


def _stage_channels(cfg: VAEConfig, n: int) -> list[int]:
    return [cfg.ch * min(2 ** i, 8) for i in range(n + 1)]


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        n = check_img_size(cfg.img_size, "vae")
        chs = _stage_channels(cfg, n)
        layers: list[nn.Module] = [nn.Conv2d(cfg.channels, chs[0], 3, padding=1), nn.SiLU()]
        for i in range(n):  # size -> size / 2 ... -> 4
            layers += [nn.Conv2d(chs[i], chs[i + 1], 4, stride=2, padding=1), nn.GroupNorm(math.gcd(8, chs[i + 1]), chs[i + 1]), nn.SiLU()]
        self.convs = nn.Sequential(*layers)
        feat = chs[-1] * 16 + (cfg.emb_dim if cfg.n_classes else 0)
        self.to_stats = nn.Linear(feat, 2 * cfg.z_dim)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.convs(x).flatten(1)
        if emb is not None:
            h = torch.cat([h, emb], dim=1)
        mu, logvar = self.to_stats(h).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)


class Decoder(nn.Module):
    """z (+ class embedding) -> 4x4 -> (up-sample, conv) stages; the class also enters every stage.

    The one-hot class is broadcast to a constant feature map and concatenated to the input of
    every conv, so the decoder can always get the class more cheaply from the label than from z
    and the KL term pushes class information out of z. (On 16 px digits most wrong-class samples
    came from elsewhere: prior samples where the posterior put no mass; beta 4 in the presets.)
    """

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        n = check_img_size(cfg.img_size, "vae")
        chs = _stage_channels(cfg, n)[::-1]
        self.c0, self.k = chs[0], cfg.n_classes
        self.from_z = nn.Linear(cfg.z_dim + (cfg.emb_dim if cfg.n_classes else 0), chs[0] * 16)
        self.ups = nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest") for _ in range(n)])
        self.convs = nn.ModuleList([nn.Conv2d(chs[i] + self.k, chs[i + 1], 3, padding=1) for i in range(n)])
        self.norms = nn.ModuleList([nn.GroupNorm(math.gcd(8, chs[i + 1]), chs[i + 1]) for i in range(n)])
        out = cfg.channels * (2 if cfg.likelihood == "logistic" else 1)
        self.to_pixels = nn.Conv2d(chs[-1] + self.k, out, 3, padding=1)

    def _with_label(self, h: torch.Tensor, onehot: torch.Tensor | None) -> torch.Tensor:
        if onehot is None:
            return h
        return torch.cat([h, onehot[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])], dim=1)

    def forward(self, z: torch.Tensor, emb: torch.Tensor | None, onehot: torch.Tensor | None = None) -> torch.Tensor:
        if emb is not None:
            z = torch.cat([z, emb], dim=1)
        h = F.silu(self.from_z(z)).view(z.shape[0], self.c0, 4, 4)
        for up, conv, norm in zip(self.ups, self.convs, self.norms, strict=True):
            h = F.silu(norm(conv(self._with_label(up(h), onehot))))
        return self.to_pixels(self._with_label(h, onehot))


def discretized_logistic_logp(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) per sub-pixel, x in [-1, 1] on 256 levels (bins of width 2/255; edge bins take the tails)."""
    log_scale = log_scale.clamp(min=-7.0)
    inv_s = torch.exp(-log_scale)
    centered = x - mean
    plus_in = inv_s * (centered + 1.0 / 255.0)
    min_in = inv_s * (centered - 1.0 / 255.0)
    log_cdf_plus = plus_in - F.softplus(plus_in)  # log sigmoid(plus_in): the bottom edge bin
    log_one_minus_cdf_min = -F.softplus(min_in)  # log (1 - sigmoid(min_in)): the top edge bin
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    mid_in = inv_s * centered  # when the bin mass underflows, use the density times the bin width
    log_pdf_mid = mid_in - log_scale - 2.0 * F.softplus(mid_in) - math.log(127.5)
    inner = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid)
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, inner))


class VAE(nn.Module):
    """``loss(x, y)`` for training, ``sample``/``reconstruct`` for generation; images in [-1, 1]."""

    kind = "vae"

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        if cfg.likelihood not in ("logistic", "bernoulli"):
            raise ConfigError(f"likelihood={cfg.likelihood!r}: expected logistic or bernoulli", param="likelihood")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.n_classes, cfg.emb_dim) if cfg.n_classes else None
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        # conditional prior p(z | y): a mean and log-variance per class, learned through the KL term
        self.prior = nn.Embedding(cfg.n_classes, 2 * cfg.z_dim) if (cfg.n_classes and cfg.class_prior) else None
        if self.prior is not None:
            nn.init.zeros_(self.prior.weight)  # starts as N(0, I)

    def prior_params(self, y: torch.Tensor | None, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of p(z | y) ([n, z_dim] each); N(0, I) without a class prior."""
        if self.prior is None:
            zero = torch.zeros(n, self.cfg.z_dim, device=device)
            return zero, zero
        y = torch.zeros(n, dtype=torch.long, device=device) if y is None else y
        mu, logvar = self.prior(y).chunk(2, dim=1)
        return mu, logvar.clamp(-6, 2)

    def _emb(self, y: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor | None:
        if self.embed is None:
            return None
        if y is None:
            y = torch.zeros(n, dtype=torch.long, device=device)
        return self.embed(y)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x, self._emb(y, x.shape[0], x.device))

    def decode_params(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        onehot = None
        if self.embed is not None:
            y = torch.zeros(z.shape[0], dtype=torch.long, device=z.device) if y is None else y
            onehot = F.one_hot(y, self.cfg.n_classes).to(z.dtype)
        return self.decoder(z, self._emb(y, z.shape[0], z.device), onehot)

    def params_to_image(self, params: torch.Tensor) -> torch.Tensor:
        """The decoder's most likely image (logistic mean / Bernoulli probability) in [-1, 1]."""
        c = self.cfg.channels
        if self.cfg.likelihood == "logistic":
            return params[:, :c].clamp(-1, 1)
        return torch.sigmoid(params) * 2 - 1

    def log_likelihood(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x | z) summed over pixels, one value per image (nats)."""
        c = self.cfg.channels
        if self.cfg.likelihood == "logistic":
            lp = discretized_logistic_logp(x, params[:, :c], params[:, c:])
        else:
            lp = -F.binary_cross_entropy_with_logits(params, (x + 1) / 2, reduction="none")
        return lp.flatten(1).sum(1)

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss (beta-weighted negative ELBO per image) and stats: nelbo (nats/image), bpd, kl, recon."""
        mu, logvar = self.encode(x, y)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)  # reparameterisation
        params = self.decode_params(z, y)
        recon = -self.log_likelihood(x, params)  # [B] nats
        pmu, plogvar = self.prior_params(y, x.shape[0], x.device)
        # KL(q(z | x, y) || p(z | y)) between diagonal Gaussians, [B]; p = N(0, I) without a class prior
        kl = 0.5 * (plogvar - logvar + (logvar.exp() + (mu - pmu).pow(2)) * torch.exp(-plogvar) - 1.0).sum(1)
        loss = (recon + self.cfg.beta * kl).mean()
        nelbo = (recon + kl).mean().item()
        dims = x[0].numel()
        return loss, {"loss": loss.item(), "nelbo": nelbo, "bpd": nelbo / (dims * math.log(2)),
                      "recon": recon.mean().item(), "kl": kl.mean().item()}

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None, *, truncation: float = 1.0,
               generator: torch.Generator | None = None, z: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` images from the prior; ``truncation`` scales z's deviation from the prior's mean (0 = the mean)."""
        dev = next(self.parameters()).device
        if z is None:
            z = torch.randn(n, self.cfg.z_dim, generator=generator, device="cpu").to(dev)
        z = z.to(dev)
        pmu, plogvar = self.prior_params(y.to(dev) if y is not None else None, z.shape[0], dev)
        return self.params_to_image(self.decode_params(pmu + torch.exp(0.5 * plogvar) * z * truncation, y))

    def latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.cfg.z_dim, generator=generator)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        mu, _ = self.encode(x, y)
        return self.params_to_image(self.decode_params(mu, y))
