"""LSTM language model: embedding -> stacked LSTM -> output layer.

The classic recurrent baseline (Zaremba et al., 2014; Merity et al., 2017): dropout between
layers and on the embedding, optional tying of input and output embeddings (which needs a
projection when the hidden size differs from the embedding size). Generation goes through
:meth:`LSTMLM.step`, whose cache is the ``(h, c)`` hidden state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
from torch.nn import functional as F

from gencraft.config import Limit, Range
from gencraft.models.linear import Linear


@dataclass
class LSTMConfig:
    vocab_size: int = 256
    block_size: int = 128  # length of the training windows (truncated BPTT); generation is unbounded
    n_embd: int = 128
    n_hidden: int = 256
    n_layer: int = 2
    dropout: float = 0.1
    tie_weights: bool = True
    LIMITS: ClassVar[dict[str, Limit]] = {  # allowed values (gencraft.config.validate); memory is checked apart
        "vocab_size": Range(1, 1 << 22), "block_size": Range(1, 1 << 17), "n_embd": Range(1, 1 << 16),
        "n_hidden": Range(1, 1 << 16), "n_layer": Range(1, 64), "dropout": Range(0, 1, hi_open=True)}


PRESETS: dict[str, dict] = {
    "tiny": dict(n_embd=64, n_hidden=128, n_layer=1, block_size=64),
    "small": dict(n_embd=192, n_hidden=512, n_layer=2, block_size=128),
    "base": dict(n_embd=384, n_hidden=1024, n_layer=3, block_size=256),
}


class LSTMState:
    """The step cache of an LSTM: hidden and cell state ``[n_layer, B, n_hidden]``."""

    def __init__(self, h: torch.Tensor, c: torch.Tensor) -> None:
        self.h, self.c = h, c
        self.length = 0
        self.n_pad: torch.Tensor | None = None  # left padding of the first step, skipped

    def left_pad(self, n_pad: torch.Tensor) -> None:
        """Row ``b``'s first ``n_pad[b]`` tokens of the next step are padding: its state starts after them."""
        self.n_pad = n_pad

    @property
    def batch_size(self) -> int:
        return self.h.shape[1]

    def select(self, rows: torch.Tensor) -> LSTMState:
        new = LSTMState(self.h[:, rows], self.c[:, rows])
        new.length = self.length
        new.n_pad = None if self.n_pad is None else self.n_pad[rows]
        return new


class LSTMLM(nn.Module):
    kind = "lstm"

    def __init__(self, cfg: LSTMConfig) -> None:
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.lstm = nn.LSTM(cfg.n_embd, cfg.n_hidden, num_layers=cfg.n_layer, batch_first=True,
                            dropout=cfg.dropout if cfg.n_layer > 1 else 0.0)
        # project hidden -> embedding width so the output layer can share the embedding matrix
        self.proj = Linear(cfg.n_hidden, cfg.n_embd, bias=False) if cfg.n_hidden != cfg.n_embd else nn.Identity()
        self.lm_head = Linear(cfg.n_embd, cfg.vocab_size, bias=True)
        if cfg.tie_weights:
            self.lm_head.weight = self.wte.weight
        # A tied matrix is also the output layer, so it starts small; an untied input embedding starts
        # at N(0, 1) (nn.Embedding's default). Measured on tinyshakespeare: with std 0.02 a char LSTM
        # sits on the unigram plateau (loss ~3.3) for hundreds of steps; untied N(0, 1) leaves it at once.
        nn.init.normal_(self.wte.weight, std=0.1 if cfg.tie_weights else 1.0)
        nn.init.zeros_(self.lm_head.bias)

    @property
    def block_size(self) -> int:
        return self.config.block_size

    max_context = None  # a recurrent state has no context limit

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.wte.weight.numel() if non_embedding else n

    def _run(self, idx: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None):
        x = self.drop(self.wte(idx))
        y, state = self.lstm(x, state)
        return self.lm_head(self.proj(self.drop(y))), state

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits, _ = self._run(idx, None)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    # ---- the step interface ----

    def new_cache(self, batch_size: int, max_len: int | None = None,
                  device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> LSTMState:
        p = self.wte.weight
        shape = (self.config.n_layer, batch_size, self.config.n_hidden)
        z = torch.zeros(shape, device=device or p.device, dtype=dtype or p.dtype)
        return LSTMState(z, z.clone())

    @torch.inference_mode()
    def step(self, token_ids: torch.Tensor, cache: LSTMState | None = None) -> tuple[torch.Tensor, LSTMState]:
        """Feed ``token_ids`` ``[B, T]``; return next-token logits ``[B, V]`` and the new state."""
        B, T = token_ids.shape
        if cache is None:
            cache = self.new_cache(B)
        if cache.n_pad is not None and bool(cache.n_pad.any()):
            # left-padded prompts: shift each row to the left and run a packed sequence, so the
            # state of every row sees its real tokens only and stops at its last one
            n_pad = cache.n_pad.to(token_ids.device)
            lengths = T - n_pad
            idx = (torch.arange(T, device=token_ids.device)[None, :] + n_pad[:, None]).clamp_(max=T - 1)
            x = self.drop(self.wte(token_ids.gather(1, idx)))
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            y, (h, c) = self.lstm(packed, (cache.h, cache.c))
            y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=T)
            last = y[torch.arange(B, device=y.device), lengths - 1]
            logits = self.lm_head(self.proj(last))
        else:
            y, (h, c) = self.lstm(self.drop(self.wte(token_ids)), (cache.h, cache.c))
            logits = self.lm_head(self.proj(y[:, -1]))  # only the last position is needed
        new = LSTMState(h, c)
        new.length = cache.length + T
        return logits, new
