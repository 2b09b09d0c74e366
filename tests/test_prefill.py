"""Prompt processing (prefill) on the fast path: oneDNN's products with the GELU fused, plain causal
attention into a fresh cache, the prompt tuner. A prompt fed at once must give what feeding it token
by token gives (logits and the KV cache), and what the model's plain forward() gives."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gencraft.models import decode
from gencraft.models.gpt import GPT, GPTConfig
from gencraft.models.lora import LoRALinear

# float32: one product's rounding differs between oneDNN, BLAS and the C step's dot products (sums in
# another order); over a few layers that stays well under 1e-4 of logits of size ~1
TOL = 1e-4


def _model(dtype: torch.dtype = torch.float32, **kw) -> GPT:
    torch.manual_seed(0)
    cfg = dict(vocab_size=211, block_size=160, n_layer=3, n_head=4, n_embd=64, bias=True)
    cfg.update(kw)
    m = GPT(GPTConfig(**cfg)).eval()
    with torch.no_grad():  # non-trivial norms and biases, and logits spread as a trained model's
        for name, p in m.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
        m.wte.weight.mul_(4.0)
    return m.to(dtype)


def _token_by_token(m: GPT, ids: torch.Tensor, session: decode.DecodeSession):
    logits = []
    with session, torch.inference_mode():
        cache = m.new_cache(1, ids.shape[1] + 4)
        for t in range(ids.shape[1]):
            out, cache = m.step(ids[:, t:t + 1], cache)
            logits.append(out)
    return torch.cat(logits), cache


@pytest.mark.parametrize("prompt", [2, 31, 33, 100])  # batch-sized (<= 32 rows) and prompt-sized products
@pytest.mark.parametrize("threads", [1, 2])
def test_prefill_equals_token_by_token(prompt: int, threads: int) -> None:
    m = _model()
    ids = torch.randint(0, 211, (1, prompt), generator=torch.Generator().manual_seed(prompt))
    steps, step_cache = _token_by_token(m, ids, decode.DecodeSession(m, threads=threads))  # the C step
    with decode.DecodeSession(m, threads=threads), torch.inference_mode():
        last, cache = m.step(ids, m.new_cache(1, prompt + 4))
        full = m(ids)[0][0]  # forward(): every position, the same session's products
    plain = m(ids)[0][0].detach()  # outside any session: F.linear, the GELU apart, masked attention
    assert cache.length == step_cache.length == prompt
    assert (last[0] - steps[-1]).abs().max().item() < TOL
    assert (full - steps).abs().max().item() < TOL and (full - plain).abs().max().item() < TOL
    for a, b in ((cache.k, step_cache.k), (cache.v, step_cache.v)):
        assert (a[:, :, :, :prompt] - b[:, :, :, :prompt]).abs().max().item() < TOL
    # and decoding goes on from either cache alike
    nxt = torch.tensor([[7]])
    with decode.DecodeSession(m, threads=threads), torch.inference_mode():
        a, _ = m.step(nxt, cache)
        b, _ = m.step(nxt, step_cache)
    assert (a - b).abs().max().item() < TOL


def test_prefill_after_a_cache_and_with_padding_keeps_its_mask() -> None:
    """Only a prompt into an empty, unpadded cache takes plain causal attention: a second chunk
    and left-padded rows still see the mask."""
    m = _model()
    ids = torch.randint(0, 211, (2, 40), generator=torch.Generator().manual_seed(1))
    with decode.DecodeSession(m), torch.inference_mode():
        ref = m(ids)[0][:, -1]
        _, cache = m.step(ids[:, :36], m.new_cache(2, 48))
        chunked, _ = m.step(ids[:, 36:], cache)
        padded = m.new_cache(2, 48)
        padded.left_pad(torch.tensor([0, 5]))
        both, _ = m.step(torch.cat([ids[:1], torch.cat([ids[1:, :5] * 0, ids[1:, 5:]], 1)]), padded)
        alone = m(ids[1:, 5:])[0][:, -1]
    assert (chunked - ref).abs().max().item() < TOL
    assert (both[0] - ref[0]).abs().max().item() < TOL and (both[1] - alone[0]).abs().max().item() < TOL


@pytest.mark.parametrize("rows", [1, 5, 40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_gelu_equals_gelu_after_the_product(rows: int, dtype: torch.dtype) -> None:
    m = _model(dtype)
    mlp = m.h[0].mlp
    x = torch.randn(1, rows, 64).to(dtype)
    want = F.gelu(F.linear(x, mlp.c_fc.weight, mlp.c_fc.bias).float(), approximate="tanh")
    with decode.DecodeSession(m), torch.inference_mode():
        got = mlp.hidden(x)
    assert got.dtype == dtype and got.shape == want.shape
    torch.testing.assert_close(got.float(), want, atol=2e-5 if dtype == torch.float32 else 0.03,
                               rtol=1e-5 if dtype == torch.float32 else 0.02)


def test_prefill_in_bf16_matches_float32_on_the_same_weights() -> None:
    m = _model(torch.bfloat16)
    ref = _model()
    ref.load_state_dict({k: v.float() for k, v in m.state_dict().items()})  # the rounded weights in f32
    ids = torch.randint(0, 211, (1, 64), generator=torch.Generator().manual_seed(2))
    with decode.DecodeSession(m), torch.inference_mode():
        got, _ = m.step(ids, m.new_cache(1, 64))
    with decode.DecodeSession(ref), torch.inference_mode():
        want, _ = ref.step(ids, ref.new_cache(1, 64))
    assert (got - want).abs().max().item() < 0.05 * want.abs().max().item()


def test_an_adapter_on_the_up_projection_is_not_fused_away() -> None:
    """A LoRA adapter on c_fc keeps its low-rank path: the fused product is for plain layers only."""
    m = _model()
    fc = m.h[1].mlp.c_fc
    lora = LoRALinear(fc, r=4, alpha=8.0)
    with torch.no_grad():
        lora.lora_B.weight.normal_(0, 0.5)
    m.h[1].mlp.c_fc = lora
    ids = torch.randint(0, 211, (1, 50), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        plain = m(ids)[0][0, -1]
        with decode.DecodeSession(m):
            got, _ = m.step(ids, m.new_cache(1, 50))
    assert (got[0] - plain).abs().max().item() < TOL


def test_prompt_products_have_their_own_tuner() -> None:
    m = _model()
    s = decode.DecodeSession(m)
    with s, torch.inference_mode():
        m.step(torch.zeros(1, 40, dtype=torch.long), m.new_cache(1, 40))
    assert "prompt" in s._tuners and "torch" not in s._tuners
