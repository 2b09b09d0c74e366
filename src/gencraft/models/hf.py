"""A Hugging Face causal LM as a gencraft training model: ``forward(idx, targets) -> (logits, loss)``.

Fine-tuning a local Hugging Face model (``gencraft train DATASET --from hf:PATH``) goes through the
same training loop as gencraft's own GPT and LSTM, so the loop only needs what they give: a config
dataclass with ``vocab_size`` and ``block_size`` (the training window) and a forward pass that
returns the mean next-token cross-entropy. The architecture itself is the ``transformers`` one,
rebuilt from its ``config.json`` (kept whole in :attr:`HFConfig.hf_config`), never from remote code.

The run directory of such a model is also a Hugging Face folder (``config.json`` and
``model.safetensors`` under ``transformers``' own parameter names), so ``from_pretrained(RUN)``
loads it as it is.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch.nn import functional as F

from gencraft.errors import RunError
from gencraft.models.linear import use_fast_linear

PRESETS: dict[str, dict] = {}  # no size presets: the shape is the base model's


@dataclass
class HFConfig:
    hf_config: dict[str, Any] = field(default_factory=dict)  # the model's config.json
    vocab_size: int = 0  # rows of the output layer
    block_size: int = 256  # training window; at most the model's position limit
    max_positions: int = 0  # the model's position limit (0 = none, e.g. rotary without a limit)
    dropout: float = 0.0  # not used: dropout is the base config's (resid_pdrop, attention_dropout...)


def positions_limit(hf_config: dict[str, Any]) -> int:
    """The longest sequence a model's config allows (0 = no stated limit)."""
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        if isinstance(hf_config.get(key), int) and hf_config[key] > 0:
            return int(hf_config[key])
    return 0


def transformers_config(hf_config: dict[str, Any]) -> Any:
    """A ``transformers`` config object from a ``config.json`` dict (no remote code)."""
    from transformers import AutoConfig

    cfg = dict(hf_config)
    model_type = cfg.pop("model_type")
    for key in ("transformers_version", "_name_or_path", "architectures", "torch_dtype", "dtype"):
        cfg.pop(key, None)
    return AutoConfig.for_model(model_type, **cfg)


class HFCache:
    """``past_key_values`` plus the attention mask and positions of left-padded rows."""

    def __init__(self, batch_size: int, device: torch.device) -> None:
        self.pkv: Any = None
        self.length = 0
        self.batch = batch_size
        self.device = device
        self.attn: torch.Tensor | None = None  # [B, length] 1 = real token, 0 = padding; None = no padding
        self.n_pad: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.batch

    def left_pad(self, n_pad: torch.Tensor) -> None:
        """Row ``b``'s first ``n_pad[b]`` tokens of the first step are padding."""
        self.n_pad = n_pad.to(self.device)

    def select(self, rows: torch.Tensor) -> HFCache:
        """Keep/reorder/repeat ``rows``. The old cache must not be used afterwards (shared storage)."""
        new = HFCache(rows.numel(), self.device)
        new.length = self.length
        if self.pkv is not None:
            self.pkv.reorder_cache(rows.to(self.device))
        new.pkv = self.pkv
        new.attn = None if self.attn is None else self.attn[rows]
        new.n_pad = None if self.n_pad is None else self.n_pad[rows]
        return new


class HFStepModel:
    """A Hugging Face causal LM with gencraft's ``step``/``new_cache``."""

    def __init__(self, hf_model: Any) -> None:
        self.hf = use_fast_linear(hf_model)  # nn.Linear layers (Llama & co.) get the CPU decoding path
        cfg = hf_model.config
        self.config = cfg
        self.max_context: int | None = (getattr(cfg, "max_position_embeddings", None)
                                        or getattr(cfg, "n_positions", None))
        self.vocab_size = hf_model.get_output_embeddings().weight.shape[0]
        # transformers renamed past_key_values to cache (5.x); speak whichever this version knows
        self._cache_kw = "cache" if "cache" in inspect.signature(hf_model.forward).parameters else "past_key_values"

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    def parameters(self):
        return self.hf.parameters()

    def new_cache(self, batch_size: int, max_len: int | None = None, device: Any = None, dtype: Any = None) -> HFCache:
        return HFCache(batch_size, torch.device(device) if device else self.device)

    @torch.inference_mode()
    def step(self, token_ids: torch.Tensor, cache: HFCache | None = None) -> tuple[torch.Tensor, HFCache]:
        """Feed ``token_ids`` ``[B, T]`` after the cache; return next-token logits ``[B, V]`` (float32)."""
        B, T = token_ids.shape
        if cache is None:
            cache = self.new_cache(B)
        kwargs: dict[str, Any] = {}
        if cache.attn is None and cache.n_pad is not None and cache.length == 0:
            cache.attn = (torch.arange(T, device=cache.device)[None, :] >= cache.n_pad[:, None]).long()
        elif cache.attn is not None:
            cache.attn = torch.cat([cache.attn, cache.attn.new_ones(B, T)], dim=1)
        if cache.attn is not None:
            kwargs["attention_mask"] = cache.attn
            kwargs["position_ids"] = (cache.attn.cumsum(-1) - 1).clamp_(min=0)[:, -T:]
        kwargs[self._cache_kw] = cache.pkv
        out = self.hf(input_ids=token_ids, use_cache=True, logits_to_keep=1, **kwargs)
        cache.pkv = out.cache if self._cache_kw == "cache" else out.past_key_values
        cache.length += T
        return out.logits[:, -1].float(), cache


def _from_config(cfg: HFConfig) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(transformers_config(cfg.hf_config))


def load_pretrained(folder: str | os.PathLike[str]) -> Any:
    """A local folder's model in float32: safetensors only, no remote code, no network."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per load of a tiny local file says nothing
    try:
        return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True,
                                                    trust_remote_code=False, use_safetensors=True)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise RunError(f"{folder}: cannot load the model ({str(e).splitlines()[0] if str(e) else e}); "
                       "the weights are corrupted or do not match config.json", param="from") from None


class HFCausalLM(nn.Module):
    """A ``transformers`` causal LM (``.hf``) with gencraft's training forward."""

    kind = "hf"

    def __init__(self, cfg: HFConfig, load_from: str | os.PathLike[str] | None = None) -> None:
        """Random weights from ``cfg``, or the trained ones of the folder ``load_from``."""
        super().__init__()
        self.config = cfg
        self.hf = load_pretrained(load_from) if load_from is not None else _from_config(cfg)

    @property
    def block_size(self) -> int:
        return self.config.block_size

    @property
    def max_context(self) -> int | None:
        return self.config.max_positions or None

    # the step interface (samples during training, evaluation), through the same wrapper generation uses
    def _stepper(self) -> Any:
        hit = self.__dict__.get("_step_model")
        if hit is None or hit.hf is not self.hf:
            hit = self.__dict__["_step_model"] = HFStepModel(self.hf)
        return hit

    def new_cache(self, batch_size: int, max_len: int | None = None, device: Any = None, dtype: Any = None) -> Any:
        return self._stepper().new_cache(batch_size, max_len, device, dtype)

    def step(self, token_ids: torch.Tensor, cache: Any = None) -> tuple[torch.Tensor, Any]:
        return self._stepper().step(token_ids, cache)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``[B, T, V]`` and, given targets (``-1`` = ignore), the mean cross-entropy."""
        logits = self.hf(input_ids=idx, use_cache=False).logits
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                                   ignore_index=-1)
        return logits, loss
