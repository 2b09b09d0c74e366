"""espeak-ng as a voice: instant voice-overs with no training, and the test and benchmark corpora.

The library is the ``libespeak-ng`` the ``espeakng-loader`` wheel ships (the same one the phonemizer
uses), driven through ``ctypes`` in synchronous mode: ``espeak_Synth`` calls back with 16-bit
samples at 22,050 Hz, which is also the rate of every gencraft voice. One process-wide instance
behind a lock (the library keeps global state).

Voices are espeak-ng names with an optional variant: ``en-us``, ``en-gb+f4``, ``cmn`` (Mandarin).
``espeak`` alone picks English or Mandarin by the text.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gencraft import audio
from gencraft.errors import UsageError
from gencraft.io import atomic_dir
from gencraft.tokenize.phonemes import detect_language, espeak_paths

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_RATE, _PITCH, _RANGE = 1, 3, 4
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


@dataclass(frozen=True)
class EspeakVoice:
    """An espeak-ng voice and how it speaks: words a minute, pitch (0-100), pitch range (0-100)."""

    name: str = "en-us"
    rate: int = 170
    pitch: int = 50
    range: int = 50


class _Espeak:
    def __init__(self) -> None:
        lib_path, data = espeak_paths()
        self.lib = ctypes.CDLL(lib_path)
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.sample_rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(),
                                                      _INITIALIZE_DONT_EXIT)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak-ng could not start (data folder {data})")
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.chunks: list[np.ndarray] = []
        self._cb = _CALLBACK(self._collect)  # kept referenced: the library holds the pointer
        self.lib.espeak_SetSynthCallback(self._cb)
        self.lock = threading.Lock()

    def _collect(self, wav, n, _events) -> int:
        if wav and n > 0:
            # string_at copies the samples; np.ctypeslib.as_array would cache a ctypes type per length (a leak)
            self.chunks.append(np.frombuffer(ctypes.string_at(wav, 2 * n), dtype=np.int16))
        return 0

    def synth(self, text: str, voice: EspeakVoice) -> np.ndarray:
        data = text.encode("utf-8")
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
                raise UsageError(f"voice {voice.name!r}: espeak-ng has no such voice; try en-us, en (British), "
                                 "en-us+f4 or cmn", param="voice")
            self.lib.espeak_SetParameter(_RATE, int(voice.rate), 0)
            self.lib.espeak_SetParameter(_PITCH, int(voice.pitch), 0)
            self.lib.espeak_SetParameter(_RANGE, int(voice.range), 0)
            self.chunks = []
            self.lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
            self.lib.espeak_Synchronize()
            chunks, self.chunks = self.chunks, []
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return (np.concatenate(chunks).astype(np.float32) / 32768.0).astype(np.float32)


_engine: _Espeak | None = None
_engine_lock = threading.Lock()


def engine() -> _Espeak:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Espeak()
        return _engine


def voice_for(spec: str | None, text: str = "", speed: float = 1.0) -> EspeakVoice:
    """An :class:`EspeakVoice` from ``espeak``, ``espeak:NAME`` or a bare espeak-ng name; ``espeak``
    alone reads Chinese text with the Mandarin voice and anything else with American English."""
    name = (spec or "espeak").strip()
    if name.startswith("espeak:"):
        name = name[len("espeak:"):]
    if name in ("", "espeak"):
        name = "cmn" if detect_language(text) == "zh" else "en-us"
    if not 0.25 <= speed <= 4.0:
        raise UsageError(f"--speed {speed}: must be between 0.25 and 4", param="speed")
    return EspeakVoice(name=name, rate=max(80, min(450, round(170 * speed))))


def synthesize(text: str, voice: EspeakVoice | str | None = None, speed: float = 1.0) -> np.ndarray:
    """Float32 samples at 22,050 Hz of espeak-ng reading ``text``."""
    v = voice if isinstance(voice, EspeakVoice) else voice_for(voice, text, speed)
    return engine().synth(text, v)


def sample_rate() -> int:
    return engine().sample_rate


# --- a corpus made by espeak-ng (tests, benchmark, demo) ---------------------------------------------

CORPUS_VOICES = {
    # two clearly different speakers: a low American male voice and a high, faster British female one
    "A": {"name": "en-us+m3", "rate": 165, "pitch": 35, "range": 40},
    "B": {"name": "en+f4", "rate": 185, "pitch": 75, "range": 70},
}


def sample_sentences(n: int, offset: int = 0) -> list[str]:
    """Sentences of the bundled sample corpus (``assets/corpus``, CC0-1.0), in a fixed order."""
    corpus = Path(__file__).resolve().parents[1] / "assets" / "corpus"
    sents: list[str] = []
    for name in ("products.jsonl", "lore.jsonl", "news.jsonl"):
        for line in (corpus / name).read_text(encoding="utf-8").splitlines():
            text = json.loads(line)["text"]
            text = re.sub(r"^[A-Z][A-Z ]+ - ", "", text)  # news datelines
            sents += [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 4]
    # interleave the three files so that any slice mixes products, lore and news
    order = sorted(range(len(sents)), key=lambda i: (i % 7, i))
    sents = [sents[i] for i in order]
    return sents[offset:offset + n]


def make_espeak_corpus(out: str | os.PathLike[str], voice: str = "A", n: int = 600, offset: int = 0) -> Path:
    """Write an LJSpeech folder (``metadata.csv`` + ``wavs/``) of espeak-ng reading ``n`` sentences of
    the sample corpus in corpus voice ``A`` or ``B`` (or any espeak-ng voice name)."""
    v = EspeakVoice(**CORPUS_VOICES[voice]) if voice in CORPUS_VOICES else EspeakVoice(name=voice)
    dest = Path(out)
    sents = sample_sentences(n, offset)
    with atomic_dir(dest) as tmp:
        (tmp / "wavs").mkdir()
        lines = []
        for i, s in enumerate(sents):
            uid = f"GC{voice if voice in CORPUS_VOICES else 'X'}-{offset + i:04d}"
            audio.write_wav(tmp / "wavs" / f"{uid}.wav", synthesize(s, v))
            lines.append(f"{uid}|{s}|{s}")
        (tmp / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (tmp / "LICENSE").write_text("CC0-1.0: sentences of gencraft's sample corpus read by espeak-ng "
                                     f"(voice {v.name}, rate {v.rate}, pitch {v.pitch}).\n", encoding="utf-8")
    return dest
