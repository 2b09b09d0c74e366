"""Structured generation: per-token masking overhead and validity, gencraft vs the other engines.

Run: ``.venv/bin/python bench/constraints.py [--walks 20]``

Tokenizers are gencraft's own, trained on tinyshakespeare (char: BPE without merges + byte
fallback; bpe: byte-level BPE, 2000 tokens). Each engine masks a random walk: at every step the
next token is drawn uniformly from the allowed ones (the hardest case: a random model), so the
figures are the engine's own cost per token plus how often the finished text is invalid.
Reference rows: the other engines, measured in the same run when installed (``pip install
--target /tmp/sgcmp outlines-core xgrammar apache-tvm-ffi lm-format-enforcer interegular``),
and one step of a tiny GPT (what the mask is added to).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.append("/tmp/sgcmp")  # optional comparison engines, installed outside the venv

from gencraft.generate import constraints as C  # noqa: E402
from gencraft.tokenize import train_tokenizer  # noqa: E402

SCHEMA = json.loads((ROOT / "src/gencraft/apps/schemas/npc.json").read_text())


def valid(text: str) -> bool:
    try:
        C.validate_json(json.loads(text), SCHEMA)
        return True
    except Exception:
        return False


def walk_processor(grammar, tok, walks: int, rng, ok) -> tuple[float, int, int]:
    """Random walks through gencraft's ConstraintProcessor: the next token is uniform over the
    allowed ones (the worst possible model). Returns (mask µs per token, tokens, invalid outputs)."""
    t_mask, steps, bad = 0.0, 0, 0
    for _ in range(walks):
        proc = C.ConstraintProcessor(grammar, tok)
        ids = [tok.eos_id]
        out = []
        for _ in range(grammar.max_tokens):
            x, logits = torch.tensor([ids]), torch.zeros(1, tok.vocab_size)
            t0 = time.perf_counter()
            masked = proc(x, logits)
            t_mask += time.perf_counter() - t0
            steps += 1
            allowed = torch.nonzero(torch.isfinite(masked[0]))[:, 0].numpy()
            t = int(rng.choice(allowed))
            if t == tok.eos_id:
                break
            ids.append(t)
            out.append(t)
        bad += not ok(grammar, b"".join(tok.token_bytes(t) for t in out).decode("utf-8", "replace"))
    return t_mask / steps * 1e6, steps, bad


def walk_llguidance(tok, walks: int, rng) -> tuple[float, int, int]:
    """gencraft's path: ConstraintProcessor (llguidance mask -> torch logits) per token."""
    return walk_processor(C.json_schema(SCHEMA), tok, walks, rng, lambda g, text: valid(text))


def walk_llguidance_raw(tok, walks: int, rng) -> tuple[float, int, int]:
    """llguidance alone: fill the bitmask + consume the token (no torch)."""
    import llguidance.numpy as lnp

    g = C.json_schema(SCHEMA)
    ll = C.engine_tokenizer(tok)
    t_mask, steps, bad = 0.0, 0, 0
    for _ in range(walks):
        m = C.new_matcher(g, ll)
        bm = lnp.allocate_token_bitmask(1, ll.vocab_size)
        out = []
        while not m.is_stopped():
            t0 = time.perf_counter()
            lnp.fill_next_token_bitmask(m, bm, 0)
            t_mask += time.perf_counter() - t0
            steps += 1
            allowed = np.nonzero(np.unpackbits(bm[0].view(np.uint8), bitorder="little")[:tok.vocab_size])[0]
            t = int(rng.choice(allowed))
            t0 = time.perf_counter()
            m.consume_token(t)
            t_mask += time.perf_counter() - t0
            if t == tok.eos_id:
                break
            out.append(t)
        bad += not valid(b"".join(tok.token_bytes(t) for t in out).decode("utf-8", "replace"))
    return t_mask / steps * 1e6, steps, bad


def walk_textfield(tok, walks: int, rng) -> tuple[float, int, int]:
    """gencraft's own byte automaton for ad-copy fields (length x required x banned terms)."""
    g = C.text_field(max_chars=90, min_chars=20, required=["Acme Kettle"],
                     banned=["guaranteed", "best in the world", "risk-free", "miracle", "100%"])

    def ok(grammar, text: str) -> bool:
        try:
            grammar.parse(text)
            return True
        except Exception:
            return False

    return walk_processor(g, tok, walks, rng, ok)


def walk_outlines(tok, walks: int, rng):
    from outlines_core import Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema

    table = C.token_table(tok)
    vocab: dict[bytes, list[int]] = {}
    for i, b in enumerate(table):
        if b and i != tok.eos_id:
            vocab.setdefault(b, []).append(i)
    t0 = time.perf_counter()
    index = Index(build_regex_from_schema(json.dumps(C.close_schema(SCHEMA))), Vocabulary(tok.eos_id, vocab))
    build = time.perf_counter() - t0
    t_mask, steps, bad = 0.0, 0, 0
    for _ in range(walks):
        st, out = index.get_initial_state(), []
        for _ in range(4000):
            t0 = time.perf_counter()
            allowed = index.get_allowed_tokens(st)
            t_mask += time.perf_counter() - t0
            steps += 1
            t = int(rng.choice(allowed))
            if t == tok.eos_id:
                break
            out.append(t)
            st = index.get_next_state(st, t)
        bad += not valid(b"".join(table[t] for t in out).decode("utf-8", "replace"))
    return t_mask / steps * 1e6, steps, bad, build


