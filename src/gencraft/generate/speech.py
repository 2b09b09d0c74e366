"""Speaking: text -> audio with a trained voice (a ``tts`` run) or espeak-ng, sentence by sentence.

:func:`stream_speech` splits the text into sentences and synthesizes each as it is asked for (phonemes
-> acoustic model -> mel -> vocoder, or Griffin-Lim when the run has no vocoder yet; or espeak-ng for
``espeak``), so the first sentence plays while the rest is made and memory holds one sentence however
long the text. :func:`synthesize` joins a whole text. Nothing here leaves gencraft: the callers
(:mod:`gencraft.apps.speech`, the server) hand the audio to ``guard.release``, which moderates the
text, watermarks, signs and stores it.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gencraft import audio
from gencraft.errors import NotFoundError, UsageError
from gencraft.generate import espeak
from gencraft.generate.espeak import voice_for
from gencraft.models import decode
from gencraft.paths import existing_run
from gencraft.runs import Voice, load_voice
from gencraft.tokenize.phonemes import detect_language, text_to_symbols

PAUSE_S = 0.18  # silence between sentences
MAX_CHUNK = 300  # characters: longer sentences are split at commas, then spaces
MAX_TEXT = 1_000_000
_SENTENCE = re.compile(r"(?<=[.!?…])[\"')\]]*\s+|(?<=[。！？；])")


def split_sentences(text: str) -> Iterator[str]:
    """Sentences of ``text`` (English and Chinese punctuation), lazily; none longer than 300 characters."""
    for para in re.split(r"\n\s*\n", text):
        for sent in _SENTENCE.split(para):
            sent = " ".join(sent.split())
            while len(sent) > MAX_CHUNK:
                cut = max(sent.rfind(",", 0, MAX_CHUNK), sent.rfind("，", 0, MAX_CHUNK))
                if cut < MAX_CHUNK // 3:
                    cut = sent.rfind(" ", 0, MAX_CHUNK)
                if cut < MAX_CHUNK // 3:
                    cut = MAX_CHUNK - 1
                yield sent[: cut + 1].strip()
                sent = sent[cut + 1:].strip()
            if sent and re.search(r"\w", sent):
                yield sent


def check_text(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise UsageError("text: nothing to say (empty text)", param="input")
    if len(text) > MAX_TEXT:
        raise UsageError(f"text: {len(text):,} characters, at most {MAX_TEXT:,}; split it", param="input")
    return text


FIRST_FRAMES = 32  # the first piece of a sentence (~0.37 s): out while the rest is vocoded
PIECE_FRAMES = 256  # later pieces (~3 s)
CONTEXT_FRAMES = 24  # mel frames each side a piece is vocoded with: the vocoder reaches 21 (seven
# convolutions of 7 taps) and the inverse STFT 2, so a piece's samples are those of the whole


class Speaker:
    """One loaded voice: ``Speaker.load("espeak")``, ``Speaker.load("espeak:en+f4")`` or a tts run.
    A run is loaded once per process (kept while its files are unchanged): the CLI, the Python API and
    the server's requests share it, and one synthesis at a time runs on it."""

    def __init__(self, name: str, voice: Any = None, espeak_voice: str | None = None,
                 lock: threading.Lock | None = None) -> None:
        self.name = name
        self.voice: Voice | None = voice  # None: espeak-ng
        self.espeak_voice = espeak_voice
        self._lock = lock or threading.Lock()

    @classmethod
    def load(cls, spec: str | os.PathLike[str] | None) -> Speaker:
        s = os.fspath(spec) if spec is not None else "espeak"
        if s == "espeak" or s.startswith("espeak:"):
            return cls(s, None, s)
        try:
            voice, lock = _loaded_voice(s)
        except NotFoundError:
            raise NotFoundError(f"voice {s!r}: no such run (train one with `gencraft train DATASET --model tts`) "
                                "and not an espeak voice (espeak, espeak:en-us, espeak:cmn...)", param="voice") from None
        return cls(s, voice, lock=lock)

    @property
    def info(self) -> dict[str, Any]:
        if self.voice is None:
            return {"kind": "espeak", "voice": self.espeak_voice, "data": {"sources": []}}
        return self.voice.info

    @property
    def engine(self) -> str:
        return "espeak" if self.voice is None else ("vocoder" if self.voice.vocoder is not None else "griffin-lim")

    def sentence(self, text: str, speed: float = 1.0) -> np.ndarray:
        """Float32 samples at 22,050 Hz for one sentence at -20 dBFS (empty when nothing in it can be said)."""
        pieces = list(self.pieces(text, speed))
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)

    def pieces(self, text: str, speed: float = 1.0) -> Iterator[np.ndarray]:
        """One sentence's samples (float32, 22,050 Hz, at the -20 dBFS voices are trained at) in pieces as
        they are made: a trained vocoder's first piece is ~0.37 s, out before the rest is vocoded (each
        piece is vocoded with enough frames around it that the pieces join into the whole). Nothing
        when the sentence holds nothing this voice can say."""
        if self.voice is None:
            yield from _audible(espeak.synthesize(text, voice_for(self.espeak_voice, text, speed)))
            return
        v = self.voice
        langs = v.tokenizer.languages or ["en"]
        lang = detect_language(text)
        _, syms = text_to_symbols(text, lang if lang in langs else langs[0])
        ids, _unknown = v.tokenizer.encode(syms)
        if not any(v.tokenizer.symbols[i] not in ",.!?;:-… " for i in ids):
            return
        mel = self._run(v.acoustic, len(ids), lambda: v.acoustic.synthesize(torch.tensor([ids]), speed=speed)[0][0])
        if v.vocoder is None:
            with self._lock, torch.inference_mode():  # Griffin-Lim: no model to tune threads for
                x = v.to_audio(mel)
            yield from _audible(x)
            return
        frame_db = audio.mel_frame_db(mel)
        if frame_db.max() < -90:  # the model says silence
            return
        gain = None
        for a, b in _spans(mel.shape[1]):
            lo, hi = max(0, a - CONTEXT_FRAMES), min(mel.shape[1], b + CONTEXT_FRAMES)
            part = mel[:, lo:hi]
            x = self._run(v.vocoder.G, hi - lo, lambda part=part: v.to_audio(part))
            x = x[(a - lo) * audio.HOP:(b - lo) * audio.HOP]  # the vocoder makes (frames - 1) * hop samples
            if gain is None:  # the sentence's level from its mel, calibrated on the first piece as vocoded
                est = audio.active_level_db(frame_db[a:b])
                real = audio.active_level_db(audio.frame_rms_db(x))
                offset = real - est if est > audio.active_level_db(frame_db) - 30 else 0.0
                gain = audio.loudness_gain(x, audio.active_level_db(frame_db) + offset)
            yield (x * gain).astype(np.float32)

    def _run(self, model: torch.nn.Module, frames: int, fn: Any) -> Any:
        """``fn()`` -- one model call on ``frames`` positions -- with the voice to itself (one synthesis at a
        time per loaded voice: server threads), held only while it computes, never across a piece handed
        out; torch's ops run under the voice's decode session (one thread, or all cores where its "speech"
        tuner measures that faster)."""
        nbytes = sum(p.numel() for p in model.parameters()) * 4 * max(frames, 1)
        with self._lock, torch.inference_mode(), decode.session(self.voice.acoustic):
            return decode.tuned("speech", nbytes, fn)


