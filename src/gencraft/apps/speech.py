"""Speaking, released: what ``gencraft speak``, ``gencraft.speak()``, the kits' voices and the server run.

:mod:`gencraft.generate.speech` makes the audio; this is the path that hands it to
:func:`gencraft.guard.release` as it is made (an :class:`~gencraft.guard.audio.AudioStream`): the
text is moderated before the first sentence is spoken, then each sentence is watermarked, written
and hashed, and the signed manifest (``FILE.wav.manifest.json``) and the library item follow::

    import gencraft
    r = gencraft.speak("Welcome to Harlow Bend.", "espeak", out="line.wav")       # or a tts run
    r.audio, r.manifest["watermark"], r.item_id
    gencraft.speak(open("book.txt").read(), "my-voice", out="book.wav", keep_audio=False)  # any length
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gencraft import audio, guard
from gencraft.apps._common import release_policy
from gencraft.generate.speech import Speaker, SpeechResult, Timed, check_speed, check_text, stream_speech
from gencraft.guard.audio import AudioStream


def speak(text: str, voice: Speaker | str | None = "espeak", *, out: str | os.PathLike[str] | None = None,
          speed: float = 1.0, seed: int = 0, watermark: bool = True, store: bool = True,
          policy: guard.ReleasePolicy | None = None, label: str = "speech", params: dict[str, Any] | None = None,
          keep_audio: bool = True, on_sentence: Callable[[str, float], None] | None = None,
          on_chunk: Callable[[bytes], None] | None = None, api_key: str | None = None) -> SpeechResult:
    """Say ``text`` with ``voice`` (a tts run name/path, ``espeak`` or ``espeak:NAME``) and release it.

    ``out``: the WAV to write (with its manifest sidecar). ``policy``: the caller's release policy
    (a command's or the server's); without one, a policy of this call (``watermark``, ``store`` in
    the default library). ``keep_audio=False`` keeps no samples (``result.audio`` is empty): text of
    any length in bounded memory. ``on_sentence(sentence, seconds)`` sees each sentence once it is
    spoken, ``on_chunk(pcm16 bytes)`` each piece of audio as it is released (a sentence comes in pieces). ``seed`` seeds torch (synthesis is deterministic;
    Griffin-Lim's initial phase uses it). Raises :class:`~gencraft.errors.GuardError` when the
    policy blocks the text (nothing spoken, nothing written).
    """
    check_text(text)
    check_speed(speed)
    sp = voice if isinstance(voice, Speaker) else Speaker.load(voice)
    torch.manual_seed(seed)
    timed = Timed(stream_speech(text, sp, speed=speed))
    kept: list[bytes] = []
    sentences: list[str] = []

    def chunks() -> Iterator[np.ndarray]:
        said, samples = None, 0  # the sentence being spoken (its pieces come one by one) and its length
        for sent, x in timed:
            if sent:
                if said is not None and on_sentence is not None:
                    on_sentence(said, samples / audio.SAMPLE_RATE)
                said, samples = sent, 0
                if keep_audio:
                    sentences.append(sent)
            samples += len(x)
            yield x
        if said is not None and on_sentence is not None:
            on_sentence(said, samples / audio.SAMPLE_RATE)

    def released(pcm: bytes) -> None:
        if keep_audio:
            kept.append(pcm)
        if on_chunk is not None:
            on_chunk(pcm)

    stream = AudioStream(chunks(), released)
    p = {"voice": sp.name, "engine": sp.engine, "speed": speed, "text": text[:2000], **(params or {})}
    with nullcontext(policy) if policy is not None else release_policy(watermark=watermark, store=store) as pol:
        rel = guard.release(stream, kind="audio", label=label, policy=pol, run_info=sp.info, model_name=sp.name,
                            params=p, seed=seed, prompt=text, out=out, api_key=api_key, store=store)
    samples = np.frombuffer(b"".join(kept), dtype="<i2").astype(np.float32) / 32767.0
    return SpeechResult(samples, audio.SAMPLE_RATE, sentences, sp.name, sp.engine, timed.first or 0.0, timed.total,
                        rel.path, rel.manifest, rel.item_id, {"samples": stream.samples, "sentences": timed.sentences})


def release_audio(samples: np.ndarray, voice: Speaker, *, text: str, out: str | os.PathLike[str] | None,
                  policy: guard.ReleasePolicy | None = None, label: str = "speech", params: dict[str, Any] | None = None,
                  seed: int = 0) -> guard.Released:
    """Release audio made whole (float32 at 22,050 Hz: a spot padded to its length) as a WAV ``out``."""
    p = {"voice": voice.name, "engine": voice.engine, "text": text[:2000], **(params or {})}
    with nullcontext(policy) if policy is not None else release_policy() as pol:
        return guard.release(audio.wav_bytes(samples), kind="audio", label=label, policy=pol, run_info=voice.info,
                             model_name=voice.name, params=p, seed=seed, prompt=text,
                             out=Path(out) if out is not None else None)


__all__ = ["SpeechResult", "release_audio", "speak"]
