"""The GPT's C decode step (models/gpt_decode.c via models/native.py) against the PyTorch path."""

from __future__ import annotations

import copy
import os
import platform
import shutil
import subprocess
import sys

import pytest
import torch

from gencraft.generate import GenerationConfig, generate
from gencraft.models import decode, native
from gencraft.models.gpt import GPT, GPTConfig

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                reason="no C compiler: the native step cannot be built here")


def _model(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=97, block_size=48, n_layer=2, n_head=2, n_embd=64)
    cfg.update(kw)
    m = GPT(GPTConfig(**cfg)).eval()
    with torch.no_grad():  # non-trivial norms and biases, so that a wrong pointer shows
        for name, p in m.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return m


def _decode(m: GPT, prompt: list[int], steps: int, on: bool, threads: int | None = None) -> list[torch.Tensor]:
    """Logits after the prompt and after each of ``steps`` greedy tokens, native step on or off."""
    out = []
    with decode.DecodeSession(m, native=on, threads=threads) as session, torch.inference_mode():
        logits, cache = m.step(torch.tensor([prompt]), m.new_cache(1))
        out.append(logits)
        for _ in range(steps):
            before = cache.length
            logits, cache = m.step(logits.argmax(-1, keepdim=True), cache)
            assert cache.length == before + 1
            out.append(logits)
        if on:
            assert isinstance(session._plans.get(cache), native.Plan), "the C step was not used"
    return out


def test_library_builds() -> None:
    assert native.library() is not None


SHAPES = [
    dict(),                                        # tied output layer, no biases
    dict(bias=True, tie_weights=False),            # biases everywhere, own output layer
    dict(n_embd=40, n_head=2, vocab_size=50),      # widths that are not multiples of 16 (scalar tails)
    dict(n_layer=3, n_head=4, n_embd=128),
]


@pytest.mark.parametrize("kw", SHAPES)
def test_native_step_matches_pytorch(kw: dict) -> None:
    m = _model(**kw)
    prompt = [3, 14, 15, 9, 26, 5]
    ref = _decode(m, prompt, 20, on=False)
    got = _decode(m, prompt, 20, on=True)
    for r, g in zip(ref, got, strict=True):
        assert g.shape == r.shape and g.dtype == torch.float32
        assert (g - r).abs().max().item() < 1e-4
    # greedy chains agree token for token
    assert [int(x.argmax()) for x in ref] == [int(x.argmax()) for x in got]


def test_native_step_same_logits_on_one_or_two_threads() -> None:
    m = _model(n_layer=2, n_head=4, n_embd=256, vocab_size=1000)  # big enough to split rows
    one = _decode(m, [1, 2, 3], 30, on=True, threads=1)
    two = _decode(m, [1, 2, 3], 30, on=True, threads=2)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)  # each output row is reduced by one thread, in one order


@pytest.mark.parametrize("n_embd", [64, 48])  # 64: the paired bf16 kernel; 48: its fallback
def test_native_step_bf16_weights(n_embd: int) -> None:
    m = _model(n_embd=n_embd, n_head=2, vocab_size=200)
    mb = _model(n_embd=n_embd, n_head=2, vocab_size=200).to(torch.bfloat16)
    ref_model = _model(n_embd=n_embd, n_head=2, vocab_size=200)
    ref_model.load_state_dict({k: v.float() for k, v in mb.state_dict().items()})  # the rounded weights in f32
    prompt = [5, 6, 7, 8]
    ref = _decode(ref_model, prompt, 15, on=False)
    got = _decode(mb, prompt, 15, on=True)
    torch_bf16 = _decode(mb, prompt, 15, on=False)
    for r, g, t in zip(ref, got, torch_bf16, strict=True):
        # float32 activations: only the bf16 KV cache differs from the f32 math on the same weights
        assert (g - r).abs().max().item() < 0.02
        assert (g - r).abs().max().item() <= (t - r).abs().max().item() + 1e-3
    del m


def test_native_matvec_matches_torch() -> None:
    g = torch.Generator().manual_seed(1)
    for rows, cols in [(37, 64), (100, 96), (8, 17), (1030, 384)]:
        x = torch.randn(cols, generator=g)
        w = torch.randn(rows, cols, generator=g)
        assert torch.allclose(native.matvec(w, x, threads=2), w @ x, atol=1e-4, rtol=1e-4)
        wb = w.to(torch.bfloat16)
        got = native.matvec(wb, x, threads=2)
        exact = torch.isclose(got, wb.float() @ x, atol=1e-3, rtol=1e-3)
        if native.bf16_input():  # rows in groups of 8 (cols % 32 == 0) take x rounded to bfloat16
            exact |= torch.isclose(got, wb.float() @ x.bfloat16().float(), atol=1e-3, rtol=1e-3)
        assert bool(exact.all())
    with pytest.raises(ValueError, match="x must have shape"):
        native.matvec(torch.randn(4, 8), torch.randn(7))


