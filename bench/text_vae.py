"""Text VAE benchmark: a sentence VAE against the same decoder trained as a plain language model.

Corpus: the lines of ``shared/data/tang300.json`` (Tang poems, one line per document, char
tokenizer). Three runs with the same decoder shape and the same wall-clock budget:

* ``lm``:  ``variational=false`` (no encoder, z = 0) and no word dropout: a plain GRU LM;
* ``vae``: KL annealing (linear) + word dropout;
* ``vae-fb``: cyclical annealing + free bits, no word dropout (the training defaults).

On the same validation sentences it prints, per token: the LM's loss beside each VAE's negative
ELBO (an upper bound of its loss), reconstruction, KL and active units, the bound's gap to the
LM in percent, and interpolation and prior samples. KL ~ 0 (a collapsed latent) is flagged.

    .venv/bin/python bench/text_vae.py [--minutes 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from gencraft.data import prepare
from gencraft.generate import GenerationConfig, generate
from gencraft.generate.latent import interpolate, vary
from gencraft.tokenize import load_tokenizer
from gencraft.train.data import load_dataset
from gencraft.train.text_vae import evaluate, load_text_vae, sentences, train_text_vae

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
if not SHARED.is_dir():
    SHARED = Path(os.environ.get("GENCRAFT_SHARED_DATA", "/work/shared/data"))

RUNS = {
    "lm": ["variational=false", "word_dropout=0"],
    "vae": ["kl_anneal=linear", "word_dropout=0.25", "free_bits=0"],
    "vae-fb": ["kl_anneal=cyclical", "kl_cycles=3", "free_bits=0.1", "word_dropout=0"],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=3.0, help="wall-clock budget per run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", default="lm,vae,vae-fb")
    args = ap.parse_args()
    os.environ.setdefault("GENCRAFT_HOME", tempfile.mkdtemp(prefix="gencraft-bench-vae-"))
    home = Path(os.environ["GENCRAFT_HOME"])
    poems = json.loads((SHARED / "tang300.json").read_text(encoding="utf-8"))
    src = home / "tang_lines.txt"
    src.write_text("\n".join(ln for p in poems for ln in p["paragraphs"]) + "\n", encoding="utf-8")
    ds = prepare([src], "tang-lines", unit="line", license="public-domain", val_fraction=0.1)
    m = json.loads((ds / "manifest.json").read_text())
    print(f"corpus: {m['splits']['train']['documents']} train / {m['splits']['val']['documents']} val lines, "
          f"char vocabulary {m['tokenizer']['vocab_size']}", flush=True)

    shape = ["n_embd=64", "n_hidden=192", "n_latent=32", "block_size=48", f"num_threads={args.threads}",
             "max_iters=100000", "eval_interval=200", "eval_iters=1000", "batch_size=32", "patience=0"]
    results = {}
    for name in args.runs.split(","):
        run = train_text_vae(ds, out=name, preset="small", overrides=shape + RUNS[name],
                             max_time=args.minutes * 60, seed=0, progress=False)
        model, info, _ = load_text_vae(run)
        dset = load_dataset(ds)
        val = sentences(dset.val, model.config.eos_id, model.config.block_size)
        torch.set_num_threads(args.threads)
        ev = evaluate(model, val, 256, torch.device("cpu"), seed=1)
        results[name] = {**ev, "steps": info["metrics"]["step"], "time": info["metrics"]["train_time_s"]}
        print(f"{name}: {results[name]}", flush=True)

    lm = results.get("lm", {}).get("nelbo")
    print(f"\n{'run':<8} {'steps':>6} {'-ELBO/tok':>10} {'recon':>8} {'KL/tok':>8} {'KL/sent':>8} "
          f"{'active':>7} {'vs LM':>8}")
    for name, r in results.items():
        gap = f"{100 * (r['nelbo'] / lm - 1):+.1f}%" if lm and name != "lm" else "-"
        print(f"{name:<8} {r['steps']:>6} {r['nelbo']:>10.4f} {r['recon']:>8.4f} {r['kl']:>8.4f} "
              f"{r['kl_sentence']:>8.3f} {r['active_units']:>7} {gap:>8}"
              + ("  <- COLLAPSED (KL ~ 0)" if name != "lm" and r["kl"] < 1e-3 else ""))

    for name in [n for n in results if n != "lm"]:
        model, _, path = load_text_vae(home / "runs" / name)
        tok = load_tokenizer(path)
        a, b = poems[0]["paragraphs"][0], poems[1]["paragraphs"][0]
        print(f"\n[{name}] interpolation {a} -> {b}:")
        for t in interpolate(model, tok, a, b, steps=6):
            print("   ", t)
        print(f"[{name}] variations of {a} (radius 0.5):", " / ".join(vary(model, tok, a, n=4, radius=0.5)))
        torch.manual_seed(0)
        cfg = GenerationConfig.from_options(max_new_tokens=40, temperature=0.8, top_k=20, seed=0, n=4)
        res = generate(model, tok, [""], cfg)[0]
        print(f"[{name}] prior samples through the decoding engine:", " / ".join(r.text for r in res))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
