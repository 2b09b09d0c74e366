"""Audio building blocks: reading any sound file as mono 22,050 Hz, trimming, loudness, WAV writing,
the log-mel spectrogram every speech model shares, and Griffin-Lim.

Everything speech-related (datasets, the acoustic model, the vocoder, ``speak``, the watermark,
the benchmark) goes through these functions, so "a mel" means one thing everywhere: 80 bands of
the natural log of the magnitude mel spectrogram (Slaney mel scale and area normalization, as
HiFi-GAN's and most public TTS recipes), FFT 1024, hop 256, Hann window 1024, 0-8,000 Hz.
"""

from __future__ import annotations

import io
import math
import os
import wave
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from gencraft.errors import DataError
from gencraft.io import atomic_path

SAMPLE_RATE = 22050
N_FFT = 1024
HOP = 256
WIN = 1024
N_MELS = 80
F_MIN = 0.0
F_MAX = 8000.0
LOG_FLOOR = 1e-5  # log(mel) is clamped here (-11.5): silence, not -inf


@dataclass
class AudioInfo:
    """What a file holds before any conversion (``soundfile.info``, no samples read)."""

    sample_rate: int
    channels: int
    frames: int
    subtype: str
    format: str

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def probe(path: str | os.PathLike[str]) -> AudioInfo:
    """Read a sound file's header (any format libsndfile reads: WAV, FLAC, OGG...).

    Raises :class:`DataError` when the file is not audio (a text file named ``.wav``) or is empty.
    """
    import soundfile as sf

    try:
        i = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError, OSError) as e:
        raise DataError(f"{path}: not a readable sound file ({str(e).splitlines()[0]})", param="file") from None
    if i.frames <= 0 or i.samplerate <= 0:
        raise DataError(f"{path}: the sound file holds no samples", param="file")
    return AudioInfo(i.samplerate, i.channels, i.frames, i.subtype, i.format)


