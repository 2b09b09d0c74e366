"""Music datasets: scores and MIDI files -> a dataset directory of event tokens.

``prepare_music(["music21:bach"], out="chorales")`` or ``prepare_music(["~/midi"], out="tunes")``
writes the same dataset directory as text (docs/architecture.md): ``manifest.json`` with the
sources and their licenses, ``tokenizer.json`` (a WordLevel ``tokenizers`` file over the event
vocabulary), ``train.bin``/``val.bin`` and ``documents.jsonl`` whose texts are event strings
(:mod:`gencraft.music.events`). So ``gencraft train DATASET --model gpt|lstm`` trains on it
unchanged.

Pieces are split into train and validation *before* augmentation, and only training pieces are
transposed (by every shift in ``-transpose..+transpose`` semitones that stays in the MIDI range),
so no transposed copy of a validation piece leaks into training.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np

from gencraft import __version__
from gencraft.errors import DataError, UsageError
from gencraft.io import atomic_dir, now_iso
from gencraft.music.events import Piece, to_text, transpose
from gencraft.music.midi import MIDI_SUFFIXES, SCORE_SUFFIXES, read_any
from gencraft.music.tokenizer import MusicTokenizer
from gencraft.paths import dataset_path

MUSIC21_PREFIX = "music21:"
# The music21 package's corpus: public-domain compositions; the encodings ship under music21's BSD-3-Clause.
MUSIC21_LICENSE = "public-domain composition; music21 corpus encoding (BSD-3-Clause)"


def _quiet_music21() -> None:
    """Keep music21 offline and from writing its settings file under $HOME."""
    from music21 import environment

    env = environment.Environment()
    for key, value in (("autoDownload", "deny"), ("warnings", 0)):
        try:
            env[key] = value  # in memory only: Environment.write() is never called
        except Exception:  # an older music21 without the key: nothing to turn off
            pass


def music21_corpus_files(name: str) -> list[Path]:
    """Files of a composer/collection in music21's bundled corpus (``bach``, ``mozart``...)."""
    _quiet_music21()
    from music21 import corpus

    try:
        files = [Path(p) for p in corpus.getComposer(name)
                 if Path(p).suffix.lower() in MIDI_SUFFIXES + SCORE_SUFFIXES]  # not the analyses (.rntxt)
    except Exception:
        files = []
    if not files:
        raise DataError(f"{MUSIC21_PREFIX}{name}: no such collection in music21's bundled corpus; "
                        "try music21:bach", param="sources")
    return sorted(files)


