"""llama.cpp beside gencraft in the same run: a gencraft GPT written as GGUF, timed by ``llama-bench``.

The issue's llama.cpp figures were measured on another day; this machine's read bandwidth moves by
half within minutes, so the fair comparison is the same weights, in the same minutes. Nothing is
downloaded: give ``bench/generate.py --llama-cpp DIR`` a llama.cpp source tree with ``llama-bench``
built (``cmake -B build && cmake --build build --target llama-bench``); its ``gguf-py`` writes the
file. The weights need no conversion: gencraft's GPT is GPT-2's architecture (pre-norm blocks,
fused q/k/v, tanh GELU, learned positions, tied output layer) with ``[out, in]`` matrices, which is
the layout llama.cpp's ``gpt2`` graph reads.

llama-bench reports ``pp64`` (the prompt, tokens/s) and ``tg128`` (128 generated tokens after an
empty context, tokens/s) separately; it samples nothing, so its tg figure is the decode steps alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch


def byte_alphabet() -> list[str]:
    """The 256 printable characters byte-level BPE vocabularies spell bytes with: bytes that print
    as themselves keep their character, the rest take code points from 256 up, in byte order."""
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    out, extra = [], 0
    for b in range(256):
        if b in keep:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


def vocabulary(n: int) -> tuple[list[str], list[str]]:
    """``n`` tokens (the 256 bytes, then pairs of them) and the merges that build the pairs: a valid
    byte-level BPE vocabulary for a model with random weights (llama.cpp requires one to load)."""
    alpha = byte_alphabet()
    tokens, merges = list(alpha[: min(n, 256)]), []
    for i in range(n - len(tokens)):
        a, b = alpha[i // 256], alpha[i % 256]
        tokens.append(a + b)
        merges.append(f"{a} {b}")
    return tokens, merges


def write_gguf(model: Any, path: Path, dtype: str, llama_dir: Path) -> Path:
    """Write gencraft GPT ``model`` to ``path`` as a llama.cpp ``gpt2`` model, matrices in ``dtype``
    ("f32", "f16" or "q8_0": 8 bits a weight with a float16 scale per 32; vectors stay float32, as
    llama.cpp's converter writes them, and so do the positions, as gencraft's 8-bit decoding keeps them)."""
    if str(llama_dir / "gguf-py") not in sys.path:
        sys.path.insert(0, str(llama_dir / "gguf-py"))
    import gguf  # the llama.cpp tree's own writer, matched to its reader

    cfg = model.config
    w = gguf.GGUFWriter(str(path), "gpt2")
    w.add_context_length(cfg.block_size)
    w.add_embedding_length(cfg.n_embd)
    w.add_feed_forward_length(4 * cfg.n_embd)
    w.add_block_count(cfg.n_layer)
    w.add_head_count(cfg.n_head)
    w.add_layer_norm_eps(float(model.ln_f.eps))
    w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                     "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype])
    tokens, merges = vocabulary(cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.NORMAL] * len(tokens))
    w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)

    def put(name: str, t: torch.Tensor | None, size: int = 0) -> None:
        # llama.cpp's gpt2 graph has every bias; gencraft's GPT has none by default: zeros, the same model
        a = np.zeros(size, np.float32) if t is None else t.detach().float().numpy()
        if a.ndim == 2 and dtype == "q8_0" and name != "position_embd.weight":
            q = gguf.GGMLQuantizationType.Q8_0
            w.add_tensor(name, gguf.quants.quantize(np.ascontiguousarray(a), q), raw_dtype=q)
            return
        if a.ndim == 2 and dtype == "f16":
            a = a.astype(np.float16)
        w.add_tensor(name, np.ascontiguousarray(a))

    put("token_embd.weight", model.wte.weight)
    put("position_embd.weight", model.wpe.weight)
    for i, b in enumerate(model.h):
        p = f"blk.{i}."
        for name, mod in (("attn_norm", b.ln_1), ("ffn_norm", b.ln_2), ("attn_qkv", b.attn.c_attn),
                          ("attn_output", b.attn.c_proj), ("ffn_up", b.mlp.c_fc), ("ffn_down", b.mlp.c_proj)):
            put(p + name + ".weight", mod.weight)
            put(p + name + ".bias", mod.bias, mod.weight.shape[0])
    put("output_norm.weight", model.ln_f.weight)
    put("output_norm.bias", model.ln_f.bias, cfg.n_embd)
    if model.lm_head.weight.data_ptr() != model.wte.weight.data_ptr():  # untied: its own output layer
        put("output.weight", model.lm_head.weight)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def llama_bench(llama_dir: Path, gguf_path: Path, prompt: int, new: int, threads: int,
                repeats: int) -> dict[str, float]:
    """``{"pp": prompt tokens/s, "tg": generated tokens/s}`` (the mean of ``repeats``, as llama-bench
    prints it) and ``pp_best``/``tg_best`` (the fastest repetition) from one ``llama-bench`` run;
    ``new`` 0: the prompt only."""
    exe = llama_dir / "build" / "bin" / "llama-bench"
    # OpenMP's own defaults, as llama.cpp runs in a shell: gencraft's import asks for sleeping threads
    # (OMP_WAIT_POLICY=PASSIVE, for training), which made llama.cpp's tg 3-4x slower (measured)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    proc = subprocess.run([str(exe), "-m", str(gguf_path), "-p", str(prompt), "-n", str(new), "-t", str(threads),
                           "-r", str(repeats), "-o", "json"], capture_output=True, text=True, timeout=1800, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"llama-bench failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
    out = {}
    for test in json.loads(proc.stdout):
        kind = "pp" if test["n_prompt"] and not test["n_gen"] else "tg"
        out[kind] = float(test["avg_ts"])
        out[kind + "_best"] = max(float(v) for v in test.get("samples_ts") or [test["avg_ts"]])
    return out
