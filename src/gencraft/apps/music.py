"""``compose``: generate a piece from a music run, write it as MIDI (and WAV), with provenance.

The run is any ``gpt``/``lstm`` run trained on a music dataset (``gencraft data music``). The
prompt is ``<|endoftext|> TS_n/d`` (how every piece starts in the training stream); tokens are
drawn through the decoding engine with :class:`~gencraft.apps.music_grammar.MusicGrammar` in the
processor chain, so the output is always ``bars`` complete bars with every note ended.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gencraft.apps.music_grammar import MusicGrammar
from gencraft.errors import RunError, UsageError
from gencraft.io import write_json
from gencraft.music.events import TIME_SIGNATURES, Piece, decode
from gencraft.music.midi import write_midi
from gencraft.music.tokenizer import MusicTokenizer, is_music_tokenizer

TOKENS_PER_BAR_BUDGET = 96  # generous: chorales average ~36 events a bar


@dataclass
class Composition:
    piece: Piece
    events: str
    midi: Path
    wav: Path | None
    manifest: Path


def load_music_run(run: str | os.PathLike[str]):
    """``(model, tokenizer, info, path)`` of a run trained on a music dataset."""
    from gencraft.runs import load_text_model

    model, info, path = load_text_model(run)
    if not is_music_tokenizer(path / "tokenizer.json"):
        raise RunError(f"{path}: not a music run (its tokenizer.json has no event vocabulary); "
                       "train on a dataset made by `gencraft data music`", param="model")
    return model, MusicTokenizer.load(path / "tokenizer.json"), info, path


def generate_events(model, tok: MusicTokenizer, bars: int, seed: int, time_signature: str = "4/4",
                    temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> list[int]:
    """Token ids of one constrained piece (without the prompt), drawn by the decoding engine."""
    from gencraft.generate import GenerationConfig, generate

    if time_signature not in TIME_SIGNATURES:
        raise UsageError(f"--time-signature {time_signature}: expected one of {', '.join(TIME_SIGNATURES)}",
                         param="time_signature")
    prompt = [tok.eos_id, tok.vocab[f"TS_{time_signature}"]]
    budget = bars * TOKENS_PER_BAR_BUDGET
    grammar = MusicGrammar(tok, bars, prompt_length=len(prompt), max_new_tokens=budget)
    cfg = GenerationConfig.from_options(max_new_tokens=budget, temperature=temperature, top_k=top_k, top_p=top_p,
                                        seed=seed, processors=[grammar])
    return generate(model, tok, [prompt], cfg)[0][0].token_ids


def provenance(info: dict[str, Any], content: bytes, parameters: dict[str, Any], seed: int,
               media_type: str) -> dict[str, Any]:
    """The provenance manifest of a generated file (``gencraft.guard.provenance``), signed when the
    user has keys (``gencraft keys init``)."""
    from gencraft.guard.keys import load_keys
    from gencraft.guard.provenance import build_manifest, sign_manifest

    manifest = build_manifest(content_sha256=hashlib.sha256(content).hexdigest(), kind="music", run_info=info,
                              parameters=parameters, seed=seed, media_type=media_type)
    keys = load_keys()
    return sign_manifest(manifest, keys) if keys is not None else manifest


def compose(run: str | os.PathLike[str], out: str | os.PathLike[str], *, bars: int = 16, seed: int = 0,
            wav: bool = False, tempo: float = 90.0, temperature: float = 1.0, top_k: int = 0,
            top_p: float = 1.0, time_signature: str = "4/4", sample_rate: int = 22050) -> Composition:
    """Generate ``bars`` bars from ``run`` and write ``out`` (MIDI), ``out``.wav and the manifests."""
    if bars < 1 or bars > 256:
        raise UsageError(f"--bars {bars}: must be between 1 and 256", param="bars")
    if not 20 <= tempo <= 400:
        raise UsageError(f"--tempo {tempo}: must be between 20 and 400 beats a minute", param="tempo")
    model, tok, info, _ = load_music_run(run)
    ids = generate_events(model, tok, bars, seed, time_signature, temperature, top_k, top_p)
    events = f"TS_{time_signature} " + tok.decode([i for i in ids if i != tok.eos_id])
    piece = decode(events)
    out = Path(out)
    write_midi(piece, out, tempo)
    params = {"bars": bars, "tempo": tempo, "temperature": temperature, "top_k": top_k, "top_p": top_p,
              "time_signature": time_signature}
    manifest = out.with_name(out.name + ".manifest.json")
    write_json(manifest, provenance(info, out.read_bytes(), params, seed, "audio/midi"))
    wav_path = None
    if wav:
        from gencraft.music.synth import render, write_wav

        wav_path = out.with_suffix(".wav")
        write_wav(render(piece, tempo, sample_rate), wav_path, sample_rate)
        write_json(wav_path.with_name(wav_path.name + ".manifest.json"),
                   provenance(info, wav_path.read_bytes(), {**params, "sample_rate": sample_rate}, seed, "audio/wav"))
    return Composition(piece, events, out, wav_path, manifest)
