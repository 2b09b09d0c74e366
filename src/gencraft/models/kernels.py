"""Element-wise CPU kernels in C (``kernels.c``) where ATen is slow: the GPT's tanh GELU.

At nanoGPT's CPU training shape ATen's tanh GELU took 14% of a step (forward and backward, one
thread); the C kernel computes it as ``x * sigmoid(2u)`` with one vectorized exp a value, ~3.5x
faster in float32 and bfloat16 (docs/performance.md). :func:`tanh_gelu` is the one entry: it takes
the C kernel for contiguous float32/bfloat16 CPU tensors and ``F.gelu(x, approximate="tanh")``
everywhere else (GPUs, other dtypes, ``torch.compile`` tracing, no compiler, ``GENCRAFT_NATIVE=0``),
so results agree with ATen's to float32 rounding and exported weights still match HF's gelu_new.

The library is built once per machine by :mod:`gencraft.cbuild`, like the decode step.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from gencraft import cbuild

SOURCE = Path(__file__).with_name("kernels.c")
_FUNCS = {  # dtype -> (forward, backward) function names
    torch.float32: ("gc_gelu_f32", "gc_gelu_bwd_f32"),
    torch.bfloat16: ("gc_gelu_bf16", "gc_gelu_bwd_bf16"),
}
_P, _N = ctypes.c_void_p, ctypes.c_int64
SIGNATURES: cbuild.Signatures = {  # forward (x, y, n), backward (x, grad_y, grad_x, n)
    "gc_gelu_f32": (None, [_P, _P, _N]), "gc_gelu_bwd_f32": (None, [_P, _P, _P, _N]),
    "gc_gelu_bf16": (None, [_P, _P, _N]), "gc_gelu_bwd_bf16": (None, [_P, _P, _P, _N]),
}


def library() -> Any:
    """The loaded kernels library, or None (``GENCRAFT_NATIVE=0``, or not buildable here: one log line
    says why, and callers take ATen's path)."""
    return cbuild.load(SOURCE, SIGNATURES, "GELU runs in ATen")


class _TanhGelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fwd: Any, bwd: Any) -> torch.Tensor:  # type: ignore[override]
        y = torch.empty_like(x)
        fwd(x.data_ptr(), y.data_ptr(), x.numel())
        ctx.save_for_backward(x)
        ctx.bwd = bwd
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        g = g.to(x.dtype).contiguous()
        dx = torch.empty_like(x)
        ctx.bwd(x.data_ptr(), g.data_ptr(), dx.data_ptr(), x.numel())
        return dx, None, None


def tanh_gelu(x: torch.Tensor) -> torch.Tensor:
    """``F.gelu(x, approximate="tanh")``, through the C kernel where it applies (see the module)."""
    if x.is_cpu and x.dtype in _FUNCS and x.is_contiguous() and x.numel() > 0 and not torch.compiler.is_compiling():
        lib = library()
        if lib is not None:
            fwd, bwd = _FUNCS[x.dtype]
            return _TanhGelu.apply(x, getattr(lib, fwd), getattr(lib, bwd))
    return F.gelu(x, approximate="tanh")
