"""A small offline synthesizer in NumPy: additive tones with an ADSR envelope, written as WAV.

Each note is a sum of a few harmonics with falling amplitudes (an organ/choir-like timbre that
suits chorales), shaped by attack-decay-sustain-release; notes are mixed and the mix is
normalized to leave headroom. The output is exactly the piece's length (whole bars at the
tempo); a release that would run past the end is cut off.
"""

from __future__ import annotations

import os
import wave

import numpy as np

from gencraft.io import write_bytes
from gencraft.music.events import STEPS_PER_QUARTER, Piece

HARMONICS = (1.0, 0.5, 0.25, 0.12, 0.06)  # amplitude of partials 1..5


def midi_to_hz(pitch: int | np.ndarray) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(pitch, dtype=np.float64) - 69) / 12)


def adsr(n: int, sr: int, attack: float = 0.02, decay: float = 0.08, sustain: float = 0.7,
         release: float = 0.08) -> np.ndarray:
    """Envelope of ``n`` samples: the release happens inside the note's last ``release`` seconds."""
    t = np.arange(n) / sr
    dur = n / sr
    env = np.where(t < attack, t / attack,
                   np.where(t < attack + decay, 1 - (1 - sustain) * (t - attack) / decay, sustain))
    rel_start = max(dur - release, 0.0)
    env = env * np.clip((dur - t) / max(dur - rel_start, 1e-6), 0.0, 1.0)
    return env.astype(np.float32)


def render(piece: Piece, tempo_bpm: float = 90.0, sample_rate: int = 22050) -> np.ndarray:
    """Mono float32 audio in [-1, 1] of ``piece``; ``len == round(seconds * sample_rate)``."""
    step_s = 60.0 / tempo_bpm / STEPS_PER_QUARTER
    total = round(piece.length * step_s * sample_rate)
    out = np.zeros(total, dtype=np.float32)
    for note in piece.notes:
        a = round(note.start * step_s * sample_rate)
        b = min(round((note.start + note.duration) * step_s * sample_rate), total)
        if b <= a:
            continue
        t = np.arange(b - a, dtype=np.float32) / sample_rate
        f0 = float(midi_to_hz(note.pitch))
        tone = np.zeros_like(t)
        for k, amp in enumerate(HARMONICS, start=1):
            if f0 * k < sample_rate / 2:  # no partials above Nyquist (they would alias)
                tone += amp * np.sin(2 * np.pi * f0 * k * t, dtype=np.float32)
        out[a:b] += tone * adsr(b - a, sample_rate)
    peak = float(np.abs(out).max()) if total else 0.0
    if peak > 0:
        out *= 0.8 / peak
    return out


def wav_bytes(audio: np.ndarray, sample_rate: int = 22050) -> bytes:
    """``audio`` (mono floats in [-1, 1]) as the bytes of a 16-bit PCM WAV file."""
    import io

    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def write_wav(audio: np.ndarray, path: str | os.PathLike[str], sample_rate: int = 22050) -> None:
    """Atomically write mono 16-bit PCM WAV."""
    write_bytes(path, wav_bytes(audio, sample_rate))
