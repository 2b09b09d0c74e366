"""The decoding engine: greedy, sampling and beam search over any model with the step interface.

One loop serves every text model (GPT, LSTM, Hugging Face): the prompt is fed once (prefill),
then one token per step; the model's cache (KV cache, LSTM state, ``past_key_values``) carries
the prefix. Many prompts and ``n`` samples per prompt decode together in one batch (prompts
left-padded; each prompt's prefill is shared by its ``n`` samples); a finished sequence leaves
the batch (``cache.select``), so it costs nothing more.

Per step: logits -> processors (docs/architecture.md order) -> argmax, or a sample drawn by
inverse CDF (:func:`draw`: one uniform number per row from a seeded
generator) -> stop checks on the host (EOS, stop strings across token boundaries, max_new_tokens,
max_time).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from gencraft.errors import UsageError
from gencraft.generate.config import GenerationConfig, GenerationResult, TokenLogprob
from gencraft.generate.processors import TopK, apply, build_processors, vocab_bytes
from gencraft.generate.text import TextTracker
from gencraft.models.linear import cpu_inference

Prompt = str | Sequence[int]


def model_device(model: Any) -> torch.device:
    """The device a step model's weights live on."""
    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    return next(model.parameters()).device


def encode_prompts(tokenizer: Any, prompts: Sequence[Prompt]) -> list[list[int]]:
    """Token ids of each prompt (strings are encoded; lists of ids pass through).

    An empty prompt starts from the end-of-text token, which is how documents begin in training.
    """
    if not prompts:
        raise UsageError("no prompt given: pass a string or a list of prompts", param="prompt")
    out = []
    for i, p in enumerate(prompts):
        ids = tokenizer.encode(p) if isinstance(p, str) else [int(t) for t in p]
        if any(t < 0 or t >= _vocab(tokenizer) for t in ids):
            raise UsageError(f"prompt {i}: token id outside the vocabulary (0..{_vocab(tokenizer) - 1})",
                             param="prompt")
        out.append(ids or [tokenizer.eos_id])
    return out


def _vocab(tokenizer: Any) -> int:
    return int(tokenizer.vocab_size)


def _table(tokenizer: Any, vocab_size: int) -> tuple[bytes, ...]:
    return vocab_bytes(tokenizer, vocab_size)


