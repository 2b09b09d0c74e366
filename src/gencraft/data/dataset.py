"""Reading a prepared text dataset: manifest, tokenizer, memory-mapped token splits, documents."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gencraft.errors import DataError
from gencraft.paths import existing_dataset
from gencraft.tokenize import TokenizerLike, load_tokenizer

DTYPES = {"uint16": "<u2", "uint32": "<u4"}


@dataclass
class TextDataset:
    """A prepared dataset directory (see docs/architecture.md, "Dataset directory")."""

    path: Path
    manifest: dict[str, Any]
    tokenizer: TokenizerLike = field(repr=False)

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.path.name))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def digest(self) -> str:
        return str(self.manifest.get("digest", ""))

    def _ids(self, split: str) -> np.ndarray:
        f = self.path / f"{split}.bin"
        if not f.is_file():
            raise DataError(f"{f}: missing; prepare the dataset again")
        dtype = np.dtype(DTYPES[self.manifest["dtype"]])
        n = f.stat().st_size // dtype.itemsize
        if n == 0:
            return np.zeros(0, dtype=dtype)
        return np.memmap(f, dtype=dtype, mode="r", shape=(n,))

    def train_ids(self) -> np.ndarray:
        """Token ids of the train split (read-only memmap; documents end with ``eos_id``)."""
        return self._ids("train")

    def val_ids(self) -> np.ndarray:
        """Token ids of the validation split (read-only memmap)."""
        return self._ids("val")

    def documents(self, split: str | None = None) -> Iterator[dict[str, Any]]:
        """The cleaned documents (``{"id", "source", "split", "text"}``), optionally of one split."""
        f = self.path / "documents.jsonl"
        if not f.is_file():
            raise DataError(f"{f}: missing; prepare the dataset again")
        with open(f, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError:
                    raise DataError(f"{f}: line {n} is not valid JSON; prepare the dataset again") from None
                if split is None or doc.get("split") == split:
                    yield doc

    def sources(self) -> list[dict[str, Any]]:
        """The manifest's sources (path, sha256, bytes, license, documents, encoding)."""
        return list(self.manifest.get("sources", []))


def load_dataset(name_or_path: str | os.PathLike[str]) -> TextDataset:
    """Open a prepared text dataset by name (under GENCRAFT_HOME) or path."""
    path = existing_dataset(name_or_path)
    mpath = path / "manifest.json"
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{mpath}: not readable JSON ({e}); prepare the dataset again") from None
    if not isinstance(manifest, dict) or manifest.get("dtype") not in DTYPES or "tokenizer" not in manifest:
        raise DataError(f"{mpath}: not a text dataset manifest (needs 'dtype' uint16/uint32 and 'tokenizer'); "
                        "prepare it with `gencraft data prepare`")
    tok = load_tokenizer(path / "tokenizer.json")
    return TextDataset(path, manifest, tok)
