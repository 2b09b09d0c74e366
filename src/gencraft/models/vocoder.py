"""A neural vocoder: log-mel -> waveform, in the style of Vocos (Siuzdak, 2023), trained as a GAN.

Why Vocos and not HiFi-GAN's generator: HiFi-GAN upsamples 256x through transposed convolutions and
runs its largest layers at the audio rate (22,050 steps a second); Vocos stays at the frame rate
(86 steps a second) and predicts the short-time Fourier transform itself -- a magnitude and a phase
for each of 513 bins -- which one inverse STFT turns into samples. On a CPU that is ~50x fewer
operations per second of audio for the same quality class, which is what makes training on 2 cores
in minutes and synthesis far faster than real time possible.

- Generator: a ConvNeXt backbone (depthwise conv 7, LayerNorm, pointwise MLP, layer scale) over the
  mel frames, then a linear head to log-magnitude and phase, then ``torch.istft``.
- Discriminators (HiFi-GAN's multi-period discriminator and UnivNet's multi-resolution spectrogram
  discriminator, as Vocos): each returns its logits and feature maps for the feature-matching loss.
- Losses: L1 between the log-mels of real and generated audio (weight ``lambda_mel``), hinge
  adversarial losses and feature matching (:func:`generator_loss`, :func:`discriminator_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm

from gencraft import audio


@dataclass
class VocoderConfig:
    n_mels: int = 80
    dim: int = 384  # backbone channels
    intermediate: int = 1152  # ConvNeXt MLP width
    n_layers: int = 8
    n_fft: int = audio.N_FFT
    hop: int = audio.HOP
    mpd_periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])
    mpd_channels: int = 16  # first layer of each period discriminator (then x4, x16, x16)
    mrd_ffts: list[int] = field(default_factory=lambda: [512, 1024, 2048])
    mrd_channels: int = 16


PRESETS: dict[str, dict] = {
    "tiny": dict(dim=64, intermediate=128, n_layers=2, mpd_periods=[2, 3], mpd_channels=4, mrd_ffts=[512],
                 mrd_channels=4),
    "small": dict(dim=192, intermediate=576, n_layers=6, mpd_channels=8, mrd_channels=8),
}


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, intermediate: int, layer_scale: float) -> None:
        super().__init__()
        self.dw = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pw1 = nn.Linear(dim, intermediate)
        self.pw2 = nn.Linear(intermediate, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T]
        h = self.dw(x).transpose(1, 2)
        h = self.pw2(F.gelu(self.pw1(self.norm(h))))
        return x + (self.gamma * h).transpose(1, 2)


class Generator(nn.Module):
    """log-mel ``[B, 80, T]`` -> waveform ``[B, (T - 1) * hop]``."""

    def __init__(self, cfg: VocoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Conv1d(cfg.n_mels, cfg.dim, 7, padding=3)
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.blocks = nn.ModuleList(ConvNeXtBlock(cfg.dim, cfg.intermediate, 1.0 / cfg.n_layers)
                                    for _ in range(cfg.n_layers))
        self.final_norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.head = nn.Linear(cfg.dim, cfg.n_fft + 2)  # log-magnitude and phase of n_fft // 2 + 1 bins
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.embed(mel).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        logmag, phase = self.head(self.final_norm(x.transpose(1, 2))).transpose(1, 2).chunk(2, dim=1)
        mag = torch.exp(logmag).clamp(max=1e2)  # Vocos's clip: a huge magnitude early on would blow up the STFT
        spec = torch.polar(mag, phase)  # phase read as an angle: any real number is a valid one
        length = (mel.shape[-1] - 1) * self.cfg.hop
        return torch.istft(spec, self.cfg.n_fft, self.cfg.hop, self.cfg.n_fft, self.window, center=True,
                           length=length)


class PeriodDiscriminator(nn.Module):
    """HiFi-GAN: the waveform folded into ``[T / p, p]`` columns, 2-D convs along time."""

    def __init__(self, period: int, ch: int) -> None:
        super().__init__()
        self.period = period
        chans = [1, ch, ch * 4, ch * 16, ch * 16]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(a, b, (5, 1), (3 if i < 3 else 1, 1), padding=(2, 0)))
            for i, (a, b) in enumerate(zip(chans[:-1], chans[1:], strict=True)))
        self.out = weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, t = x.shape
        if t % self.period:
            x = F.pad(x, (0, self.period - t % self.period), mode="reflect")
        h = x.view(b, 1, -1, self.period)
        feats = []
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.1)
            feats.append(h)
        h = self.out(h)
        feats.append(h)
        return h.flatten(1), feats


class ResolutionDiscriminator(nn.Module):
    """UnivNet: 2-D convs over the magnitude spectrogram at one STFT resolution."""

    def __init__(self, n_fft: int, ch: int) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.convs = nn.ModuleList([
            weight_norm(nn.Conv2d(1, ch, (3, 9), padding=(1, 4))),
            weight_norm(nn.Conv2d(ch, ch, (3, 9), stride=(1, 2), padding=(1, 4))),
            weight_norm(nn.Conv2d(ch, ch, (3, 9), stride=(1, 2), padding=(1, 4))),
            weight_norm(nn.Conv2d(ch, ch, (3, 3), padding=(1, 1))),
        ])
        self.out = weight_norm(nn.Conv2d(ch, 1, (3, 3), padding=(1, 1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        spec = torch.stft(x, self.n_fft, self.n_fft // 4, self.n_fft, self.window, center=True, return_complex=True)
        h = spec.abs().clamp(min=1e-5).pow(0.5).transpose(1, 2).unsqueeze(1)  # [B, 1, T, F]
        feats = []
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.1)
            feats.append(h)
        h = self.out(h)
        feats.append(h)
        return h.flatten(1), feats


class Discriminators(nn.Module):
    """All period and resolution discriminators: ``forward(wav) -> [(logits, features)]``."""

    def __init__(self, cfg: VocoderConfig) -> None:
        super().__init__()
        self.nets = nn.ModuleList([*(PeriodDiscriminator(p, cfg.mpd_channels) for p in cfg.mpd_periods),
                                   *(ResolutionDiscriminator(n, cfg.mrd_channels) for n in cfg.mrd_ffts)])

    def forward(self, wav: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [net(wav) for net in self.nets]


class Vocoder(nn.Module):
    """The generator ``G`` and discriminators ``D`` in one module (``vocoder.safetensors`` keeps ``G`` only)."""

    kind = "vocoder"

    def __init__(self, cfg: VocoderConfig, with_discriminators: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.G = Generator(cfg)
        self.D = Discriminators(cfg) if with_discriminators else None

    @torch.no_grad()
    def synthesize(self, mel: torch.Tensor) -> torch.Tensor:
        """log-mel ``[B, 80, T]`` (or ``[80, T]``) -> waveform in [-1, 1]."""
        one = mel.dim() == 2
        wav = self.G(mel[None] if one else mel).clamp(-1.0, 1.0)
        return wav[0] if one else wav


def discriminator_loss(real: list, fake: list) -> torch.Tensor:
    """Hinge loss over every discriminator's logits (Vocos's choice)."""
    return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for (r, _), (f, _) in zip(real, fake, strict=True))


def generator_loss(real: list, fake: list) -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial, feature-matching) losses of the generator; feature maps of real audio are targets."""
    adv = sum(F.relu(1 - f).mean() for f, _ in fake)
    fm = sum(F.l1_loss(ff, fr.detach()) for (_, fr_all), (_, ff_all) in zip(real, fake, strict=True)
             for fr, ff in zip(fr_all, ff_all, strict=True))
    return adv, fm
