"""Text models behind one interface: gencraft runs (GPT, LSTM) and local Hugging Face models.

``load(spec)`` returns a :class:`TextModel`: ``spec`` is a run name or path, or ``hf:PATH`` for a
local Hugging Face causal-LM folder. Every model goes through the same decoding engine
(:mod:`gencraft.generate`), so every option, processor and streaming works with every model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gencraft.backends.hf import HFStepModel, load_hf, load_hf_tokenizer
from gencraft.backends.model import TextModel
from gencraft.data import load_dataset
from gencraft.data.dataset import tokens_seen
from gencraft.errors import GencraftError, RunError, UsageError
from gencraft.models import decode, native
from gencraft.paths import existing_run
from gencraft.runs import SEEN_FILE, load_text_model, read_info
from gencraft.tokenize import load_tokenizer
from gencraft.train.lora import load_model, peft_attach, verify_base


def load(spec: str | os.PathLike[str], device: str | torch.device | None = None,
         dtype: torch.dtype | str | None = None) -> TextModel:
    """Load a run (name or path) or ``hf:PATH`` (a local Hugging Face causal LM) as a :class:`TextModel`.

    ``device`` defaults to the CPU; ``dtype`` (e.g. ``torch.bfloat16``) casts the weights; ``"int8"``
    keeps them float32 and decodes a gencraft GPT on the CPU with 8-bit copies of its matrices
    (:class:`gencraft.models.decode.DecodeSession` ``int8``).
    """
    s = os.fspath(spec)
    dev = torch.device(device or "cpu")
    if dtype == "int8" and s.startswith("hf:"):
        raise UsageError("--dtype int8: 8-bit decoding is for gencraft GPT runs; load hf: models in float32, "
                         "bfloat16 or float16", param="dtype")
    if s.startswith("hf:"):
        return load_hf(s[3:], dev, dtype)
    path, info = read_info(s)
    if info.get("adapter") or info["kind"] == "hf":  # base + adapter, or a fine-tuned Hugging Face model
        if dtype == "int8":
            raise UsageError(f"--dtype int8: {path} is an adapter or Hugging Face run; 8-bit decoding takes "
                             "gencraft GPT runs (export --merge an adapter first)", param="dtype")
        return load_adapted(path, info, dev, dtype)
    model, info, path = load_text_model(path, device=dev)
    if dtype == "int8":
        c = getattr(model, "config", None)
        if info.get("kind") != "gpt" or c is None or c.n_embd % native.Q8_BLOCK:
            raise UsageError(f"--dtype int8: {path} is a {info.get('kind')} run; 8-bit decoding takes GPT runs whose "
                             f"n_embd is a multiple of {native.Q8_BLOCK}", param="dtype")
        decode.configure(model, int8=True)
    elif dtype is not None:
        model = model.to(dtype)
    if not (path / "tokenizer.json").is_file():
        raise RunError(f"{path / 'tokenizer.json'}: missing; the run is incomplete (train it again)")
    tok = load_tokenizer(path / "tokenizer.json")
    vocab = getattr(model.config, "vocab_size", tok.vocab_size)
    if tok.vocab_size > vocab:
        raise RunError(f"{path}: tokenizer has {tok.vocab_size} tokens but the model only {vocab}")
    return TextModel(model, tok, info, str(path), unseen_tokens(path, info, tok.vocab_size))


def unseen_tokens(run_dir: Path, info: dict[str, Any], vocab_size: int) -> list[int]:
    """Token ids a run's training data never holds: from ``RUN/tokens_seen.npy`` (training writes it),
    else counted in the run's dataset (older runs), else none (the dataset is gone)."""
    f = run_dir / SEEN_FILE
    try:
        if f.is_file():
            seen = np.load(f, allow_pickle=False)
        else:
            ds = load_dataset((info.get("data") or {}).get("dataset") or "")
            seen = tokens_seen(ds.train_ids(), vocab_size)
    except (GencraftError, OSError, ValueError):
        return []
    return [i for i in range(min(len(seen), vocab_size)) if not seen[i]]


def load_tokenizer_of(spec: str | os.PathLike[str]) -> Any:
    """The tokenizer of a run (name or path) or ``hf:PATH``, without loading the model's weights
    (what watermark detection re-tokenizes with)."""
    s = os.fspath(spec)
    if s.startswith("hf:"):
        return load_hf_tokenizer(s[3:])

    return load_tokenizer(existing_run(s) / "tokenizer.json")


def load_adapted(run_dir: Path, info: dict[str, Any], device: torch.device, dtype: torch.dtype | None):
    """An adapter run or a fine-tuned Hugging Face run as a :class:`~gencraft.backends.TextModel`
    (one adapter: merged into a copy of the base's weights, so decoding runs at the base's speed)."""
    if info["kind"] == "hf":
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        folder = verify_base(run_dir, info) if info.get("adapter") else run_dir
        tm = load_hf(folder, device, dtype)
        if info.get("adapter"):
            tm.model = HFStepModel(peft_attach(tm.model.hf, run_dir, merge=True).eval())
        tm.info, tm.path = {**info, "hf": tm.info}, str(run_dir)
        return tm
    model = load_model(run_dir, info, merge=True).to(device).eval()
    if dtype is not None:
        model = model.to(dtype)
    tok_path = run_dir / "tokenizer.json"
    if not tok_path.is_file():
        raise RunError(f"{tok_path}: missing; the run is incomplete (train it again)", param="model")
    tok = load_tokenizer(tok_path)
    return TextModel(model, tok, info, str(run_dir), unseen_tokens(run_dir, info, tok.vocab_size))


__all__ = ["TextModel", "load", "load_adapted", "load_tokenizer_of", "unseen_tokens"]
