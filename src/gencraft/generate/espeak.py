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
import threading
from dataclasses import dataclass

import numpy as np

from gencraft.errors import UsageError

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
        from gencraft.tokenize.phonemes import espeak_paths

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
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
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
    from gencraft.tokenize.phonemes import detect_language

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
