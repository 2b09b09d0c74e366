"""The decoding engine: greedy and sampled decoding over any model with the step interface.

One loop serves every text model (GPT, LSTM, Hugging Face): the prompt is fed once (prefill),
then one token per step; the model's cache (KV cache, LSTM state, ``past_key_values``) carries
the prefix. Many prompts and ``n`` samples per prompt decode together in one batch (prompts
left-padded; each prompt's prefill is shared by its ``n`` samples); a finished sequence leaves
the batch (``cache.select``), so it costs nothing more.

Per step: the sampling core (:mod:`gencraft.generate.core`: processors, then the argmax or each
row's sampler; one window shift per row at the context limit) -> stop checks on the host (EOS,
stop strings across token boundaries, max_new_tokens, max_time). Row ``r`` (prompt ``p``, sample
``s``, ``r = p * n + s``) samples with seed ``sample_seed(seed, first_index + r)``, as the server's choice ``r``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from gencraft.errors import UsageError
from gencraft.generate import core
from gencraft.generate.config import GenerationConfig, GenerationResult, TokenLogprob
from gencraft.generate.processors import vocab_bytes
from gencraft.generate.text import TextTracker
from gencraft.models import decode

Prompt = str | Sequence[int]


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


def pad_left(rows: list[list[int]], device: torch.device) -> torch.Tensor:
    """``[B, P]`` ids, rows right-aligned, padding ``-1``."""
    P = max(len(r) for r in rows)
    ids = torch.full((len(rows), P), -1, dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        ids[i, P - len(r):] = torch.tensor(r, dtype=torch.long)
    return ids


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
        with decode.session(self.model):  # CPU decode tuning (threads, fast products, the C step)
            yield from self._deltas()

    def _deltas(self) -> Iterator[tuple[int, str]]:
        cfg, tok = self.cfg, self.tokenizer
        dev = core.model_device(self.model)
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
        with torch.inference_mode():
            prompt_ids = pad_left(self.prompt_ids, dev)
            P = prompt_ids.shape[1]
            total = P + cfg.max_new_tokens
            max_len = None if self.limit is None else min(self.limit, total)
            logits, cache = core.prefill(self.model, prompt_ids, self.limit, max_len, seed=seed)
            V = logits.shape[-1]
            self.table = vocab_bytes(tok, V)
            for r in self.rows:
                r.tracker.table = self.table
            if n > 1:  # every sample of a prompt shares its prefill
                rep = torch.arange(len(self.prompt_ids), device=dev).repeat_interleave(n)
                cache = cache.select(rep)
                logits = logits[rep]
                prompt_ids = prompt_ids[rep]
            ids = torch.empty((len(self.rows), total), dtype=torch.long, device=dev)
            ids[:, :P] = prompt_ids
            rule = core.Rule.build(cfg, tok, P, V)
            samplers = core.samplers_for(cfg, [core.sample_seed(seed, cfg.first_index + i) for i in range(len(self.rows))], dev) \
                if rule.sampling else []
        active = list(range(len(self.rows)))  # row index of each batch position
        want_lp = cfg.logprobs or cfg.top_logprobs
        track = self.stream or bool(stops)  # decode text on the fly only when something needs it
        # the context is written through a numpy view on the CPU: a torch index assignment costs ~10x more
        # right after a decode step, which leaves the caches cold (docs/performance.md)
        ids_np = ids.numpy() if ids.is_cpu else None
        nxt = ids[:, 0]  # the token each row feeds next (set by the first choice, before it is fed)
        for t in range(cfg.max_new_tokens):
            cur = P + t
            with torch.inference_mode():  # one entry a token: feed the previous token, choose the next
                if t:
                    logits, cache = core.advance(self.model, nxt, cache, self.limit,
                                                 lambda rows, ids=ids, end=cur: ids[rows, :end])
                # the context as a callable: sliced only when a processor or the sampler reads it
                nxt = core.choose(logits, lambda ids=ids, end=cur: ids[:, :end], rule, samplers)
                if ids_np is None:
                    ids[:, cur] = nxt
                lp_rows = core.token_logprobs(logits, nxt, cfg.top_logprobs, self.table) if want_lp else None
            new = nxt.tolist()
            if ids_np is not None:
                ids_np[:, cur] = new
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
                ids_np = ids.numpy() if ids_np is not None else None
                active = [active[b] for b in keep]
                samplers = [samplers[b] for b in keep] if samplers else samplers
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
