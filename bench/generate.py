"""Generation speed: gencraft's engine vs `transformers` generate() vs a loop without a cache.

Batch 1, a 64-token prompt then 128 new tokens, greedy and top-k sampling, random weights (no
download), shapes 4L/4H/128 and 6L/6H/384 with an 8,000-token vocabulary and 12L/12H/768 with
50,257 (GPT-2 small). HF runs the same weights (exported with gencraft.export.hf). Also: prompt
processing tokens/s, time to first token, batched throughput, bf16 weights at 124M, the machine's
measured memory read bandwidth and the tokens/s limit it implies. Reference figures (measured on
this kind of machine, uncontended) are printed beside ours.

    .venv/bin/python bench/generate.py              # everything (several minutes on 2 cores)
    .venv/bin/python bench/generate.py --quick      # fewer repeats
    .venv/bin/python bench/generate.py --llama-cpp ~/llama.cpp   # and llama.cpp on the same weights
    .venv/bin/python bench/generate.py --weights --llama-cpp ~/llama.cpp   # 124M only: f32, bf16 and int8
        # decoding beside llama.cpp's f32, f16 and q8_0 on the same weights
    .venv/bin/python bench/generate.py --prefill --llama-cpp ~/llama.cpp   # prompt processing only (13.8M,
        # 124M, float32): gencraft's prefill and llama-bench's pp64 on the same weights, taking turns
    .venv/bin/python bench/generate.py --quality   # what bf16 and int8 weights cost a model trained briefly on
        # tinyshakespeare: validation loss, every held-out token through the decode step (a few minutes)
"""

from __future__ import annotations  # noqa: I001 (gencraft is imported first on purpose)
# ruff: noqa: E402 (the imports below must follow the thread policy chosen before torch loads)

import gencraft  # first: the thread-pool wait policy is asked for before torch/numpy load

# a decode-only process, as `gencraft generate` runs; transformers gets libgomp's default (bounded
# spinning), the setting it has in a process of its own
gencraft.use_thread_policy("decode")

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path

import llamacpp  # bench/llamacpp.py, beside this file
import torch

from gencraft.export.hf import gpt2_state_dict
from gencraft.generate import GenerationConfig, core, generate
from gencraft.models import decode
from gencraft.models import native as native_mod
from gencraft.models.gpt import GPT, GPTConfig
from gencraft.tokenize import train_tokenizer

SHAPES = {  # name: (n_layer, n_head, n_embd, vocab, block)
    "1.85M": (4, 4, 128, 8000, 256),
    "13.8M": (6, 6, 384, 8000, 256),
    "124M": (12, 12, 768, 50257, 1024),
}
REF_HF = {"1.85M": 979, "13.8M": 227, "124M": 37}
REF_LLAMA_F32 = {"1.85M": 5851, "13.8M": 1010, "124M": 87}
REF_LLAMA_F16 = {"1.85M": 5405, "13.8M": 1948, "124M": 147}
REF_PP_HF = {"1.85M": 5967, "13.8M": 3567, "124M": 512}
REF_PP_LLAMA = {"1.85M": 50908, "13.8M": 9775, "124M": 1254}
PROMPT, NEW = 64, 128
SHAKESPEARE = "/work/shared/data/tinyshakespeare.txt"


def rate(label: str, tokens: int, fn, repeats: int, warm: bool = True) -> float:
    """``tokens`` per second of ``fn`` (best of ``repeats``), printed at once (124M takes minutes)."""
    v = tokens / best_of(fn, repeats, warm)
    print(f"  {label}: {v:.1f} tok/s", flush=True)
    return v


def best_of(fn, repeats: int, warm: bool = True) -> float:
    """Fastest of ``repeats`` runs after one warm-up (the CPU is shared: the minimum is the signal)."""
    if warm:
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def read_bandwidth() -> float:
    """GB/s reading a 512 MiB float32 tensor (x.sum()), best of 5, at the current thread count."""
    x = torch.ones(128 * 1024 * 1024)
    t = best_of(lambda: x.sum(), 5)
    return x.numel() * 4 / t / 1e9


