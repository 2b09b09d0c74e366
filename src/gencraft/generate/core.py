"""The sampling core: how every generated text token is chosen, in three steps.

Every decoding loop of gencraft -- the engine's :class:`~gencraft.generate.engine.Decoder`
(CLI and Python API), beam search, the server's continuous-batching scheduler and the text
VAE's latent decoding -- runs these, so a seeded request gives the same tokens whichever way
it comes in:

1. :func:`prefill` feeds the (left-padded) prompts to a fresh cache; a prompt longer than the
   model's context keeps its newest ``max_context`` tokens.
2. :func:`choose` (rows sharing one :class:`Rule`) or :func:`choose_rows` (each row its own)
   turns logits into the next tokens: the rule's processors, then the argmax (greedy) or a
   draw by the row's *sampler* from the softmax -- over the ``k`` best tokens only when top-k
   is the last filter (the same distribution, a CDF over ``k`` instead of the vocabulary).
3. :func:`advance` feeds one token per row. A row whose context is full shifts its window
   first: its newest ``shift_keep(limit) - 1`` tokens are encoded again (positions restart at
   0) and the new token follows, so a long output costs one prefill per ``limit / 4`` tokens.

Samplers (the last step of choose)
----------------------------------
A sampler is a per-sequence object whose class has a static/class method
``sample(samplers, probs, ids, tokens) -> LongTensor[n]``: ``samplers`` the rows' samplers (all of
that class), ``probs`` ``[n, K]`` float32 probabilities (rows sum to 1 up to rounding; zeros are
never to be chosen), ``ids`` the rows' context ``[n, T]`` (prompt left-padded with ``-1``, then
the tokens generated so far; empty ``[n, 0]`` when the class sets ``reads_ids = False``),
``tokens`` ``None`` when column ``j`` is token ``j`` or ``[n, K]`` the token id of each column
(top-k survivors, in vocabulary order). It returns the chosen *column* of each row. The default,
:class:`SeededDraw`, draws by inverse CDF with one uniform number from the sequence's own seeded
generator. A keyed sampler (a distortion-free watermark: Gumbel-max / exponential sampling,
tournament sampling) replaces that uniform draw with a pseudo-random choice keyed by the context:
``GenerationConfig(sampler=factory)``, ``factory(seed)`` called once per sequence. Rows are grouped
by sampler class, so one call serves a whole batch in the Decoder and in the scheduler.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gencraft.generate.config import TokenLogprob
from gencraft.generate.processors import apply, build_processors
from gencraft.models.gpt import KVCache
from gencraft.models.lora import set_rows
from gencraft.models.lstm import LSTMState

Context = Callable[[list[int]], torch.Tensor]  # rows -> their context [len(rows), T], left-padded with -1


def model_device(model: Any) -> torch.device:
    """The device a step model's weights live on."""
    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    return next(model.parameters()).device


def sample_seed(seed: int, index: int) -> int:
    """The seed of sequence ``index`` of a request seeded ``seed`` (``index`` = prompt * n + sample,
    the OpenAI choice index): ``seed`` itself for the first, a far-apart one for each other, so
    request seed 7's second sample is not request seed 8's first."""
    return seed if index == 0 else (seed + index * 0x9E3779B97F4A7C15) % (1 << 63)


# ---------------------------------------------------------------- prefill and advance


