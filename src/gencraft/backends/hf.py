"""Hugging Face causal LMs behind gencraft's step interface and tokenizer protocol.

``load_hf(path)`` reads a local folder (``AutoModelForCausalLM``/``AutoTokenizer``, never
``trust_remote_code``, never the network). :class:`HFStepModel` gives it ``step``/``new_cache``:
:class:`HFCache` holds ``past_key_values`` plus the attention mask and per-row positions that
left padding needs. :class:`HFTokenizer` wraps the tokenizer to the protocol of
docs/architecture.md, including the exact bytes of every token (byte-level BPE such as GPT-2's,
and SentencePiece-style vocabularies such as Llama's with ``▁`` spaces and ``<0xXX>`` bytes).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from gencraft.backends.model import TextModel
from gencraft.errors import NotFoundError, RunError
from gencraft.models.hf import HFCache, HFStepModel  # noqa: F401  (the step interface lives with the model)

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _unicode_to_byte() -> dict[str, int]:
    """GPT-2's byte-level alphabet inverted: printable stand-in character -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    return table


class HFTokenizer:
    """A ``transformers`` fast tokenizer wrapped to gencraft's tokenizer protocol."""

    kind = "hf"

    def __init__(self, tok: Any) -> None:
        if not getattr(tok, "is_fast", False):
            raise RunError(f"{tok.name_or_path}: needs a fast tokenizer (tokenizer.json); slow ones are not supported")
        self.tok = tok
        self.vocab_size: int = len(tok)
        self.eos_id: int = tok.eos_token_id if tok.eos_token_id is not None else -1
        self._bytes: list[bytes] | None = None

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, with the special tokens the model expects at the start (Llama's BOS)."""
        return list(self.tok(text)["input_ids"])

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(x) for x in self.tok(list(texts))["input_ids"]]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes token ``token_id`` adds to the text (``b""`` for special tokens)."""
        if self._bytes is None:
            self._bytes = self._build()
        return self._bytes[token_id] if 0 <= token_id < len(self._bytes) else b""

    def token_bytes_table(self) -> list[bytes]:
        if self._bytes is None:
            self._bytes = self._build()
        return list(self._bytes)

    def _build(self) -> list[bytes]:
        spec = json.loads(self.tok.backend_tokenizer.to_str())
        dec = spec.get("decoder") or {}
        types = {dec.get("type")} | {d.get("type") for d in dec.get("decoders", []) or []}
        byte_level = _unicode_to_byte() if "ByteLevel" in types else None
        special = set(self.tok.all_special_ids)
        table = [b""] * self.vocab_size
        for token, i in self.tok.get_vocab().items():
            if i >= self.vocab_size or i in special:
                continue
            if byte_level is not None and all(c in byte_level for c in token):
                table[i] = bytes(byte_level[c] for c in token)
            elif m := _BYTE_TOKEN.match(token):
                table[i] = bytes([int(m.group(1), 16)])
            else:  # SentencePiece-style: "▁" stands for a space
                table[i] = token.replace("\u2581", " ").encode("utf-8")
        return table


def load_hf(path: str | os.PathLike[str], device: torch.device | None = None, dtype: torch.dtype | None = None):
    """Load a local Hugging Face causal-LM folder as a :class:`~gencraft.backends.TextModel`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    p = Path(os.fspath(path)).expanduser()
    if not (p / "config.json").is_file():
        raise NotFoundError(f"hf:{path}: no Hugging Face model folder there (config.json missing); "
                            "give the path of a local model saved with save_pretrained", param="model")
    opts = dict(trust_remote_code=False, local_files_only=True)
    if not any(p.glob("*.safetensors")):  # pickle weights (pytorch_model.bin) could run code when loaded
        pickles = sorted(f.name for f in p.iterdir() if f.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        raise RunError(f"hf:{path}: no .safetensors weights ({', '.join(pickles) or 'no weights at all'}); gencraft "
                       "never loads pickle files, which can run code. Convert it once, in a Python you trust: "
                       "AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)",
                       param="model")
    try:
        config = AutoConfig.from_pretrained(p, **opts)
        model = AutoModelForCausalLM.from_pretrained(p, dtype=dtype or torch.float32, use_safetensors=True, **opts)
        tok = AutoTokenizer.from_pretrained(p, **opts)
    except (OSError, ValueError, KeyError) as e:
        raise RunError(f"hf:{path}: cannot load the model or tokenizer ({str(e).splitlines()[0]})") from None
    model = model.to(device or "cpu").eval()
    step_model = HFStepModel(model)
    info = {"kind": "hf", "path": str(p), "model_type": config.model_type,
            "architectures": list(getattr(config, "architectures", None) or []),
            "vocab_size": step_model.vocab_size, "max_context": step_model.max_context,
            "num_parameters": sum(t.numel() for t in model.parameters())}
    return TextModel(step_model, HFTokenizer(tok), info, str(p))


def load_hf_tokenizer(path: str | os.PathLike[str]) -> HFTokenizer:
    """The tokenizer of a local Hugging Face model folder, wrapped to gencraft's protocol."""
    from transformers import AutoTokenizer

    p = Path(os.fspath(path)).expanduser()
    try:
        return HFTokenizer(AutoTokenizer.from_pretrained(p, trust_remote_code=False, local_files_only=True))
    except (OSError, ValueError, KeyError) as e:
        raise RunError(f"hf:{path}: cannot load the tokenizer ({str(e).splitlines()[0]})") from None
