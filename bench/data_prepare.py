"""Benchmark: `gencraft data prepare` and the tokenizers on the shared corpora, on ONE core.

    .venv/bin/python bench/data_prepare.py [--cores 1] [--repeat 3]

Prints our measured figures beside the reference in the same run:
- the issue's target for preparing tinyshakespeare / tang300 ("seconds on one core");
- nanoGPT's character encoder (`data/shakespeare_char/prepare.py`: a dict lookup per character
  into a numpy array), re-implemented here in three lines and timed on the same text, against our
  char tokenizer's ``encode_batch`` (which also handles unseen characters through byte fallback).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

SHARED = Path(os.environ.get("GENCRAFT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
if not SHARED.is_dir():
    SHARED = Path("/work/shared/data")


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cores", type=int, default=1, help="pin to this many cores (tokenizers threads too)")
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs")
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))[: args.cores]
    os.sched_setaffinity(0, set(cpus))
    os.environ["RAYON_NUM_THREADS"] = str(args.cores)  # before tokenizers starts its pool
    os.environ["GENCRAFT_HOME"] = tempfile.mkdtemp(prefix="gencraft-bench-")
    warnings.simplefilter("ignore")

    import numpy as np

    from gencraft.data import load_dataset, prepare
    from gencraft.tokenize import train_tokenizer

    shakespeare = SHARED / "tinyshakespeare.txt"
    tang = SHARED / "tang300.json"
    print(f"cores pinned: {len(cpus)} ({cpus}); best of {args.repeat}; corpora from {SHARED}")
    print()
    print(f"{'job':<52} {'ours':>10} {'reference':>22}")

    jobs = [
        ("prepare tinyshakespeare, char, dedupe on", [shakespeare], {}),
        ("prepare tinyshakespeare, bpe 8000, dedupe on", [shakespeare], {"tokenizer": "bpe"}),
        ("prepare tinyshakespeare, char, --no-dedupe", [shakespeare], {"dedupe": False}),
        ("prepare tang300.json --field paragraphs, char", [tang], {"field": "paragraphs"}),
        ("prepare tang300.json --field paragraphs, bpe", [tang], {"field": "paragraphs", "tokenizer": "bpe"}),
    ]
    for label, src, kw in jobs:
        t, path = best_of(lambda src=src, kw=kw: prepare(src, "bench", license="public-domain", **kw), args.repeat)
        s = load_dataset(path).manifest["splits"]
        toks = s["train"]["tokens"] + s["val"]["tokens"]
        print(f"{label:<52} {t:>9.2f}s {'target: seconds':>22}   ({toks:,} tokens)")

    text = shakespeare.read_text(encoding="utf-8")
    docs = text.split("\n\n")
    tok = train_tokenizer("char", docs)

    def nanogpt_encode() -> np.ndarray:
        chars = sorted(set(text))
        stoi = {ch: i for i, ch in enumerate(chars)}
        return np.array([stoi[c] for c in text], dtype=np.uint16)

    def ours_encode() -> int:
        return sum(len(i) for i in tok.encode_batch(docs))

    t_ref, ref = best_of(nanogpt_encode, args.repeat)
    t_ours, n = best_of(ours_encode, args.repeat)
    print(f"{'char-encode tinyshakespeare (1.1M chars)':<52} {t_ours:>9.2f}s {t_ref:>14.2f}s nanoGPT"
          f"   ({n:,} vs {len(ref):,} tokens)")
    print(f"{'  = chars/s':<52} {len(text) / t_ours / 1e6:>8.2f}M/s {len(text) / t_ref / 1e6:>13.2f}M/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