def build(name: str, dtype=torch.float32):
    L, H, C, V, block = SHAPES[name]
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=V, block_size=block, n_layer=L, n_head=H, n_embd=C)).eval()
    return m.to(dtype)


def hf_twin(m: GPT, dtype=torch.float32):
    import transformers

    c = m.config
    cfg = transformers.GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd,
                                  n_layer=c.n_layer, n_head=c.n_head, activation_function="gelu_new",
                                  layer_norm_epsilon=1e-5, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    hf.load_state_dict(gpt2_state_dict(m), strict=False)
    return hf.to(dtype)


def hf_generate(hf, prompt: list[int], sample: bool, threads: int | None = None) -> None:
    x = torch.tensor([prompt])
    kw = dict(do_sample=True, top_k=50) if sample else dict(do_sample=False)
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=NEW, min_new_tokens=NEW, **kw)
    finally:
        torch.set_num_threads(saved)


def no_cache_loop(m: GPT, prompt: list[int], steps: int) -> None:
    x = torch.tensor([prompt])
    with torch.inference_mode():
        for _ in range(steps):
            logits, _ = m(x[:, -m.config.block_size:])
            x = torch.cat([x, logits[:, -1].argmax(-1, keepdim=True)], 1)


def prefill_tps(m: GPT, prompt: list[int], repeats: int, warm: bool = True) -> float:
    """Prompt tokens/s of the engine's own prefill (``generate/core.py``: a fresh cache, the prompt in
    one step), best of ``repeats``."""
    x = torch.tensor([prompt])

    def run():
        with decode.session(m):
            core.prefill(m, x, m.max_context, PROMPT + NEW)
    return PROMPT / best_of(run, repeats, warm)


def hf_prefill_tps(hf, prompt: list[int], repeats: int) -> float:
    x = torch.tensor([prompt])

    def run():
        with torch.inference_mode():
            hf(x, use_cache=True, logits_to_keep=1)
    return PROMPT / best_of(run, repeats)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--shapes", default="1.85M,13.8M,124M")
    ap.add_argument("--llama-cpp", type=Path, default=None, metavar="DIR",
                    help="a llama.cpp source tree with build/bin/llama-bench: time it on the same weights")
    ap.add_argument("--weights", action="store_true",
                    help="only 124M decoding with f32, bf16 and int8 weights (beside llama.cpp's f32, f16 and q8_0 "
                         "with --llama-cpp)")
    ap.add_argument("--prefill", action="store_true",
                    help="only prompt processing (--shapes, default 13.8M,124M; float32), beside llama.cpp's pp64 "
                         "with --llama-cpp")
    ap.add_argument("--rounds", type=int, default=5, help="--prefill: rounds taking turns with llama.cpp")
    ap.add_argument("--quality", action="store_true",
                    help="only the quality cost of bf16 and int8 weights, on a model trained briefly on tinyshakespeare")
    ap.add_argument("--train-steps", type=int, default=600, help="--quality: training steps")
    args = ap.parse_args()
    if args.quality:
        if not os.path.exists(SHAKESPEARE):
            raise SystemExit(f"--quality needs {SHAKESPEARE}")
        text = open(SHAKESPEARE).read()
        weight_quality(train_tokenizer("bpe", [text[:100_000]], vocab_size=500), text, args.train_steps)
        return
    reps = 2 if args.quick else 3
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; CPU shared with other engineers "
          f"(load average {open('/proc/loadavg').read().split()[0]}): figures are pessimistic, compare A/B.")
    bw = read_bandwidth()
    print(f"memory read bandwidth: {bw:.1f} GB/s (x.sum() over 512 MiB, {torch.get_num_threads()} threads)")
    tok = train_tokenizer("bpe", [open(SHAKESPEARE).read()[:100_000]]
                          if os.path.exists(SHAKESPEARE)
                          else ["hello world " * 100], vocab_size=500)
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, tok.vocab_size, (PROMPT,), generator=g).tolist()
    greedy = GenerationConfig(max_new_tokens=NEW, temperature=0, stop_at_eos=False)
    topk = GenerationConfig(max_new_tokens=NEW, top_k=50, seed=0, stop_at_eos=False)
    if args.weights:
        weight_types(tok, prompt, greedy, reps, bw, args.llama_cpp)
        print("(the quality cost of bf16 and int8 weights: bench/generate.py --quality)")
        return
    if args.prefill:
        shapes = args.shapes if args.shapes != ap.get_default("shapes") else "13.8M,124M"
        for name in shapes.split(","):
            prompt_side_by_side(name, prompt, args.llama_cpp, args.rounds)
        return
    for name in args.shapes.split(","):
        run_shape(name, tok, prompt, greedy, topk, reps, bw, g, args.llama_cpp)


