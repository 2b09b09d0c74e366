"""LoRA for gencraft's own models: low-rank adapters on the GPT's linear layers and the LSTM's matrices.

LoRA (Hu et al., 2021) freezes a weight ``W [out, in]`` and learns ``delta W = (alpha / r) * B @ A``
with ``A [r, in]`` (random) and ``B [out, r]`` (zeros, so training starts from the base model).
Hugging Face bases get their adapters from ``peft`` (``gencraft.train.lora``); gencraft's GPT and
LSTM get them from this file, for three reasons that follow from how these models run:

- the GPT's decode paths call a layer's ``forward`` directly (``GPT._decode``), and its batch-1 C
  step reads ``weight`` in place (``models/native.py``): an adapter must live *in* the layer
  (:class:`LoRALinear` is a ``Linear`` that adds its low-rank path), and the C step must know that
  it cannot decode an unmerged adapter (:func:`has_unmerged`);
- an LSTM's recurrent matrices live inside ``nn.LSTM``, where ``peft`` has no layer to wrap:
  :class:`LoRALSTM` adds ``delta W`` to them once per call (one product per sequence, not per step);
- serving several adapters on one base batches their rows together (S-LoRA/punica): a
  :class:`LoRALinear` can hold a bank of adapters and apply, row by row, the one each row asked for
  (:func:`set_rows`), with gathered batched products in PyTorch; :class:`BankRow` is one adapter of a
  bank as a step model of its own.

Parameter names follow ``peft`` (``NAME.lora_A.weight`` ``[r, in]``, ``NAME.lora_B.weight`` ``[out, r]``),
and the frozen base keeps its own names, so a base checkpoint loads into an adapted model unchanged.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any

import torch
import torch.nn as nn
from torch.nn import functional as F

from gencraft.models.linear import Linear


class LoRALinear(Linear):
    """A ``Linear`` whose frozen ``weight``/``bias`` are the base layer's, plus ``scale * B(A(x))``.

    ``bank``: optional stacked adapters ``(A [N, r, in], B [N, out, r], scale [N])`` (:func:`load_bank`)
    for batches that mix adapters: within :func:`set_rows` row ``i`` adds adapter ``rows[i]`` (0 = the
    base alone); outside it a layer with a bank is the base layer alone.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
        self.weight = base.weight  # shared, not copied: the base layer's parameters stay the base's
        self.bias = base.bias
        self.lora_A = nn.Linear(base.in_features, r, bias=False, device=base.weight.device)
        self.lora_B = nn.Linear(r, base.out_features, bias=False, device=base.weight.device)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # as nn.Linear and peft do
        nn.init.zeros_(self.lora_B.weight)
        self.r, self.alpha, self.scale = r, alpha, alpha / r
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.bank: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.off = False  # the base layer alone (see disabled())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if self.off:
            return y
        if self.bank is not None:
            rows = _ROWS.get()
            return y if rows is None else y + _per_row(x, self.bank, rows).to(y.dtype)
        a, b = self.lora_A.weight, self.lora_B.weight
        return y + F.linear(F.linear(self.lora_dropout(x), a.to(x.dtype)), b.to(x.dtype)) * self.scale

    def delta(self) -> torch.Tensor:
        """``scale * B @ A``, shaped like ``weight``."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scale


def _per_row(x: torch.Tensor, bank: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
             rows: torch.Tensor) -> torch.Tensor:
    """Row ``i`` of ``x`` ``[B, T, in]`` through adapter ``rows[i]`` of the bank: two gathered batched
    products (punica's BGMV, in PyTorch). Adapter 0 is all zeros, so a base row adds nothing."""
    A, B, scale = bank
    x3 = x if x.dim() == 3 else x.unsqueeze(1)
    h = torch.bmm(x3.to(A.dtype), A[rows].transpose(1, 2))  # [B, T, r]
    out = torch.bmm(h, B[rows].transpose(1, 2)) * scale[rows][:, None, None]  # [B, T, out]
    return out if x.dim() == 3 else out.squeeze(1)


class LoRALSTM(nn.Module):
    """An ``nn.LSTM`` (``.lstm``, frozen) whose input and recurrent matrices get low-rank updates.

    The LSTM kernel takes whole matrices, so the update is added to them once per call
    (``W + scale * B @ A``, through ``torch.func.functional_call``) rather than per time step.
    There is no LoRA dropout here: it acts on a layer's input, and the kernel's input is not ours.
    """

    def __init__(self, lstm: nn.LSTM, r: int, alpha: float) -> None:
        super().__init__()
        self.lstm = lstm
        self.r, self.alpha, self.scale = r, alpha, alpha / r
        self.names = [n for n, _ in lstm.named_parameters() if n.startswith(("weight_ih", "weight_hh"))]
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        for n in self.names:
            w = getattr(lstm, n)
            a = torch.empty(r, w.shape[1], device=w.device)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            self.lora_A[n] = nn.Parameter(a)
            self.lora_B[n] = nn.Parameter(torch.zeros(w.shape[0], r, device=w.device))
        self.off = False

    def delta(self, name: str) -> torch.Tensor:
        return (self.lora_B[name] @ self.lora_A[name]) * self.scale

    def forward(self, x, state=None):
        if self.off:
            return self.lstm(x, state)
        weights = {n: getattr(self.lstm, n) + self.delta(n).to(getattr(self.lstm, n).dtype) for n in self.names}
        return torch.func.functional_call(self.lstm, weights, (x, state))


def modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The adapted layers of ``model`` with their qualified names."""
    for name, m in model.named_modules():
        if isinstance(m, LoRALinear | LoRALSTM):
            yield name, m


def has_unmerged(model: nn.Module) -> bool:
    """Whether ``model`` holds adapters that are not merged into its weights (the C step cannot run it)."""
    return bool(getattr(model, "_lora_unmerged", False))


@contextmanager
def disabled(model: nn.Module) -> Iterator[None]:
    """Within the block ``model`` runs as its base alone (every adapter switched off)."""
    layers = [m for _, m in modules(model)]
    for m in layers:
        m.off = True
    try:
        yield
    finally:
        for m in layers:
            m.off = False


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def inject(model: nn.Module, targets: list[str], r: int, alpha: float, dropout: float = 0.0) -> list[str]:
    """Put adapters on the layers named ``targets`` (qualified names), freeze everything else.

    Returns the adapted names. The model's own parameters keep their names and values.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    for name in targets:
        layer = model.get_submodule(name)
        if isinstance(layer, nn.LSTM):
            _replace(model, name, LoRALSTM(layer, r, alpha))
        elif isinstance(layer, nn.Linear):
            _replace(model, name, LoRALinear(layer, r, alpha, dropout))
        else:
            raise TypeError(f"{name}: a {type(layer).__name__}, not a layer LoRA can adapt")
    model._lora_unmerged = True
    return list(targets)


def merge(model: nn.Module) -> nn.Module:
    """Add every adapter's ``delta W`` into its base weights and put the plain layers back (in place).

    The result is an ordinary model of the base's family: the same forward, the C decode step, export.
    """
    with torch.no_grad():
        for name, m in list(modules(model)):
            if isinstance(m, LoRALinear):
                plain = Linear(m.in_features, m.out_features, bias=m.bias is not None, device="meta")
                plain.weight, plain.bias = m.weight, m.bias
                plain.weight.add_(m.delta().to(plain.weight.dtype))
                _replace(model, name, plain)
            else:
                for n in m.names:
                    getattr(m.lstm, n).add_(m.delta(n).to(getattr(m.lstm, n).dtype))
                _replace(model, name, m.lstm)
    model._lora_unmerged = False
    return model


def adapter_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' parameters under ``NAME.lora_A.weight`` / ``NAME.lora_B.weight`` (LSTM:
    ``NAME.weight_ih_l0.lora_A.weight``...)."""
    out: dict[str, torch.Tensor] = {}
    for name, m in modules(model):
        pairs = ([("", m.lora_A.weight, m.lora_B.weight)] if isinstance(m, LoRALinear)
                 else [(f".{n}", m.lora_A[n], m.lora_B[n]) for n in m.names])
        for sub, a, b in pairs:
            out[f"{name}{sub}.lora_A.weight"] = a
            out[f"{name}{sub}.lora_B.weight"] = b
    return out


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' tensors only (:func:`adapter_parameters`), detached, on the CPU."""
    return {k: v.detach().to("cpu").contiguous() for k, v in adapter_parameters(model).items()}


