"""Reading a prepared dataset for training: the manifest and memory-mapped token splits.

Batches are random windows of ``block_size + 1`` tokens drawn with a dedicated
``torch.Generator``: its state is all a checkpoint needs to continue the exact data stream.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gencraft.data import load_dataset as open_dataset
from gencraft.errors import DataError
from gencraft.paths import existing_dataset
from gencraft.train import dpo

_DTYPES = {"uint16": np.uint16, "uint32": np.uint32}


@dataclass
class Dataset:
    """A prepared dataset directory: its manifest and the train/val token arrays (memory-mapped)."""

    path: Path
    manifest: dict[str, Any]
    train: np.ndarray
    val: np.ndarray

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["tokenizer"]["vocab_size"])

    def tokens_per_char(self, split: str = "val") -> float:
        """Tokens per character of ``split`` (from the manifest), to turn nats/token into bits/char."""
        s = self.manifest.get("splits", {}).get(split, {})
        tokens, chars = s.get("tokens"), s.get("chars")
        if not tokens or not chars:
            return float("nan")
        return float(tokens) / float(chars)

    def bpc(self, loss: float, split: str = "val") -> float:
        """Bits per character of a mean cross-entropy ``loss`` (nats per token) on ``split``."""
        return loss * self.tokens_per_char(split) / math.log(2)


def load_dataset(name: str | os.PathLike[str]) -> Dataset:
    """Open a dataset by name or path (through :func:`gencraft.data.load_dataset`, which checks it)."""
    path = existing_dataset(name)
    manifest = _read_manifest(path)
    if dpo.is_preferences(manifest):  # pairs for preference tuning: splits that batch themselves
        train, val = dpo.load_splits(path, manifest)
        return Dataset(path, manifest, train, val)  # type: ignore[arg-type]
    ds = open_dataset(name)
    return Dataset(ds.path, ds.manifest, ds.train_ids(), ds.val_ids())


def _read_manifest(path: Path) -> dict[str, Any]:
    import json

    try:
        m = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path / 'manifest.json'}: not readable JSON ({e}); prepare the dataset again") from None
    return m if isinstance(m, dict) else {}


def check_split(data: np.ndarray, block_size: int, name: str, path: Path) -> None:
    if len(data) < block_size + 2:
        raise DataError(
            f"{path / (name + '.bin')}: {len(data)} tokens is too few for block_size {block_size}; "
            f"add more text or lower it with --set block_size=N (N < {max(len(data) - 1, 1)})",
            param="block_size",
        )


def get_batch(data: np.ndarray, batch_size: int, block_size: int, gen: torch.Generator,
              device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows: inputs ``[B, T]`` and the next tokens as targets ``[B, T]``.

    A split that makes its own batches (preference pairs) has a ``batch(...)`` method; anything else
    indexes like a token array (a memmap, or a dataset's list of shard folders).
    """
    if hasattr(data, "batch"):
        return data.batch(batch_size, block_size, gen, device)
    ix = torch.randint(len(data) - block_size - 1, (batch_size,), generator=gen).numpy()
    rows = np.stack([np.asarray(data[i:i + block_size + 1]) for i in ix]).astype(np.int64)
    xy = torch.from_numpy(rows)
    x, y = xy[:, :-1], xy[:, 1:]
    if torch.device(device).type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.contiguous(), y.contiguous()