def run_shape(name: str, tok, prompt: list[int], greedy, topk, reps: int, bw: float, g,
              llama_dir: Path | None = None) -> None:
    """Measure one shape and print its lines."""
    m = build(name)
    hf = hf_twin(m)
    big = name == "124M"
    # a warm-up run first, then the best of ``reps`` timed runs: the machine's read bandwidth moves
    # within a minute (124M f32 greedy 69.4 and top-k 96.9 tok/s back to back in one run), so one run
    # at 124M says more about the moment than the code
    r = reps
    w = True
    n_params = sum(p.numel() for p in m.parameters())
    print(f"\n{name}: measuring...", flush=True)
    ours_g = rate("gencraft greedy", NEW, lambda: generate(m, tok, [prompt], greedy), r, w)
    ours_k = rate("gencraft top-k", NEW, lambda: generate(m, tok, [prompt], topk), r, w)
    hf_g = rate("transformers greedy", NEW, lambda: hf_generate(hf, prompt, False), r, w)
    hf_k = rate("transformers top-k", NEW, lambda: hf_generate(hf, prompt, True), r, w)
    hf_g1 = rate("transformers greedy 1 thread", NEW, lambda: hf_generate(hf, prompt, False, threads=1), r, w)
    steps = 16 if big else NEW
    nocache = rate("no-cache loop", steps, lambda: no_cache_loop(m, prompt, steps), 1, w)  # the slow one: once
    pp = prefill_tps(m, prompt, reps)
    hf_pp = hf_prefill_tps(hf, prompt, reps)
    # what a decode step reads: every weight once, the position table one row (the tied output
    # layer is one parameter)
    n_read = n_params - m.wpe.weight.numel()
    limit = bw * 1e9 / (n_read * 4)
    print(f"\n== {name} ({n_params / 1e6:.2f}M params) ==")
    print(f"greedy tok/s   gencraft {ours_g:8.1f} | transformers {hf_g:7.1f} (1 thread: {hf_g1:7.1f}) "
          f"| no-cache loop {nocache:7.1f} | ratio vs HF {ours_g / hf_g:5.1f}x (vs HF 1 thread "
          f"{ours_g / hf_g1:4.1f}x) | ref: HF {REF_HF[name]}, llama.cpp f32 {REF_LLAMA_F32[name]}, "
          f"f16 {REF_LLAMA_F16[name]}")
    print(f"top-k tok/s    gencraft {ours_k:8.1f} | transformers {hf_k:7.1f} | ratio {ours_k / hf_k:5.1f}x")
    print(f"prompt tok/s   gencraft {pp:8.0f} | transformers {hf_pp:7.0f} | ref: HF {REF_PP_HF[name]}, "
          f"llama.cpp {REF_PP_LLAMA[name]}")
    print(f"bandwidth limit (f32 weights read once per token): {limit:.0f} tok/s")
    # llama.cpp's generation figure (tg128) leaves out the prompt; this one, from the same runs, too
    dec = decode_rate(m, tok, prompt, ours_g, reps)
    print(f"decode only (after the first token), greedy: {dec:.1f} tok/s = {dec / limit:.0%} of the "
          f"bandwidth limit | end to end {ours_g / limit:.0%}" + (" | target >= 80 (>= 90% of the limit)"
                                                                   if big else ""))
    if llama_dir is not None:
        side_by_side(m, m, tok, prompt, llama_dir, "f32", 2 * reps + 1)
    if name == "13.8M":  # before the ablations below reset the thread tuners: a process that has decoded before
        ttft = best_of(lambda: generate(m, tok, [prompt], GenerationConfig(max_new_tokens=1, temperature=0)),
                       2 * reps)
        print(f"time to first token: {ttft * 1000:.1f} ms (aim < 20 ms)")
    if name in ("1.85M", "13.8M"):  # what each engine choice buys, A/B back to back (explicit sessions)
        def greedy_in(**options) -> float:
            with decode.DecodeSession(m, **options):
                return NEW / best_of(lambda: generate(m, tok, [prompt], greedy), r)

        no_c = greedy_in(native=False)
        plain = greedy_in(native=False, fast_linear=False)
        fixed = {n: greedy_in(threads=n) for n in (1, 2)}
        print(f"ablation greedy tok/s: all on {ours_g:.0f} | PyTorch decode step instead of the C step: {no_c:.0f} "
              f"| and F.linear (MKL) instead of the fast linear path: {plain:.0f} | threads fixed at 1: "
              f"{fixed[1]:.0f}, at 2: {fixed[2]:.0f} (default: measured by the tuner)")
    if name == "13.8M":
        prompts = [torch.randint(0, tok.vocab_size, (PROMPT,), generator=g).tolist() for _ in range(8)]
        batch = 8 * NEW / best_of(lambda: generate(m, tok, prompts, topk), 1)
        single = 8 * NEW / best_of(lambda: [generate(m, tok, [p], topk) for p in prompts], 1)
        print(f"batched top-k, 8 prompts: at once {batch:.0f} tok/s | one at a time {single:.0f} tok/s")
    if big:  # A/B: the PyTorch decode step, then also PyTorch's own linear (explicit sessions)
        def rate_in(label: str, model: GPT, **options) -> float:
            with decode.DecodeSession(model, **options):
                return rate(label, NEW, lambda: generate(model, tok, [prompt], greedy), r, w)

        mb = copy.deepcopy(m).to(torch.bfloat16)
        torch_f = rate_in("gencraft greedy f32, PyTorch step", m, native=False)
        plain = rate_in("gencraft greedy f32, F.linear", m, native=False, fast_linear=False)
        plain_b = rate_in("gencraft greedy bf16, F.linear", mb, native=False, fast_linear=False)
        torch_b = rate_in("gencraft greedy bf16, PyTorch step", mb, native=False)
        print(f"PyTorch decode step instead of the C step: f32 {torch_f:.1f} tok/s, bf16 {torch_b:.1f} tok/s | "
              f"and F.linear instead of the fast linear path: f32 {plain:.1f} tok/s, bf16 {plain_b:.1f} tok/s")
        ours_b = rate("gencraft greedy bf16", NEW, lambda: generate(mb, tok, [prompt], greedy), r, w)
        x = torch.tensor([torch.randint(0, tok.vocab_size, (257,), generator=g).tolist()])
        with torch.inference_mode():
            lf, loss32 = build(name)(x[:, :-1], x[:, 1:])
            lb, loss16 = mb(x[:, :-1], x[:, 1:])
        dec_b = decode_rate(mb, tok, prompt, ours_b, reps)
        limit_b = bw * 1e9 / (n_read * 2)
        print(f"bf16 weights greedy tok/s: {ours_b:.1f}, decode only {dec_b:.1f} (limit {limit_b:.0f}: "
              f"{dec_b / limit_b:.0%}) | ref llama.cpp f16 {REF_LLAMA_F16[name]} | target >= 130")
        if llama_dir is not None:
            side_by_side(m, mb, tok, prompt, llama_dir, "f16", 2 * reps + 1)
        print(f"bf16 quality cost (random weights, 256 tokens): loss f32 {loss32.item():.4f} bf16 "
              f"{loss16.item():.4f}, max |logit diff| {(lf - lb.float()).abs().max().item():.3f}")
        c_step, torch_step = decode_drift(m, mb, prompt, 32)
        rounding = "products' inputs rounded to bf16" if native_mod.bf16_input() else "float32 inputs"
        print(f"bf16 decoding, max |logit diff| from f32 decoding over 32 greedy steps: C step {c_step:.3f} "
              f"(float32 between the products, {rounding}) | PyTorch bf16 step {torch_step:.3f} (bf16 throughout)")
        # 8-bit matrices (a scale per row) from the float32 model, its prompt in float32
        s8 = decode.DecodeSession(m, int8=True)
        with s8:
            ours_q = rate("gencraft greedy int8", NEW, lambda: generate(m, tok, [prompt], greedy), r, w)
            dec_q = decode_rate(m, tok, prompt, ours_q, reps)
        limit_q = bw * 1e9 / n_read
        vnni = "AVX512-VNNI" if native_mod.library().gc_q8_vnni() else "no VNNI: plain C"
        print(f"int8 weights greedy tok/s: {ours_q:.1f}, decode only {dec_q:.1f} (limit {limit_q:.0f}: "
              f"{dec_q / limit_q:.0%}; {vnni}) | bf16 {dec_b:.1f} ({dec_q / dec_b:.2f}x)")
        if llama_dir is not None:
            side_by_side(m, m, tok, prompt, llama_dir, "q8_0", 2 * reps + 1, session=s8)
        with s8:
            q_step = decode_drift(m, m, prompt, 32, session=s8)[0]
        print(f"int8 decoding, max |logit diff| from f32 decoding over 32 greedy steps (random weights): {q_step:.3f}")


