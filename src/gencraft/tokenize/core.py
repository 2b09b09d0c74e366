"""Tokenizers behind one small protocol, stored as Hugging Face ``tokenizer.json`` files.

Two kinds are trained here (``train_tokenizer``):

- ``char``: a BPE model with *no merges*. Its vocabulary is ``<|endoftext|>`` (id 0), the 256
  byte-fallback tokens ``<0x00>``..``<0xFF>`` (ids 1..256) and every character of the corpus in
  code-point order. ``byte_fallback=True`` turns a character it never saw (an emoji, a rare Hanzi)
  into its UTF-8 bytes, and the ByteFallback+Fuse decoder puts them back together, so every
  string round-trips exactly.
- ``bpe``: byte-level BPE (GPT-2 style): ByteLevel pre-tokenizer without a prefix space, the full
  256-byte initial alphabet, ByteLevel decoder, trained with ``BpeTrainer``.

There is no normalizer inside either tokenizer (the data pipeline normalizes the corpus once),
so ``decode(encode(s)) == s`` for every Unicode string. ``<|endoftext|>`` written literally in a
text is encoded as ordinary characters (``encode_special_tokens``), never as the end-of-text id.

The kind is read from the file's structure (``tokenizer.json`` has no room for free metadata:
the ``tokenizers`` loader rejects unknown keys), see :func:`detect_kind`:

- ``bpe``: a BPE model whose pre-tokenizer is ``ByteLevel``;
- ``char``: a BPE model with ``byte_fallback`` and an empty merge list;
- ``music``: a ``WordLevel`` model (the event vocabulary of ``gencraft.data.music``);
- ``sentencepiece``: a BPE model with ``byte_fallback`` *and* merges, spaces as ``▁`` (Llama, Mistral):
  not trained here, read from a Hugging Face model (``data prepare --tokenizer-from hf:PATH``).

A new kind plugs in with one more ``if`` in :func:`detect_kind` (how to recognise it) and one
more ``if`` in :func:`tokenizer_from_str` that builds its class (as ``music`` does with
``gencraft.music.tokenizer.MusicTokenizer``); the class only has to keep :class:`TokenizerLike`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from gencraft.errors import DataError, NotFoundError, UsageError
from gencraft.io import write_text
from gencraft.music.tokenizer import MusicTokenizer

EOS = "<|endoftext|>"
EOS_CANDIDATES = (EOS, "<eos>", "</s>", "<EOS>")
KINDS = ("char", "bpe")  # the kinds train_tokenizer builds
DEFAULT_BPE_VOCAB = 8000
MAX_VOCAB = 1 << 20
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-F]{2})>$")


def _byte_level_decoder() -> dict[str, int]:
    """The GPT-2 byte <-> printable-character table, inverted (character -> byte)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(keep, chars, strict=True)}


@runtime_checkable
class TokenizerLike(Protocol):
    """What every tokenizer gives (char, bpe, music, and Hugging Face models' in ``backends/hf.py``)."""

    kind: str
    vocab_size: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...

    def decode(self, ids: list[int]) -> str: ...

    def token_bytes(self, token_id: int) -> bytes: ...

    def save(self, path: str | os.PathLike[str]) -> None: ...


def _check_text(text: str) -> None:
    """Text must be valid Unicode: a lone surrogate (from undecodable bytes) cannot be tokenized."""
    if not isinstance(text, str):
        raise UsageError(f"expected text, got {type(text).__name__}", param="text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UsageError(f"text has an invalid character (lone surrogate) at position {e.start}; "
                         "pass valid UTF-8 text", param="text") from None


