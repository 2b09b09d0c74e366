"""``Linear``: ``nn.Linear`` that decodes through the CPU's fast products inside a decode session.

A batch-1 decode step multiplies every weight matrix by one row, so it costs one pass over the
weights and is bound by how fast the CPU streams them from memory; PyTorch's default float32
product does not reach that rate on every CPU (docs/performance.md). Inside an active
:class:`~gencraft.models.decode.DecodeSession` (the engine and the server's scheduler enter one) and
without autograd, the product goes through the session's fast path: numpy's BLAS for float32,
oneDNN with the weight packed once for batched rows and bfloat16. Training, autograd and
everything outside a session use ``F.linear``; the parameters and the state dict are
``nn.Linear``'s.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from gencraft.models.decode import active


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state dict) that decodes through the fast CPU path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = active()
        if s is not None and s.fast_linear and x.is_cpu and not torch.is_grad_enabled():
            return s.linear(self, x)
        return F.linear(x, self.weight, self.bias)


def use_fast_linear(model: nn.Module) -> nn.Module:
    """Give every plain ``nn.Linear`` of ``model`` (e.g. a Hugging Face model) the fast path, in place,
    and the float32 path to ``transformers``' GPT-2-style ``Conv1D`` (``x @ W + b``, W ``[in, out]``).

    Only the class changes: parameters, buffers, hooks and the state dict stay as they are.
    """
    for m in model.modules():
        if type(m) is nn.Linear:
            m.__class__ = Linear
        elif type(m).__name__ == "Conv1D" and getattr(m, "weight", None) is not None and hasattr(m, "nf"):
            m.__class__ = _fast_conv1d(type(m))
    return model


_conv1d_classes: dict[type, type] = {}


def _fast_conv1d(cls: type) -> type:
    """A subclass of ``transformers``' Conv1D whose forward takes the fast path while decoding."""
    fast = _conv1d_classes.get(cls)
    if fast is None:
        def forward(self: Any, x: torch.Tensor) -> torch.Tensor:
            s = active()
            if (s is not None and s.fast_linear and x.is_cpu and not torch.is_grad_enabled()
                    and x.dtype == torch.float32 and self.weight.dtype == torch.float32):
                return s.linear(self, x, out_in=False)
            return cls.forward(self, x)

        fast = _conv1d_classes[cls] = type(f"Fast{cls.__name__}", (cls,), {"forward": forward})
    return fast


__all__ = ["Linear", "use_fast_linear"]
