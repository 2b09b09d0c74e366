"""Beam search and diverse (group) beam search over the step interface.

Keeps ``num_beams`` partial sequences per prompt, each step extends every beam by every token
and keeps the best ``num_beams`` by summed log-probability. A sequence that ends (EOS or a stop
string) becomes a finished hypothesis scored ``sum_logprob / length ** length_penalty``
(length > 1 penalty favours longer sequences). With ``num_beam_groups`` G > 1 the beams split
into G groups decoded one after another at each step; a group's tokens are penalised by
``diversity_penalty`` times how often earlier groups chose them at this step (Hamming
diversity, Vijayakumar et al., 2016), which pushes the groups apart.

Prefill, the processors and the step with its context shift are the sampling core's
(:mod:`gencraft.generate.core`); only the choice among beams is beam search's own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from gencraft.generate import core
from gencraft.generate.config import GenerationConfig, GenerationResult, TokenLogprob
from gencraft.generate.processors import vocab_bytes
from gencraft.generate.text import TextTracker


@dataclass
class _Hyp:
    score: float
    tokens: list[int]
    finish: str
    text: str
    logprobs: list[TokenLogprob] | None = None


class _Group:
    """Finished hypotheses of one group of beams (at most ``size`` kept)."""

    def __init__(self, size: int, length_penalty: float, early_stopping: bool) -> None:
        self.size, self.lp, self.early = size, length_penalty, early_stopping
        self.hyps: list[_Hyp] = []
        self.done = False

    def score(self, sum_logprob: float, length: int) -> float:
        return sum_logprob / (max(length, 1) ** self.lp)

    def add(self, hyp: _Hyp) -> None:
        if len(self.hyps) < self.size or hyp.score > self.hyps[-1].score:
            self.hyps.append(hyp)
            self.hyps.sort(key=lambda h: -h.score)
            del self.hyps[self.size:]

    def finished(self, best_running: float, length: int) -> bool:
        """Can no running beam beat the worst kept hypothesis any more?"""
        if len(self.hyps) < self.size:
            return False
        if self.early:
            return True
        # log-probabilities only go down; with length_penalty > 0 the best a beam can still reach
        # is its current sum over the longest length, which we bound by the current length
        return self.hyps[-1].score >= self.score(best_running, length)


def _text(table: tuple[bytes, ...], tokens: list[int], stop: list[str]) -> tuple[str, bool]:
    tr = TextTracker(table, stop)
    for t in tokens:
        if tr.push(t):
            return tr.text, True
    return tr.finish(), False


def beam_search(model: Any, tokenizer: Any, prompt: list[int], cfg: GenerationConfig) -> list[GenerationResult]:
    """The ``cfg.n`` best sequences for one prompt (token ids), best first, with their scores."""
    dev = core.model_device(model)
    nb, G = cfg.num_beams, cfg.num_beam_groups
    gs = nb // G
    eos = tokenizer.eos_id if cfg.stop_at_eos else -1
    limit = getattr(model, "max_context", None)
    t0 = time.monotonic()
    if cfg.max_new_tokens == 0:
        return [GenerationResult("", [], len(prompt), 0, "length", score=0.0, index=i) for i in range(cfg.n)]
    with torch.inference_mode():
        P = len(prompt)
        total = P + cfg.max_new_tokens
        pid = torch.tensor([prompt], dtype=torch.long, device=dev)
        logits, cache = core.prefill(model, pid, limit, None if limit is None else min(limit, total))
        V = logits.shape[-1]
        table = vocab_bytes(tokenizer, V)
        rep = torch.zeros(nb, dtype=torch.long, device=dev)
        cache = cache.select(rep)
        logits = logits[rep]
        ids = torch.empty((nb, total), dtype=torch.long, device=dev)
        ids[:, :P] = pid
        rule = core.Rule.build(cfg, tokenizer, P, V, sampling=False)
        # only the first beam of each group is live at the start (all beams are the same prompt)
        beam_scores = torch.full((nb,), -1e9, device=dev)
        beam_scores[::gs] = 0.0
    groups = [_Group(gs, cfg.length_penalty, cfg.early_stopping) for _ in range(G)]
    seqs: list[list[int]] = [[] for _ in range(nb)]
    want_lp = cfg.logprobs or cfg.top_logprobs
    lps: list[list[TokenLogprob]] = [[] for _ in range(nb)]  # per beam, when logprobs are asked for
    finish_all = "length"
    for t in range(cfg.max_new_tokens):
        cur = P + t
        with torch.inference_mode():
            logp = core.shaped(logits, ids[:, :cur], rule).log_softmax(-1)
            raw = logits if want_lp else None
        sel_beam: list[int] = []
        sel_tok: list[int] = []
        sel_score: list[float] = []
        chosen_now = torch.zeros(V, device=dev)
        for g, grp in enumerate(groups):
            rows = list(range(g * gs, (g + 1) * gs))
            with torch.inference_mode():
                lp = logp[g * gs:(g + 1) * gs]
                if g > 0 and cfg.diversity_penalty:
                    lp = lp - cfg.diversity_penalty * chosen_now
                cand = (beam_scores[g * gs:(g + 1) * gs, None] + lp).view(-1)
                top_v, top_i = cand.topk(min(2 * gs, cand.numel()))
            picked: list[tuple[int, int, float]] = []
            if not grp.done:
                for rank, (v, i) in enumerate(zip(top_v.tolist(), top_i.tolist(), strict=True)):
                    if v < -1e8:
                        break
                    beam, tid = rows[i // V], i % V
                    if tid == eos:
                        if rank < gs:
                            toks = seqs[beam]
                            text, _ = _text(table, toks, cfg.stop)
                            grp.add(_Hyp(grp.score(v, t + 1), toks, "eos", text, lps[beam] if want_lp else None))
                        continue
                    if cfg.stop:
                        text, hit = _text(table, seqs[beam] + [tid], cfg.stop)
                        if hit:
                            if rank < gs:
                                grp.add(_Hyp(grp.score(v, t + 1), seqs[beam] + [tid], "stop", text,
                                             _lp_after(lps[beam], raw, beam, tid, cfg, table)))
                            continue
                    picked.append((beam, tid, v))
                    if len(picked) == gs:
                        break
            if grp.done or not picked:
                grp.done = True
                picked = [(r, max(eos, 0), -1e9) for r in rows]  # dead beams keep the batch shape
            while len(picked) < gs:
                picked.append((picked[0][0], picked[0][1], -1e9))
            if not grp.done and grp.finished(max(v for _, _, v in picked), t + 1):
                grp.done = True
            for beam, tid, v in picked:
                sel_beam.append(beam)
                sel_tok.append(tid)
                sel_score.append(v)
                chosen_now[tid] += 1
        seqs = [seqs[b] + [tk] for b, tk in zip(sel_beam, sel_tok, strict=True)]
        if want_lp:
            lps = [_lp_after(lps[b], raw, b, tk, cfg, table) or [] for b, tk in zip(sel_beam, sel_tok, strict=True)]
        if all(grp.done for grp in groups):
            break
        if t == cfg.max_new_tokens - 1:
            break
        if cfg.max_time is not None and time.monotonic() - t0 > cfg.max_time:
            finish_all = "time"
            break
        with torch.inference_mode():
            sb = torch.tensor(sel_beam, device=dev)
            nxt = torch.tensor(sel_tok, device=dev)
            beam_scores = torch.tensor(sel_score, device=dev)
            ids = ids[sb]
            ids[:, cur] = nxt
            cache = cache.select(sb)
            logits, cache = core.advance(model, nxt, cache, limit, lambda rows, ids=ids, end=cur + 1: ids[rows, :end])
    for g, grp in enumerate(groups):  # running beams compete with the finished ones
        if grp.done and len(grp.hyps) >= grp.size:
            continue
        for b in range(g * gs, (g + 1) * gs):
            if sel_score[b] < -1e8:
                continue
            text, _ = _text(table, seqs[b], cfg.stop)
            grp.add(_Hyp(grp.score(sel_score[b], len(seqs[b])), seqs[b], finish_all, text,
                         lps[b] if want_lp else None))
    hyps = sorted((h for grp in groups for h in grp.hyps), key=lambda h: -h.score)[:cfg.n]
    return [GenerationResult(h.text, h.tokens, P, len(h.tokens), h.finish, logprobs=h.logprobs, score=h.score,
                             index=i) for i, h in enumerate(hyps)]


def _lp_after(prev: list[TokenLogprob], raw: torch.Tensor | None, beam: int, tid: int, cfg: GenerationConfig,
              table: tuple[bytes, ...]) -> list[TokenLogprob] | None:
    """``prev`` plus the log-probability of ``tid`` after ``beam`` (None when logprobs are off)."""
    if raw is None:
        return None
    with torch.inference_mode():
        chosen = torch.tensor([tid], device=raw.device)
        return [*prev, *core.token_logprobs(raw[beam:beam + 1], chosen, cfg.top_logprobs, table)]