def weight_types(tok, prompt: list[int], greedy, reps: int, bw: float, llama_dir: Path | None) -> None:
    """124M decoding with float32, bfloat16 and 8-bit weights, one after another, each beside
    llama.cpp's f32, f16 and q8_0 on the same weights when ``llama_dir`` is given."""
    m = build("124M")
    mb = copy.deepcopy(m).to(torch.bfloat16)
    s8 = decode.DecodeSession(m, int8=True)
    n_read = sum(p.numel() for p in m.parameters()) - m.wpe.weight.numel()
    vnni = "AVX512-VNNI" if native_mod.library().gc_q8_vnni() else "no VNNI: plain C"
    print(f"\n124M ({n_read / 1e6:.1f}M weights read a step), greedy, {PROMPT}-token prompt + {NEW} new; int8: {vnni}")
    for label, model, session, gguf, width in (("f32", m, None, "f32", 4), ("bf16", mb, None, "f16", 2),
                                                ("int8", m, s8, "q8_0", 1)):
        with session or decode.session(model):
            full = rate(f"gencraft greedy {label}", NEW, lambda model=model: generate(model, tok, [prompt], greedy),
                        reps)
            dec = decode_rate(model, tok, prompt, full, reps)
        print(f"{label}: decode only {dec:.1f} tok/s, end to end {full:.1f} (bandwidth limit "
              f"{bw * 1e9 / (n_read * width):.0f})", flush=True)
        if llama_dir is not None:
            side_by_side(m, model, tok, prompt, llama_dir, gguf, 2 * reps + 1, session=session)


