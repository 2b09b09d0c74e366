"""The C tanh-GELU kernel (models/kernels.c): values and slopes against the exact function computed in
float64 by autograd, ATen's agreement, the tails, bfloat16 rounding, the fallback, and a GPT's loss
and gradients the same with and without it."""

from __future__ import annotations

import ctypes
import math

import pytest
import torch
import torch.nn.functional as F

from gencraft import cbuild
from gencraft.models import kernels
from gencraft.models.gpt import GPT, GPTConfig
from gencraft.models.kernels import tanh_gelu


def _exact(x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """gelu_tanh(x) and g * its slope, in float64 by autograd, as x * sigmoid(2u): the 1 + tanh(u) form
    cancels in the left tail even in float64 (x = -7: 17% off)."""
    x64 = x.double().requires_grad_()
    y = x64 * torch.sigmoid(2 * math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64**3))
    y.backward(g.double())
    return y.detach(), x64.grad


def _run(x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str]:
    x = x.detach().clone().requires_grad_()
    y = tanh_gelu(x)
    y.backward(g)
    return y.detach(), x.grad, type(y.grad_fn).__name__


@pytest.mark.parametrize("n", [1, 15, 16, 17, 1000, 4099])  # around the 16-wide vector and its tail
def test_float32_matches_the_exact_function_and_aten(n):
    assert kernels.library() is not None, "the C compiler is on every machine this runs on"
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=gen) * 4
    g = torch.randn(n, generator=gen)
    y, dx, fn = _run(x, g)
    assert fn.startswith("_TanhGelu")  # the C kernel ran, not ATen
    ey, edx = _exact(x, g)
    torch.testing.assert_close(y.double(), ey, rtol=2e-6, atol=1e-7)
    torch.testing.assert_close(dx.double(), edx, rtol=2e-5, atol=1e-6)
    ref = F.gelu(x, approximate="tanh")
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)


def test_bfloat16_rounds_the_float32_result_to_within_one_step():
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(8192, generator=gen) * 4).bfloat16()
    g = torch.randn(8192, generator=gen).bfloat16()
    y, dx, fn = _run(x, g)
    assert fn.startswith("_TanhGelu") and y.dtype == dx.dtype == torch.bfloat16
    ey, edx = _exact(x.float(), g.float())
    for got, want in ((y, ey), (dx, edx)):
        # bf16's spacing there; values under 1e-30 (x < -9.5, float's bottom) count as 0
        step = torch.exp2(torch.floor(torch.log2(want.abs())) - 7).clamp(min=1e-30)
        assert ((got.double() - want).abs() <= step).all()


def test_tails_and_infinities():
    x = torch.tensor([float("-inf"), -100.0, -20.5, -0.0, 0.0, 20.5, 100.0, float("inf")])
    y, dx, _ = _run(x, torch.ones_like(x))
    assert y.tolist() == [0.0, 0.0, 0.0, 0.0, 0.0, 20.5, 100.0, float("inf")]
    assert dx.tolist() == [0.0, 0.0, 0.0, 0.5, 0.5, 1.0, 1.0, 1.0]


def test_falls_back_to_aten_where_the_kernel_does_not_apply(monkeypatch):
    x = torch.randn(64, requires_grad=True)
    assert type(tanh_gelu(x.double()).grad_fn).__name__ == "GeluBackward0"  # another dtype
    assert type(tanh_gelu(x.view(8, 8).t()).grad_fn).__name__ == "GeluBackward0"  # not contiguous
    monkeypatch.setenv("GENCRAFT_NATIVE", "0")
    assert type(tanh_gelu(x).grad_fn).__name__ == "GeluBackward0"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_gpt_trains_the_same_with_and_without_the_kernel(monkeypatch, dtype):
    cfg = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    torch.manual_seed(0)
    model = GPT(cfg)
    idx = torch.randint(0, 50, (4, 16))

    def step() -> tuple[float, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            _, loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters()]

    loss_c, grads_c = step()
    monkeypatch.setenv("GENCRAFT_NATIVE", "0")
    loss_a, grads_a = step()
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert abs(loss_c - loss_a) < tol
    for a, b in zip(grads_c, grads_a, strict=True):
        torch.testing.assert_close(a, b, rtol=tol * 10, atol=tol)


def test_a_changed_header_rebuilds_the_library(tmp_path):
    """cbuild names a library by its source and the headers beside it (simd.h is shared by the decode
    step and these kernels): editing a header gives a new build, not the stale one from the cache."""
    (tmp_path / "k.h").write_text("static inline int k(void) { return 1; }\n")
    src = tmp_path / "k.c"
    src.write_text('#include "k.h"\nint value(void) { return k(); }\n')
    first = cbuild.build(src, tmp_path / "cache")
    assert cbuild.build(src, tmp_path / "cache") == first  # cached
    (tmp_path / "k.h").write_text("static inline int k(void) { return 2; }\n")
    second = cbuild.build(src, tmp_path / "cache")
    assert second != first and ctypes.CDLL(str(second)).value() == 2