def _spans(frames: int) -> list[tuple[int, int]]:
    """The frame spans a sentence of ``frames`` mel frames is vocoded in: a short first one, then long
    ones (a last piece shorter than a quarter of the long ones joins the one before)."""
    spans, a = [], 0
    while a < frames:
        b = min(frames, a + (FIRST_FRAMES if not spans else PIECE_FRAMES))
        if frames - b < PIECE_FRAMES // 4 and spans:
            b = frames
        spans.append((a, b))
        a = b
    return spans


def _audible(x: np.ndarray) -> Iterator[np.ndarray]:
    """``x`` at -20 dBFS, or nothing when it is silent."""
    if len(x) and float(np.abs(x).max()) > 1e-4:
        yield audio.normalize_loudness(x)


_voices: dict[Path, tuple[tuple[int, ...], Voice, threading.Lock]] = {}
_voices_lock = threading.Lock()


def _loaded_voice(spec: str) -> tuple[Voice, threading.Lock]:
    """The voice of run ``spec`` and its synthesis lock, loaded once while its files are unchanged
    (a run trained on, or replaced, loads again); at most 8 voices are kept."""
    path = existing_run(spec).resolve()
    stamp = tuple(os.stat(f).st_mtime_ns if f.exists() else 0
                  for f in (path / "gencraft.json", path / "model.safetensors", path / "vocoder.safetensors"))
    with _voices_lock:
        hit = _voices.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1], hit[2]
    voice = load_voice(path)
    with _voices_lock:
        while len(_voices) >= 8:
            _voices.pop(next(iter(_voices)))
        _voices[path] = (stamp, voice, threading.Lock())
        return voice, _voices[path][2]


