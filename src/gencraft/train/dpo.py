"""Learning from the library's ratings: ``gencraft tune RUN --from-ratings`` (Direct Preference Optimization).

Rafailov et al. (2023): given pairs ``(x, y_w, y_l)`` where ``y_w`` was preferred to ``y_l``, train
the policy ``pi`` against a frozen reference ``pi_ref`` with

    L = -log sigmoid(beta * [(log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))])

``beta`` is the strength of the anchor to the reference: the loss is the maximum-likelihood fit of a
reward model whose optimal policy is ``pi_ref * exp(reward / beta)``, i.e. the KL-regularized
optimum, so a larger ``beta`` keeps the policy closer to the reference.

Why the loss is written here rather than taken from TRL's ``DPOTrainer``: it is a few lines, and
with it preference tuning goes through gencraft's one training loop (checkpoints, ``--resume``,
metrics, early stopping, max-time) for every family (gencraft GPT/LSTM and Hugging Face bases
alike); ``DPOTrainer`` brings its own loop (``transformers.Trainer``/``accelerate``), its own
checkpoint format and the ``datasets`` package, and cannot train gencraft's own models.

The policy is the run's model with fresh LoRA adapters; the reference is the same model with the
adapters switched off (as TRL does with ``peft``), so no second copy of the weights is held. The
result is an adapter run (``RUN+prefs`` by default) that the kits and the server load by name.

Pairs come from the content library (:func:`collect_pairs`): outputs of the same prompt rated up
vs down; where such pairs are scarce, rated items against fresh samples of the run for the same
prompt (liked > fresh, fresh > disliked). They are written as a *preference dataset*
(``manifest.json`` with ``"kind": "preferences"``, ``pairs.jsonl``, ``tokenizer.json``), which
``gencraft.train`` reads like any dataset: its splits hand out batches of pairs (:class:`PairSplit`).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

from gencraft.errors import DataError, UsageError
from gencraft.io import atomic_dir, write_json
from gencraft.models import lora as L
from gencraft.tokenize import load_tokenizer

FORMAT = 1
MAX_PAIRS_PER_PROMPT = 16


# ---------------------------------------------------------------- the loss

def sequence_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over each row of ``log p(target)`` where ``targets >= 0`` (``-1`` = not scored): ``[B]``."""
    logp = F.log_softmax(logits.float(), dim=-1)
    mask = targets >= 0
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> torch.Tensor:
    """The mean DPO loss over pairs (arguments: sequence log-probabilities ``[N]``)."""
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin).mean()


@contextmanager
def adapters_off(model: nn.Module) -> Iterator[None]:
    """The reference model: ``model`` with its LoRA adapters switched off for the block."""
    hf = getattr(model, "hf", None)
    if hf is not None and hasattr(hf, "disable_adapter"):  # peft
        with hf.disable_adapter():
            yield
        return

    with L.disabled(model):
        yield


class DPOModel(nn.Module):
    """Wraps an adapted model (``.policy``) so that the training loop's ``model(x, y) -> (_, loss)``
    is the DPO loss. Rows of ``x``/``y`` come in pairs: ``2i`` preferred, ``2i + 1`` rejected."""

    def __init__(self, policy: nn.Module, beta: float, sft: float = 0.0) -> None:
        super().__init__()
        self.policy = policy
        self.beta = beta
        self.sft = sft

    @property
    def config(self) -> Any:
        return self.policy.config

    # the policy's step interface (the loop shows samples of the model being tuned)
    @property
    def max_context(self) -> int | None:
        return self.policy.max_context

    def new_cache(self, *args: Any, **kwargs: Any) -> Any:
        return self.policy.new_cache(*args, **kwargs)

    def step(self, token_ids: torch.Tensor, cache: Any = None) -> Any:
        return self.policy.step(token_ids, cache)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[None, torch.Tensor]:
        with torch.no_grad(), adapters_off(self.policy):
            ref = sequence_logprobs(self.policy(x)[0], y)
        lp = sequence_logprobs(self.policy(x)[0], y)
        loss = dpo_loss(lp[0::2], lp[1::2], ref[0::2], ref[1::2], self.beta)
        if self.sft:  # RPO (Pang et al., 2024): plus the preferred outputs' negative log-likelihood per token
            tokens = (y[0::2] >= 0).sum(-1).clamp(min=1)
            loss = loss + self.sft * (-lp[0::2] / tokens).mean()
        return None, loss


