"""The kits speak: dialogue lines for game characters, 15- and 30-second radio spots, drafts read aloud.

Each function takes a voice spec (a ``tts`` run, ``espeak`` or ``espeak:NAME``) and the command's release
policy, and writes watermarked WAV files with their signed manifests through the release step
(:func:`gencraft.apps.speech.speak`, :func:`gencraft.apps.speech.release_audio`).

- :func:`voice_dialogue`: one WAV per line of each dialogue graph, beside it, and an index
  (``OUT.voice.json``: record, node, speaker, text, file, seconds). With espeak, each character gets
  a voice of its own from a small cast (by name, so a character keeps its voice across records).
- :func:`audio_spots`: each ad variant as a 15- and a 30-second spot (headline + CTA; headline +
  description + CTA), never longer than the spot: too long is read up to 25% faster, then the
  description is dropped, then the spot is skipped with a note; shorter is padded with silence to
  exactly the spot's length (what a broadcaster's traffic system expects).
- :func:`read_aloud`: a draft (Markdown or text) narrated sentence by sentence, any length.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from gencraft import audio
from gencraft.apps.speech import release_audio, speak
from gencraft.errors import GencraftError, UsageError
from gencraft.generate.speech import Speaker, synthesize
from gencraft.io import write_json
from gencraft.runs import read_info

ESPEAK_CAST = ("en-us+m3", "en-us+f3", "en+m1", "en+f4", "en-us+m7", "en-us+f2", "en+m4", "en-us+f4")
SPOT_SECONDS = (15.0, 30.0)
MAX_SPEEDUP = 1.25


def is_speech_voice(spec: str) -> bool:
    """True for ``espeak``/``espeak:NAME`` and ``tts`` runs (a voice that speaks, not a text model)."""
    if spec == "espeak" or spec.startswith("espeak:"):
        return True

    try:
        return read_info(spec)[1].get("kind") == "tts"
    except GencraftError:
        return False


def _cast(voice: str, speaker_name: str) -> str:
    """The voice a character speaks with: a trained voice for everyone, or an espeak voice per name."""
    if voice != "espeak":
        return voice
    h = int.from_bytes(hashlib.sha256(speaker_name.strip().lower().encode()).digest()[:4], "little")
    return f"espeak:{ESPEAK_CAST[h % len(ESPEAK_CAST)]}"


def voice_dialogue(records: list[dict[str, Any]], voice: str, out: str | os.PathLike[str], *,
                   seed: int = 0, policy: Any = None) -> Path:
    """Speak every line of every dialogue record; WAVs in ``OUT_STEM.voice/``, index ``OUT_STEM.voice.json``."""
    out = Path(out)
    folder = out.with_name(out.stem + ".voice")
    speakers: dict[str, Speaker] = {}
    index = []
    for r, rec in enumerate(records):
        for node in rec.get("nodes") or []:
            text, name = str(node.get("text", "")).strip(), str(node.get("speaker", "narrator"))
            if not text:
                continue
            spec = _cast(voice, name)
            sp = speakers.get(spec) or speakers.setdefault(spec, Speaker.load(spec))
            wav = folder / f"r{r:02d}_{re.sub(r'[^A-Za-z0-9]', '', str(node.get('id', 'n')))}.wav"
            res = speak(text, sp, out=wav, seed=seed, label="game.dialogue", policy=policy,
                        params={"record": r, "node": node.get("id"), "speaker": name})
            index.append({"record": r, "node": node.get("id"), "speaker": name, "voice": spec, "text": text,
                          "file": str(wav.relative_to(out.parent)), "seconds": round(res.duration, 3)})
    if not index:
        raise UsageError("the dialogue has no lines to speak", param="voice")
    write_json(out.with_name(out.stem + ".voice.json"), index)
    return folder


def spot_script(variant: Any, seconds: float) -> list[str]:
    """The lines of a spot, most to least important: a 15-second spot drops the description."""
    lines = [variant.headline.strip(), variant.description.strip(), variant.cta.strip()]
    return [lines[0], lines[2]] if seconds <= 15 else lines


def _end(s: str) -> str:
    return s if s.endswith((".", "!", "?")) else s + "."


def audio_spots(variants: list[Any], voice: str, out: str | os.PathLike[str], *, seed: int = 0,
                durations: tuple[float, ...] = SPOT_SECONDS, policy: Any = None) -> list[dict[str, Any]]:
    """Write ``OUT_STEM_vN_15s.wav`` and ``..._30s.wav`` for each variant; returns what was written
    (or why a spot was skipped). Every spot lasts exactly its duration."""
    out = Path(out)
    sp = Speaker.load(voice)
    made = []
    for i, v in enumerate(variants):
        for secs in durations:
            lines = spot_script(v, secs)
            attempts = [(lines, 1.0), (lines, MAX_SPEEDUP)]
            if len(lines) == 3:
                attempts.append(([lines[0], lines[2]], MAX_SPEEDUP))
            path = out.with_name(f"{out.stem}_v{i + 1}_{int(secs)}s.wav")
            for script, speed in attempts:
                text = " ".join(_end(s) for s in script if s)
                try:
                    res = synthesize(text, sp, speed=speed, seed=seed, max_seconds=secs - 0.5)
                except UsageError as e:
                    if e.param == "max_seconds":
                        continue
                    raise
                # pad (a quarter second of lead-in, silence after) to exactly the spot's length, then release
                lead = np.zeros(int(0.25 * audio.SAMPLE_RATE), dtype=np.float32)
                x = np.concatenate([lead, res.audio])
                x = np.pad(x, (0, int(round(secs * audio.SAMPLE_RATE)) - len(x)))
                release_audio(x, sp, text=text, out=path, policy=policy, label="ads.audio", seed=seed,
                              params={"variant": i, "spot_seconds": secs, "speed": speed})
                made.append({"variant": i, "seconds": secs, "file": str(path), "speed": speed, "script": text,
                             "spoken_seconds": round(len(x) / audio.SAMPLE_RATE, 3)})
                break
            else:
                made.append({"variant": i, "seconds": secs, "file": None,
                             "note": f"does not fit in {secs:g} s even at {MAX_SPEEDUP}x without the description"})
    return made


def _plain(markdown: str) -> str:
    """Markdown -> the text a narrator reads (headings and list items as sentences, no markup)."""
    lines = []
    for line in markdown.splitlines():
        s = re.sub(r"^\s{0,3}(#{1,6}|[-*+]|\d+[.)])\s+", "", line)
        s = re.sub(r"[*_`~]+", "", s)
        s = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", s).strip()
        if s and line.lstrip().startswith("#") and not s.endswith((".", "!", "?", "。")):
            s += "."
        lines.append(s)
    return "\n".join(lines)


def read_aloud(text: str, voice: str, out: str | os.PathLike[str], *, seed: int = 0, policy: Any = None) -> Any:
    """Narrate a draft (Markdown allowed) into ``out`` (WAV + manifest), sentence by sentence, any length."""
    body = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.DOTALL)  # a manifest in front matter is not read
    return speak(_plain(body), voice, out=out, seed=seed, label="write.read_aloud", policy=policy, keep_audio=False)
