"""GPT: a pre-norm decoder-only Transformer language model (nanoGPT's shape).

Read top to bottom: config -> attention -> MLP -> block -> model. Attention goes through
``torch.nn.functional.scaled_dot_product_attention`` so PyTorch picks the fastest kernel.
Generation goes through :meth:`GPT.step` with a preallocated :class:`KVCache`, so a new
token costs one position of compute, not a re-run of the whole prefix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
from torch.nn import functional as F

from gencraft.config import Limit, Range
from gencraft.models import decode
from gencraft.models.kernels import tanh_gelu
from gencraft.models.linear import Linear


@dataclass
class GPTConfig:
    vocab_size: int = 256
    block_size: int = 256  # longest context the position embedding covers
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False  # biases in Linear/LayerNorm: a little slower, no better (nanoGPT's finding)
    tie_weights: bool = True  # share the token embedding with the output layer
    LIMITS: ClassVar[dict[str, Limit]] = {  # allowed values (gencraft.config.validate); memory is checked apart
        "vocab_size": Range(1, 1 << 22), "block_size": Range(1, 1 << 17), "n_layer": Range(1, 512),
        "n_head": Range(1, 1024), "n_embd": Range(1, 1 << 16), "dropout": Range(0, 1, hi_open=True)}


PRESETS: dict[str, dict] = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, block_size=64),
    "small": dict(n_layer=4, n_head=4, n_embd=192, block_size=128),
    "base": dict(n_layer=6, n_head=6, n_embd=384, block_size=256),
}


class KVCache:
    """Preallocated keys and values for every layer: ``[n_layer, B, n_head, max_len, head_dim]``.

    ``length`` is how many positions are filled. Rows of a batch share ``length``; prompts of
    different lengths are left-padded and ``pad`` (``[B, max_len]`` bool, True = padding) keeps
    attention off the padding. ``offset`` (``[B]``) is each row's number of pad positions, so that
    position embeddings start at 0 for every row's first real token.
    """

    def __init__(self, cfg: GPTConfig, batch_size: int, max_len: int | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.max_len = max_len or cfg.block_size
        hd = cfg.n_embd // cfg.n_head
        shape = (cfg.n_layer, batch_size, cfg.n_head, self.max_len, hd)
        # empty, not zeros: a position is always written (prefill or step) before it is read
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0
        self.pad: torch.Tensor | None = None
        self.offset: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def mask(self, T: int, device: torch.device) -> torch.Tensor:
        """Attention mask for ``T`` new positions: causal, off the padding, but every position
        sees itself (a padding query with nothing to attend to would turn into NaN)."""
        start, end = self.length, self.length + T
        mask = torch.ones(T, end, dtype=torch.bool, device=device).tril(diagonal=start)
        if self.pad is None:
            return mask
        keep = mask & ~self.pad[:, None, None, :end]
        return keep | _diagonal(T, start, end, device)

    def left_pad(self, n_pad: torch.Tensor) -> None:
        """Mark the first ``n_pad[b]`` positions of row ``b`` as padding (call before the first step)."""
        n_pad = n_pad.to(self.k.device)
        self.offset = n_pad
        self.pad = torch.arange(self.max_len, device=self.k.device)[None, :] < n_pad[:, None]

    def set_padding(self, rows: list[int], start: int) -> None:
        """Rows ``rows`` are padding before position ``start`` and real from there on (a row whose
        contents were replaced, or emptied, in a running batch)."""
        if self.pad is None:
            self.pad = torch.zeros(self.batch_size, self.max_len, dtype=torch.bool, device=self.k.device)
            self.offset = torch.zeros(self.batch_size, dtype=torch.long, device=self.k.device)
        idx = torch.tensor(rows, device=self.k.device)
        self.pad[idx] = False
        self.pad[idx, :start] = True
        self.offset[idx] = start  # type: ignore[index]

    def select(self, rows: torch.Tensor) -> KVCache:
        """Keep only ``rows`` of the batch (finished sequences drop out; beams reorder; samples repeat)."""
        new = object.__new__(KVCache)
        new.max_len, new.length = self.max_len, self.length
        # copy only the filled positions: the rest of the new buffers is never read before written
        shape = list(self.k.shape)
        shape[1] = rows.numel()
        new.k, new.v = self.k.new_empty(shape), self.v.new_empty(shape)
        new.k[:, :, :, :self.length] = self.k[:, rows, :, :self.length]
        new.v[:, :, :, :self.length] = self.v[:, rows, :, :self.length]
        new.pad = None if self.pad is None else self.pad[rows]
        new.offset = None if self.offset is None else self.offset[rows]
        return new


def _diagonal(T: int, start: int, end: int, device: torch.device) -> torch.Tensor:
    """``[T, end]`` bool, True where new position i meets itself (column start + i)."""
    d = torch.zeros(T, end, dtype=torch.bool, device=device)
    d[torch.arange(T, device=device), torch.arange(start, end, device=device)] = True
    return d


def _causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float) -> torch.Tensor:
    """Causal attention over whole sequences (training, scoring). On CPU a bf16 batch (autocast) runs
    in float32, outside autocast (which would cast it back): ATen's CPU flash kernel takes ~3.5x longer
    for bf16 than for float32, forward + backward, at nanoGPT's shape (6.7 vs 1.9 ms a layer with the
    casts; docs/performance.md)."""
    if q.is_cpu and (q.dtype == torch.bfloat16 or torch.is_autocast_enabled("cpu")):
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True,
                                                  dropout_p=dropout).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0, "n_embd must be a multiple of n_head"
        self.n_head = cfg.n_head
        self.c_attn = Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # q, k, v in one matmul
        self.c_proj = Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        if cache is not None and T == 1:  # decoding: the one-position path
            return self._decode_one(x, cache, layer)
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is None:  # training / full-sequence scoring: plain causal attention
            y = _causal_attention(q, k, v, self.dropout if self.training else 0.0)
        else:
            start, end = cache.length, cache.length + T
            cache.k[layer, :, :, start:end] = k
            cache.v[layer, :, :, start:end] = v
            k, v = cache.k[layer, :, :, :end], cache.v[layer, :, :, :end]
            if start == 0 and cache.pad is None:  # a prompt into a fresh cache: plain causal attention
                # on the prompt's thread count (its products' tuner): ~7% of a 13.8M prompt on one thread
                y = decode.tuned("prompt", B * T * T * C * 8,
                                 lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
            else:
                mask = cache.mask(T, x.device) if (T > 1 or cache.pad is not None) else None
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def _decode_one(self, x: torch.Tensor, cache: KVCache, layer: int, lo: int = 0) -> torch.Tensor:
        """One new position per row: the generation hot path, with as few ops as we can.

        With one position, ``[B, 3C]`` views straight into q/k/v heads and the attention output
        ``[B, H, 1, hd]`` is already laid out as ``[B, 1, C]``: no transposes, no copies. Left padding
        (``cache.pad``) is masked by hand; ``lo``: no row attends before this position (padding in
        every row), so the keys and values before it are not read.
        """
        B, _, C = x.shape
        mods = self._modules  # not through nn.Module.__getattr__ (see GPT._decode)
        qkv = mods["c_attn"].forward(x).view(B, 3, self.n_head, 1, C // self.n_head)
        pos = cache.length
        cache.k[layer, :, :, pos:pos + 1] = qkv[:, 1]
        cache.v[layer, :, :, pos:pos + 1] = qkv[:, 2]
        q, k, v = qkv[:, 0], cache.k[layer, :, :, lo:pos + 1], cache.v[layer, :, :, lo:pos + 1]
        if q.dtype == torch.float32 and cache.pad is None:
            y = F.scaled_dot_product_attention(q, k, v)
        else:  # ATen's CPU flash kernel is several times slower for one bf16 or masked query (docs/performance.md)
            pad = None if cache.pad is None else cache.pad[:, None, None, lo:pos + 1]

            def attend() -> torch.Tensor:
                att = (q @ k.transpose(-1, -2)).float().mul_(q.shape[-1] ** -0.5)
                if pad is not None:  # left padding of batched prompts (the new position is never padding)
                    att.masked_fill_(pad, float("-inf"))
                return att.softmax(-1).to(v.dtype) @ v

            # a batch's attention reads megabytes of cache: worth both cores when they are free
            y = decode.tuned("attention", 2 * k.numel() * k.element_size(), attend)
        return mods["c_proj"].forward(y.reshape(B, 1, C))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.c_fc = Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.hidden(x)))

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """``gelu(c_fc(x))``: tanh-approximated GELU, GPT-2's activation, so exported weights match HF's
        gelu_new. In a decode session the GELU runs inside the product (oneDNN's post-op: a prompt's
        separate GELU cost ~15% of its up-projection, docs/performance.md)."""
        fc = self.c_fc
        if type(fc) is Linear and not torch.is_grad_enabled() and x.is_cpu:  # not an adapter (LoRALinear)
            s = decode.active()
            if s is not None and s.fast_linear:
                return s.linear(fc, x, gelu=True)
        return tanh_gelu(fc(x))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    kind = "gpt"

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # GPT-2: scale residual projections by 1/sqrt(2 * n_layer) so the residual stream's
        # variance does not grow with depth
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if non_embedding else n

    @property
    def block_size(self) -> int:
        return self.config.block_size

    @property
    def max_context(self) -> int:
        """Longest context generation can attend to (the position embedding's length)."""
        return self.config.block_size

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits for every position ``[B, T, V]`` and, given targets, the mean cross-entropy."""
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than block_size {self.config.block_size}")
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    # ---- the step interface: step(token_ids, cache) -> (logits, cache) ----

    def new_cache(self, batch_size: int, max_len: int | None = None,
                  device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> KVCache:
        p = self.wte.weight
        return KVCache(self.config, batch_size, min(max_len or self.config.block_size, self.config.block_size),
                       device or p.device, dtype or p.dtype)

    def step(self, token_ids: torch.Tensor, cache: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """Feed ``token_ids`` ``[B, T]`` after what ``cache`` holds; return next-token logits ``[B, V]``.

        The first call passes the whole prompt (T >= 1, cache None or empty); later calls pass one
        token each. The caller keeps ``cache.length + T <= cache.max_len`` (sliding the window when
        the context is full). Runs in inference mode (entered here only when the caller has not:
        the decoding loops have, and entering costs more than the check between two decode steps).
        """
        if torch.is_inference_mode_enabled():
            return self._step(token_ids, cache)
        with torch.inference_mode():
            return self._step(token_ids, cache)

    def _step(self, token_ids: torch.Tensor, cache: KVCache | None) -> tuple[torch.Tensor, KVCache]:
        B, T = token_ids.shape
        if cache is None:
            cache = self.new_cache(B)
        if cache.length + T > cache.max_len:
            raise ValueError(f"KV cache full: {cache.length} + {T} > {cache.max_len}")
        if T == 1 and not self.training:  # decoding: one position
            session = decode.active()
            if session is not None:  # the C step (one row, or a batch's rows), when built
                logits = session.native_step(self, token_ids, cache)
                if logits is not None:
                    return logits, cache
            if cache.offset is None:
                x = self.wte(token_ids) + self.wpe.weight[cache.length]
            else:  # left padding: each row's positions start at its first real token
                x = self.wte(token_ids) + self.wpe((cache.length - cache.offset).clamp_(min=0))[:, None]
            return self._decode(x, cache), cache
        if T == 1 and cache.offset is None:  # no index tensor to build
            x = self.wte(token_ids) + self.wpe.weight[cache.length]
        else:
            pos = torch.arange(cache.length, cache.length + T, device=token_ids.device)
            if cache.offset is not None:  # left padding: each row's positions start at its first real token
                pos = (pos[None, :] - cache.offset[:, None]).clamp_(min=0)
            x = self.wte(token_ids) + self.wpe(pos)
        for i, block in enumerate(self.h):
            x = block(x, cache, i)
        cache.length += T
        return self.lm_head(self.ln_f(x[:, -1])).float(), cache  # sampling works in float32

    def _decode(self, x: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """:meth:`step` for one new position per row: the blocks' math with plain calls.

        The same computation as ``Block.forward``; it skips ``nn.Module.__call__`` (hooks, dispatch),
        which costs a few microseconds per call (docs/performance.md).
        """
        lo = 0 if cache.offset is None else int(cache.offset.min())  # the padding every row has
        # submodules and parameters read from their dicts, not through nn.Module.__getattr__ (slow, and
        # ~150 lookups a step: docs/performance.md): always the current ones, just without the slow path
        for i, block in enumerate(self.h):
            mods = block._modules
            ln_1, ln_2, mlp = mods["ln_1"], mods["ln_2"], mods["mlp"]
            p1, p2, mm = ln_1._parameters, ln_2._parameters, mlp._modules
            h = F.layer_norm(x, ln_1.normalized_shape, p1["weight"], p1.get("bias"), ln_1.eps)
            x = x + mods["attn"]._decode_one(h, cache, i, lo)
            h = F.layer_norm(x, ln_2.normalized_shape, p2["weight"], p2.get("bias"), ln_2.eps)
            x = x + mm["c_proj"].forward(mlp.hidden(h))
        cache.length += 1
        ln_f = self.ln_f
        x = F.layer_norm(x[:, -1], ln_f.normalized_shape, ln_f.weight, ln_f.bias, ln_f.eps)
        return self.lm_head.forward(x).float()