# ---------------------------------------------------------------- preference datasets

@dataclass
class Pair:
    prompt: str
    chosen: str
    rejected: str
    origin: str  # "rated" (both rated) | "liked-vs-fresh" | "fresh-vs-disliked"
    items: list[int]  # library item ids involved


class PairSplit:
    """One split of a preference dataset: tokenized pairs, handed out as padded batches."""

    def __init__(self, rows: list[tuple[list[int], int, list[int], list[int]]], eos_id: int) -> None:
        self.rows = rows  # (prompt ids, -, chosen ids, rejected ids)
        self.eos_id = eos_id

    def __len__(self) -> int:  # tokens, as a token split's length is
        return sum(len(p) + len(c) + len(r) for p, _, c, r in self.rows)

    @property
    def pairs(self) -> int:
        return len(self.rows)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """Every token id of the split, one after another (what a token split is as an array)."""
        ids = [t for p, _, c, r in self.rows for t in (*p, *c, *r)]
        return np.asarray(ids, dtype=dtype or np.int64)

    def _row(self, prompt: list[int], resp: list[int], T: int) -> tuple[list[int], list[int]]:
        """Inputs and targets of ``prompt + response + EOS`` in ``T`` positions (targets: response only)."""
        resp = (resp + [self.eos_id])[:T]
        keep = max(T + 1 - len(resp), 1)
        prompt = (prompt or [self.eos_id])[-keep:]
        seq = prompt + resp
        x, y = seq[:-1], seq[1:]
        y = [-1] * (len(prompt) - 1) + y[len(prompt) - 1:]
        pad = T - len(x)
        return x + [self.eos_id] * pad, y + [-1] * pad

    def batch(self, rows: int, T: int, gen: torch.Generator, device: torch.device | str = "cpu"
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """``rows // 2`` random pairs as ``x, y`` ``[rows, T]``: preferred then rejected, pair by pair."""
        n = max(rows // 2, 1)
        ix = torch.randint(len(self.rows), (n,), generator=gen).tolist()
        xs, ys = [], []
        for i in ix:
            prompt, _, chosen, rejected = self.rows[i]
            for resp in (chosen, rejected):
                x, y = self._row(prompt, resp, T)
                xs.append(x)
                ys.append(y)
        x = torch.tensor(xs, dtype=torch.long, device=device)
        return x, torch.tensor(ys, dtype=torch.long, device=device)


def is_preferences(manifest: dict[str, Any]) -> bool:
    return manifest.get("kind") == "preferences"


def load_splits(path: Path, manifest: dict[str, Any]) -> tuple[PairSplit, PairSplit]:
    """The train and val :class:`PairSplit` of a preference dataset directory."""
    tok = load_tokenizer(path / "tokenizer.json")
    f = path / "pairs.jsonl"
    if not f.is_file():
        raise DataError(f"{f}: missing; build the preference dataset again (gencraft tune ... --from-ratings)")
    splits: dict[str, list] = {"train": [], "val": []}
    for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            p, c, r = tok.encode(d["prompt"]), tok.encode(d["chosen"]), tok.encode(d["rejected"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{f}: line {n} is not a pair (prompt, chosen, rejected)") from None
        splits["val" if d.get("split") == "val" else "train"].append((p, 0, c, r))
    if not splits["train"] or not splits["val"]:
        raise DataError(f"{f}: needs pairs in both splits (train {len(splits['train'])}, val {len(splits['val'])})")
    return PairSplit(splits["train"], tok.eos_id), PairSplit(splits["val"], tok.eos_id)


def collect_pairs(liked: list[Any], disliked: list[Any], *, sample: Any = None, min_pairs: int = 32,
                  seed: int = 0, where: str = "") -> list[Pair]:
    """Preference pairs: each prompt's liked x disliked outputs; while fewer than ``min_pairs``, rated
    items whose prompt has no opposite rating are paired with ``sample(prompt, n)`` fresh outputs."""
    if not liked and not disliked:
        raise UsageError(f"no rated outputs in the library{where}; rate some (thumbs up and down) first",
                         param="ratings")
    if not liked or not disliked:
        which = "thumbs up" if liked else "thumbs down"
        raise UsageError(f"the library{where} only holds {which} ratings ({len(liked or disliked)}); DPO learns "
                         "from a contrast: rate some outputs the other way too", param="ratings")
    rng = random.Random(seed)
    by_prompt: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for it in liked:
        by_prompt[it.prompt or ""][0].append(it)
    for it in disliked:
        by_prompt[it.prompt or ""][1].append(it)
    pairs: list[Pair] = []
    lonely: list[tuple[str, Any, bool]] = []
    for prompt, (ups, downs) in sorted(by_prompt.items()):
        combos = [(u, d) for u in ups for d in downs]
        rng.shuffle(combos)
        for u, d in combos[:MAX_PAIRS_PER_PROMPT]:
            pairs.append(Pair(prompt, u.text, d.text, "rated", [u.id, d.id]))
        if not combos:
            lonely += [(prompt, it, True) for it in ups] + [(prompt, it, False) for it in downs]
    if len(pairs) < min_pairs and lonely and sample is not None:
        rng.shuffle(lonely)
        for prompt, it, is_up in lonely[:max(min_pairs - len(pairs), 0)]:
            fresh = next((t for t in sample(prompt, 3) if t.strip() and t != it.text), None)
            if fresh is None:
                continue
            if is_up:
                pairs.append(Pair(prompt, it.text, fresh, "liked-vs-fresh", [it.id]))
            else:
                pairs.append(Pair(prompt, fresh, it.text, "fresh-vs-disliked", [it.id]))
    if len(pairs) < 2:
        raise UsageError(f"only {len(pairs)} preference pair(s) from the library{where}: rate more outputs of the "
                         "same prompts up and down", param="ratings")
    return pairs


def write_preferences(out: Path, pairs: list[Pair], tokenizer_text: str, tok: Any, filters: dict[str, Any],
                      val_fraction: float = 0.1) -> Path:
    """Write a preference dataset directory (atomically); pairs of one prompt stay in one split."""
    prompts = sorted({p.prompt for p in pairs})
    keys = {p: int(hashlib.sha256(p.encode()).hexdigest()[:8], 16) / 16**8 for p in prompts}
    val_prompts = {p for p in prompts if keys[p] < val_fraction}
    if not val_prompts:
        val_prompts = {min(prompts, key=keys.__getitem__)}
    if val_prompts == set(prompts) and len(prompts) > 1:
        val_prompts.discard(max(prompts, key=keys.__getitem__))
    if val_prompts == set(prompts):  # one prompt: hold out pairs, not prompts
        held = set(range(0, len(pairs), max(int(1 / max(val_fraction, 1e-9)), 2)))
    else:
        held = {i for i, p in enumerate(pairs) if p.prompt in val_prompts}
    lines = []
    for i, p in enumerate(pairs):
        lines.append(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected,
                                 "origin": p.origin, "items": p.items, "split": "val" if i in held else "train"},
                                ensure_ascii=False))
    body = "\n".join(lines) + "\n"
    digest = hashlib.sha256(body.encode()).hexdigest()
    counts = {"train": len(pairs) - len(held), "val": len(held)}
    manifest = {
        "format": FORMAT, "kind": "preferences", "name": out.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "sources": [{"path": "library", "sha256": digest, "license": "own-ratings",
                     "documents": len(pairs)}],
        "filters": filters, "pairs": counts,
        "origins": {o: sum(p.origin == o for p in pairs) for o in ("rated", "liked-vs-fresh", "fresh-vs-disliked")},
        "tokenizer": {"kind": tok.kind, "vocab_size": tok.vocab_size, "eos_id": tok.eos_id},
        "digest": digest,
    }
    with atomic_dir(out) as tmp:
        (tmp / "pairs.jsonl").write_text(body, encoding="utf-8")
        (tmp / "tokenizer.json").write_text(tokenizer_text, encoding="utf-8")
        write_json(tmp / "manifest.json", manifest)
    return out
