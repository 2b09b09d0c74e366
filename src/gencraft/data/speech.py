"""Speech datasets: a person's recordings -> a dataset directory a voice trains on.

``prepare_speech(FOLDER, out=NAME, license=L, speaker="Name")`` reads either layout:

- LJSpeech: ``metadata.csv`` with ``id|text`` or ``id|text|normalized text`` lines, audio in ``wavs/ID.wav``
  (or ``.flac``/``.ogg``);
- a plain folder (searched recursively) of ``x.wav`` + ``x.txt`` pairs.

Any file libsndfile reads (WAV of any bit depth, FLAC, OGG), any rate and channel count, becomes mono
22,050 Hz, trimmed of leading and trailing silence and loudness-normalized. What cannot be used is
dropped and counted by reason (unreadable, clipped, too short, too long, low sample rate, transcript
missing, text the phonemizer cannot read...), never half-written: the directory is built under a
temporary name and renamed into place::

    datasets/NAME/
      manifest.json      kind "speech", speaker, license, sources (path, sha256, license), kept/dropped counts
      phonemes.json      the phoneme inventory (gencraft.tokenize.phonemes.PhonemeTokenizer)
      utterances.jsonl   {"id", "source", "split", "text", "normalized", "language", "symbols", "seconds", "frames"}
      wavs/ID.wav        the converted audio, mono 16-bit PCM at 22,050 Hz
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gencraft import __version__, audio
from gencraft.errors import DataError, NotFoundError, UsageError
from gencraft.io import atomic_dir, now_iso
from gencraft.paths import dataset_path, existing_dataset
from gencraft.tokenize.phonemes import LANGUAGES, PhonemeTokenizer, detect_language, normalize, phonemize

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga")
MAX_DROPPED_LISTED = 1000
DROP_REASONS = {
    "unreadable": "not a readable sound file",
    "empty": "no samples",
    "low_sample_rate": "sample rate below --min-sample-rate",
    "clipped": "more than 0.1% of samples at full scale",
    "silent": "nothing above the noise floor",
    "too_short": "shorter than --min-seconds after trimming silence",
    "too_long": "longer than --max-seconds",
    "no_transcript": "transcript missing or empty",
    "missing_audio": "a metadata line whose audio file does not exist",
    "bad_id": "an id that is not a plain file name",
    "unphonemizable": "text the phonemizer cannot read",
    "too_fast": "more phonemes than audio frames",
    "duplicate": "the same id twice",
}


@dataclass
class Candidate:
    id: str
    audio: Path | None
    text: str | None
    reason: str | None = None


def _safe_id(s: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,200}", s)) and ".." not in s


def read_ljspeech(folder: Path) -> list[Candidate]:
    """Candidates from ``metadata.csv`` (``id|text[|normalized]``); a line with another number of
    columns is an error naming the line (the file is not in the LJSpeech layout)."""
    meta = folder / "metadata.csv"
    try:
        raw = meta.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{meta}: not UTF-8 text; save it as UTF-8", param="metadata") from None
    out: list[Candidate] = []
    for n, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        cols = next(csv.reader([line], delimiter="|", quoting=csv.QUOTE_NONE))
        if len(cols) not in (2, 3):
            raise DataError(f"{meta} line {n}: expected 2 or 3 columns separated by '|' (id|text|normalized text), "
                            f"got {len(cols)}", param="metadata")
        uid = cols[0].strip()
        text = (cols[2] if len(cols) == 3 and cols[2].strip() else cols[1]).strip()
        if not _safe_id(uid):
            out.append(Candidate(uid, None, text, "bad_id"))
            continue
        found = next((folder / "wavs" / f"{uid}{s}" for s in AUDIO_SUFFIXES if (folder / "wavs" / f"{uid}{s}").is_file()),
                     None)
        out.append(Candidate(uid, found, text or None, None if found else "missing_audio"))
    return out


def read_pairs(folder: Path) -> list[Candidate]:
    """Candidates from ``x.wav`` + ``x.txt`` pairs anywhere under ``folder``."""
    out: list[Candidate] = []
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES):
        txt = f.with_suffix(".txt")
        text = None
        if txt.is_file():
            try:
                text = txt.read_bytes().decode("utf-8-sig").strip() or None
            except UnicodeDecodeError:
                text = None
        uid = re.sub(r"[^A-Za-z0-9_.\-]", "_", str(f.relative_to(folder).with_suffix("")).replace(os.sep, "__"))
        out.append(Candidate(uid.lstrip("._") or "utt", f, text))
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _split_of(uid: str, val_fraction: float, seed: int) -> str:
    h = int.from_bytes(hashlib.sha256(f"{seed}:{uid}".encode()).digest()[:8], "little")
    return "val" if h / 2**64 < val_fraction else "train"


def prepare_speech(folder: str | os.PathLike[str], *, out: str | os.PathLike[str], license: str, speaker: str,
                   language: str = "auto", min_seconds: float = 0.5, max_seconds: float = 20.0,
                   min_sample_rate: int = 16000, val_fraction: float = 0.05, seed: int = 0,
                   progress=None) -> Path:
    """Build a speech dataset directory from ``folder``; returns its path. See the module docstring."""
    src = Path(folder).expanduser()
    if not src.is_dir():
        raise NotFoundError(f"{src}: no such folder; pass a folder with metadata.csv + wavs/ or x.wav + x.txt pairs",
                            param="folder")
    if not license or not license.strip():
        raise UsageError("--license: required for a dataset of a person's voice (e.g. CC-BY-4.0, or "
                         "'private: recorded by NAME with consent')", param="license")
    if not speaker or not speaker.strip():
        raise UsageError("--speaker: name the person whose voice this is", param="speaker")
    if language not in ("auto", *LANGUAGES):
        raise UsageError(f"--language {language}: expected auto, {', '.join(LANGUAGES)}", param="language")
    if not 0 < min_seconds < max_seconds:
        raise UsageError(f"--min-seconds {min_seconds} / --max-seconds {max_seconds}: need 0 < min < max",
                         param="min_seconds")
    if not 0.0 <= val_fraction < 0.5:
        raise UsageError(f"--val-fraction {val_fraction}: must be in [0, 0.5)", param="val_fraction")
    layout = "ljspeech" if (src / "metadata.csv").is_file() else "pairs"
    cands = read_ljspeech(src) if layout == "ljspeech" else read_pairs(src)
    if not cands:
        raise DataError(f"{src}: no recordings found (expected metadata.csv + wavs/ID.wav, or x.wav + x.txt pairs)",
                        param="folder")
    say = progress or (lambda msg: None)
    say(f"{len(cands)} recordings found ({layout} layout)")

    # 1. transcripts: missing ones, duplicates, then normalization and phonemes in one batch per language
    dropped: list[dict[str, Any]] = []
    seen: set[str] = set()

    def drop(c: Candidate, reason: str, detail: str = "") -> None:
        dropped.append({"id": c.id, "path": str(c.audio) if c.audio else None, "reason": reason,
                        **({"detail": detail} if detail else {})})

    live: list[Candidate] = []
    for c in cands:
        if c.reason:
            drop(c, c.reason)
        elif c.id in seen:
            drop(c, "duplicate")
        elif not c.text:
            drop(c, "no_transcript")
        else:
            seen.add(c.id)
            live.append(c)
    langs = [language if language != "auto" else detect_language(c.text or "") for c in live]
    normalized = [normalize(c.text or "", lang) for c, lang in zip(live, langs, strict=True)]
    symbols: list[list[str]] = [[] for _ in live]
    for lang in set(langs):
        idx = [i for i, g in enumerate(langs) if g == lang]
        for i, s in zip(idx, phonemize([normalized[i] for i in idx], lang), strict=True):
            symbols[i] = s
    say("transcripts normalized and phonemized")

    # 2. audio: header checks first (a 10-minute file is never loaded), then samples
    dest = dataset_path(out)
    kept: list[dict[str, Any]] = []
    sources: list[dict[str, Any]] = []
    with atomic_dir(dest) as tmp:
        (tmp / "wavs").mkdir()
        for c, lang, norm, syms in zip(live, langs, normalized, symbols, strict=True):
            if not syms:
                drop(c, "unphonemizable")
                continue
            assert c.audio is not None
            try:
                info = audio.probe(c.audio)
            except DataError as e:
                drop(c, "empty" if "no samples" in str(e) else "unreadable")
                continue
            if info.sample_rate < min_sample_rate:
                drop(c, "low_sample_rate", f"{info.sample_rate} Hz")
                continue
            if info.seconds > max_seconds + 2.0:  # trimming cannot save it: skip without reading
                drop(c, "too_long", f"{info.seconds:.1f} s")
                continue
            try:
                x, clipped = audio.read_audio(c.audio)
            except DataError:
                drop(c, "unreadable")
                continue
            if clipped > 0.001:
                drop(c, "clipped", f"{clipped:.2%} of samples")
                continue
            if float(np.abs(x).max()) < 1e-4:
                drop(c, "silent")
                continue
            x = audio.trim_silence(x)
            secs = len(x) / audio.SAMPLE_RATE
            if secs < min_seconds:
                drop(c, "too_short", f"{secs:.2f} s")
                continue
            if secs > max_seconds:
                drop(c, "too_long", f"{secs:.1f} s")
                continue
            frames = audio.n_frames(len(x))
            if frames < len(syms):
                drop(c, "too_fast", f"{len(syms)} phonemes, {frames} frames")
                continue
            x = audio.normalize_loudness(x)
            (tmp / "wavs" / f"{c.id}.wav").write_bytes(audio.wav_bytes(x))
            sources.append({"path": str(c.audio), "sha256": _sha256(c.audio), "bytes": c.audio.stat().st_size,
                            "license": license, "speaker": speaker, "sample_rate": info.sample_rate,
                            "channels": info.channels, "subtype": info.subtype, "seconds": round(info.seconds, 3)})
            kept.append({"id": c.id, "source": len(sources) - 1, "split": _split_of(c.id, val_fraction, seed),
                         "text": c.text, "normalized": norm, "language": lang, "symbols": syms,
                         "seconds": round(secs, 3), "frames": frames})
            if len(kept) % 100 == 0:
                say(f"{len(kept)} recordings converted")
        if len(kept) < 2:
            counts = Counter(d["reason"] for d in dropped)
            why = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in counts.most_common()) or "none found"
            raise DataError(f"{src}: {len(kept)} usable recording(s), need at least 2 (dropped: {why})",
                            param="folder")
        if val_fraction > 0 and not any(k["split"] == "val" for k in kept):
            kept[-1]["split"] = "val"  # a held-out utterance, however small the set
        if not any(k["split"] == "train" for k in kept):
            kept[0]["split"] = "train"
        tok = PhonemeTokenizer.build([k["symbols"] for k in kept], [k["language"] for k in kept])
        tok.save(tmp / "phonemes.json")
        with open(tmp / "utterances.jsonl", "w", encoding="utf-8") as fh:
            for k in kept:
                fh.write(json.dumps(k, ensure_ascii=False) + "\n")
        options = {"kind": "speech", "layout": layout, "language": language, "min_seconds": min_seconds,
                   "max_seconds": max_seconds, "min_sample_rate": min_sample_rate, "val_fraction": val_fraction,
                   "seed": seed, "trim_top_db": 40.0, "loudness_dbfs": -20.0}
        audio_cfg = {"sample_rate": audio.SAMPLE_RATE, "n_fft": audio.N_FFT, "hop": audio.HOP, "win": audio.WIN,
                     "n_mels": audio.N_MELS, "f_min": audio.F_MIN, "f_max": audio.F_MAX}
        splits = {s: {"utterances": sum(k["split"] == s for k in kept),
                      "seconds": round(sum(k["seconds"] for k in kept if k["split"] == s), 2)} for s in ("train", "val")}
        counts = Counter(d["reason"] for d in dropped)
        digest = hashlib.sha256(json.dumps({"sources": sorted(s["sha256"] for s in sources), "options": options,
                                            "speaker": speaker, "license": license, "symbols": tok.symbols},
                                           sort_keys=True).encode()).hexdigest()
        manifest = {
            "format": 1, "gencraft_version": __version__, "created": now_iso(), "name": dest.name, "kind": "speech",
            "speaker": speaker, "license": license, "source": str(src), "sources": sources, "options": options,
            "audio": audio_cfg,
            "counts": {"found": len(cands), "kept": len(kept), "dropped": dict(counts)},
            "dropped": dropped[:MAX_DROPPED_LISTED],
            "tokenizer": {"kind": "phonemes", "vocab_size": tok.vocab_size, "languages": tok.languages},
            "splits": splits, "digest": digest,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return dest


@dataclass
class SpeechDataset:
    """A prepared speech dataset: manifest, phoneme tokenizer and utterances (audio read on demand)."""

    path: Path
    manifest: dict[str, Any]
    tokenizer: PhonemeTokenizer
    utterances: list[dict[str, Any]]

    def split(self, name: str) -> list[dict[str, Any]]:
        return [u for u in self.utterances if u["split"] == name]

    def wav(self, utt: dict[str, Any]) -> np.ndarray:
        x, _ = audio.read_audio(self.path / "wavs" / f"{utt['id']}.wav")
        return x

    def ids(self, utt: dict[str, Any]) -> list[int]:
        return self.tokenizer.encode(utt["symbols"])[0]


def load_speech_dataset(name: str | os.PathLike[str]) -> SpeechDataset:
    """Open a dataset written by :func:`prepare_speech`; anything else is a clear error."""
    path = existing_dataset(name)
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path / 'manifest.json'}: not valid JSON ({e})", param="dataset") from None
    if manifest.get("kind") != "speech":
        raise UsageError(f"{path}: not a speech dataset (kind {manifest.get('kind', 'text')!r}); prepare one with "
                         "`gencraft data speech FOLDER --out NAME --license L --speaker NAME`", param="dataset")
    tok = PhonemeTokenizer.load(path / "phonemes.json")
    utts = []
    for line in (path / "utterances.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            utts.append(json.loads(line))
    return SpeechDataset(path, manifest, tok, utts)