def load_adapter_state_dict(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy ``tensors`` (from :func:`adapter_state_dict`) into the injected adapters; KeyError/ValueError
    when they do not fit."""
    own = adapter_parameters(model)
    if set(own) != set(tensors):
        missing = sorted(set(own) - set(tensors))[:2]
        extra = sorted(set(tensors) - set(own))[:2]
        raise KeyError(f"adapter tensors do not match the model (missing {missing}, unexpected {extra})")
    with torch.no_grad():
        for k, p in own.items():
            if p.shape != tensors[k].shape:
                raise ValueError(f"{k}: shape {tuple(tensors[k].shape)}, the model needs {tuple(p.shape)}")
            p.copy_(tensors[k])


# ---- several adapters on one base, batched together (the server's scheduler) ----

# The rows' adapter indices of the forward pass running in this thread (a context variable, not a layer
# attribute: the server's scheduler thread and a kit's generation thread may run one banked model at once).
_ROWS: ContextVar[torch.Tensor | None] = ContextVar("gencraft_lora_rows", default=None)


def load_bank(model: nn.Module, adapters: list[dict[str, torch.Tensor]], scales: list[float]) -> None:
    """Stack ``adapters`` (each an :func:`adapter_state_dict` of this base) into every adapted layer's bank.

    Adapter ``i`` gets index ``i + 1``; index 0 is the base alone. Layers an adapter names that are still
    plain ``Linear`` layers become :class:`LoRALinear` first (the bank covers the union of the adapters'
    layers). Ranks may differ: each adapter is zero-padded to the largest (the extra rows and columns add
    nothing). Callable again with a longer list: the indices of the adapters already there stay.
    """
    suffix = ".lora_A.weight"
    wanted = sorted({k[:-len(suffix)] for a in adapters for k in a if k.endswith(suffix)})
    plain = [n for n in wanted if not isinstance(model.get_submodule(n), LoRALinear)]
    if plain:
        inject(model, plain, r=1, alpha=1.0)  # own matrices unused: a layer with a bank reads the bank
    layers = {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}
    r_max = max([t.shape[0] for a in adapters for k, t in a.items() if k.endswith(suffix)] or [1])
    for name, m in layers.items():
        p = m.weight
        A = torch.zeros(len(adapters) + 1, r_max, m.in_features, dtype=torch.float32, device=p.device)
        B = torch.zeros(len(adapters) + 1, m.out_features, r_max, dtype=torch.float32, device=p.device)
        scale = torch.zeros(len(adapters) + 1, dtype=torch.float32, device=p.device)
        for i, (ad, s) in enumerate(zip(adapters, scales, strict=True), start=1):
            a, b = ad.get(f"{name}.lora_A.weight"), ad.get(f"{name}.lora_B.weight")
            if a is None or b is None:  # this adapter leaves the layer alone
                continue
            if a.shape[1] != m.in_features or b.shape[0] != m.out_features or a.shape[0] != b.shape[1]:
                raise ValueError(f"{name}: adapter {i} has A {tuple(a.shape)} and B {tuple(b.shape)}, the layer is "
                                 f"{m.in_features} -> {m.out_features}")
            A[i, :a.shape[0]] = a
            B[i, :, :b.shape[1]] = b
            scale[i] = s
        m.bank = (A, B, scale)  # one assignment: a forward running in another thread sees old or new
    model._lora_unmerged = True


@contextmanager
def set_rows(rows: torch.Tensor | None) -> Iterator[None]:
    """Within the block (in this thread), row ``i`` of every batch a banked model computes goes through
    bank adapter ``rows[i]`` (0 = the base); ``None``: every row the base alone."""
    token = _ROWS.set(rows)
    try:
        yield
    finally:
        _ROWS.reset(token)


class BankRow:
    """Adapter ``index`` of a banked model as a step model of its own: every row of every call goes
    through that adapter (what a kit or the engine gets for a served adapter). Anything else is the
    banked model's. ``lock``: held around each call (the one the server's scheduler holds per step,
    so the bank never changes under a call)."""

    def __init__(self, model: nn.Module, index: int, lock: threading.Lock | None = None) -> None:
        self.model, self.index = model, index
        self._lock: AbstractContextManager[Any] = lock if lock is not None else nullcontext()

    def _rows(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.full((ids.shape[0],), self.index, dtype=torch.long, device=ids.device)

    def step(self, token_ids: torch.Tensor, cache: Any = None) -> Any:
        with self._lock, set_rows(self._rows(token_ids)):
            return self.model.step(token_ids, cache)

    def __call__(self, idx: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        with self._lock, set_rows(self._rows(idx)):
            return self.model(idx, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def __repr__(self) -> str:
        return f"BankRow({type(self.model).__name__}, adapter {self.index})"
