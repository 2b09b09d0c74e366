"""``gencraft evaluate RUN [--data DATASET]``: loss, perplexity and bits per character on a whole val split."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from gencraft.errors import DataError
from gencraft.runs import load_text_model, read_info
from gencraft.train.common import pick_device
from gencraft.train.data import load_dataset
from gencraft.train.lora import load_model


@torch.no_grad()
def split_loss(model: torch.nn.Module, data: np.ndarray, block_size: int, batch_size: int = 32,
               device: torch.device | str = "cpu") -> tuple[float, int]:
    """Mean next-token cross-entropy over all of ``data``, in consecutive windows of ``block_size``.

    Returns ``(mean loss in nats/token, number of predicted tokens)``; every token after the first
    is predicted exactly once (the last window may be shorter).
    """
    n = len(data) - 1
    if n < 1:
        return float("nan"), 0
    starts = list(range(0, n, block_size))
    total, count = 0.0, 0
    full = [s for s in starts if s + block_size <= n]
    for i in range(0, len(full), batch_size):
        chunk = full[i:i + batch_size]
        rows = np.stack([np.asarray(data[s:s + block_size + 1]) for s in chunk]).astype(np.int64)
        xy = torch.from_numpy(rows).to(device)
        logits, _ = model(xy[:, :-1])
        total += F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), xy[:, 1:].reshape(-1),
                                 reduction="sum").item()
        count += xy[:, 1:].numel()
    tail = [s for s in starts if s + block_size > n]
    for s in tail:
        xy = torch.from_numpy(np.asarray(data[s:n + 1]).astype(np.int64))[None].to(device)
        logits, _ = model(xy[:, :-1])
        total += F.cross_entropy(logits[0].float(), xy[0, 1:], reduction="sum").item()
        count += xy.shape[1] - 1
    return total / count, count


def evaluate(run: str | os.PathLike[str], dataset: str | os.PathLike[str] | None = None,
             device: str = "cpu") -> dict[str, Any]:
    """Loss, perplexity and bits per character of ``run`` over the whole validation split.

    ``dataset`` defaults to the one the run was trained on; another dataset must use the same
    tokenizer. Returns ``{"loss", "ppl", "bpc", "tokens", "dataset", "run"}``.
    """
    pick_device(str(device))  # a device name torch cannot parse is a UsageError naming --device
    path, info = read_info(run)
    if info.get("adapter") or info["kind"] == "hf":  # base + adapter (merged), or a fine-tuned transformers model

        model = load_model(path, info).to(device).eval()
    else:
        model, info, path = load_text_model(run, device=device)
    ds_ref = dataset if dataset is not None else info.get("data", {}).get("dataset")
    if not ds_ref:
        raise DataError(f"{path / 'gencraft.json'}: records no dataset; pass one with --data DATASET",
                        param="data")
    ds = load_dataset(ds_ref)
    run_tok = path / "tokenizer.json"
    if run_tok.is_file() and run_tok.read_bytes() != (ds.path / "tokenizer.json").read_bytes():
        raise DataError(f"{ds.path}: its tokenizer differs from the run's ({run_tok}); evaluate on a dataset "
                        "prepared with the same tokenizer", param="data")
    if ds.vocab_size > model.config.vocab_size:
        raise DataError(f"{ds.path}: vocabulary of {ds.vocab_size} is larger than the model's "
                        f"{model.config.vocab_size}", param="data")
    if len(ds.val) < 2:
        raise DataError(f"{ds.path / 'val.bin'}: the validation split is empty; prepare the dataset with a "
                        "validation fraction", param="data")
    loss, count = split_loss(model, ds.val, model.config.block_size, device=device)
    return {"loss": loss, "ppl": math.exp(loss), "bpc": ds.bpc(loss), "tokens": count,
            "dataset": str(Path(ds.path).resolve()), "run": str(path.resolve())}