def shift_keep(limit: int) -> int:
    """How many of the newest tokens a full window keeps when it shifts (context shift)."""
    return max(1, limit - max(1, limit // 4))


def prefill(model: Any, ids: torch.Tensor, limit: int | None, max_len: int | None = None,
            seed: int | None = None) -> tuple[torch.Tensor, Any]:
    """Feed ``ids`` ``[B, P]`` (left-padded with ``-1``) to a fresh cache; a prompt longer than
    ``limit`` keeps its newest ``limit`` tokens. ``seed``: models with a random cache (the text
    VAE draws its latent from the prior) draw it from this seed."""
    window = ids if limit is None or ids.shape[1] <= limit else ids[:, -limit:]
    n_pad = (window < 0).sum(1)
    if seed is None:
        return _prefill(model, window, n_pad, max_len)
    # the CPU generator only (fork_rng saves no other): torch.manual_seed also queues a seed for
    # every accelerator backend, a noticeable share of the time to first token (docs/performance.md)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return _prefill(model, window, n_pad, max_len)


def _prefill(model: Any, window: torch.Tensor, n_pad: torch.Tensor, max_len: int | None) -> tuple[torch.Tensor, Any]:
    cache = model.new_cache(window.shape[0], max_len=max_len)
    if bool(n_pad.any()):
        cache.left_pad(n_pad)
    return model.step(window.clamp(min=0), cache)


def advance(model: Any, tokens: torch.Tensor, cache: Any, limit: int | None, context: Context,
            adapters: torch.Tensor | None = None) -> tuple[torch.Tensor, Any]:
    """Feed ``tokens`` ``[B]`` (one per row); the next logits and the cache.

    ``adapters``: ``[B]`` the LoRA adapter of each row of a model holding a bank of them
    (:func:`gencraft.models.lora.load_bank`; 0 = the base): every step, the window shifts included,
    runs each row through its own adapter.

    A row that has seen ``limit`` positions shifts its window first (``context(rows)``: those
    rows' whole context, the new token last). A GPT ``KVCache`` shifts row by row: the row's newest
    ``shift_keep(limit) - 1`` tokens are encoded again and copied into its slot (left padding
    before them), leading columns that are padding in every row are dropped when the buffer is
    full, then one batched step feeds every row's token; a batch whose rows are all full starts a
    fresh cache (no padding: a single sequence stays on the C decode step). Other caches
    (Hugging Face) shift the whole batch, re-encoding each row's newest ``shift_keep(limit)``
    positions, when the batch fills the context.
    """
    if adapters is not None:
        with set_rows(adapters):
            return _advance(model, tokens, cache, limit, context, adapters)
    return _advance(model, tokens, cache, limit, context, None)


def _advance(model: Any, tokens: torch.Tensor, cache: Any, limit: int | None, context: Context,
             adapters: torch.Tensor | None) -> tuple[torch.Tensor, Any]:
    if limit is None:
        return model.step(tokens.unsqueeze(1), cache)
    keep = shift_keep(limit)
    if not isinstance(cache, KVCache):
        if cache.length >= limit:  # every row's newest positions, the new token included
            return prefill(model, context(list(range(len(tokens)))), keep, limit)
        return model.step(tokens.unsqueeze(1), cache)
    L = cache.length
    if cache.offset is None:
        full = list(range(len(tokens))) if L >= limit else []
    else:
        full = ((L - cache.offset) >= limit).nonzero().flatten().tolist()
    if full:
        window = context(full)[:, -keep:-1]  # all real tokens: each of these rows has >= limit
        if len(full) == len(tokens):
            _, cache = model.step(window, model.new_cache(len(full), max_len=cache.max_len))
        else:
            with set_rows(None if adapters is None else adapters[full]):
                _, part = model.step(window, model.new_cache(len(full), max_len=keep))
            if not place_rows(cache, part, full):
                raise AssertionError("a shifted window is shorter than the batch: it always fits")
    if cache.length + 1 > cache.max_len and not trim_cache(cache):
        raise AssertionError("every row holds less than the context: some leading column is padding")
    return model.step(tokens.unsqueeze(1), cache)


# ---------------------------------------------------------------- KV-cache surgery (batches that change)


def merge_caches(a: Any, b: Any, max_len: int | None) -> Any | None:
    """One cache holding the rows of ``a`` then the rows of ``b``, or None when the kind can't merge.

    GPT ``KVCache``: rows share ``length``, so the shorter cache's rows are shifted right and the
    gap is marked as left padding (``pad``/``offset``), exactly as if the prompt had been padded.
    LSTM state: rows are independent, the hidden states are concatenated.
    """
    if isinstance(a, KVCache) and isinstance(b, KVCache):
        L = max(a.length, b.length)
        size = max(max_len or 0, L + 1)
        shape = list(a.k.shape)
        Ba, Bb = a.k.shape[1], b.k.shape[1]
        shape[1], shape[3] = Ba + Bb, size
        new = object.__new__(KVCache)
        new.max_len, new.length = size, L
        # zeros, not empty: the gap left of a shorter cache is masked, but attention still multiplies
        # its values by a zero weight, and uninitialised memory may hold NaN (0 * NaN = NaN)
        new.k, new.v = a.k.new_zeros(shape), a.v.new_zeros(shape)
        pad = torch.zeros(Ba + Bb, size, dtype=torch.bool, device=a.k.device)
        offset = torch.zeros(Ba + Bb, dtype=torch.long, device=a.k.device)
        for c, lo, hi in ((a, 0, Ba), (b, Ba, Ba + Bb)):
            d = L - c.length
            new.k[:, lo:hi, :, d:L] = c.k[:, :, :, :c.length]
            new.v[:, lo:hi, :, d:L] = c.v[:, :, :, :c.length]
            pad[lo:hi, :d] = True
            if c.pad is not None:
                pad[lo:hi, d:L] = c.pad[:, :c.length]
            offset[lo:hi] = d + (c.offset if c.offset is not None else 0)
        new.pad, new.offset = pad, offset
        return new
    if isinstance(a, LSTMState) and isinstance(b, LSTMState):
        new = LSTMState(torch.cat([a.h, b.h], 1), torch.cat([a.c, b.c], 1))
        new.length = max(a.length, b.length)
        return new
    return None


def mergeable(cache: Any) -> bool:
    """Whether a running batch with this cache can take new rows (GPT and LSTM caches can)."""
    return isinstance(cache, KVCache | LSTMState)


def trim_cache(cache: Any, rows: list[int] | None = None) -> bool:
    """Drop leading positions that are padding in every row (of ``rows``, default all: a KV cache that
    filled up); True if room was made."""
    if not isinstance(cache, KVCache) or cache.offset is None:
        return False
    d = int((cache.offset if rows is None else cache.offset[rows]).min())
    if d <= 0:
        return False
    L = cache.length
    cache.k[:, :, :, :L - d] = cache.k[:, :, :, d:L].clone()
    cache.v[:, :, :, :L - d] = cache.v[:, :, :, d:L].clone()
    pad = torch.zeros_like(cache.pad)
    pad[:, :L - d] = cache.pad[:, d:L]
    cache.pad, cache.offset, cache.length = pad, (cache.offset - d).clamp_(min=0), L - d
    return True


def place_rows(cache: Any, new: Any, slots: list[int]) -> bool:
    """Copy the rows of ``new`` (a prefilled KV cache) into rows ``slots`` of ``cache``, right-aligned
    at ``cache.length`` with left padding before them; False (nothing done) when they do not fit."""
    if not (isinstance(cache, KVCache) and isinstance(new, KVCache)):
        return False
    L, P = cache.length, new.length
    offs = [0] * new.batch_size if new.offset is None else [int(o) for o in new.offset]
    if any(P - o > L for o in offs):  # a prompt longer than the batch so far: merge instead
        return False
    for i, (slot, o) in enumerate(zip(slots, offs, strict=True)):
        start = L - (P - o)
        cache.k[:, slot, :, start:L] = new.k[:, i, :, o:P]
        cache.v[:, slot, :, start:L] = new.v[:, i, :, o:P]
        cache.set_padding([slot], start)
    return True


# ---------------------------------------------------------------- choose


class SeededDraw:
    """The default sampler: inverse CDF (:func:`draw`) with one uniform number per token from the
    sequence's own generator, seeded with its seed -- so a sequence draws the same tokens
    whatever else shares its batch."""

    reads_ids = False

    def __init__(self, seed: int, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device or "cpu")
        self.gen = torch.Generator(device=self.device).manual_seed(seed)

    @staticmethod
    def sample(samplers: Sequence[SeededDraw], probs: torch.Tensor, ids: torch.Tensor,
               tokens: torch.Tensor | None) -> torch.Tensor:
        dev = samplers[0].device
        if len(samplers) == 1:
            u = torch.rand(1, generator=samplers[0].gen, device=dev, dtype=torch.float64)
        else:
            u = torch.cat([torch.rand(1, generator=s.gen, device=dev, dtype=torch.float64) for s in samplers])
        return draw(probs, u)


def draw(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One sample per row of ``probs`` ``[B, V]`` by inverse CDF: the first token whose cumulative
    probability exceeds ``u[b]`` (uniform in [0, 1), ``[B]``) times the row's total.

    One uniform number per row: drawing ``V`` exponentials for the race ``argmax(p / E)`` costs a
    random number per token of the vocabulary, the cumulative sum one add (docs/performance.md).
    The sum runs in float64 so that rounding cannot skip a token of probability 1e-8; a token of
    probability 0 (masked) is never drawn. Rows need not be normalized.
    """
    cdf = probs.cumsum(-1, dtype=torch.float64)
    target = u.to(torch.float64) * cdf[:, -1]
    return torch.searchsorted(cdf, target[:, None], right=True)[:, 0].clamp_(max=probs.shape[-1] - 1)


def greedy(scores: torch.Tensor) -> torch.Tensor:
    """``scores.argmax(-1)`` (the first of equal maxima; NaN counts as the largest, as in torch).

    On the CPU through numpy's vectorized argmax: torch's one-thread reduction is many times
    slower over a large vocabulary (docs/performance.md)."""
    if (scores.is_cpu and scores.dtype == torch.float32 and scores.is_contiguous() and scores.dim() == 2
            and not scores.requires_grad):
        return torch.from_numpy(scores.numpy().argmax(-1).astype("int64", copy=False))
    return scores.argmax(-1)


@dataclass(eq=False)
class Rule:
    """How a sequence chooses its next token: built once from its :class:`GenerationConfig`.

    ``processors`` shape the distribution (docs/architecture.md order); ``sampling`` False is the
    argmax; ``top_k`` > 0: top-k is the last filter, so the draw runs over the ``k`` best tokens
    directly instead of masking the vocabulary (the same distribution)."""

    processors: list
    sampling: bool
    top_k: int = 0

    @classmethod
    def build(cls, config: Any, tokenizer: Any, prompt_len: int, vocab_size: int, *,
              sampling: bool | None = None) -> Rule:
        """The rule of ``config`` (``sampling`` defaults to ``temperature > 0``; beam search passes False)."""
        sampling = config.temperature > 0 if sampling is None else sampling
        survivors = (sampling and 0 < config.top_k < vocab_size and config.top_p == 1.0 and config.min_p == 0.0
                     and config.typical_p == 1.0)
        procs = build_processors(config, tokenizer, prompt_len, vocab_size, sampling, top_k=not survivors)
        return cls(procs, sampling, config.top_k if survivors else 0)


def shaped(logits: torch.Tensor, ids: torch.Tensor | None, rule: Rule) -> torch.Tensor:
    """The float32 scores after ``rule``'s processors (``logits`` itself is left as it was; ``ids``, the
    rows' contexts, may be None when ``rule`` has no processors)."""
    scores = logits if logits.dtype == torch.float32 else logits.float()
    if rule.processors:
        if scores is logits:
            scores = scores.clone()
        scores = apply(rule.processors, ids, scores)
    return scores


def choose(logits: torch.Tensor, ids: torch.Tensor | Callable[[], torch.Tensor], rule: Rule,
           samplers: Sequence[Any]) -> torch.Tensor:
    """The next token of every row of a batch that shares ``rule`` (the Decoder's batches): ``ids``
    ``[B, T]`` the rows' contexts, or a callable giving them (called only when a processor or the
    sampler reads them: a greedy or plain sampled token needs no context), ``samplers`` one per row
    (unused when greedy)."""
    context = ids if callable(ids) else lambda: ids
    return pick(shaped(logits, context() if rule.processors else None, rule), rule.sampling, rule.top_k,
                samplers, context)


def pick(scores: torch.Tensor, sampling: bool, top_k: int, samplers: Sequence[Any],
         ids: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The argmax of each row, or each row's sampler's draw from the softmax (over the ``top_k``
    best tokens, in vocabulary order, when ``top_k`` > 0); ``ids()`` gives the rows' contexts."""
    if not sampling:
        return greedy(scores)
    if top_k:
        vals, idx = scores.topk(top_k, dim=-1)
        idx, order = idx.sort(-1)  # vocabulary order: the same draw as over the masked vocabulary
        col = sample(samplers, vals.gather(1, order).softmax(-1), ids, idx)
        return idx.gather(1, col[:, None])[:, 0]
    return sample(samplers, scores.softmax(-1), ids, None)


def sample(samplers: Sequence[Any], probs: torch.Tensor, ids: Callable[[], torch.Tensor],
           tokens: torch.Tensor | None) -> torch.Tensor:
    """Each row's column chosen by its sampler; rows grouped by sampler class (one call each)."""
    def context(cls: type, rows: list[int] | None) -> torch.Tensor:
        if not getattr(cls, "reads_ids", True):
            return probs.new_empty((len(samplers) if rows is None else len(rows), 0), dtype=torch.long)
        return ids() if rows is None else ids()[rows]

    first = type(samplers[0])
    if all(type(s) is first for s in samplers):  # the usual case: one class, one call
        return first.sample(samplers, probs, context(first, None), tokens)
    classes: dict[type, list[int]] = {}
    for b, s in enumerate(samplers):
        classes.setdefault(type(s), []).append(b)
    out = torch.empty(len(samplers), dtype=torch.long, device=probs.device)
    for cls, rows in classes.items():
        sel = torch.tensor(rows, device=probs.device)
        out[sel] = cls.sample([samplers[b] for b in rows], probs[sel], context(cls, rows),
                              None if tokens is None else tokens[sel])
    return out


def choose_rows(logits: torch.Tensor, rules: Sequence[Rule], samplers: Sequence[Any],
                history: Callable[[int], torch.Tensor]) -> torch.Tensor:
    """The next token of every row, each with its own rule and sampler (the scheduler's batches).

    ``history(b)`` is row ``b``'s context ``[1, T_b]`` (no padding). Processors run in waves, the
    ``i``-th of every row together: processors of a class with ``batched`` run as one call over all
    rows holding one (each with its own parameters), one processor object shared by rows of equal
    history (the ``n`` sequences of a request) runs once over them, any other runs on its row. The
    argmax covers every row at once, draws are grouped by top-k and sampler class. Per row, the
    result is exactly :func:`choose`'s for that row alone.
    """
    scores = logits.float()
    depth = max((len(r.processors) for r in rules), default=0)
    if depth and scores is logits:
        scores = scores.clone()
    for w in range(depth):
        groups: dict[Any, list[int]] = {}
        for b, r in enumerate(rules):
            if w < len(r.processors):
                p = r.processors[w]
                key = type(p) if hasattr(type(p), "batched") else id(p)
                groups.setdefault(key, []).append(b)
        for key, rows in groups.items():
            procs = [rules[b].processors[w] for b in rows]
            if isinstance(key, type):
                _on_rows(scores, rows, key.batched(procs), scores.new_empty((len(rows), 0), dtype=torch.long))
                continue
            hists = [history(b) for b in rows]
            if len(rows) > 1 and len({h.shape[1] for h in hists}) == 1:
                _on_rows(scores, rows, procs[0], torch.cat(hists))
            else:
                for b, h in zip(rows, hists, strict=True):
                    _on_rows(scores, [b], procs[0], h)
    modes: dict[int, list[int]] = {}
    for b, r in enumerate(rules):
        if r.sampling:
            modes.setdefault(r.top_k, []).append(b)
    if len(modes) == 1 and len(next(iter(modes.values()))) == len(rules):  # every row samples alike
        return pick(scores, True, next(iter(modes)), samplers,
                    lambda: stack_contexts([history(b) for b in range(len(rules))]))
    nxt = greedy(scores)
    for k, rows in modes.items():
        sel = torch.tensor(rows, device=scores.device)
        nxt[sel] = pick(scores[sel], True, k, [samplers[b] for b in rows],
                        lambda rows=rows: stack_contexts([history(b) for b in rows]))
    return nxt


def _on_rows(scores: torch.Tensor, rows: list[int], proc: Any, ids: torch.Tensor) -> None:
    """``scores[rows] = proc(ids, scores[rows])`` (in place on ``scores`` when rows are all of it or one)."""
    if len(rows) == scores.shape[0]:
        out = proc(ids, scores)
        if out is not scores:
            scores.copy_(out)
        return
    if len(rows) == 1:
        view = scores[rows[0]:rows[0] + 1]
        out = proc(ids, view)
        if out is not view:
            view.copy_(out)
        return
    sel = torch.tensor(rows, device=scores.device)
    scores[sel] = proc(ids, scores[sel])


def stack_contexts(hists: list[torch.Tensor]) -> torch.Tensor:
    """Rows' contexts ``[1, T_b]`` as one ``[n, T]``, left-padded with ``-1``."""
    T = max(h.shape[1] for h in hists)
    if all(h.shape[1] == T for h in hists):
        return torch.cat(hists)
    out = hists[0].new_full((len(hists), T), -1)
    for i, h in enumerate(hists):
        out[i, T - h.shape[1]:] = h[0]
    return out


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


def samplers_for(config: Any, seeds: Sequence[int], device: torch.device) -> list[Any]:
    """One sampler per sequence: ``config.sampler(seed)`` when set, else :class:`SeededDraw`."""
    factory = getattr(config, "sampler", None)
    if factory is None:
        return [SeededDraw(s, device) for s in seeds]
    return [factory(s) for s in seeds]


__all__ = [
    "Rule", "SeededDraw", "advance", "choose", "choose_rows", "draw", "greedy", "merge_caches", "mergeable",
    "model_device", "pick", "place_rows", "prefill", "sample", "sample_seed", "samplers_for", "shaped",
    "shift_keep", "stack_contexts", "token_logprobs", "trim_cache",
]
