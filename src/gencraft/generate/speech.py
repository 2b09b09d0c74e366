"""Speaking: text -> audio with a trained voice (a ``tts`` run) or espeak-ng, sentence by sentence.

``speak("Hello there.", voice="my-voice", out="line.wav")`` normalizes and phonemizes the text, splits
it into sentences, synthesizes each (acoustic model -> mel -> vocoder, or Griffin-Lim when the run
has no vocoder yet; or espeak-ng for ``voice="espeak"``), joins them with short pauses, and hands the
audio to the guard (moderation of the text, the keyed watermark, the signed manifest sidecar).
:func:`stream_speech` yields the audio sentence by sentence, so the first sentence plays while the
rest is made and memory stays bounded however long the text.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gencraft import audio
from gencraft.errors import GuardError, NotFoundError, UsageError

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


class Speaker:
    """One loaded voice: ``Speaker.load("espeak")``, ``Speaker.load("espeak:en+f4")`` or a tts run."""

    def __init__(self, name: str, voice: Any = None, espeak_voice: str | None = None) -> None:
        self.name = name
        self.voice = voice  # gencraft.train.speech.Voice or None (espeak)
        self.espeak_voice = espeak_voice
        self._lock = __import__("threading").Lock()

    @classmethod
    def load(cls, spec: str | os.PathLike[str] | None) -> Speaker:
        s = os.fspath(spec) if spec is not None else "espeak"
        if s == "espeak" or s.startswith("espeak:"):
            return cls(s, None, s)
        from gencraft.train.speech import load_voice

        try:
            return cls(s, load_voice(s))
        except NotFoundError:
            raise NotFoundError(f"voice {s!r}: no such run (train one with `gencraft train DATASET --model tts`) "
                                "and not an espeak voice (espeak, espeak:en-us, espeak:cmn...)", param="voice") from None

    @property
    def info(self) -> dict[str, Any]:
        if self.voice is None:
            return {"kind": "espeak", "voice": self.espeak_voice, "data": {"sources": []}}
        return self.voice.info

    @property
    def engine(self) -> str:
        return "espeak" if self.voice is None else ("vocoder" if self.voice.vocoder is not None else "griffin-lim")

    def sentence(self, text: str, speed: float = 1.0) -> np.ndarray:
        """Float32 samples at 22,050 Hz for one sentence (empty when nothing in it can be said)."""
        if self.voice is None:
            from gencraft.generate.espeak import synthesize, voice_for

            return synthesize(text, voice_for(self.espeak_voice, text, speed))
        from gencraft.tokenize.phonemes import detect_language, text_to_symbols

        v = self.voice
        langs = v.tokenizer.languages or ["en"]
        lang = detect_language(text)
        _, syms = text_to_symbols(text, lang if lang in langs else langs[0])
        ids, _unknown = v.tokenizer.encode(syms)
        if not any(v.tokenizer.symbols[i] not in ",.!?;:-… " for i in ids):
            return np.zeros(0, dtype=np.float32)
        from gencraft.train.speech import mel_to_audio

        with self._lock, torch.inference_mode():  # one synthesis at a time per loaded voice (server threads)
            mel, _ = v.acoustic.synthesize(torch.tensor([ids]), speed=speed)
            return mel_to_audio(v, mel[0])


def stream_speech(text: str, speaker: Speaker | str | None = "espeak", *, speed: float = 1.0,
                  policy: Any = None) -> Iterator[tuple[str, np.ndarray]]:
    """``(sentence, samples)`` for each sentence of ``text`` as it is made; each sentence is moderated
    before it is spoken (a blocked one raises :class:`GuardError`). The samples end with a short pause."""
    from gencraft.guard.moderation import moderate

    check_text(text)
    if not 0.25 <= speed <= 4.0:
        raise UsageError(f"speed {speed}: must be between 0.25 and 4", param="speed")
    sp = speaker if isinstance(speaker, Speaker) else Speaker.load(speaker)
    pause = np.zeros(int(PAUSE_S * audio.SAMPLE_RATE), dtype=np.float32)
    said = 0
    for sent in split_sentences(text):
        report = moderate(sent, policy)
        if report.blocked:
            raise GuardError(f"text blocked by the moderation policy ({', '.join(report.categories)}); "
                             "change the text or the policy", param="input")
        x = sp.sentence(sent, speed)
        if len(x) and float(np.abs(x).max()) > 1e-4:
            x = audio.normalize_loudness(x)  # every sentence at the level voices are trained at (-20 dBFS)
            said += 1
            yield sent, np.concatenate([x, pause])
    if not said:
        raise UsageError("text: nothing in it can be said by this voice", param="input")


@dataclass
class SpeechResult:
    """What :func:`speak` made: samples (float32, 22,050 Hz), the sentences, timings, the file and manifest."""

    audio: np.ndarray
    sample_rate: int
    sentences: list[str]
    voice: str
    engine: str
    seconds_to_first_audio: float
    synthesis_seconds: float
    path: Path | None = None
    manifest: dict[str, Any] | None = None
    watermarked: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate

    @property
    def rtf(self) -> float:
        """Real-time factor: seconds of computing per second of audio."""
        return self.synthesis_seconds / max(self.duration, 1e-9)

    def wav_bytes(self) -> bytes:
        return audio.wav_bytes(self.audio, self.sample_rate)


def speak(text: str, voice: Speaker | str | None = "espeak", *, out: str | os.PathLike[str] | None = None,
          speed: float = 1.0, seed: int = 0, watermark: bool = True, max_seconds: float | None = None,
          params: dict[str, Any] | None = None, kind: str = "speech") -> SpeechResult:
    """Say ``text`` with ``voice`` (a tts run name/path, ``espeak`` or ``espeak:NAME``).

    Writes ``out`` (WAV) and its signed manifest sidecar when given. ``max_seconds`` refuses audio
    longer than that (ad spots). ``seed`` is recorded (synthesis is deterministic; Griffin-Lim's
    initial phase uses it).
    """
    sp = voice if isinstance(voice, Speaker) else Speaker.load(voice)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    first = None
    chunks, sentences = [], []
    for sent, x in stream_speech(text, sp, speed=speed):
        if first is None:
            first = time.perf_counter() - t0
        chunks.append(x)
        sentences.append(sent)
    samples = np.concatenate(chunks)
    samples = samples[: len(samples) - int(PAUSE_S * audio.SAMPLE_RATE)]  # no pause after the last sentence
    synth = time.perf_counter() - t0
    if max_seconds is not None and len(samples) / audio.SAMPLE_RATE > max_seconds:
        raise UsageError(f"the spoken text lasts {len(samples) / audio.SAMPLE_RATE:.1f} s, longer than "
                         f"{max_seconds:g} s; shorten it or raise the speed", param="max_seconds")
    result = SpeechResult(samples, audio.SAMPLE_RATE, sentences, sp.name, sp.engine, first or 0.0, synth)
    p = {"voice": sp.name, "engine": sp.engine, "speed": speed, "text": text[:2000], **(params or {})}
    return finalize_speech(result, sp, out=out, params=p, seed=seed, watermark=watermark, kind=kind)


def speak_streaming(text: str, voice: Speaker | str | None = "espeak", *, out: str | os.PathLike[str],
                    speed: float = 1.0, seed: int = 0, watermark: bool = True, params: dict[str, Any] | None = None,
                    kind: str = "speech", on_sentence: Any = None) -> SpeechResult:
    """:func:`speak` for text of any length: each sentence is watermarked and appended to ``out`` as it is
    made (the watermark's pattern is the same in every frame, so marking sentence by sentence equals
    marking the whole), the samples are hashed as they go, and the manifest is signed at the end. Memory
    holds one sentence. ``out`` appears complete or not at all (atomic rename)."""
    import soundfile as sf

    from gencraft.guard.audio import SCHEME, AudioHasher, embed_audio
    from gencraft.guard.keys import load_keys
    from gencraft.guard.watermark import derive_key
    from gencraft.io import atomic_path

    sp = voice if isinstance(voice, Speaker) else Speaker.load(voice)
    keys = load_keys() if watermark else None
    key = derive_key(keys.watermark_secret, "audio") if keys is not None else None
    hasher = AudioHasher()
    t0 = time.perf_counter()
    first, n_samples, n_sent = None, 0, 0
    with atomic_path(out) as tmp:
        with sf.SoundFile(str(tmp), "w", samplerate=audio.SAMPLE_RATE, channels=1, subtype="PCM_16",
                          format="WAV") as f:
            for sent, x in stream_speech(text, sp, speed=speed):
                if key is not None:
                    x = embed_audio(x, key)
                pcm = audio.to_pcm16(x)
                f.write(pcm)
                hasher.update(pcm)
                n_samples += len(pcm)
                n_sent += 1
                if first is None:
                    first = time.perf_counter() - t0
                if on_sentence is not None:
                    on_sentence(sent, len(pcm) / audio.SAMPLE_RATE)
    synth = time.perf_counter() - t0
    result = SpeechResult(np.zeros(0, dtype=np.float32), audio.SAMPLE_RATE, [], sp.name, sp.engine, first or 0.0,
                          synth, extra={"samples": n_samples, "sentences": n_sent})
    p = {"voice": sp.name, "engine": sp.engine, "speed": speed, "text": text[:2000], "streamed": True,
         **(params or {})}
    wm = {"key_id": keys.key_id, **SCHEME} if keys is not None else None
    return _sign_and_write(result, sp, Path(out), hasher.hexdigest(), wm, p, seed, kind, write_audio=False)


def finalize_speech(result: SpeechResult, sp: Speaker, *, out: str | os.PathLike[str] | None, params: dict,
                    seed: int, watermark: bool, kind: str) -> SpeechResult:
    """Watermark (with keys), sign, and write the WAV with its manifest sidecar."""
    from gencraft.guard.audio import SCHEME, audio_sha256, embed_audio
    from gencraft.guard.keys import load_keys
    from gencraft.guard.watermark import derive_key

    keys = load_keys()
    wm = None
    if watermark and keys is not None:
        result.audio = embed_audio(result.audio, derive_key(keys.watermark_secret, "audio"))
        wm = {"key_id": keys.key_id, **SCHEME}
    return _sign_and_write(result, sp, Path(out) if out is not None else None, audio_sha256(result.audio), wm,
                           params, seed, kind, write_audio=True)


def _sign_and_write(result: SpeechResult, sp: Speaker, out: Path | None, digest: str, wm: dict | None,
                    params: dict, seed: int, kind: str, write_audio: bool) -> SpeechResult:
    from gencraft.guard.keys import load_keys
    from gencraft.guard.provenance import build_manifest, sidecar_path, sign_manifest
    from gencraft.io import write_json

    keys = load_keys()
    manifest = build_manifest(content_sha256=digest, kind=kind, run_info=sp.info, parameters=params, seed=seed,
                              guard={"action": "allow"}, media_type="audio/wav")
    manifest["watermark"] = wm
    if keys is not None:
        manifest = sign_manifest(manifest, keys)
    result.manifest = manifest
    result.watermarked = wm is not None
    if out is not None:
        if write_audio:
            audio.write_wav(out, result.audio)
        write_json(sidecar_path(out), manifest)
        result.path = out
    return result
