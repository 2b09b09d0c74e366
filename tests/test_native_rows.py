"""The multi-row C decode step (``gc_gpt_decode_rows``): a batch's rows advanced in one call, each
weight read once for every row, each row attending over its own positions only. Its logits equal the
single-row C step's on the same cache contents (float32 weights in place: bit for bit, the same sums
in the same order; within 1e-5 from the packed weight copies a batch reads) and the PyTorch path's within 1e-4,
with left padding, ghost rows and two threads."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

import pytest
import torch
from test_native_decode import SHAPES, _model

from gencraft.models import decode, native
from gencraft.models.gpt import GPT, KVCache

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                reason="no C compiler: the native step cannot be built here")

PROMPTS = [[3, 14, 15, 9, 26, 5, 35], [8, 9], [2, 7, 1, 8, 2], [31, 41, 39], [1]]


def _batch_decode(m: GPT, steps: int, on: bool, threads: int | None = None, rows: int | None = None
                  ) -> tuple[list[torch.Tensor], KVCache]:
    """Left-padded prompts prefilled together, then ``steps`` greedy tokens per row, C step on or off."""
    ids = list(PROMPTS)
    out = []
    with decode.DecodeSession(m, native=on, threads=threads) as session, torch.inference_mode():
        if rows is not None:
            session.native_rows = rows
        logits, cache = _prefill(m, ids)
        out.append(logits)
        for _ in range(steps):
            logits, cache = m.step(logits.argmax(-1, keepdim=True), cache)
            out.append(logits)
        used = isinstance(session._plans.get(cache), native.Plan)
        assert used == (on and (rows is None or len(ids) <= rows)), "the multi-row C step was (not) used"
    return out, cache


def _prefill(m: GPT, prompts: list[list[int]]) -> tuple[torch.Tensor, KVCache]:
    T = max(map(len, prompts))
    ids = torch.tensor([[0] * (T - len(p)) + p for p in prompts])
    cache = m.new_cache(len(prompts))
    cache.left_pad(torch.tensor([T - len(p) for p in prompts]))
    return m.step(ids, cache)


@pytest.mark.parametrize("kw", SHAPES)  # the single-row step's shapes
def test_rows_step_matches_pytorch(kw: dict) -> None:
    m = _model(**kw)
    ref, _ = _batch_decode(m, 20, on=False)
    got, cache = _batch_decode(m, 20, on=True)
    assert cache.offset is not None and int(cache.offset.max()) > 0  # left padding was in play
    for r, g in zip(ref, got, strict=True):
        assert g.shape == r.shape == (len(PROMPTS), m.config.vocab_size) and g.dtype == torch.float32
        assert (g - r).abs().max().item() < 1e-4
    assert [x.argmax(-1).tolist() for x in ref] == [x.argmax(-1).tolist() for x in got]


def _one_row(m: GPT, cache: KVCache, b: int) -> KVCache:
    """Row ``b`` of a batch cache as a one-row cache without padding (its real positions from 0)."""
    o = 0 if cache.offset is None else int(cache.offset[b])
    one = m.new_cache(1, max_len=cache.max_len)
    n = cache.length - o
    one.k[:, 0, :, :n] = cache.k[:, b, :, o:cache.length]
    one.v[:, 0, :, :n] = cache.v[:, b, :, o:cache.length]
    one.length = n
    return one


@pytest.mark.parametrize("kw", [dict(), dict(bias=True, tie_weights=False, n_embd=40, n_head=2, vocab_size=50)])
@pytest.mark.parametrize("threads", [1, 2])
def test_rows_step_equals_the_single_row_step(kw: dict, threads: int) -> None:
    """On the same cache contents every row's logits are the single-row step's: bit for bit (float32)
    from the weights in place (the same sums in the same order), within 1e-5 from the packed copies
    (the sums in another order); a row that is all padding but its newest position (a ghost) included."""
    m = _model(**kw)
    lib = native.library()
    with decode.DecodeSession(m, threads=threads) as session, torch.inference_mode():
        _, cache = _prefill(m, PROMPTS)
        cache.set_padding([3], cache.length)  # row 3 emptied: a ghost whose slot is free
        tokens = torch.tensor([[5], [6], [7], [8], [9]])
        singles = []
        for b in range(len(PROMPTS)):
            one = _one_row(m, cache, b)
            singles.append(session.native_step(m, tokens[b:b + 1], one))
        saved_k, saved_v = cache.k.clone(), cache.v.clone()
        in_place = torch.empty(len(PROMPTS), m.config.vocab_size)
        lo = cache.offset.to(torch.int32)
        assert native.run_rows(lib, native.Plan(m, cache), tokens[:, 0].to(torch.int32),
                               (cache.length - lo).clamp_(min=0), lo, cache.length, threads, in_place)
        cache.k.copy_(saved_k), cache.v.copy_(saved_v)
        packed, _ = m.step(tokens, cache)  # the session's plan: packed copies
        assert session._plans[cache].packed is not None
    for b, s in enumerate(singles):
        assert s is not None
        assert torch.equal(in_place[b:b + 1], s), f"row {b}"
        assert (packed[b:b + 1] - s).abs().max().item() < 1e-5, f"row {b}"


def test_rows_products_match_torch() -> None:
    g = torch.Generator().manual_seed(2)
    for rows, cols in [(37, 64), (100, 96), (8, 17), (130, 384), (64, 48)]:
        w = torch.randn(rows, cols, generator=g)
        for nx in (1, 2, 3, 4, 5, 6, 7, 13):
            x = torch.randn(nx, cols, generator=g)
            for packed in (False, True):
                assert torch.allclose(native.matmul(w, x, threads=2, packed=packed), x @ w.T, atol=1e-4, rtol=1e-4)
                wb = w.to(torch.bfloat16)
                assert torch.allclose(native.matmul(wb, x, packed=packed), x @ wb.float().T, atol=1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match="x must have shape"):
        native.matmul(torch.randn(4, 8), torch.randn(2, 7))


def test_rows_step_same_logits_on_one_or_two_threads() -> None:
    m = _model(n_layer=2, n_head=4, n_embd=256, vocab_size=1000)  # big enough to split rows
    one, _ = _batch_decode(m, 12, on=True, threads=1)
    two, _ = _batch_decode(m, 12, on=True, threads=2)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)


def test_rows_step_bf16_weights_and_cache() -> None:
    mb = _model(n_embd=64, n_head=2, vocab_size=200).to(torch.bfloat16)
    ref_model = _model(n_embd=64, n_head=2, vocab_size=200)
    ref_model.load_state_dict({k: v.float() for k, v in mb.state_dict().items()})  # the rounded weights in f32
    ref, _ = _batch_decode(ref_model, 10, on=False)
    got, cache = _batch_decode(mb, 10, on=True)
    assert cache.k.dtype == torch.bfloat16
    torch_bf16, _ = _batch_decode(mb, 10, on=False)
    for r, g, t in zip(ref, got, torch_bf16, strict=True):
        assert (g - r).abs().max().item() < 0.02
        assert (g - r).abs().max().item() <= (t - r).abs().max().item() + 1e-3


def test_rows_over_the_cap_stay_on_pytorch() -> None:
    m = _model()
    capped, _ = _batch_decode(m, 5, on=True, rows=len(PROMPTS) - 1)
    ref, _ = _batch_decode(m, 5, on=False)
    for r, c in zip(ref, capped, strict=True):
        assert torch.equal(r, c)


def test_rows_step_rejects_a_token_outside_the_vocabulary() -> None:
    m = _model()
    with decode.DecodeSession(m), torch.inference_mode():
        _, cache = _prefill(m, PROMPTS)
        with pytest.raises(ValueError, match="outside the vocabulary"):
            m.step(torch.tensor([[1], [2], [m.config.vocab_size], [3], [4]]), cache)


def test_rows_step_portable_build_without_avx512(tmp_path) -> None:
    """The multi-row kernels built for AVX2 only (GCC's vector types split in halves) decode like PyTorch too."""
    code = f"""
import sys
sys.path.insert(0, {os.path.dirname(__file__)!r})
from gencraft.models import native
native.CFLAGS = [f for f in native.CFLAGS if not f.startswith("-march")] + ["-march=x86-64-v3", "-Wno-psabi"]
native.cache_dir = lambda: __import__("pathlib").Path({str(tmp_path)!r})
assert native.library() is not None and not native.bf16_input()
import test_native_rows as t
t.test_rows_products_match_torch()
t.test_rows_step_matches_pytorch(dict(bias=True, tie_weights=False))
print("ok")
"""
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86-64 only")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