def _pad_left(rows: list[list[int]], device: torch.device) -> torch.Tensor:
    """``[B, P]`` ids, rows right-aligned, padding ``-1``."""
    P = max(len(r) for r in rows)
    ids = torch.full((len(rows), P), -1, dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        ids[i, P - len(r):] = torch.tensor(r, dtype=torch.long)
    return ids


def _prefill(model: Any, ids: torch.Tensor, limit: int | None, max_len: int | None) -> tuple[torch.Tensor, Any]:
    """Feed the (left-padded) context to a fresh cache; only the last ``limit`` positions fit."""
    window = ids if limit is None or ids.shape[1] <= limit else ids[:, -limit:]
    n_pad = (window < 0).sum(1)
    cache = model.new_cache(window.shape[0], max_len=max_len)
    if bool(n_pad.any()):
        cache.left_pad(n_pad)
    logits, cache = model.step(window.clamp(min=0), cache)
    return logits, cache


def draw(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One sample per row of ``probs`` ``[B, V]`` by inverse CDF: the first token whose cumulative
    probability exceeds ``u[b]`` (uniform in [0, 1), ``[B]``) times the row's total.

    One uniform number per row: drawing ``V`` exponentials for the race ``argmax(p / E)`` cost
    ~120 us per row of an 8,000-token vocabulary on the development machine, the cumulative sum
    ~7 us. The sum runs in float64 so that rounding cannot skip a token of probability 1e-8; a
    token of probability 0 (masked) is never drawn. Rows need not be normalized.
    """
    cdf = probs.cumsum(-1, dtype=torch.float64)
    target = u.to(torch.float64) * cdf[:, -1]
    return torch.searchsorted(cdf, target[:, None], right=True)[:, 0].clamp_(max=probs.shape[-1] - 1)


def greedy(scores: torch.Tensor) -> torch.Tensor:
    """``scores.argmax(-1)`` (the first of equal maxima; NaN counts as the largest, as in torch).

    On the CPU through numpy: torch's argmax reduction took 69 us over one 50,257-token row on the
    development machine (one thread, as decoding runs), numpy's vectorized one 4 us; per token that
    is ~1% of a 124M bf16 step and ~7% of a 1.85M one."""
    if (scores.is_cpu and scores.dtype == torch.float32 and scores.is_contiguous() and scores.dim() == 2
            and not scores.requires_grad):
        return torch.from_numpy(scores.numpy().argmax(-1).astype("int64", copy=False))
    return scores.argmax(-1)


def shift_keep(limit: int) -> int:
    """How many of the newest tokens a full window keeps when it shifts (context shift)."""
    return max(1, limit - max(1, limit // 4))


def _advance(model: Any, tokens: torch.Tensor, cache: Any, ids: torch.Tensor,
             limit: int | None) -> tuple[torch.Tensor, Any]:
    """Feed one token per row. When the context is full, shift the window: drop the oldest quarter
    and re-encode the rest once (positions restart at 0), so a long generation costs one prefill
    per ``limit / 4`` tokens instead of one per token; every token still sees at least 3/4 of a
    full window (re-encoding on every token, nanoGPT's crop, made long outputs quadratic)."""
    if limit is not None and cache.length >= limit:
        return _prefill(model, ids, shift_keep(limit), limit)
    return model.step(tokens[:, None], cache)


@dataclass
class _Row:
    """One sequence being generated."""

    prompt: int  # index of its prompt
    sample: int  # index among that prompt's n samples
    prompt_tokens: int
    tracker: TextTracker
    tokens: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    score: float = 0.0
    finish: str | None = None


class Decoder:
    """A sampling/greedy decode of many prompts; iterate :meth:`deltas` (streaming) or call :meth:`run`."""

    def __init__(self, model: Any, tokenizer: Any, prompts: Sequence[Prompt], config: GenerationConfig,
                 stream: bool = False) -> None:
        self.model, self.tokenizer, self.cfg, self.stream = model, tokenizer, config, stream
        self.table: tuple[bytes, ...] = ()
        self.prompt_ids = encode_prompts(tokenizer, prompts)
        self.limit = getattr(model, "max_context", None)
        self.rows: list[_Row] = []

    def run(self) -> list[list[GenerationResult]]:
        """Decode to the end; results per prompt, ``n`` each."""
        for _ in self.deltas():
            pass
        return self.results()

    def results(self) -> list[list[GenerationResult]]:
        out: list[list[GenerationResult]] = [[] for _ in self.prompt_ids]
        for r in self.rows:
            out[r.prompt].append(GenerationResult(
                text=r.tracker.text, token_ids=r.tokens, prompt_tokens=r.prompt_tokens,
                completion_tokens=len(r.tokens), finish_reason=r.finish or "length",
                logprobs=r.logprobs, score=r.score if r.logprobs is not None else None, index=r.sample))
        return out

    def deltas(self) -> Iterator[tuple[int, str]]:
        """Yield ``(row, text delta)`` as tokens come; row = prompt index * n + sample index."""
        with cpu_inference(self.model):
            yield from self._deltas()

    def _deltas(self) -> Iterator[tuple[int, str]]:
        cfg, tok = self.cfg, self.tokenizer
        dev = model_device(self.model)
        n = cfg.n
        stops = list(cfg.stop)
        eos = tok.eos_id if cfg.stop_at_eos else -1
        for p, ids in enumerate(self.prompt_ids):
            for s in range(n):
                self.rows.append(_Row(p, s, len(ids), TextTracker((), stops),
                                      logprobs=[] if cfg.logprobs or cfg.top_logprobs else None))
        if cfg.max_new_tokens == 0:
            for r in self.rows:
                r.finish = "length"
            return
        t0 = time.monotonic()
        seed = cfg.seed if cfg.seed is not None else secrets.randbits(62)
        sampling = cfg.temperature > 0
        with torch.inference_mode():
            prompt_ids = _pad_left(self.prompt_ids, dev)
            P = prompt_ids.shape[1]
            total = P + cfg.max_new_tokens
            max_len = None if self.limit is None else min(self.limit, total)
            # models with a random cache (the text VAE draws z from its prior) draw it from the seed;
            # the CPU generator only (fork_rng saves no other): torch.manual_seed also queues a seed
            # for every accelerator backend, ~0.7 ms of a 17 ms time to first token (13.8M, profiled)
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(seed)
                logits, cache = _prefill(self.model, prompt_ids, self.limit, max_len)
            V = logits.shape[-1]
            self.table = _table(tok, V)
            for r in self.rows:
                r.tracker.table = self.table
            if n > 1:  # every sample of a prompt shares its prefill
                rep = torch.arange(len(self.prompt_ids), device=dev).repeat_interleave(n)
                cache = cache.select(rep)
                logits = logits[rep]
                prompt_ids = prompt_ids[rep]
            ids = torch.empty((len(self.rows), total), dtype=torch.long, device=dev)
            ids[:, :P] = prompt_ids
            procs = build_processors(cfg, tok, P, V, sampling)
            # top-k as the last filter: sample among the k best directly (same distribution)
            topk_only = (sampling and 0 < cfg.top_k < V and cfg.top_p == 1.0 and cfg.min_p == 0.0
                         and cfg.typical_p == 1.0)
            if topk_only:
                procs = [p for p in procs if not isinstance(p, TopK)]
            gen = torch.Generator(device=dev).manual_seed(seed) if sampling else None
        active = list(range(len(self.rows)))  # row index of each batch position
        want_lp = cfg.logprobs or cfg.top_logprobs
        track = self.stream or bool(stops)  # decode text on the fly only when something needs it
        for t in range(cfg.max_new_tokens):
            cur = P + t
            with torch.inference_mode():
                scores = logits.float()
                if procs:
                    if scores is logits:
                        scores = scores.clone()
                    scores = apply(procs, ids[:, :cur], scores)
                if sampling and topk_only:  # the k survivors only: a CDF over k, not the vocabulary
                    vals, idx = scores.topk(cfg.top_k, dim=-1)
                    idx, order = idx.sort(-1)  # in vocabulary order: the same draw as over the masked vocabulary
                    u = torch.rand(len(idx), generator=gen, device=dev, dtype=torch.float64)
                    nxt = idx.gather(1, draw(vals.gather(1, order).softmax(-1), u)[:, None])[:, 0]
                elif sampling:
                    u = torch.rand(len(scores), generator=gen, device=dev, dtype=torch.float64)
                    nxt = draw(scores.softmax(-1), u)
                else:
                    nxt = greedy(scores)
                ids[:, cur] = nxt
                lp_rows = self._logprobs(logits, nxt) if want_lp else None
            new = nxt.tolist()
            finished: list[int] = []
            for b, row_i in enumerate(active):
                r = self.rows[row_i]
                tid = new[b]
                if tid == eos:
                    r.finish = "eos"
                    finished.append(b)
                    continue
                r.tokens.append(tid)
                if lp_rows is not None:
                    r.logprobs.append(lp_rows[b])  # type: ignore[union-attr]
                    r.score += lp_rows[b].logprob
                if track and r.tracker.push(tid):
                    r.finish = "stop"
                    finished.append(b)
            if self.stream:
                for row_i in active:
                    d = self.rows[row_i].tracker.delta()
                    if d:
                        yield row_i, d
            if t == cfg.max_new_tokens - 1:
                break
            if cfg.max_time is not None and time.monotonic() - t0 > cfg.max_time:
                for row_i in active:
                    self.rows[row_i].finish = self.rows[row_i].finish or "time"
                break
            if finished:
                gone = set(finished)
                keep = [b for b in range(len(active)) if b not in gone]
                if not keep:
                    active = []
                    break
                with torch.inference_mode():
                    sel = torch.tensor(keep, device=dev)
                    cache = cache.select(sel)
                    ids, nxt = ids[sel], nxt[sel]
                active = [active[b] for b in keep]
            with torch.inference_mode():
                logits, cache = _advance(self.model, nxt, cache, ids[:, :cur + 1], self.limit)
        for row_i in active:
            r = self.rows[row_i]
            r.finish = r.finish or "length"
        for row_i, r in enumerate(self.rows):  # text of rows not tracked on the fly, final bytes
            if not track:
                for tid in r.tokens:
                    r.tracker.push(tid)
            r.tracker.finish()
            d = r.tracker.delta(final=True)
            if d:
                yield row_i, d

    def _logprobs(self, logits: torch.Tensor, chosen: torch.Tensor) -> list[TokenLogprob]:
        return token_logprobs(logits, chosen, self.cfg.top_logprobs, self.table)


def token_logprobs(logits: torch.Tensor, chosen: torch.Tensor, k: int, table: Sequence[bytes]) -> list[TokenLogprob]:
    """Log-probabilities of the chosen tokens (one per row) under the model's raw distribution, plus the
    ``k`` most likely tokens of each row."""
    lp = logits.float().log_softmax(-1)
    picked = lp.gather(1, chosen[:, None])[:, 0].tolist()
    top_v, top_i = (lp.topk(k, -1) if k else (lp[:, :0], chosen[:, None][:, :0]))

    def text(tid: int) -> str:
        return table[tid].decode("utf-8", errors="replace") if tid < len(table) else ""

    out = []
    for b, (tid, val) in enumerate(zip(chosen.tolist(), picked, strict=True)):
        top = [(text(i), i, v) for i, v in zip(top_i[b].tolist(), top_v[b].tolist(), strict=True)]
        out.append(TokenLogprob(text(tid), tid, val, top))
    return out