def test_generate_same_text_with_and_without_native_step(tmp_path) -> None:
    from gencraft.tokenize import train_tokenizer

    tok = train_tokenizer("char", ["the quick brown fox jumps over the lazy dog. " * 20])
    m = _model(vocab_size=tok.vocab_size)
    cfg = GenerationConfig(max_new_tokens=40, temperature=0, stop_at_eos=False)
    topk = GenerationConfig(max_new_tokens=40, top_k=5, seed=3, stop_at_eos=False)
    with decode.DecodeSession(m, native=False):  # an explicit session: the engine decodes in it
        plain = generate(m, tok, ["the quick"], cfg)[0][0]
        plain_k = generate(m, tok, ["the quick"], topk)[0][0]
    fast = generate(m, tok, ["the quick"], cfg)[0][0]
    assert fast.token_ids == plain.token_ids and fast.text == plain.text and len(fast.token_ids) == 40
    assert generate(m, tok, ["the quick"], topk)[0][0].token_ids == plain_k.token_ids


def test_no_compiler_falls_back_to_pytorch(tmp_path) -> None:
    """No compiler (or GENCRAFT_NATIVE=0): generation still works, in PyTorch."""
    code = (
        "import torch; from gencraft.models import native, decode; from gencraft.models.gpt import GPT, GPTConfig\n"
        "assert native.library() is None\n"
        "m = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=32)).eval()\n"
        "with decode.session(m) as s, torch.inference_mode():\n"
        "    logits, cache = m.step(torch.tensor([[1, 2]]), m.new_cache(1))\n"
        "    logits, cache = m.step(torch.tensor([[3]]), cache)\n"
        "assert cache.length == 3 and not s._plans\n"
        "print('ok')\n"
    )
    for env in ({"CC": "/bin/false", "GENCRAFT_HOME": str(tmp_path)}, {"GENCRAFT_NATIVE": "0"}):
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "ok"
    assert (tmp_path / "cache" / "native").is_dir()
    assert not list(tmp_path.glob("cache/native/*"))  # a failed build leaves nothing behind


def test_native_step_rejects_a_token_outside_the_vocabulary() -> None:
    m = _model()
    with decode.session(m), torch.inference_mode():
        _, cache = m.step(torch.tensor([[1, 2]]), m.new_cache(1))
        with pytest.raises(ValueError, match="outside the vocabulary"):
            m.step(torch.tensor([[m.config.vocab_size]]), cache)
        assert cache.length == 2  # nothing advanced


def test_busy_machine_seen_through_another_process() -> None:
    """A thread of another process that is runnable counts as load (the tuners then start on one thread)."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)
        assert any(decode._other_process_running() for _ in range(20))
    finally:
        busy.kill()
        busy.wait()


def test_portable_build_without_avx512(tmp_path) -> None:
    """The same source built for AVX2 only (GCC's vector types split in halves, the widening bf16
    kernel instead of AVX512-BF16, the plain C 8-bit product instead of AVX512-VNNI) decodes like
    PyTorch too: CI machines differ."""
    code = f"""
import sys, torch
sys.path.insert(0, {os.path.dirname(__file__)!r})
from gencraft.models import native
native.CFLAGS = [f for f in native.CFLAGS if not f.startswith("-march")] + ["-march=x86-64-v3", "-Wno-psabi"]
native.cache_dir = lambda: __import__("pathlib").Path({str(tmp_path)!r})
assert native.library() is not None and not native.bf16_input()
from test_native_decode import _model, _decode
m = _model(bias=True)
for r, g in zip(_decode(m, [3, 1, 4], 12, on=False), _decode(m, [3, 1, 4], 12, on=True), strict=True):
    assert (g - r).abs().max().item() < 1e-4