class Tokenizer:
    """A trained tokenizer: ``encode``/``decode`` text, the bytes of every token, ``save``.

    Wraps a Hugging Face ``tokenizers.Tokenizer`` (``.hf``), so the saved file is readable by
    HF tooling (``PreTrainedTokenizerFast(tokenizer_file=...)``).
    """

    def __init__(self, hf: tokenizers.Tokenizer, kind: str) -> None:
        self.hf = hf
        self.kind = kind
        # A literal "<|endoftext|>" in user text is text, not the end-of-document marker.
        self.hf.encode_special_tokens = True
        self.vocab_size: int = hf.get_vocab_size(with_added_tokens=True)
        eos = next((t for t in EOS_CANDIDATES if hf.token_to_id(t) is not None), None)
        if eos is None:
            raise DataError(f"tokenizer ({kind}) has no end-of-text token; expected one of {EOS_CANDIDATES}")
        self.eos_token: str = eos
        self.eos_id: int = int(hf.token_to_id(eos))
        self._special = {int(i) for i, t in hf.get_added_tokens_decoder().items() if t.special}
        self._bytes: list[bytes] | None = None
        self._char_table: np.ndarray | None = None
        self._byte_ids: list[int] = []
        if kind == "char":
            self._char_table = self._build_char_table()
            self._byte_ids = [int(hf.token_to_id(f"<0x{b:02X}>")) for b in range(256)]

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, eos_id={self.eos_id})"

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no end-of-text id added)."""
        _check_text(text)
        if self._char_table is not None:
            return self._char_encode(text)
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of many texts at once (parallel inside ``tokenizers``)."""
        texts = list(texts)
        for t in texts:
            _check_text(t)
        if self._char_table is not None:
            flat = self._char_ids("".join(texts))
            if not (flat >= 0).all():  # some characters fall back to bytes: one text at a time
                return [self._char_encode(t) for t in texts]
            ends = np.cumsum([len(t) for t in texts]).tolist()
            return [flat[a:b].tolist() for a, b in zip([0, *ends], ends, strict=False)]
        encs = self.hf.encode_batch_fast(texts, add_special_tokens=False)
        return [e.ids for e in encs]

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """``texts`` encoded and each followed by the end-of-text id, as one int64 array: what a
        dataset's ``train.bin``/``val.bin`` hold (no Python list per token: fast on big batches)."""
        texts = list(texts)
        for t in texts:
            _check_text(t)
        if not texts:
            return np.zeros(0, dtype=np.int64)
        if self._char_table is not None:
            flat = self._char_ids("".join(texts))
            if (flat >= 0).all():
                return np.insert(flat.astype(np.int64), np.cumsum([len(t) for t in texts]), self.eos_id)
            return np.concatenate([np.array([*self._char_encode(t), self.eos_id], dtype=np.int64) for t in texts])
        encs = self.hf.encode_batch_fast(texts, add_special_tokens=False)
        return np.concatenate([np.array([*e.ids, self.eos_id], dtype=np.int64) for e in encs])

    # The char model is a lookup per code point (no merges, no pre-tokenizer, no normalizer), so
    # we do that lookup with numpy: ~5x faster than going through ``tokenizers``' BPE machinery
    # and Encoding objects, and identical to it (the property tests compare the two).
    def _build_char_table(self) -> np.ndarray:
        """A dense code point -> id table (-1 = not in the vocabulary)."""
        singles = {ord(t): i for t, i in self.hf.get_vocab(with_added_tokens=False).items()
                   if len(t) == 1 and i not in self._special}
        table = np.full(max(singles, default=0) + 1, -1, dtype=np.int32)
        for cp, i in singles.items():
            table[cp] = i
        return table

    def _char_ids(self, text: str) -> np.ndarray:
        """The id of every code point of ``text``; -1 where the character is not in the vocabulary."""
        table: np.ndarray = self._char_table  # type: ignore[assignment]
        cps = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        if len(cps) and int(cps.max()) >= len(table):  # code points above every known character
            return np.where(cps < len(table), table[np.minimum(cps, len(table) - 1)], -1)
        return table[cps]

    def _char_encode(self, text: str) -> list[int]:
        ids = self._char_ids(text)
        hit = ids >= 0
        if hit.all():
            return ids.tolist()
        out: list[int] = []
        start = 0
        for miss in np.flatnonzero(~hit).tolist():  # unseen characters: their UTF-8 bytes
            out.extend(ids[start:miss].tolist())
            out.extend(self._byte_ids[b] for b in text[miss].encode("utf-8"))
            start = miss + 1
        out.extend(ids[start:].tolist())
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; special tokens (end-of-text) add nothing, like :meth:`token_bytes`."""
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=True)

    def token_bytes(self, token_id: int) -> bytes:
        """The exact UTF-8 bytes token ``token_id`` adds to the text (``b""`` for special tokens).

        A token may hold part of a character (byte fallback, byte-level BPE): streaming decoders
        join these bytes and emit text only once it is valid UTF-8.
        """
        if self._bytes is None:
            self._bytes = self._build_token_bytes()
        if not 0 <= token_id < len(self._bytes):
            raise UsageError(f"token id {token_id} is outside the vocabulary (0..{len(self._bytes) - 1})",
                             param="token_id")
        return self._bytes[token_id]

    def token_bytes_table(self) -> list[bytes]:
        """``token_bytes`` for every id, as one list (index = token id)."""
        if self._bytes is None:
            self._bytes = self._build_token_bytes()
        return list(self._bytes)

    def _build_token_bytes(self) -> list[bytes]:
        table = [b""] * self.vocab_size
        byte_level = _byte_level_decoder() if self.kind == "bpe" else None
        for tok, i in self.hf.get_vocab(with_added_tokens=True).items():
            if i >= self.vocab_size or i in self._special:
                continue
            if byte_level is not None:
                table[i] = bytes(byte_level[c] for c in tok) if all(c in byte_level for c in tok) else tok.encode()
            elif self.kind in ("char", "sentencepiece") and (m := _BYTE_TOKEN.match(tok)):
                table[i] = bytes([int(m.group(1), 16)])
            elif self.kind == "sentencepiece":  # "▁" stands for a space
                table[i] = tok.replace("\u2581", " ").encode("utf-8")
            else:  # char tokens, and a plain-token kind such as music
                table[i] = tok.encode("utf-8")
        return table

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``tokenizer.json`` atomically."""
        write_text(path, self.hf.to_str(pretty=True))

    def to_str(self) -> str:
        """The ``tokenizer.json`` text."""
        return self.hf.to_str(pretty=True)


