"""A small non-autoregressive acoustic model: phoneme ids -> 80-band log-mel spectrogram.

The shape is FastSpeech's (Ren et al., 2019): a Transformer encoder over phonemes, a duration
predictor, each phoneme's hidden state repeated for its frames, a Transformer decoder over frames.
FastSpeech took its durations from a teacher model or an external aligner; here they are learned
from the recordings themselves with Glow-TTS's monotonic alignment search (Kim et al., 2020), as in
Grad-TTS (Popov et al., 2021):

1. the encoder also predicts, for each phoneme, the mean ``mu`` of its mel frames (in the
   dataset's standardized mel space);
2. monotonic alignment search finds the alignment of frames to phonemes (each phoneme gets one or
   more consecutive frames, in order) that maximizes the likelihood of the real frames under
   N(mu, I) -- a dynamic program over the [phonemes x frames] log-likelihood grid, no gradients;
3. the "prior" loss pulls ``mu`` towards the frames aligned to it, so the alignment sharpens as
   training goes; the durations read off the alignment teach the duration predictor (on a
   detached copy of the encoder, so its errors do not disturb the encoder);
4. the decoder refines the expanded ``mu`` into the mel (L1 loss).

At synthesis the duration predictor alone decides how long each phoneme lasts (``speed`` scales it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class TTSConfig:
    vocab_size: int = 64  # phoneme symbols (set from the dataset's inventory)
    n_mels: int = 80
    d_model: int = 192
    n_heads: int = 2
    enc_layers: int = 4
    dec_layers: int = 4
    ffn_mult: int = 2  # hidden width of the convolutional feed-forward, as a multiple of d_model
    kernel_size: int = 5  # of the feed-forward convolutions (FastSpeech: 9; 5 is cheaper, as good here)
    dropout: float = 0.1
    dp_channels: int = 192  # duration predictor width
    dp_kernel: int = 3


PRESETS: dict[str, dict] = {
    "tiny": dict(d_model=64, n_heads=2, enc_layers=1, dec_layers=1, ffn_mult=2, kernel_size=3, dp_channels=64),
    # sized for a 2-core CPU: ~15 GFLOP a training step of 8 utterances (bench/speech.py)
    "small": dict(d_model=128, n_heads=2, enc_layers=4, dec_layers=4, ffn_mult=2, kernel_size=3, dp_channels=128),
}


def sinusoids(length: int, dim: int, device=None) -> torch.Tensor:
    """The Transformer's sinusoidal position table ``[length, dim]``."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """``[B, T]`` bool, True on real positions."""
    t = int(max_len if max_len is not None else lengths.max())
    return torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]


class FFTBlock(nn.Module):
    """Pre-norm self-attention + convolutional feed-forward (FastSpeech's "FFT block")."""

    def __init__(self, cfg: TTSConfig) -> None:
        super().__init__()
        d, k = cfg.d_model, cfg.kernel_size
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.conv1 = nn.Conv1d(d, d * cfg.ffn_mult, k, padding=k // 2)
        self.conv2 = nn.Conv1d(d * cfg.ffn_mult, d, k, padding=k // 2)
        self.n_heads = cfg.n_heads
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, T, C)))
        m = mask[:, :, None].to(x.dtype)
        h = self.ln2(x) * m  # padding must not leak into the convolutions
        h = self.conv2(self.drop(F.relu(self.conv1(h.transpose(1, 2))))).transpose(1, 2)
        return (x + self.drop(h)) * m