def check_speed(speed: float) -> float:
    if not 0.25 <= speed <= 4.0:
        raise UsageError(f"speed {speed}: must be between 0.25 and 4", param="speed")
    return speed


def stream_speech(text: str, speaker: Speaker | str | None = "espeak", *,
                  speed: float = 1.0) -> Iterator[tuple[str, np.ndarray]]:
    """``(sentence, samples)`` for each piece of speech of ``text`` as it is made (lazily: nothing is
    synthesized before the first ``next``): a sentence's first piece carries the sentence, the pieces
    that continue it carry ``""``. The samples are at -20 dBFS; every sentence but the first starts with a
    short pause. Text with nothing this voice can say raises :class:`UsageError` after its last sentence."""
    check_text(text)
    check_speed(speed)
    sp = speaker if isinstance(speaker, Speaker) else Speaker.load(speaker)
    pause = np.zeros(int(PAUSE_S * audio.SAMPLE_RATE), dtype=np.float32)
    said = 0
    for sent in split_sentences(text):
        first = True
        for x in sp.pieces(sent, speed):
            if first:
                yield sent, (np.concatenate([pause, x]) if said else x)
                said += 1
                first = False
            else:
                yield "", x
    if not said:
        raise UsageError("text: nothing in it can be said by this voice", param="input")


@dataclass
class SpeechResult:
    """Speech made from a text: samples (float32, 22,050 Hz), the sentences, timings; once released
    (:func:`gencraft.apps.speech.speak`) also the file, its manifest and the library item."""

    audio: np.ndarray
    sample_rate: int
    sentences: list[str]
    voice: str
    engine: str
    seconds_to_first_audio: float
    synthesis_seconds: float
    path: Path | None = None
    manifest: dict[str, Any] | None = None
    item_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.extra.get("samples", len(self.audio)) / self.sample_rate

    @property
    def rtf(self) -> float:
        """Real-time factor: seconds of computing per second of audio."""
        return self.synthesis_seconds / max(self.duration, 1e-9)

    @property
    def watermarked(self) -> bool:
        return bool(self.manifest and self.manifest.get("watermark"))

    @property
    def signed(self) -> bool:
        return bool(self.manifest and "signature" in self.manifest)

    def wav_bytes(self) -> bytes:
        return audio.wav_bytes(self.audio, self.sample_rate)


class Timed:
    """Pieces of :func:`stream_speech` passed through, timed: when the first came and how long all took."""

    def __init__(self, chunks: Iterator[tuple[str, np.ndarray]]) -> None:
        self.chunks, self.t0 = chunks, time.perf_counter()
        self.first: float | None = None
        self.total, self.sentences, self.samples = 0.0, 0, 0

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        for sent, x in self.chunks:
            now = time.perf_counter() - self.t0
            self.first = now if self.first is None else self.first
            self.total, self.sentences, self.samples = now, self.sentences + bool(sent), self.samples + len(x)
            yield sent, x
        self.total = time.perf_counter() - self.t0


def synthesize(text: str, voice: Speaker | str | None = "espeak", *, speed: float = 1.0, seed: int = 0,
               max_seconds: float | None = None) -> SpeechResult:
    """Say ``text`` with ``voice`` (a tts run name/path, ``espeak`` or ``espeak:NAME``): the whole audio,
    not yet released. ``max_seconds`` refuses audio longer than that (ad spots). ``seed`` seeds torch
    (synthesis is deterministic; Griffin-Lim's initial phase uses it)."""
    sp = voice if isinstance(voice, Speaker) else Speaker.load(voice)
    torch.manual_seed(seed)
    timed = Timed(stream_speech(text, sp, speed=speed))
    chunks, sentences = [], []
    for sent, x in timed:
        chunks.append(x)
        if sent:
            sentences.append(sent)
    samples = np.concatenate(chunks)
    if max_seconds is not None and len(samples) / audio.SAMPLE_RATE > max_seconds:
        raise UsageError(f"the spoken text lasts {len(samples) / audio.SAMPLE_RATE:.1f} s, longer than "
                         f"{max_seconds:g} s; shorten it or raise the speed", param="max_seconds")
    return SpeechResult(samples, audio.SAMPLE_RATE, sentences, sp.name, sp.engine, timed.first or 0.0, timed.total)
