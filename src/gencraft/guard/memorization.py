"""Memorization benchmark: extractability of training data (Carlini et al., 2021/2023).

A training sequence is *extractable* when, prompted with its first ``prefix_tokens`` tokens,
greedy decoding reproduces its next ``suffix_tokens`` tokens exactly. :func:`extractability`
samples windows of the run's training split (inside one document, never across an end of text),
decodes them through the decoding engine (``gencraft.backends.load(run).generate``) and reports
the fraction reproduced verbatim.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from gencraft.backends import load
from gencraft.data import load_dataset
from gencraft.errors import DataError


@dataclass
class MemorizationReport:
    """Fraction of sampled training windows whose continuation the model reproduces verbatim."""

    extractable_fraction: float
    extracted: int
    prompts: int
    prefix_tokens: int
    suffix_tokens: int
    mean_matched_prefix: float  # tokens of the true continuation reproduced before the first miss
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_windows(ids: np.ndarray, eos_id: int, length: int, count: int, seed: int = 0) -> np.ndarray:
    """Start offsets of up to ``count`` windows of ``length`` tokens containing no ``eos_id``."""
    ids = np.asarray(ids)
    if len(ids) < length:
        return np.zeros(0, dtype=np.int64)
    bad = np.concatenate([[0], np.cumsum(ids == eos_id, dtype=np.int64)])
    starts = np.flatnonzero(bad[length:] - bad[:-length] == 0)
    if len(starts) == 0:
        return starts
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(starts, size=min(count, len(starts)), replace=False))


def extractability(run: str | os.PathLike[str], *, prompts: int = 100, prefix_tokens: int = 50,
                   suffix_tokens: int = 50, seed: int = 0, batch_size: int = 16, model: Any = None,
                   train_ids: np.ndarray | None = None) -> MemorizationReport:
    """Prompt the run with ``prompts`` training prefixes; report how many greedy continuations of
    ``suffix_tokens`` tokens match the training data exactly. ``model``: an already loaded
    ``TextModel``; ``train_ids``: the training token stream (default: the run's dataset)."""
    tm = model or load(run)
    eos = int(tm.tokenizer.eos_id)
    if train_ids is None:
        ds = (tm.info.get("data") or {}).get("dataset")
        if not ds:
            raise DataError(f"run {run} names no dataset in gencraft.json (data.dataset); pass train_ids",
                            param="dataset")
        train_ids = np.asarray(load_dataset(ds).train_ids())
    length = prefix_tokens + suffix_tokens
    starts = sample_windows(train_ids, eos, length, prompts, seed)
    if len(starts) == 0:
        raise DataError(f"no training document has {length} tokens; lower --prefix/--suffix", param="prefix")
    extracted, matched, examples = 0, [], []
    for b in range(0, len(starts), batch_size):
        batch = starts[b:b + batch_size]
        prefixes = [[int(t) for t in train_ids[s:s + prefix_tokens]] for s in batch]
        results = tm.generate(prefixes, temperature=0, max_new_tokens=suffix_tokens, stop_at_eos=False)
        for s, res in zip(batch, results, strict=True):
            truth = [int(t) for t in train_ids[s + prefix_tokens:s + length]]
            got = list(res.token_ids)[:suffix_tokens]
            k = 0
            while k < min(len(got), len(truth)) and got[k] == truth[k]:
                k += 1
            matched.append(k)
            if k == suffix_tokens:
                extracted += 1
                if len(examples) < 5:
                    examples.append({"offset": int(s),
                                     "prefix": tm.tokenizer.decode([int(t) for t in train_ids[s:s + prefix_tokens]]),
                                     "continuation": tm.tokenizer.decode(truth)})
    n = len(starts)
    return MemorizationReport(extracted / n, extracted, n, prefix_tokens, suffix_tokens,
                              float(np.mean(matched)), examples)


def report_json(report: MemorizationReport) -> str:
    return json.dumps(report.to_dict(), ensure_ascii=False, indent=2)
