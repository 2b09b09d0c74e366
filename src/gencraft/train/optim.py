"""AdamW with decoupled weight decay on matrices only, and the warmup + cosine schedule."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from gencraft.train.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weight matrices decay; norms, biases and embeddings do not.

    Embeddings are found by module type (a tied output layer shares the embedding's tensor,
    so it does not decay either); everything else with two or more dimensions decays.
    """
    no_decay: set[int] = set()
    for m in model.modules():
        if isinstance(m, (nn.Embedding, nn.LayerNorm)):
            no_decay.update(id(p) for p in m.parameters(recurse=False))
    decay, keep = [], []
    seen: set[int] = set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (keep if id(p) in no_decay or p.dim() < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, tc: TrainConfig, device_type: str) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; the fused kernel (one pass over all parameters) on CPU and CUDA."""
    groups = param_groups(model, tc.weight_decay)
    fused = device_type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=tc.learning_rate, betas=(tc.beta1, tc.beta2), fused=fused)


def lr_at(step: int, tc: TrainConfig, time_fraction: float = 0.0) -> float:
    """Learning rate for optimizer step ``step``: linear warmup, then cosine decay to ``min_lr``.

    ``time_fraction`` (elapsed / max_time) lets a wall-clock budget drive the decay: the schedule
    follows whichever of the step and time budgets is further along, so a run stopped by
    ``max_time`` still ends at ``min_lr`` instead of mid-schedule.
    """
    if step < tc.warmup_iters:
        return tc.learning_rate * (step + 1) / (tc.warmup_iters + 1)
    decay_iters = tc.lr_decay_iters or tc.max_iters
    span = max(decay_iters - tc.warmup_iters, 1)
    progress = max((step - tc.warmup_iters) / span, time_fraction)
    if progress >= 1.0:
        return tc.min_lr
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))
    return tc.min_lr + coeff * (tc.learning_rate - tc.min_lr)
