"""8-bit decoding: the C step's q8 product is exact integer arithmetic on the quantized weights and
input, and a GPT decoded with 8-bit matrices stays within a stated tolerance of float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gencraft.models import decode, native
from gencraft.models.gpt import GPT, GPTConfig

pytestmark = pytest.mark.skipif(native.library() is None, reason="the C step does not build here")

# The tolerance 8-bit decoding is held to, against float32 decoding of the same weights: the logits'
# error is at most 3% of their spread (RMS), and the next-token distributions differ by at most
# 2e-3 nats (KL). 8-bit weights with a scale per row and 8-bit inputs with a scale per 64 values
# (what llama.cpp's q8_0 does per 32) measured ~1% and ~1e-5 on these models.
MAX_REL_RMS, MAX_KL = 0.03, 2e-3


def reference_q8(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """What the q8 product computes, in float64 numpy: the weights as quantized, the input
    quantized per block of 64 to signed bytes (round half to even, as lrintf), integer products."""
    buf = native.quantize_q8(w)
    wq = native.dequantize_q8(buf, *w.shape).double().numpy()
    xv = x.double().numpy().reshape(-1, 64)
    m = np.abs(xv).max(axis=1, keepdims=True)
    xq = np.clip(np.rint(xv * np.where(m > 0, 127.0 / np.where(m > 0, m, 1), 0)), -127, 127)
    return torch.from_numpy(wq @ (xq * (m / 127.0)).reshape(-1)).float()


@pytest.mark.parametrize("rows, cols", [(40, 64), (200, 384), (3, 192)])
def test_q8_product_is_the_quantized_arithmetic(rows, cols):
    g = torch.Generator().manual_seed(rows)
    w = torch.randn(rows, cols, generator=g) * 0.05
    w[0] = 0.0  # an all-zero row: its scale must not divide by zero
    x = torch.randn(cols, generator=g)
    x[:64] = 0.0  # and an all-zero input block
    got = native.matvec(w, x, q8=True)
    want = reference_q8(w, x)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)
    if rows >= 40:  # and close to the float32 product (on enough outputs to say so)
        exact = w @ x
        assert (got - exact).norm() <= 0.02 * exact.norm()
    with pytest.raises(ValueError, match="multiple of 64"):
        native.matvec(torch.randn(4, 96), torch.randn(96), q8=True)


def _decode(model: GPT, session: decode.DecodeSession, ids: torch.Tensor, prompt: int) -> torch.Tensor:
    out = []
    with session, torch.inference_mode():
        logits, cache = model.step(ids[:, :prompt], model.new_cache(1, ids.shape[1]))
        for t in range(prompt, ids.shape[1]):
            logits, cache = model.step(ids[:, t:t + 1], cache)
            out.append(logits)
    return torch.cat(out)


def test_int8_decoding_stays_within_tolerance_of_float32():
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=300, block_size=96, n_layer=2, n_head=2, n_embd=128)).eval()
    with torch.no_grad():  # spread the logits as a trained model's are (random init gives ~0.2)
        m.lm_head.weight.mul_(8.0)
    ids = torch.randint(0, 300, (1, 96))
    f32 = _decode(m, decode.DecodeSession(m), ids, 16)
    s8 = decode.DecodeSession(m, int8=True)
    q8 = _decode(m, s8, ids, 16)
    assert len(s8._q8) == 2 * 4 + 1  # the C step took it: 8-bit copies of every matrix (lm_head tied to wte)
    rel = ((q8 - f32).pow(2).mean().sqrt() / f32.std()).item()
    lp, lq = torch.log_softmax(f32, -1), torch.log_softmax(q8, -1)
    kl = (lp.exp() * (lp - lq)).sum(-1).mean().item()
    assert rel <= MAX_REL_RMS and kl <= MAX_KL, (rel, kl)
    # new weights (training went on) make new 8-bit copies
    with torch.no_grad():
        m.h[0].mlp.c_fc.weight.add_(0.01)
    again = _decode(m, s8, ids, 16)
    assert not torch.equal(again, q8)


def test_load_int8_checks_the_run(tmp_path):
    from gencraft.backends import load
    from gencraft.errors import UsageError

    with pytest.raises(UsageError, match="int8"):
        load("hf:" + str(tmp_path), dtype="int8")


def _gpt_run(home, name: str, n_embd: int):
    import dataclasses

    from gencraft.runs import save_weights, write_info
    from gencraft.tokenize import train_tokenizer

    tok = train_tokenizer("char", ["the quick brown fox jumps over the lazy dog"])
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=n_embd)
    run = home / "runs" / name
    run.mkdir(parents=True)
    save_weights(GPT(cfg), run / "model.safetensors")
    tok.save(run / "tokenizer.json")
    write_info(run, {"kind": "gpt", "run_id": name, "model": dataclasses.asdict(cfg),
                     "tokenizer": {"kind": tok.kind, "vocab_size": tok.vocab_size, "eos_id": tok.eos_id}})


def test_generate_cli_decodes_in_int8(cli, gencraft_home):
    _gpt_run(gencraft_home, "q", 64)
    _gpt_run(gencraft_home, "odd", 96)
    args = ["--prompt", "the", "--max-new-tokens", "8", "--temperature", "0", "--no-watermark"]
    ok = cli("generate", "q", "--dtype", "int8", *args)
    assert ok.code == 0, ok.err
    bad = cli("generate", "odd", "--dtype", "int8", *args)
    assert bad.code == 2 and "multiple of 64" in bad.err and len(bad.err.strip().splitlines()) == 1