def read_audio(path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, float]:
    """Mono float32 samples of ``path`` at ``sample_rate``, and the fraction of clipped samples.

    Channels are averaged; any bit depth (8/16/24/32-bit integer, float) comes back in [-1, 1]. The
    clipped fraction counts samples at the file's full scale in any channel (before mixing).
    """
    import soundfile as sf

    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, OSError) as e:
        raise DataError(f"{path}: not a readable sound file ({str(e).splitlines()[0]})", param="file") from None
    if x.size == 0:
        raise DataError(f"{path}: the sound file holds no samples", param="file")
    clipped = float(np.mean(np.abs(x).max(axis=1) >= 0.999))
    mono = x.mean(axis=1)
    return resample(mono, sr, sample_rate), clipped


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling (scipy's ``resample_poly``, Kaiser-windowed FIR)."""
    if sr_in == sr_out:
        return np.ascontiguousarray(x, dtype=np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(int(sr_in), int(sr_out))
    return resample_poly(x, sr_out // g, sr_in // g).astype(np.float32)


def frame_rms_db(x: np.ndarray, frame: int = 1024, hop: int = 256) -> np.ndarray:
    """RMS level of each frame in dB full scale."""
    if len(x) < frame:
        x = np.pad(x, (0, frame - len(x)))
    n = 1 + (len(x) - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    rms = np.sqrt(np.mean(x[idx] ** 2, axis=1) + 1e-12)
    return 20 * np.log10(rms)


def trim_silence(x: np.ndarray, top_db: float = 40.0, margin_s: float = 0.05,
                 sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Cut leading and trailing frames quieter than ``top_db`` below the loudest, keeping a margin."""
    hop = 256
    db = frame_rms_db(x, 1024, hop)
    loud = np.nonzero(db > db.max() - top_db)[0]
    if len(loud) == 0:
        return x[:0]
    margin = int(margin_s * sample_rate)
    a = max(0, loud[0] * hop - margin)
    b = min(len(x), loud[-1] * hop + 1024 + margin)
    return x[a:b]


def active_level_db(frame_db: np.ndarray) -> float:
    """The active speech level of frame levels in dB: the mean power of the frames within 30 dB of the
    loudest (-100 for none)."""
    active = frame_db[frame_db > frame_db.max() - 30] if len(frame_db) else frame_db
    return float(10 * np.log10(np.mean(10 ** (active / 10)))) if len(active) else -100.0


def mel_frame_db(mel: np.ndarray | torch.Tensor) -> np.ndarray:
    """Each frame's level in dB full scale as a log-mel ``[80, T]`` says it: the linear magnitudes the
    filterbank's pseudo-inverse gives back, summed by Parseval over a Hann-windowed frame (within
    ~0.2 dB of :func:`frame_rms_db` on speech) -- the level of audio before it is vocoded."""
    m = mel.detach().float().numpy() if torch.is_tensor(mel) else np.asarray(mel, dtype=np.float32)
    mag = np.clip(_mel_pinv() @ np.exp(m), 0.0, None)
    power = 2 * (mag ** 2).sum(0) - mag[0] ** 2 - mag[-1] ** 2
    return 10 * np.log10(power / (N_FFT * _HANN_POWER) + 1e-12)


_HANN_POWER = float((np.hanning(N_FFT + 1)[:-1] ** 2).sum())


@lru_cache(maxsize=1)
def _mel_pinv() -> np.ndarray:
    return np.linalg.pinv(mel_filterbank()).astype(np.float32)


def normalize_loudness(x: np.ndarray, target_db: float = -20.0, peak_db: float = -1.0) -> np.ndarray:
    """Scale so the active speech level (RMS of frames within 30 dB of the loudest) is ``target_db``
    dBFS, without letting the peak exceed ``peak_db``. Recordings made at different distances from
    the microphone then train one consistent voice."""
    return (x * loudness_gain(x, active_level_db(frame_rms_db(x)), target_db, peak_db)).astype(np.float32)


def loudness_gain(x: np.ndarray, level_db: float, target_db: float = -20.0, peak_db: float = -1.0) -> float:
    """The gain that brings audio at ``level_db`` to ``target_db`` without ``x``'s peak exceeding ``peak_db``."""
    gain = 10 ** ((target_db - level_db) / 20)
    peak = float(np.abs(x).max()) * gain if len(x) else 0.0
    if peak > 10 ** (peak_db / 20):
        gain *= 10 ** (peak_db / 20) / peak
    return float(gain)


def to_pcm16(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2")


def wav_bytes(x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Mono 16-bit PCM WAV file contents."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(to_pcm16(x).tobytes())
    return buf.getvalue()


def write_wav(path: str | os.PathLike[str], x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Atomically write ``x`` (float in [-1, 1]) as mono 16-bit PCM WAV."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(wav_bytes(x, sample_rate))
    return Path(path)


# --- the mel spectrogram ---------------------------------------------------------------------------


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    lin = m * (200.0 / 3)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, log, lin)


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   f_min: float = F_MIN, f_max: float = F_MAX) -> np.ndarray:
    """``[n_mels, n_fft // 2 + 1]`` triangular filters, each of unit area (Slaney normalization)."""
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))
    lower = (freqs[None, :] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    upper = (edges[2:, None] - freqs[None, :]) / (edges[2:] - edges[1:-1])[:, None]
    fb = np.maximum(0.0, np.minimum(lower, upper))
    fb *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return fb.astype(np.float32)


class MelSpectrogram(torch.nn.Module):
    """Waveform ``[B, S]`` (or ``[S]``) -> log-mel ``[B, n_mels, S // hop + 1]`` (torch.stft, centered)."""

    def __init__(self, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, hop: int = HOP, win: int = WIN,
                 n_mels: int = N_MELS, f_min: float = F_MIN, f_max: float = F_MAX) -> None:
        super().__init__()
        self.n_fft, self.hop, self.win = n_fft, hop, win
        self.register_buffer("window", torch.hann_window(win), persistent=False)
        fb = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max)
        self.register_buffer("fb", torch.from_numpy(fb), persistent=False)

    def magnitude(self, wav: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(wav, self.n_fft, self.hop, self.win, self.window, center=True, pad_mode="reflect",
                          return_complex=True)
        return spec.abs()

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.clamp(self.fb @ self.magnitude(wav), min=LOG_FLOOR))


@lru_cache(maxsize=2)
def _mel_fn() -> MelSpectrogram:
    return MelSpectrogram()


def log_mel(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The log-mel of one waveform at 22,050 Hz: ``[80, frames]`` float32."""
    wav = torch.as_tensor(np.asarray(x, dtype=np.float32) if not torch.is_tensor(x) else x).float()
    with torch.no_grad():
        return _mel_fn()(wav)


def n_frames(n_samples: int, hop: int = HOP) -> int:
    """Frames of a centered STFT of ``n_samples`` samples."""
    return n_samples // hop + 1


def griffin_lim(mel: torch.Tensor, n_iter: int = 32, momentum: float = 0.99, seed: int = 0) -> np.ndarray:
    """Waveform from a log-mel ``[80, T]`` with no trained model: the mel is mapped back to a linear
    magnitude by the filterbank's pseudo-inverse, then the phase is estimated by the fast Griffin-Lim
    iteration (Perraudin et al., 2013). Sounds metallic, but needs no training: the fallback voice."""
    m = _mel_fn()
    mag = torch.linalg.pinv(m.fb) @ torch.exp(mel.float())
    mag = mag.clamp(min=0.0)
    g = torch.Generator().manual_seed(seed)
    angles = torch.exp(2j * math.pi * torch.rand(mag.shape, generator=g)).to(torch.complex64)
    prev = torch.zeros_like(angles)
    length = (mel.shape[-1] - 1) * m.hop
    for _ in range(n_iter):
        wav = torch.istft(mag * angles, m.n_fft, m.hop, m.win, m.window, center=True, length=length)
        spec = torch.stft(wav, m.n_fft, m.hop, m.win, m.window, center=True, pad_mode="reflect",
                          return_complex=True)
        new = spec - (momentum / (1 + momentum)) * prev
        prev = spec
        angles = new / new.abs().clamp(min=1e-8)
    wav = torch.istft(mag * angles, m.n_fft, m.hop, m.win, m.window, center=True, length=length)
    return wav.numpy().astype(np.float32)