def detect_kind(spec: dict[str, Any]) -> str:
    """The kind of a parsed ``tokenizer.json`` (see the module docstring); ``"unknown"`` otherwise."""
    model = spec.get("model") or {}
    pre = spec.get("pre_tokenizer") or {}
    pre_types = {pre.get("type")} | {p.get("type") for p in pre.get("pretokenizers", []) or []}
    if model.get("type") == "BPE" and "ByteLevel" in pre_types:
        return "bpe"
    if model.get("type") == "BPE" and model.get("byte_fallback") and not model.get("merges"):
        return "char"
    if model.get("type") == "BPE" and model.get("byte_fallback"):
        return "sentencepiece"
    if model.get("type") == "WordLevel":
        return "music"
    return "unknown"


def tokenizer_from_str(text: str, *, source: str = "tokenizer.json") -> TokenizerLike:
    """Build a :class:`Tokenizer` from the text of a ``tokenizer.json``."""
    try:
        spec = json.loads(text)
        hf = tokenizers.Tokenizer.from_str(text)
    except Exception as e:  # json or tokenizers' own parse error
        raise DataError(f"{source}: not a valid tokenizer file ({e}); prepare the dataset again") from None
    kind = detect_kind(spec)
    if kind == "unknown":
        raise DataError(f"{source}: unknown tokenizer layout (model {spec.get('model', {}).get('type')!r}); "
                        "expected a gencraft char, bpe or music tokenizer, or a byte-level or "
                        "SentencePiece-style BPE from a Hugging Face model")
    if kind == "music":
        return MusicTokenizer(hf)
    return Tokenizer(hf, kind)


def load_tokenizer(path: str | os.PathLike[str]) -> TokenizerLike:
    """Load a ``tokenizer.json`` (or a dataset/run folder holding one); the kind comes from the file."""
    p = Path(path)
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise NotFoundError(f"{p}: tokenizer file not found; prepare a dataset first", param="tokenizer")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: cannot read tokenizer ({e})") from None
    return tokenizer_from_str(text, source=str(p))


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int | None = None) -> Tokenizer:
    """Train a ``char`` or ``bpe`` tokenizer on ``texts``.

    ``vocab_size`` only applies to ``bpe`` (default 8000). BPE merges need a pair seen at least
    twice, so a tiny corpus stops early with a smaller vocabulary instead of memorising itself.
    """
    if kind == "char":
        if vocab_size is not None:
            raise UsageError("--vocab-size only applies to --tokenizer bpe (char keeps every character)",
                             param="vocab_size")
        return _train_char(texts)
    if kind == "bpe":
        return _train_bpe(texts, DEFAULT_BPE_VOCAB if vocab_size is None else vocab_size)
    raise UsageError(f"tokenizer {kind!r} is not one of {', '.join(KINDS)}", param="tokenizer")


def _train_char(texts: Iterable[str]) -> Tokenizer:
    chars: set[str] = set()
    for t in texts:
        chars.update(t)
    vocab = {EOS: 0}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for c in sorted(chars):
        vocab.setdefault(c, len(vocab))
    hf = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
    hf.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    hf.add_special_tokens([EOS])
    return Tokenizer(hf, "char")


def _train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    floor = 256 + 1
    if not floor <= vocab_size <= MAX_VOCAB:
        raise UsageError(f"--vocab-size {vocab_size} must be between {floor} (256 bytes + end-of-text) "
                         f"and {MAX_VOCAB}", param="vocab_size")
    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(hf, "bpe")
