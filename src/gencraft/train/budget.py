"""A preference adapter's corpus-loss budget: scale the adapter down until the run still writes like its corpus.

DPO's ``beta`` anchors the policy to the reference only through the preference pairs' log-ratios: on
text the pairs never cover, nothing stops the tuned model from drifting, and a few dozen steps on
a few hundred pairs can raise the loss on the model's own corpus by tens of percent (bench/RESULTS.md,
"Personalization"). A person who tuned their ads model wants it to still write their ads.

So after training, :func:`fit_budget` measures the loss on the corpus the tuned run was trained on
(its train split: the held-out split stays for judging the result) with the adapter on and off,
and, when the rise is over the budget, scales the adapter's update ``delta W`` by the largest
``s`` in ``[0, 1]`` that keeps it within (bisection; the loss grows with ``s`` near 0). Scaling the
low-rank update interpolates in weight space between the reference and the tuned model, as
WiSE-FT (Wortsman et al., 2022) does between a model and its fine-tune: the preference is kept in
proportion, the drift is cut. The scaled adapter replaces the run's file (``lora_B`` times ``s``, in
gencraft's and peft's layouts alike), and ``gencraft.json`` records what was measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from gencraft.io import atomic_path
from gencraft.runs import read_info, sha256_file, write_info
from gencraft.train.data import load_dataset
from gencraft.train.dpo import adapters_off
from gencraft.train.evaluate import split_loss
from gencraft.train.lora import GENCRAFT_FILE, load_model

MAX_TOKENS = 65_536  # of the corpus's train split, in evenly spaced windows: enough for a stable mean
STEPS = 8  # bisection steps: s to within 1/256


def corpus_sample(train: Any, block: int, max_tokens: int = MAX_TOKENS) -> np.ndarray:
    """Up to ``max_tokens`` of a train split, as evenly spaced windows of ``block + 1`` tokens, joined."""
    n = len(train)
    if n <= max_tokens:
        return np.asarray(train[:])
    k = max(1, max_tokens // (block + 1))
    starts = np.linspace(0, n - block - 1, k).astype(np.int64)
    return np.concatenate([np.asarray(train[s:s + block + 1]) for s in starts])


def _scale_b(model: torch.nn.Module, factor: float) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(factor)


def fit_budget(run: Path, corpus: str | Path, budget: float) -> dict[str, Any]:
    """Keep the corpus loss of the preference adapter ``run`` within ``(1 + budget)`` times the reference's.

    ``corpus``: the dataset the reference (the tuned run's base) was trained on. Returns (and records
    in ``gencraft.json`` under ``adapter.budget``) ``{"max_rise", "corpus", "tokens", "reference",
    "tuned", "scale", "fitted"}``: losses in nats/token on the corpus sample, ``scale`` = the ``s``
    applied (1.0: within budget as trained).
    """
    path, info = read_info(run)
    model = load_model(path, info, merge=False).eval()
    ds = load_dataset(corpus)
    data = corpus_sample(ds.train, model.config.block_size)

    def loss() -> float:
        return split_loss(model, data, model.config.block_size)[0]

    with adapters_off(model):
        ref = loss()
    tuned = loss()
    limit = ref * (1 + budget)
    scale, fitted = 1.0, tuned
    if tuned > limit:
        lo, hi, cur = 0.0, 1.0, 1.0  # the largest s with loss(s) <= limit lies in [lo, hi)
        fitted = ref
        for _ in range(STEPS):
            mid = (lo + hi) / 2
            _scale_b(model, mid / cur)
            cur = mid
            value = loss()
            if value <= limit:
                lo, fitted = mid, value
            else:
                hi = mid
        scale = lo
        _rewrite_adapter(path, info, scale)
    rec = {"max_rise": budget, "corpus": str(ds.path), "tokens": int(len(data)), "reference": ref,
           "tuned": tuned, "scale": scale, "fitted": fitted}
    info = read_info(path)[1]
    info["adapter"]["budget"] = rec
    if scale < 1.0:
        info["model_digest"] = sha256_file(path / info["adapter"].get("file", GENCRAFT_FILE))
    write_info(path, info)
    return rec


def _rewrite_adapter(path: Path, info: dict[str, Any], scale: float) -> None:
    """The adapter file with every ``lora_B`` tensor times ``scale`` (written atomically)."""
    f = path / info["adapter"].get("file", GENCRAFT_FILE)
    tensors = load_file(str(f))
    out = {k: (v * scale).contiguous() if "lora_B" in k else v for k, v in tensors.items()}
    with atomic_path(f) as tmp:
        save_file(out, str(tmp), metadata={"format": "pt"})


__all__ = ["corpus_sample", "fit_budget"]