w = torch.randn(40, 64).bfloat16(); x = torch.randn(64)
assert torch.allclose(native.matvec(w, x, threads=2), w.float() @ x, atol=1e-3, rtol=1e-3)
# 8-bit products without AVX512-VNNI: the plain C loop, the same integer arithmetic
assert not native.library().gc_q8_vnni()
import test_int8
w = torch.randn(72, 192) * 0.05; x = torch.randn(192)
assert torch.allclose(native.matvec(w, x, threads=2, q8=True), test_int8.reference_q8(w, x), rtol=1e-4, atol=1e-5)
test_int8.test_int8_decoding_stays_within_tolerance_of_float32()
print("ok")
"""
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86-64 only")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


def test_huge_page_weights_keep_the_model(monkeypatch) -> None:
    """Moving the weights into the 2 MiB-page buffer changes where they live, nothing else: the same
    logits, tied weights still one tensor, and the model still trains afterwards."""
    monkeypatch.setattr(native, "HUGE_MIN", 0)
    m = _model(bias=True)
    prompt = [3, 14, 15, 9]
    before = _decode(m, prompt, 8, on=False)
    ptrs = {n: p.data_ptr() for n, p in m.named_parameters()}
    huge = "[madvise]" in native.THP_MODE.read_text() if native.THP_MODE.exists() else False
    session = decode.DecodeSession(m)
    assert session.huge_pages(m) is huge
    moved = {n: p.data_ptr() for n, p in m.named_parameters()}
    assert session.huge_pages(m) is huge  # once per set of weights
    assert {n: p.data_ptr() for n, p in m.named_parameters()} == moved
    if not huge:
        pytest.skip("this kernel gives no huge pages on request (transparent_hugepage not in madvise mode)")
    assert all(p.data_ptr() != ptrs[n] for n, p in m.named_parameters())
    assert m.lm_head.weight is m.wte.weight
    for a, b in zip(before, _decode(m, prompt, 8, on=False), strict=True):
        assert torch.equal(a, b)
    assert [int(x.argmax()) for x in _decode(m, prompt, 8, on=True)] == [int(x.argmax()) for x in before]
    twin = copy.deepcopy(m)  # weights of its own, a session of its own: judged afresh
    assert twin.wte.weight.data_ptr() != m.wte.weight.data_ptr()
    assert decode.DecodeSession(twin).huge_pages(twin) is True
    assert torch.equal(twin.wte.weight, m.wte.weight) and twin.lm_head.weight is twin.wte.weight
    m.train()
    _, loss = m(torch.tensor([prompt]), torch.tensor([prompt[1:] + [0]]))
    loss.backward()
    assert m.wte.weight.grad is not None and torch.isfinite(m.wte.weight.grad).all()


def test_huge_page_weights_skip_a_model_in_training(monkeypatch) -> None:
    monkeypatch.setattr(native, "HUGE_MIN", 0)
    m = _model().train()
    ptr = m.wte.weight.data_ptr()
    assert native.huge_page_weights(m) is False and m.wte.weight.data_ptr() == ptr


PREFETCH_SCRIPT = """
import json, os, sys
import torch
sys.path.insert(0, sys.argv[1])
from test_native_decode import _decode, _model
from gencraft.models import native
m = _model(n_layer=2, n_head=4, n_embd=256, vocab_size=1000)
out = [[round(v, 6) for v in t[0, :8].tolist()] for t in _decode(m, [1, 2, 3], 12, on=True, threads=2)]
out += [[round(v, 6) for v in t[0, :8].tolist()] for t in _decode(m, [4, 5], 6, on=True, threads=1)]
w, x = torch.randn(300, 256), torch.randn(256)  # a pool job right after a step: the prefetch is stopped first
want = w @ x
assert torch.allclose(native.matvec(w, x, threads=2), want, atol=1e-4, rtol=1e-4)
_decode(m, [1], 2, on=True, threads=2)
pid = os.fork()  # right after a step, its prefetch running: the child's C pool starts anew
if pid == 0:  # (C only: libgomp's threads do not survive a fork, so no torch parallel region here)
    ok = torch.allclose(native.matvec(w, x, threads=2), want, atol=1e-4, rtol=1e-4)
    os._exit(0 if ok else 1)
assert os.waitpid(pid, 0)[1] == 0
print(json.dumps(out))
"""


def test_prefetch_between_steps_changes_nothing_but_time() -> None:
    """After each single-row step, worker 1 reads the first layer's matrices while Python chooses the
    token (GENCRAFT_PREFETCH=0 turns it off): the logits are the same bit for bit, a pool job or a fork
    right after a step waits for it or starts without it (a child's pool), and nothing hangs."""
    here = os.path.dirname(__file__)
    outs = []
    for flag in ("1", "0"):
        env = dict(os.environ, GENCRAFT_PREFETCH=flag)
        res = subprocess.run([sys.executable, "-c", PREFETCH_SCRIPT, here], env=env, capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
        outs.append(res.stdout.strip().splitlines()[-1])
    assert outs[0] == outs[1]