def side_by_side(m: GPT, ours: GPT, tok, prompt: list[int], llama_dir: Path, dtype: str, rounds: int,
                 session: decode.DecodeSession | None = None) -> None:
    """llama.cpp's ``llama-bench`` on ``m``'s weights as GGUF ``dtype`` (``bench/llamacpp.py``) and
    gencraft decoding ``ours`` (bf16 beside llama.cpp's f16, int8 beside q8_0: about the same bytes a
    step; ``session``: the decode session to run in, e.g. the int8 one), taking turns ``rounds`` times
    (the read bandwidth moves within minutes); the best of each."""
    greedy = GenerationConfig(max_new_tokens=NEW, temperature=0, stop_at_eos=False)
    best_pp = best_tg = best_full = best_ours = best_bw = best_ours_pp = 0.0
    pairs = []
    with tempfile.TemporaryDirectory() as d:
        path = llamacpp.write_gguf(m, Path(d) / f"model-{dtype}.gguf", dtype, llama_dir)
        for _ in range(rounds):
            got = llamacpp.llama_bench(llama_dir, path, PROMPT, NEW, torch.get_num_threads(), 1)
            best_pp, best_tg = max(best_pp, got["pp"]), max(best_tg, got["tg"])
            with session or decode.session(ours):
                full = NEW / best_of(lambda: generate(ours, tok, [prompt], greedy), 1, warm=False)
                dec = decode_rate(ours, tok, prompt, full, 1)
                # the prompt as llama-bench times it: one run a round (prompts keep the model's weights)
                best_ours_pp = max(best_ours_pp, prefill_tps(ours, prompt, 1, warm=False))
            best_full = max(best_full, full)
            best_ours = max(best_ours, dec)
            pairs.append(f"{got['tg']:.0f}/{dec:.0f}")
            best_bw = max(best_bw, read_bandwidth())
    nbytes = sum(p.numel() for p in ours.parameters()) - ours.wpe.weight.numel()
    limit = best_bw * 1e9 / (nbytes * (1 if session is not None and session.int8 else ours.wte.weight.element_size()))
    print(f"llama.cpp {dtype}, same weights, taking turns ({rounds} rounds, best of each): prompt {best_pp:.0f} "
          f"tok/s, generation (tg{NEW}) {best_tg:.1f} tok/s | gencraft decode only {best_ours:.1f} tok/s = "
          f"{best_ours / best_tg:.0%} of llama.cpp, end to end {best_full:.1f} tok/s | read bandwidth "
          f"{best_bw:.1f} GB/s, limit {limit:.0f} tok/s | each round, llama.cpp/gencraft: {' '.join(pairs)}",
          flush=True)
    print(f"  prompt ({PROMPT} tokens, one run a round, best of {rounds}): llama.cpp pp{PROMPT} {best_pp:.0f} tok/s | "
          f"gencraft prefill {best_ours_pp:.0f} tok/s = {best_ours_pp / best_pp:.0%}", flush=True)


