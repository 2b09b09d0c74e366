"""Reading a prepared text dataset: manifest, tokenizer, memory-mapped token splits, documents.

A split is one ``train.bin``/``val.bin`` (the in-memory path of ``data prepare``) or a list of
shards (the streaming path: ``manifest["shards"]``), read as one array (:class:`TokenShards`).
A combined dataset (``gencraft data combine``: ``manifest["parts"]``) is a list of other dataset
folders with one tokenizer, read as one dataset: more data is added without preparing it all again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gencraft.errors import DataError
from gencraft.paths import existing_dataset
from gencraft.schemas import DatasetManifest, read_json, validate_data
from gencraft.tokenize import TokenizerLike, load_tokenizer

DTYPES = {"uint16": "<u2", "uint32": "<u4"}


class TokenShards:
    """Memory-mapped token shards read as one array: ``len``, ``[i]``, ``[a:b]`` (a window may span
    shards; it is copied out of them) and ``np.asarray`` (which reads everything)."""

    def __init__(self, parts: list[np.ndarray]) -> None:
        self.parts = parts
        self.starts = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
        self.dtype = parts[0].dtype if parts else np.dtype("<u2")

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    @property
    def size(self) -> int:
        return len(self)

    def __getitem__(self, idx: int | slice) -> Any:
        if isinstance(idx, slice):
            a, b, step = idx.indices(len(self))
            if step != 1:
                return np.asarray(self)[idx]
            if b <= a:
                return np.zeros(0, dtype=self.dtype)
            i = int(np.searchsorted(self.starts, a, side="right")) - 1
            j = int(np.searchsorted(self.starts, b, side="left")) - 1
            if i == j:
                return self.parts[i][a - self.starts[i]:b - self.starts[i]]
            pieces = [self.parts[i][a - self.starts[i]:]] + self.parts[i + 1:j] + [self.parts[j][:b - self.starts[j]]]
            return np.concatenate(pieces)
        k = int(idx) + (len(self) if int(idx) < 0 else 0)
        if not 0 <= k < len(self):
            raise IndexError(idx)
        i = int(np.searchsorted(self.starts, k, side="right")) - 1
        return self.parts[i][k - self.starts[i]]

    def part(self, lo: int, hi: int) -> np.ndarray | TokenShards:
        """Tokens ``[lo, hi)`` as views of the shards they lie in (nothing is read)."""
        lo, hi = max(0, lo), min(len(self), hi)
        out = []
        for p, start in zip(self.parts, self.starts[:-1].tolist(), strict=True):
            a, b = max(lo - start, 0), min(hi - start, len(p))
            if a < b:
                out.append(p[a:b])
        return out[0] if len(out) == 1 else TokenShards(out)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.concatenate(self.parts) if self.parts else np.zeros(0, dtype=self.dtype)
        return out.astype(dtype) if dtype is not None else out


def _pieces(ids: np.ndarray | TokenShards) -> list[np.ndarray]:
    return ids.parts if isinstance(ids, TokenShards) else [ids]


@dataclass
class TextDataset:
    """A prepared dataset directory (see docs/architecture.md, "Dataset directory")."""

    path: Path
    manifest: dict[str, Any]
    tokenizer: TokenizerLike = field(repr=False)
    parts: list[TextDataset] = field(default_factory=list, repr=False)  # a combined dataset's folders

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.path.name))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def digest(self) -> str:
        return str(self.manifest.get("digest", ""))

    def _map(self, f: Path, expected: int | None) -> np.ndarray:
        """The token file ``f`` memory-mapped, its length checked against the manifest's ``expected``."""
        if not f.is_file():
            raise DataError(f"{f}: missing; prepare the dataset again")
        dtype = np.dtype(DTYPES[self.manifest["dtype"]])
        size = f.stat().st_size
        n = size // dtype.itemsize
        if size % dtype.itemsize or (expected is not None and n != expected):
            raise DataError(f"{f}: holds {size / dtype.itemsize:g} tokens but manifest.json records {expected}; "
                            "the file is truncated or was changed: prepare the dataset again")
        if n == 0:
            return np.zeros(0, dtype=dtype)
        return np.memmap(f, dtype=dtype, mode="r", shape=(n,))

    def _ids(self, split: str) -> np.ndarray | TokenShards:
        if self.parts:
            arrays = [a for p in self.parts for a in _pieces(p._ids(split)) if len(a)]
            return arrays[0] if len(arrays) == 1 else TokenShards(arrays)
        shards = self.manifest.get("shards")
        if not shards:
            return self._map(self.path / f"{split}.bin", self.manifest.get("splits", {}).get(split, {}).get("tokens"))
        parts = [self._map(self.path / name, int(tokens)) for name, tokens in shards.get(split, [])]
        return parts[0] if len(parts) == 1 else TokenShards(parts)

    def shard_files(self, split: str) -> list[tuple[Path, int]]:
        """``(file, tokens)`` of each shard of ``split`` in order (one ``SPLIT.bin`` when not sharded)."""
        if self.parts:
            return [f for p in self.parts for f in p.shard_files(split)]
        shards = self.manifest.get("shards")
        if not shards:
            f = self.path / f"{split}.bin"
            return [(f, f.stat().st_size // np.dtype(DTYPES[self.manifest["dtype"]]).itemsize)]
        return [(self.path / name, int(tokens)) for name, tokens in shards.get(split, [])]

    def train_ids(self) -> np.ndarray | TokenShards:
        """Token ids of the train split (read-only memmap, or its shards as one; documents end with ``eos_id``)."""
        return self._ids("train")

    def val_ids(self) -> np.ndarray | TokenShards:
        """Token ids of the validation split (read-only memmap, or its shards as one)."""
        return self._ids("val")

    def documents(self, split: str | None = None) -> Iterator[dict[str, Any]]:
        """The cleaned documents (``{"id", "source", "split", "text"}``), optionally of one split. A
        combined dataset's parts in order, ids and source indices shifted to its own numbering."""
        if self.parts:
            first_id = first_source = 0
            for p in self.parts:
                for doc in p.documents(split):
                    yield doc | {"id": first_id + doc["id"], "source": first_source + doc["source"]}
                first_id += sum(int(s.get("documents", 0)) for s in p.manifest["splits"].values())
                first_source += len(p.sources())
            return
        shards = self.manifest.get("shards")
        for f in [self.path / name for name in shards["documents"]] if shards else [self.path / "documents.jsonl"]:
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


def load_dataset(name_or_path: str | os.PathLike[str], _depth: int = 0) -> TextDataset:
    """Open a prepared text dataset by name (under GENCRAFT_HOME) or path (a combined one with its parts)."""
    path = existing_dataset(name_or_path)
    mpath = path / "manifest.json"
    manifest = read_json(mpath, error=DataError, hint="prepare the dataset again")
    if isinstance(manifest, dict) and manifest.get("kind") == "images":
        raise DataError(f"{path}: an image dataset; train it with `gencraft train-image`", param="dataset")
    validate_data(manifest, DatasetManifest, mpath, DataError)
    tok = load_tokenizer(path / "tokenizer.json")
    if tok.vocab_size != manifest["tokenizer"]["vocab_size"]:
        raise DataError(f"{path / 'tokenizer.json'}: {tok.vocab_size} tokens but manifest.json records "
                        f"{manifest['tokenizer']['vocab_size']}; prepare the dataset again")
    return TextDataset(path, manifest, tok, _open_parts(path, manifest, _depth))


def tokenizer_digest(path: Path) -> str:
    """sha256 of a dataset's ``tokenizer.json``: the parts of a combined dataset must share it."""
    return hashlib.sha256((path / "tokenizer.json").read_bytes()).hexdigest()


def _open_parts(path: Path, manifest: dict[str, Any], depth: int = 0) -> list[TextDataset]:
    """The part datasets ``manifest["parts"]`` names (paths relative to ``path``), each checked to be
    what was combined: the same manifest digest and tokenizer."""
    if not manifest.get("parts"):
        return []
    if depth > 8:
        raise DataError(f"{path / 'manifest.json'}: parts nest more than 8 deep (a combined dataset names itself?)")
    mine = tokenizer_digest(path)
    parts = []
    for i, ref in enumerate(manifest["parts"]):
        where = (path / ref["path"]).resolve()
        if not (where / "manifest.json").is_file():
            raise DataError(f"{path / 'manifest.json'}: part {i} ({where}) is missing; "
                            "put it back or run `gencraft data combine` again")
        part = load_dataset(where, _depth=depth + 1)
        if part.digest != ref.get("digest"):
            raise DataError(f"{path / 'manifest.json'}: part {i} ({where}) changed since it was combined "
                            f"(digest {part.digest[:12]}, was {str(ref.get('digest'))[:12]}); "
                            "run `gencraft data combine` again")
        if tokenizer_digest(where) != mine:
            raise DataError(f"{path / 'manifest.json'}: part {i} ({where}) has another tokenizer; "
                            "prepare it with --tokenizer-from and combine again")
        parts.append(part)
    return parts


def tokens_seen(train_ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """``bool[vocab_size]``: which token ids a train split holds (one counting pass over the memmap, or
    over each shard, 64 Mi tokens at a time: a corpus larger than memory is counted in bounded memory)."""
    seen = np.zeros(vocab_size, dtype=bool)
    for part in _pieces(train_ids):
        if not isinstance(part, np.ndarray):  # a split that is only array-like (preference pairs: small)
            part = np.asarray(part)
        for i in range(0, len(part), 1 << 26):
            seen |= np.bincount(np.asarray(part[i:i + (1 << 26)]), minlength=vocab_size)[:vocab_size] > 0
    return seen
