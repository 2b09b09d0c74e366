"""Music benchmark: Bach chorales (music21's bundled corpus) -> REMI events -> GPT -> compose.

Reports, in one run: the validation loss; the share of generated pieces that parse back as valid
MIDI and as well-formed event sequences, with the grammar constraint and without it; the
pitch-class histogram distance and note-density distance between generated pieces and held-out
pieces, beside the same distances between two halves of the real data (the floor).

    .venv/bin/python bench/music.py [--minutes 4] [--pieces 20] [--limit 0]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import tempfile
import time

import mido
import torch

from gencraft.apps.music import TOKENS_PER_BAR_BUDGET, generate_events, load_music_run
from gencraft.data.music import prepare_music
from gencraft.generate import GenerationConfig, generate
from gencraft.music.events import EventError, decode
from gencraft.music.metrics import note_density, note_density_distance, pitch_class_distance
from gencraft.music.midi import to_midi
from gencraft.train.loop import train


def midi_ok(piece) -> bool:
    """Write the piece as MIDI and parse it back with mido."""
    buf = io.BytesIO()
    to_midi(piece, 90).save(file=buf)
    try:
        mid = mido.MidiFile(file=io.BytesIO(buf.getvalue()))
        return mid.length > 0
    except Exception:
        return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--pieces", type=int, default=20)
    ap.add_argument("--bars", type=int, default=16)
    ap.add_argument("--limit", type=int, default=0, help="chorale files to read (0 = all)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("GENCRAFT_HOME", tempfile.mkdtemp(prefix="gencraft-bench-music-"))
    torch.set_num_threads(args.threads)

    t0 = time.time()
    ds = prepare_music(["music21:bach"], out="bach", limit=args.limit or None, transpose_range=3)
    m = json.loads((ds / "manifest.json").read_text())
    print(f"dataset: {m['steps'][1]['documents']} distinct chorales, train {m['splits']['train']['documents']} "
          f"pieces (with transpositions) / {m['splits']['train']['tokens']:,} tokens, val "
          f"{m['splits']['val']['documents']} pieces / {m['splits']['val']['tokens']:,} tokens "
          f"({time.time() - t0:.0f} s)")
    run = train(ds, model="gpt", preset="small", out="bach-gpt", max_time=args.minutes * 60, progress=False,
                overrides=[f"num_threads={args.threads}", "eval_interval=200", "eval_iters=10", "dropout=0.1"])
    info = json.loads((run / "gencraft.json").read_text())
    print(f"GPT small: best val loss {info['metrics']['best_val_loss']:.4f} nats/event at step "
          f"{info['metrics']['step']} ({info['metrics']['train_time_s']:.0f} s)")

    docs = [json.loads(x) for x in (ds / "documents.jsonl").read_text().splitlines()]
    val = [decode(d["text"]) for d in docs if d["split"] == "val"]
    real = [decode(d["text"]) for d in docs if d["split"] == "train" and d["transpose"] == 0]
    random.Random(0).shuffle(real)
    half_a, half_b = real[: len(real) // 2], real[len(real) // 2:]

    model, tok, _, _ = load_music_run(run)
    gen_c, gen_u = [], []
    ok_c = ok_u = wf_u = 0
    t1 = time.time()
    for seed in range(args.pieces):
        ids = generate_events(model, tok, args.bars, seed, temperature=1.0)
        try:
            p = decode("TS_4/4 " + tok.decode(ids), strict=True)
        except EventError:
            p = None
        ok_c += p is not None and p.bars == args.bars and midi_ok(p)
        if p is not None:
            gen_c.append(p)
        # the same model without the grammar constraint
        cfg = GenerationConfig.from_options(max_new_tokens=args.bars * TOKENS_PER_BAR_BUDGET, temperature=1.0,
                                            seed=seed)
        raw = generate(model, tok, [[tok.eos_id, tok.vocab["TS_4/4"]]], cfg)[0][0].token_ids
        text = "TS_4/4 " + tok.decode(raw)
        try:
            decode(text, strict=True)
            wf_u += 1
        except EventError:
            pass
        q = decode(text)
        ok_u += midi_ok(q)
        gen_u.append(q)
    gen_s = time.time() - t1
    print(f"generated {args.pieces} pieces of {args.bars} bars in {gen_s:.0f} s")
    rows = [
        ("valid MIDI, constrained (target 100%)", f"{100 * ok_c / args.pieces:.0f}%"),
        ("valid MIDI, unconstrained (lenient decode)", f"{100 * ok_u / args.pieces:.0f}%"),
        ("well-formed events, unconstrained", f"{100 * wf_u / args.pieces:.0f}%"),
    ]
    for name, v in rows:
        print(f"  {name:<45} {v}")
    print(f"  {'':<45} {'generated vs held-out':>22} {'real half vs half (floor)':>26}")
    print(f"  {'pitch-class histogram distance (TV)':<45} {pitch_class_distance(gen_c, val):>22.4f} "
          f"{pitch_class_distance(half_a, half_b):>26.4f}")
    print(f"  {'note-density distance (W1, notes/bar)':<45} {note_density_distance(gen_c, val):>22.3f} "
          f"{note_density_distance(half_a, half_b):>26.3f}")
    aug = [decode(d["text"]) for d in docs if d["split"] == "train"]  # what the model is trained on
    print(f"  {'  (augmented training set vs held-out)':<45} {pitch_class_distance(aug, val):>22.4f} "
          f"{note_density_distance(aug, val):>26.3f}")
    mean = lambda xs: sum(note_density(p) for p in xs) / max(len(xs), 1)  # noqa: E731
    print(f"  mean notes per bar: generated {mean(gen_c):.2f}, held-out {mean(val):.2f}, real {mean(real):.2f}")
    print(f"  pitch-class distance, unconstrained vs held-out: {pitch_class_distance(gen_u, val):.4f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