def prompt_side_by_side(name: str, prompt: list[int], llama_dir: Path | None, rounds: int, reps: int = 5) -> None:
    """Prompt processing of shape ``name`` (float32 weights, a ``PROMPT``-token prompt into a fresh
    cache): gencraft's prefill (``generate/core.py``, the engine's) and, with ``llama_dir``, llama-bench's
    pp on the same weights as GGUF f32, taking turns ``rounds`` times, ``reps`` runs of each a round
    (after a warm-up each); the best run and the mean of each round's runs for both."""
    m = build(name)
    V = m.config.vocab_size
    ids = [t % V for t in prompt]
    ours_best, ours_mean, theirs_best, theirs_mean, pairs = 0.0, [], 0.0, [], []
    with tempfile.TemporaryDirectory() as d:
        path = None if llama_dir is None else llamacpp.write_gguf(m, Path(d) / "model-f32.gguf", "f32", llama_dir)
        prefill_tps(m, ids, 3)  # the session's tuner sees a few prompts first, as in a process that has run
        for _ in range(rounds):
            x = torch.tensor([ids])
            times = []
            with decode.session(m):
                core.prefill(m, x, m.max_context, PROMPT + NEW)
                for _ in range(reps):
                    t = time.perf_counter()
                    core.prefill(m, x, m.max_context, PROMPT + NEW)
                    times.append(time.perf_counter() - t)
            rates = [PROMPT / t for t in times]
            ours_best, ours_mean = max(ours_best, max(rates)), ours_mean + [sum(rates) / reps]
            if path is not None:
                got = llamacpp.llama_bench(llama_dir, path, PROMPT, 0, torch.get_num_threads(), reps)
                theirs_best, theirs_mean = max(theirs_best, got["pp_best"]), theirs_mean + [got["pp"]]
                pairs.append(f"{got['pp']:.0f}/{ours_mean[-1]:.0f}")
    mean = sum(ours_mean) / rounds
    line = (f"{name} float32 prompt ({PROMPT} tokens) tok/s, {rounds} rounds x {reps} runs: gencraft prefill best "
            f"{ours_best:.0f}, round means {min(ours_mean):.0f}-{max(ours_mean):.0f} (mean {mean:.0f})")
    if path is not None:
        tmean = sum(theirs_mean) / rounds
        line += (f" | llama.cpp pp{PROMPT} (same weights, GGUF f32) best {theirs_best:.0f}, round means "
                 f"{min(theirs_mean):.0f}-{max(theirs_mean):.0f} (mean {tmean:.0f}) | gencraft/llama.cpp: best "
                 f"{ours_best / theirs_best:.2f}x, mean {mean / tmean:.2f}x | each round's means, llama.cpp/gencraft: "
                 f"{' '.join(pairs)}")
    else:
        line += f" | ref: llama.cpp {REF_PP_LLAMA[name]}"
    print(line, flush=True)