def source_files(sources: list[str]) -> list[tuple[Path, str | None]]:
    """Expand sources (files, folders searched recursively, ``music21:NAME``) into (file, license)."""
    out: list[tuple[Path, str | None]] = []
    for src in sources:
        if src.startswith(MUSIC21_PREFIX):
            out += [(p, MUSIC21_LICENSE) for p in music21_corpus_files(src[len(MUSIC21_PREFIX):])]
            continue
        p = Path(src).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in MIDI_SUFFIXES + SCORE_SUFFIXES)
            if not found:
                raise DataError(f"{p}: no music files found (looked for {', '.join(MIDI_SUFFIXES + SCORE_SUFFIXES)})",
                                param="sources")
            out += [(f, None) for f in found]
        elif p.is_file():
            out.append((p, None))
        else:
            raise DataError(f"{src}: no such file or folder (or use music21:bach for the bundled corpus)",
                            param="sources")
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepare_music(
    sources: list[str],
    *,
    out: str | os.PathLike[str],
    transpose_range: int = 5,
    val_fraction: float = 0.1,
    seed: int = 0,
    license: str | None = None,
    limit: int | None = None,
) -> Path:
    """Build a music dataset directory; returns its path.

    ``transpose_range`` adds every training piece transposed by ±1..±N semitones; ``limit``
    reads only the first N files (handy with ``music21:bach``, 400+ scores).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"--val-fraction {val_fraction}: must be in [0, 1)", param="val_fraction")
    if not 0 <= transpose_range <= 12:
        raise UsageError(f"--transpose {transpose_range}: must be between 0 and 12 semitones", param="transpose")
    files = source_files(sources)
    if limit is not None:
        if limit < 1:
            raise UsageError(f"--limit {limit}: must be at least 1", param="limit")
        files = files[:limit]
    _quiet_music21()

    src_records: list[dict[str, Any]] = []
    pieces: list[tuple[int, Piece]] = []
    for i, (f, lic) in enumerate(files):
        got = read_any(f)
        pieces += [(i, p) for p in got]
        src_records.append({"path": str(f), "sha256": _sha256(f), "bytes": f.stat().st_size,
                            "license": license or lic or "unknown", "documents": len(got), "encoding": "binary"})
    n_read = len(pieces)
    seen: set[str] = set()
    unique: list[tuple[int, Piece, str]] = []
    for i, p in pieces:
        text = to_text(p)
        if text not in seen:
            seen.add(text)
            unique.append((i, p, text))
    if len(unique) < 2 and val_fraction > 0:
        raise DataError(f"{', '.join(sources)}: {len(unique)} distinct piece(s) is too few to split into "
                        "train and validation; add more files or pass --val-fraction 0", param="sources")

    order = list(range(len(unique)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(unique) * val_fraction)) if val_fraction > 0 else 0
    val_ids = set(order[:n_val])

    tok = MusicTokenizer.build()
    docs: list[dict[str, Any]] = []
    for j, (i, p, text) in enumerate(unique):
        split = "val" if j in val_ids else "train"
        docs.append({"source": i, "split": split, "text": text, "transpose": 0})
        if split == "train":
            for k in range(-transpose_range, transpose_range + 1):
                q = transpose(p, k) if k else None
                if q is not None:
                    docs.append({"source": i, "split": split, "text": to_text(q), "transpose": k})
    ids: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    stats = {s: {"documents": 0, "tokens": 0, "chars": 0} for s in ("train", "val")}
    for d in docs:
        arr = np.asarray(tok.encode(d["text"]) + [tok.eos_id], dtype=np.uint16)
        ids[d["split"]].append(arr)
        s = stats[d["split"]]
        s["documents"] += 1
        s["tokens"] += len(arr)
        s["chars"] += len(d["text"]) + 1

    options = {"kind": "music", "tokenization": "remi", "transpose": transpose_range,
               "val_fraction": val_fraction, "seed": seed, "limit": limit}
    tok_info = {"kind": "music", "vocab_size": tok.vocab_size, "eos_id": tok.eos_id}
    digest = hashlib.sha256(json.dumps(
        {"sources": sorted(r["sha256"] for r in src_records), "options": options, "tokenizer": tok_info},
        sort_keys=True).encode()).hexdigest()
    dest = dataset_path(out)
    manifest = {
        "format": 1, "gencraft_version": __version__, "created": now_iso(), "name": dest.name,
        "kind": "music",
        "sources": src_records,
        "options": options,
        "steps": [{"step": "read", "documents": n_read},
                  {"step": "exact_dedupe", "documents": len(unique), "removed": n_read - len(unique)},
                  {"step": "transpose", "documents": len(docs), "added": len(docs) - len(unique)}],
        "tokenizer": tok_info,
        "splits": stats,
        "dtype": "uint16",
        "digest": digest,
    }
    with atomic_dir(dest) as tmp:
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tok.hf.save(str(tmp / "tokenizer.json"))
        for split in ("train", "val"):
            arr = np.concatenate(ids[split]) if ids[split] else np.zeros(0, dtype=np.uint16)
            arr.astype("<u2").tofile(tmp / f"{split}.bin")
        with open(tmp / "documents.jsonl", "w", encoding="utf-8") as fh:
            for n, d in enumerate(docs):
                fh.write(json.dumps({"id": n, **d}, ensure_ascii=False) + "\n")
    return dest


__all__ = ["prepare_music", "source_files", "music21_corpus_files"]
