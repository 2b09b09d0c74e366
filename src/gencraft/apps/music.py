"""``compose``: generate a piece from a music run, write it as MIDI (and WAV), with provenance.

The run is any ``gpt``/``lstm`` run trained on a music dataset (``gencraft data music``). The
prompt is ``<|endoftext|> TS_n/d`` (how every piece starts in the training stream); tokens are
drawn through the decoding engine with :class:`~gencraft.apps.music_grammar.MusicGrammar` in the
processor chain, so the output is always ``bars`` complete bars with every note ended.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gencraft import guard
from gencraft.apps._common import release_policy
from gencraft.apps.music_grammar import MusicGrammar
from gencraft.errors import RunError, UsageError
from gencraft.generate import GenerationConfig, generate
from gencraft.guard import watermark_options
from gencraft.guard.provenance import sidecar_path
from gencraft.music.events import TIME_SIGNATURES, Piece, decode
from gencraft.music.midi import midi_bytes
from gencraft.music.synth import render, wav_bytes
from gencraft.music.tokenizer import MusicTokenizer, is_music_tokenizer
from gencraft.runs import load_text_model

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
    model, info, path = load_text_model(run)
    if not is_music_tokenizer(path / "tokenizer.json"):
        raise RunError(f"{path}: not a music run (its tokenizer.json has no event vocabulary); "
                       "train on a dataset made by `gencraft data music`", param="model")
    return model, MusicTokenizer.load(path / "tokenizer.json"), info, path


def generate_events(model, tok: MusicTokenizer, bars: int, seed: int, time_signature: str = "4/4",
                    temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, watermark: Any = None) -> list[int]:
    """Token ids of one constrained piece (without the prompt), drawn by the decoding engine;
    ``watermark``: the text watermark to sample the events with (None: unmarked)."""
    if time_signature not in TIME_SIGNATURES:
        raise UsageError(f"--time-signature {time_signature}: expected one of {', '.join(TIME_SIGNATURES)}",
                         param="time_signature")
    prompt = [tok.eos_id, tok.vocab[f"TS_{time_signature}"]]
    budget = bars * TOKENS_PER_BAR_BUDGET
    grammar = MusicGrammar(tok, bars, prompt_length=len(prompt), max_new_tokens=budget)
    cfg = GenerationConfig.from_options(max_new_tokens=budget, temperature=temperature, top_k=top_k, top_p=top_p,
                                        seed=seed, **watermark_options(watermark, {"processors": [grammar]}))
    return generate(model, tok, [prompt], cfg)[0][0].token_ids


def compose(run: str | os.PathLike[str], out: str | os.PathLike[str], *, bars: int = 16, seed: int = 0,
            wav: bool = False, tempo: float = 90.0, temperature: float = 1.0, top_k: int = 0,
            top_p: float = 1.0, time_signature: str = "4/4", sample_rate: int = 22050,
            policy: Any = None) -> Composition:
    """Generate ``bars`` bars from ``run`` and release them (:func:`gencraft.guard.release` under
    ``policy``): ``out`` (MIDI) and ``out``.wav, each with its signed manifest beside it. The event
    tokens are sampled with the policy's text watermark; the WAV is rendered from them."""
    if bars < 1 or bars > 256:
        raise UsageError(f"--bars {bars}: must be between 1 and 256", param="bars")
    if not 20 <= tempo <= 400:
        raise UsageError(f"--tempo {tempo}: must be between 20 and 400 beats a minute", param="tempo")
    model, tok, info, path = load_music_run(run)
    own = policy is None
    policy = policy if policy is not None else release_policy()
    try:
        wm = policy.text_watermark(tok.vocab_size, temperature=temperature, top_k=top_k)
        ids = generate_events(model, tok, bars, seed, time_signature, temperature, top_k, top_p, watermark=wm)
        events = f"TS_{time_signature} " + tok.decode([i for i in ids if i != tok.eos_id])
        piece = decode(events)
        params = {"bars": bars, "tempo": tempo, "temperature": temperature, "top_k": top_k, "top_p": top_p,
                  "time_signature": time_signature}
        common = {"label": "music", "policy": policy, "run_info": info, "model_name": str(run), "seed": seed}
        midi = guard.release(midi_bytes(piece, tempo), kind="midi", params=params, watermark=wm, out=out,
                             **common)
        wav_path = None
        if wav:
            wav_path = Path(out).with_suffix(".wav")
            guard.release(wav_bytes(render(piece, tempo, sample_rate), sample_rate), kind="audio", out=wav_path,
                          params={**params, "sample_rate": sample_rate}, **common)
    finally:
        if own:
            policy.close()
    return Composition(piece, events, midi.path, wav_path, sidecar_path(midi.path))