class DurationPredictor(nn.Module):
    """Two conv + ReLU + LayerNorm layers -> log(1 + frames) per phoneme."""

    def __init__(self, cfg: TTSConfig) -> None:
        super().__init__()
        c, k = cfg.dp_channels, cfg.dp_kernel
        self.conv1 = nn.Conv1d(cfg.d_model, c, k, padding=k // 2)
        self.ln1 = nn.LayerNorm(c)
        self.conv2 = nn.Conv1d(c, c, k, padding=k // 2)
        self.ln2 = nn.LayerNorm(c)
        self.out = nn.Linear(c, 1)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask[:, :, None].to(h.dtype)
        x = self.drop(self.ln1(F.relu(self.conv1((h * m).transpose(1, 2))).transpose(1, 2)))
        x = self.drop(self.ln2(F.relu(self.conv2((x * m).transpose(1, 2))).transpose(1, 2)))
        return self.out(x).squeeze(-1) * mask


@torch.no_grad()
def monotonic_alignment(logp: torch.Tensor, text_lens: torch.Tensor, mel_lens: torch.Tensor) -> torch.Tensor:
    """Glow-TTS's monotonic alignment search: the best path through ``logp [B, N, T]`` (phonemes x
    frames) that starts at (0, 0), ends at (N_b - 1, T_b - 1) and at each frame stays on its phoneme
    or moves to the next. Returns the 0/1 path ``[B, N, T]``. Needs ``T_b >= N_b`` (the dataset drops
    recordings with more phonemes than frames).

    The forward pass runs over frames, vectorized over the batch and phonemes (numpy: its small-array
    operations cost a microsecond where torch's cost ten); the backtrack follows each row's argmax.
    """
    lp = logp.detach().float().cpu().numpy()
    B, N, T = lp.shape
    n = text_lens.cpu().numpy()
    t = mel_lens.cpu().numpy()
    neg = np.float32(-1e9)
    lp = np.where(np.arange(N)[None, :, None] < n[:, None, None], lp, neg)
    Q = np.full((B, N, T), neg, dtype=np.float32)
    Q[:, 0, 0] = lp[:, 0, 0]
    pad = np.full((B, 1), neg, dtype=np.float32)
    for j in range(1, T):
        prev = Q[:, :, j - 1]
        Q[:, :, j] = np.maximum(prev, np.concatenate([pad, prev[:, :-1]], axis=1)) + lp[:, :, j]
    path = np.zeros((B, N, T), dtype=np.float32)
    rows = np.arange(B)
    i = n - 1
    for j in range(T - 1, -1, -1):
        on = j < t
        path[rows[on], i[on], j] = 1.0
        if j == 0:
            break
        stay = Q[rows, i, j - 1]
        down = Q[rows, np.maximum(i - 1, 0), j - 1]
        move = on & (i > 0) & ((i >= j) | (down > stay))
        i = i - move.astype(i.dtype)
    return torch.from_numpy(path).to(logp.device)


class TTS(nn.Module):
    """Phonemes -> log-mel. ``loss(...)`` trains it; ``synthesize(ids)`` speaks."""

    kind = "tts"

    def __init__(self, cfg: TTSConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.embed = nn.Embedding(cfg.vocab_size, d, padding_idx=0)
        nn.init.normal_(self.embed.weight, 0.0, d ** -0.5)
        self.encoder = nn.ModuleList(FFTBlock(cfg) for _ in range(cfg.enc_layers))
        self.enc_norm = nn.LayerNorm(d)
        self.prior = nn.Linear(d, cfg.n_mels)
        self.durations = DurationPredictor(cfg)
        self.decoder = nn.ModuleList(FFTBlock(cfg) for _ in range(cfg.dec_layers))
        self.dec_norm = nn.LayerNorm(d)
        self.to_mel = nn.Linear(d, cfg.n_mels)
        # standardization of the mel bands, fitted on the training set (saved with the weights)
        self.register_buffer("mel_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("mel_std", torch.ones(cfg.n_mels))

    def set_mel_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mel_mean.copy_(mean)
        self.mel_std.copy_(std.clamp(min=1e-3))

    def normalize(self, mel: torch.Tensor) -> torch.Tensor:
        """``[B, M, T]`` log-mel -> standardized ``[B, T, M]``."""
        return (mel.transpose(1, 2) - self.mel_mean) / self.mel_std

    def denormalize(self, y: torch.Tensor) -> torch.Tensor:
        """Standardized ``[B, T, M]`` -> log-mel ``[B, M, T]``."""
        return (y * self.mel_std + self.mel_mean).transpose(1, 2)

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embed(ids) * math.sqrt(self.cfg.d_model) + sinusoids(ids.shape[1], self.cfg.d_model, ids.device)
        x = x * mask[:, :, None]
        for block in self.encoder:
            x = block(x, mask)
        h = self.enc_norm(x) * mask[:, :, None]
        return h, self.prior(h)

    def decode(self, h_frames: torch.Tensor, mu_frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = h_frames + sinusoids(h_frames.shape[1], self.cfg.d_model, h_frames.device)
        for block in self.decoder:
            x = block(x, mask)
        return (self.to_mel(self.dec_norm(x)) + mu_frames) * mask[:, :, None]

    def loss(self, ids: torch.Tensor, text_lens: torch.Tensor, mel: torch.Tensor,
             mel_lens: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Training losses for a batch: ``ids [B, N]``, ``mel [B, 80, T]`` (log-mel, padded)."""
        x_mask = lengths_to_mask(text_lens, ids.shape[1])
        y_mask = lengths_to_mask(mel_lens, mel.shape[2])
        y = self.normalize(mel) * y_mask[:, :, None]
        h, mu = self.encode(ids, x_mask)
        with torch.no_grad():  # log N(y_j; mu_i, I) up to a constant, for every (phoneme, frame)
            logp = -0.5 * ((mu ** 2).sum(-1, keepdim=True) - 2 * mu @ y.transpose(1, 2)
                           + (y ** 2).sum(-1)[:, None, :])
            path = monotonic_alignment(logp, text_lens, mel_lens)  # [B, N, T]
        frames = path.transpose(1, 2)  # [B, T, N]: which phoneme each frame belongs to
        mu_y = frames @ mu
        n_el = y_mask.sum() * self.cfg.n_mels
        prior = 0.5 * (((y - mu_y) ** 2) * y_mask[:, :, None]).sum() / n_el
        dur = path.sum(-1)
        logd = self.durations(h.detach(), x_mask)
        dur_loss = (((logd - torch.log1p(dur)) ** 2) * x_mask).sum() / x_mask.sum()
        y_hat = self.decode(frames @ h, mu_y, y_mask)
        mel_loss = (torch.abs(y_hat - y) * y_mask[:, :, None]).sum() / n_el
        loss = mel_loss + prior + dur_loss
        return loss, {"loss": loss.item(), "mel": mel_loss.item(), "prior": prior.item(), "dur": dur_loss.item()}

    @torch.no_grad()
    def synthesize(self, ids: torch.Tensor, speed: float = 1.0, text_lens: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """``ids [B, N]`` -> (log-mel ``[B, 80, T]``, frame lengths ``[B]``). ``speed`` > 1 speaks faster."""
        if text_lens is None:
            text_lens = torch.full((ids.shape[0],), ids.shape[1], device=ids.device)
        x_mask = lengths_to_mask(text_lens, ids.shape[1])
        h, mu = self.encode(ids, x_mask)
        dur = torch.clamp(torch.round(torch.expm1(self.durations(h, x_mask)) / speed), min=1) * x_mask
        mel_lens = dur.sum(1).long()
        T = int(mel_lens.max())
        # frame -> phoneme index: the cumulative durations say where each phoneme ends
        ends = torch.cumsum(dur, 1)
        t = torch.arange(T, device=ids.device)[None, :, None]
        frames = ((t >= (ends - dur)[:, None, :]) & (t < ends[:, None, :])).to(h.dtype)  # [B, T, N]
        y_mask = lengths_to_mask(mel_lens, T)
        y = self.decode(frames @ h, frames @ mu, y_mask)
        mel = self.denormalize(y)
        floor = math.log(1e-5)
        mel = torch.where(y_mask[:, None, :], mel, torch.full_like(mel, floor))
        return mel, mel_lens