def decode_rate(m: GPT, tok, prompt: list[int], end_to_end: float, repeats: int) -> float:
    """Tokens/s after the first token: a run's time (from its end-to-end rate) less the time to the
    first token (prefill and one sample, best of ``repeats``), over the other ``NEW - 1`` tokens."""
    first = GenerationConfig(max_new_tokens=1, temperature=0, stop_at_eos=False)
    ttft = best_of(lambda: generate(m, tok, [prompt], first), repeats)
    return (NEW - 1) / (NEW / end_to_end - ttft)


def decode_drift(m: GPT, mb: GPT, prompt: list[int], steps: int,
                 session: decode.DecodeSession | None = None) -> tuple[float, float]:
    """Largest logit difference between f32 decoding and bf16 decoding (C step, then PyTorch step),
    both fed the f32 model's greedy tokens (``session``: the C step in that session instead, e.g. int8)."""
    def logits_along(model: GPT, tokens: list[int] | None, native: bool = True,
                     sess: decode.DecodeSession | None = None) -> tuple[list[torch.Tensor], list[int]]:
        """Logits after the prompt and after each token of ``tokens`` (None: ``steps`` greedy tokens)."""
        out, fed = [], []
        with sess or decode.DecodeSession(model, native=native), torch.inference_mode():
            logits, cache = model.step(torch.tensor([prompt]), model.new_cache(1))
            out.append(logits)
            for i in range(steps):
                fed.append(int(logits.argmax()) if tokens is None else tokens[i])
                logits, cache = model.step(torch.tensor([[fed[-1]]]), cache)
                out.append(logits)
        return out, fed

    ref, tokens = logits_along(m, None)
    drift = []
    for on in (True, False):
        got, _ = logits_along(mb, tokens, native=on, sess=session if on else None)
        # the decode steps only: the prompt's logits come from the same PyTorch prefill in both
        drift.append(max((a - b).abs().max().item() for a, b in zip(ref[1:], got[1:], strict=True)))
    return drift[0], drift[1]


