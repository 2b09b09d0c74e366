"""Decoding speed of two versions of gencraft in one process, taking turns: an A/B that the
machine's moving load and bandwidth cannot fake.

The old version is ``git archive REV src/gencraft`` imported as the package ``gencraft_old``; the
new one is the ``gencraft`` on the path (this checkout). Both decode the same random weights
(``bench/generate.py``'s shapes: a 64-token prompt, 128 new tokens, batch 1, and its first token
alone; 8 prompts at once; and 16 requests with their own seeds in the server's continuous-batching
scheduler, no HTTP), greedy and top-k, round after round in alternating order; the best of each is
printed side by side with the ratio, plus every round's pair (124M: batch 1 only).

    PYTHONPATH=src .venv/bin/python bench/ab_versions.py --old main --shapes 1.85M,13.8M --rounds 5
"""

from __future__ import annotations  # noqa: I001 (the thread policy is asked for before torch loads)
# ruff: noqa: E402

import gencraft

gencraft.use_thread_policy("decode")

import argparse
import asyncio
import importlib
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SHAPES = {"1.85M": (4, 4, 128, 8000, 256), "13.8M": (6, 6, 384, 8000, 256), "124M": (12, 12, 768, 50257, 1024)}
PROMPT, NEW = 64, 128


def old_package(repo: Path, rev: str, root: Path) -> object:
    """``src/gencraft`` at ``rev`` of the git checkout ``repo`` as the package ``gencraft_old``
    (imports rewritten), imported."""
    tar = subprocess.run(["git", "-C", str(repo), "archive", rev, "src/gencraft"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(root)], input=tar.stdout, check=True)
    src = root / "src" / "gencraft"
    dst = root / "gencraft_old"
    src.rename(dst)
    for f in dst.rglob("*.py"):
        text = f.read_text(encoding="utf-8")
        text = re.sub(r"\bgencraft\.", "gencraft_old.", text)
        text = re.sub(r"from gencraft import", "from gencraft_old import", text)
        text = re.sub(r"^import gencraft$", "import gencraft_old as gencraft", text, flags=re.M)
        f.write_text(text, encoding="utf-8")
    sys.path.insert(0, str(root))
    return importlib.import_module("gencraft_old")


def scheduler_run(pkg: str, model, tok, prompts: list[list[int]]) -> None:
    """``prompts`` as concurrent requests (temperature 0.8, top-k 50, each its own seed) through one
    ``Scheduler`` of package ``pkg``, to the end."""
    backends = importlib.import_module(f"{pkg}.backends")
    gen = importlib.import_module(f"{pkg}.generate")
    sched_mod = importlib.import_module(f"{pkg}.server.scheduler")
    sched = sched_mod.Scheduler(backends.TextModel(model, tok, {"kind": "gpt"}), max_batch=64)

    async def go() -> None:
        tickets = [sched.submit(p, gen.GenerationConfig(max_new_tokens=NEW, temperature=0.8, top_k=50, seed=i,
                                                        stop_at_eos=False)) for i, p in enumerate(prompts)]
        for t in tickets:
            await t.results()

    try:
        asyncio.run(go())
    finally:
        sched.close()


def best_rate(fn, tokens: int) -> float:
    t = time.perf_counter()
    fn()
    return tokens / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", default="main", help="git revision of the old version")
    ap.add_argument("--shapes", default="1.85M,13.8M")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1], help="the git checkout")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        old = old_package(args.repo, args.old, Path(d))
        versions = {"old": old, "new": gencraft}
        mods = {k: (importlib.import_module(f"{v.__name__}.generate"), importlib.import_module(f"{v.__name__}.models.gpt"),
                    importlib.import_module(f"{v.__name__}.tokenize")) for k, v in versions.items()}
        tok = mods["new"][2].train_tokenizer("bpe", ["the quick brown fox jumps over the lazy dog. " * 200],
                                              vocab_size=300)
        g = torch.Generator().manual_seed(0)
        prompt = torch.randint(0, tok.vocab_size, (PROMPT,), generator=g).tolist()
        prompts = [torch.randint(0, tok.vocab_size, (PROMPT,), generator=g).tolist() for _ in range(8)]
        requests = [torch.randint(0, tok.vocab_size, (PROMPT,), generator=g).tolist() for _ in range(16)]
        print(f"old = {args.old}, new = this checkout; torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"load average {open('/proc/loadavg').read().split()[0]}; {args.rounds} rounds, order alternating")
        for name in args.shapes.split(","):
            L, H, C, V, block = SHAPES[name]
            models, cases = {}, {}
            for k, (gen, gpt, _) in mods.items():
                torch.manual_seed(0)
                models[k] = gpt.GPT(gpt.GPTConfig(vocab_size=V, block_size=block, n_layer=L, n_head=H, n_embd=C)).eval()
                greedy = gen.GenerationConfig(max_new_tokens=NEW, temperature=0, stop_at_eos=False)
                first = gen.GenerationConfig(max_new_tokens=1, temperature=0, stop_at_eos=False)
                topk = gen.GenerationConfig(max_new_tokens=NEW, top_k=50, seed=0, stop_at_eos=False)
                m = models[k]
                cases[k] = {"first token": (lambda gen=gen, m=m, c=first: gen.generate(m, tok, [prompt], c), 1),
                            "greedy": (lambda gen=gen, m=m, c=greedy: gen.generate(m, tok, [prompt], c), NEW),
                            "top-k": (lambda gen=gen, m=m, c=topk: gen.generate(m, tok, [prompt], c), NEW),
                            "8 prompts top-k": (lambda gen=gen, m=m, c=topk: gen.generate(m, tok, prompts, c), 8 * NEW),
                            "server 16 top-k": (lambda k=k, m=m: scheduler_run(versions[k].__name__, m, tok, requests),
                                                16 * NEW)}
            same = (cases["old"]["greedy"][0]()[0][0].token_ids == cases["new"]["greedy"][0]()[0][0].token_ids)
            for case in cases["new"]:
                if name == "124M" and case not in ("first token", "greedy", "top-k"):  # batched: minutes a round
                    continue
                for k in ("old", "new"):  # warm-up: builds, packed weights, first-call kernels
                    cases[k][case][0]()
                best = {"old": 0.0, "new": 0.0}
                pairs = []
                for r in range(args.rounds):
                    order = ("old", "new") if r % 2 == 0 else ("new", "old")
                    got = {}
                    for k in order:
                        fn, n = cases[k][case]
                        got[k] = best_rate(fn, n)
                        best[k] = max(best[k], got[k])
                    pairs.append(f"{got['old']:.0f}/{got['new']:.0f}")
                ttft = f" (time to first token: old {1000 / best['old']:.1f} ms, new {1000 / best['new']:.1f} ms)" \
                    if case == "first token" else ""
                print(f"{name} {case:16s} tok/s  old {best['old']:8.1f} | new {best['new']:8.1f} | new/old "
                      f"{best['new'] / best['old']:5.2f} | rounds old/new: {' '.join(pairs)}{ttft}", flush=True)
            print(f"{name} greedy tokens identical in both: {same}")


if __name__ == "__main__":
    main()