def walk_xgrammar(tok, walks: int, rng):
    import xgrammar as xgr

    table = C.token_table(tok)
    info = xgr.TokenizerInfo(table, vocab_type=xgr.VocabType.RAW, stop_token_ids=[tok.eos_id])
    t0 = time.perf_counter()
    comp = xgr.GrammarCompiler(info).compile_json_schema(json.dumps(SCHEMA), any_whitespace=False)
    build = time.perf_counter() - t0
    t_mask, steps, bad = 0.0, 0, 0
    for _ in range(walks):
        m, out = xgr.GrammarMatcher(comp), []
        bm = xgr.allocate_token_bitmask(1, info.vocab_size)
        for _ in range(4000):
            t0 = time.perf_counter()
            m.fill_next_token_bitmask(bm)
            t_mask += time.perf_counter() - t0
            steps += 1
            lg = torch.zeros(1, info.vocab_size)
            xgr.apply_token_bitmask_inplace(lg, bm)
            allowed = torch.nonzero(torch.isfinite(lg[0]))[:, 0].numpy()
            t = int(rng.choice(allowed))
            m.accept_token(t)
            if t == tok.eos_id or m.is_terminated():
                break
            out.append(t)
        bad += not valid(b"".join(table[t] for t in out).decode("utf-8", "replace"))
    return t_mask / steps * 1e6, steps, bad, build


def walk_lmfe(tok, walks: int, rng):
    from lmformatenforcer import JsonSchemaParser, TokenEnforcer, TokenEnforcerTokenizerData

    table = C.token_table(tok)
    regular = [(i, b.decode("utf-8", "replace"), False) for i, b in enumerate(table) if b and i != tok.eos_id]
    t0 = time.perf_counter()
    data = TokenEnforcerTokenizerData(regular, lambda ids: tok.decode(ids), tok.eos_id, False, tok.vocab_size)
    build = time.perf_counter() - t0
    t_mask, steps, bad = 0.0, 0, 0
    for _ in range(walks):
        enf = TokenEnforcer(data, JsonSchemaParser(C.close_schema(SCHEMA)))
        seq: list[int] = [tok.eos_id]
        for _ in range(1500):
            t0 = time.perf_counter()
            allowed = list(enf.get_allowed_tokens(seq).allowed_tokens)
            t_mask += time.perf_counter() - t0
            steps += 1
            if not allowed:
                break
            t = int(rng.choice(allowed))
            if t == tok.eos_id:
                break
            seq.append(t)
        bad += not valid(tok.decode(seq[1:]))
    return t_mask / steps * 1e6, steps, bad, build


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--walks", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    src = next(p for p in (ROOT.parent / "shared/data/tinyshakespeare.txt", Path("/work/shared/data/tinyshakespeare.txt"))
               if p.is_file())
    text = src.read_text(encoding="utf-8")
    toks = {"char": train_tokenizer("char", [text]), "bpe": train_tokenizer("bpe", [text], vocab_size=2000)}
    from gencraft.models.gpt import GPT, GPTConfig

    print(f"{'tokenizer':9} {'engine':34} {'us/token':>9} {'invalid':>8} {'build s':>8}")
    for name, tok in toks.items():
        rng = np.random.default_rng(0)
        us, steps, bad = walk_llguidance(tok, args.walks, rng)
        print(f"{name:9} {'gencraft+llguidance (JSON Schema)':34} {us:9.1f} {bad:>4}/{args.walks:<3} {'-':>8}")
        us, steps, bad = walk_llguidance_raw(tok, args.walks, rng)
        print(f"{name:9} {'  of which llguidance mask+consume':34} {us:9.1f} {bad:>4}/{args.walks:<3} {'-':>8}")
        us, steps, bad = walk_textfield(tok, args.walks, rng)
        print(f"{name:9} {'gencraft text_field (own automaton)':34} {us:9.1f} {bad:>4}/{args.walks:<3} {'-':>8}")
        for label, fn in (("outlines-core 0.2 (JSON Schema)", walk_outlines), ("xgrammar 0.2 (JSON Schema)", walk_xgrammar),
                          ("lm-format-enforcer 0.11 (JSON)", walk_lmfe)):
            try:
                us, steps, bad, build = fn(tok, max(3, args.walks // (4 if "lm-format" in label else 1)), rng)
                n = max(3, args.walks // (4 if "lm-format" in label else 1))
                print(f"{name:9} {label:34} {us:9.1f} {bad:>4}/{n:<3} {build:8.2f}")
            except Exception as e:  # not installed, or fails on this tokenizer
                print(f"{name:9} {label:34} {'n/a':>9}  ({type(e).__name__}: {str(e)[:60]})")
        model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=256, n_layer=4, n_head=4, n_embd=128)).eval()
        cache = model.new_cache(1)
        logits, cache = model.step(torch.tensor([[tok.eos_id]]), cache)
        t0 = time.perf_counter()
        for i in range(100):
            logits, cache = model.step(torch.tensor([[i % tok.vocab_size]]), cache)
        step_us = (time.perf_counter() - t0) / 100 * 1e6
        print(f"{name:9} {'(reference) GPT 4L/4H/128 step':34} {step_us:9.1f} {'':>8} {'':>8}")


if __name__ == "__main__":
    main()