def stepwise_logits(m: GPT, val: torch.Tensor, session: decode.DecodeSession, window: int, windows: int
                    ) -> torch.Tensor:
    """Next-token logits ``[windows * window, V]`` over ``windows`` held-out windows, every token through
    ``session``'s one-token decode step (the path decoding takes: the C step, in 8 bits when the session
    says so); window ``k`` predicts ``val[k * window + 1:(k + 1) * window + 1]``."""
    out = []
    with session, torch.inference_mode():
        for k in range(windows):
            ids = val[k * window:(k + 1) * window]
            logits, cache = m.step(ids[None, :1], m.new_cache(1, window))
            out.append(logits)
            for t in range(1, window):
                logits, cache = m.step(ids[None, t:t + 1], cache)
                out.append(logits)
    return torch.cat(out).float()


def weight_quality(tok, text: str, steps: int = 600, window: int = 128, windows: int = 48) -> None:
    """What bf16 and int8 weights cost a small GPT trained ``steps`` steps on tinyshakespeare (first 90%;
    the last 10% held out): validation loss with float32 and bf16 weights over the whole held-out text,
    and, over ``windows`` x ``window`` held-out tokens, every token decoded one at a time through the C
    step with float32 and with 8-bit matrices (the int8 path is the decode step's only: prompts keep
    float32), with the mean KL between the two next-token distributions and how often their argmax agrees."""
    ids = torch.tensor(tok.encode(text), dtype=torch.long)
    n = int(len(ids) * 0.9)
    train, val = ids[:n], ids[n:]
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=128, n_layer=4, n_head=4, n_embd=128))
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        ix = torch.randint(0, len(train) - 129, (16,), generator=g)
        x = torch.stack([train[i:i + 128] for i in ix])
        y = torch.stack([train[i + 1:i + 129] for i in ix])
        _, loss = m(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    m.eval()
    trained = time.perf_counter() - t0
    chunks = val[:(len(val) - 1) // 128 * 128 + 1]
    x = chunks[:-1].view(-1, 128)
    y = chunks[1:].view(-1, 128)
    with torch.inference_mode():
        l32 = m(x, y)[1].item()
        l16 = copy.deepcopy(m).to(torch.bfloat16)(x, y)[1].item()
    t1 = time.perf_counter()
    targets = torch.cat([val[k * window + 1:(k + 1) * window + 1] for k in range(windows)])
    f32 = stepwise_logits(m, val, decode.DecodeSession(m), window, windows)
    q8 = stepwise_logits(m, val, decode.DecodeSession(m, int8=True), window, windows)
    lp, lq = torch.log_softmax(f32, -1), torch.log_softmax(q8, -1)
    s32 = -lp.gather(1, targets[:, None]).mean().item()
    s8 = -lq.gather(1, targets[:, None]).mean().item()
    kl = (lp.exp() * (lp - lq)).sum(-1).mean().item()
    agree = (f32.argmax(-1) == q8.argmax(-1)).float().mean().item()
    print(f"\nquality of the weight types, a model trained on tinyshakespeare (4L/4H/128, BPE {tok.vocab_size}, "
          f"{steps} steps in {trained:.0f} s):")
    print(f"  bf16 weights, whole held-out text ({x.numel()} tokens, forward): val loss f32 {l32:.4f} | bf16 "
          f"{l16:.4f} | difference {l16 - l32:+.4f} nats/token")
    print(f"  int8 matrices, {targets.numel()} held-out tokens decoded one at a time through the C step "
          f"({time.perf_counter() - t1:.0f} s): val loss float32 {s32:.4f} | int8 {s8:.4f} | difference "
          f"{s8 - s32:+.4f} nats/token (aim < 0.01) | KL(f32 || int8) {kl:.2e} nats/token | argmax agrees "
          f"{agree:.2%}", flush=True)


if __name__ == "__main__":
    main()
