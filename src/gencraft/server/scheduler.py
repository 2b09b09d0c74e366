"""Continuous batching: one scheduler thread per model decodes every active request in one batch.

At each step boundary the scheduler

1. admits waiting requests: their prompts are prefilled together (left-padded) and their cache
   rows are merged into the running batch's cache (:func:`merge_caches`);
2. picks the next token of every active sequence from the batch's logits (each sequence with its
   own processors, seed and stop strings -- requests never share sampling state);
3. hands each sequence's text delta to its request (an ``asyncio`` queue on the server's loop);
4. drops finished, cancelled (client gone) and timed-out sequences (``cache.select``);
5. runs one batched ``step`` for all that remain.

So a new request waits at most one decode step before its prefill, and a long request never
holds up a short one. Models whose cache cannot be merged (Hugging Face ``past_key_values``) are
batched in waves instead: new requests join when the running batch is empty.

The thread only touches torch; requests talk to it through :meth:`Scheduler.submit` (a bounded
queue: a full one raises :class:`~gencraft.server.errors.QueueFull`).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from gencraft.errors import UsageError
from gencraft.generate.config import GenerationConfig, GenerationResult, TokenLogprob
from gencraft.generate.engine import draw, greedy, model_device
from gencraft.generate.processors import LogitBias, Temperature, apply, build_processors, vocab_bytes
from gencraft.generate.text import TextTracker
from gencraft.models.linear import cpu_inference
from gencraft.server.errors import Overloaded, QueueFull

log = logging.getLogger("gencraft.server")

# ---------------------------------------------------------------- cache surgery


def merge_caches(a: Any, b: Any, max_len: int | None) -> Any | None:
    """One cache holding the rows of ``a`` then the rows of ``b``, or None when the kind can't merge.

    GPT ``KVCache``: rows share ``length``, so the shorter cache's rows are shifted right and the
    gap is marked as left padding (``pad``/``offset``), exactly as if the prompt had been padded.
    LSTM state: rows are independent, the hidden states are concatenated.
    """
    from gencraft.models.gpt import KVCache
    from gencraft.models.lstm import LSTMState

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


def trim_cache(cache: Any, rows: list[int] | None = None) -> bool:
    """Drop leading positions that are padding in every row (of ``rows``, default all: a KV cache that
    filled up); True if room was made."""
    from gencraft.models.gpt import KVCache

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
    from gencraft.models.gpt import KVCache

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


def _kv_cache() -> type:
    from gencraft.models.gpt import KVCache

    return KVCache


def _live(active: list[Sequence]) -> int:
    return sum(s is not GHOST for s in active)


# ---------------------------------------------------------------- one sequence


@dataclass
class Event:
    """What a request receives: text deltas (with their tokens' log-probabilities), then the result."""

    kind: str  # "delta" | "done" | "error"
    index: int = 0  # which of the request's n sequences
    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    result: GenerationResult | None = None
    error: BaseException | None = None


@dataclass
class Sequence:
    """One sequence being generated (a request with ``n`` choices has ``n`` of them)."""

    prompt_ids: list[int]
    cfg: GenerationConfig
    index: int
    emit: Callable[[Event], None]
    deadline: float | None
    seed: int
    procs: list = field(default_factory=list)  # per-row processors (after bias and temperature)
    bias: torch.Tensor | None = None  # [V] logit_bias, applied batched across rows
    temperature: float = 1.0  # applied batched across rows (sampling only)
    tracker: TextTracker | None = None
    gen: torch.Generator | None = None
    tokens: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    pending_lp: list[TokenLogprob] = field(default_factory=list)
    finish: str | None = None
    cancelled: bool = False
    submitted: float = field(default_factory=time.monotonic)
    first_token: float | None = None

    def result(self) -> GenerationResult:
        return GenerationResult(text=self.tracker.text if self.tracker else "", token_ids=list(self.tokens),
                                prompt_tokens=len(self.prompt_ids), completion_tokens=len(self.tokens),
                                finish_reason=self.finish or "length", logprobs=self.logprobs,
                                score=(sum(t.logprob for t in self.logprobs) if self.logprobs is not None else None),
                                index=self.index)


# A finished row left in a running batch until a new request takes its slot (see Scheduler._work).
GHOST = Sequence(prompt_ids=[], cfg=GenerationConfig(), index=-1, emit=lambda ev: None, deadline=None, seed=0,
                 finish="ghost")


class Ticket:
    """A submitted request: iterate :meth:`events` on the event loop; :meth:`cancel` stops it."""

    def __init__(self, sequences: list[Sequence], queue: asyncio.Queue) -> None:
        self.sequences, self.queue = sequences, queue

    def cancel(self) -> None:
        for s in self.sequences:
            s.cancelled = True

    async def events(self):
        """Events until every sequence is done (``done`` events carry each result).

        Deltas that piled up while the consumer was busy come merged (one per sequence), so a
        slow consumer does less work, not more.
        """
        left = len(self.sequences)
        held: collections.deque[Event] = collections.deque()
        try:
            while left:
                ev: Event = held.popleft() if held else await self.queue.get()
                if ev.kind == "delta":
                    while not self.queue.empty():
                        nxt: Event = self.queue.get_nowait()
                        if nxt.kind == "delta" and nxt.index == ev.index:
                            ev = Event("delta", ev.index, ev.text + nxt.text, ev.logprobs + nxt.logprobs)
                        else:
                            held.append(nxt)
                            break
                if ev.kind == "error":
                    raise ev.error  # type: ignore[misc]
                if ev.kind == "done":
                    left -= 1
                yield ev
        finally:
            if left:
                self.cancel()

    async def results(self) -> list[GenerationResult]:
        out: list[GenerationResult | None] = [None] * len(self.sequences)
        async for ev in self.events():
            if ev.kind == "done":
                out[ev.index] = ev.result
        return out  # type: ignore[return-value]


# ---------------------------------------------------------------- the scheduler


@dataclass
class Stats:
    """Counters the metrics endpoint reads."""

    queued: int = 0
    active: int = 0
    steps: int = 0
    tokens: int = 0
    prefills: int = 0
    cancelled: int = 0  # sequences dropped because their client went away
    max_active: int = 0  # the largest batch so far
    reused: int = 0  # requests that took a finished row's slot in a running batch (no cache copy)


class Scheduler:
    """Continuous batching for one text model (a :class:`~gencraft.backends.TextModel`)."""

    def __init__(self, tm: Any, *, max_batch: int = 64, max_queue: int = 256, queue_timeout: float = 30.0,
                 continuous: bool = True, on_tokens: Callable[[int], None] | None = None) -> None:
        self.tm, self.model, self.tokenizer = tm, tm.model, tm.tokenizer
        self.max_batch, self.max_queue, self.queue_timeout = max_batch, max_queue, queue_timeout
        self.continuous = continuous  # False: one request at a time (the baseline the bench compares to)
        self.on_tokens = on_tokens
        self.device = model_device(self.model)
        self.limit: int | None = getattr(self.model, "max_context", None)
        self.vocab = _vocab_size(self.model, self.tokenizer)
        self.table = vocab_bytes(self.tokenizer, self.vocab)
        self.stats = Stats()
        self._pending: collections.deque[list[Sequence]] = collections.deque()
        self._outbox: list[tuple[Any, asyncio.Queue, list[Sequence], Event]] = []
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True, name="gencraft-scheduler")
        self._thread.start()

    # -- called on the event loop

    def submit(self, prompt_ids: list[int], cfg: GenerationConfig, *, timeout: float | None = None,
               make_processors: Callable[[], list] | None = None) -> Ticket:
        """Queue one request (``cfg.n`` sequences); raise QueueFull when the queue is at its bound.

        ``make_processors`` builds extra (stateful) processors, a fresh set per sequence -- e.g. a
        JSON-schema constraint; they run after ``cfg.processors``.
        """
        cfg.validate()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def emit(ev: Event) -> None:  # called on the scheduler thread; delivered in batches by _flush
            self._outbox.append((loop, queue, seqs, ev))

        seed = cfg.seed if cfg.seed is not None else secrets.randbits(62)
        deadline = time.monotonic() + timeout if timeout else None
        if cfg.max_time is not None:
            deadline = min(deadline or float("inf"), time.monotonic() + cfg.max_time)
        seqs = [Sequence(list(prompt_ids), cfg, i, emit, deadline, seed + i) for i in range(cfg.n)]
        for s in seqs:  # processors are per sequence (constraints keep per-row state); errors surface now
            c = cfg
            if make_processors is not None:
                c = dataclasses.replace(cfg, processors=[*cfg.processors, *make_processors()])
            s.procs = build_processors(c, self.tokenizer, len(prompt_ids), self.vocab, cfg.temperature > 0)
            self._peel(s)
        with self._cv:
            if self._stop:
                raise Overloaded("the server is shutting down; retry on another instance", param=None)
            if self.stats.queued + cfg.n > self.max_queue:
                raise QueueFull(f"the request queue for this model is full ({self.max_queue} waiting); "
                                "retry after a short wait", param=None)
            self._pending.append(seqs)
            self.stats.queued += cfg.n
            self._cv.notify()
        return Ticket(seqs, queue)

    def _peel(self, s: Sequence) -> None:
        """Take a leading LogitBias and the Temperature right after it out of the per-row list: they
        are the same math row by row, so the whole batch gets them in one add and one divide (the
        order of the processors is kept)."""
        if s.procs and isinstance(s.procs[0], LogitBias):
            lb = s.procs.pop(0)
            s.bias = torch.zeros(self.vocab, dtype=torch.float32, device=self.device)
            s.bias[lb.ids.to(self.device)] += lb.values.to(self.device)
        if s.procs and isinstance(s.procs[0], Temperature):
            s.temperature = s.procs.pop(0).t

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=10)

    # -- the scheduler thread

    def _flush(self) -> None:
        """Hand this step's events to their event loops: one wake-up per loop, not one per token."""
        if not self._outbox:
            return
        by_loop: dict[Any, list[tuple[asyncio.Queue, list[Sequence], Event]]] = {}
        for loop, queue, seqs, ev in self._outbox:
            by_loop.setdefault(loop, []).append((queue, seqs, ev))
        self._outbox = []
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # that event loop is gone: nobody is listening
                for _, seqs, _ in items:
                    for s in seqs:
                        s.cancelled = True

    def _loop(self) -> None:
        active: list[Sequence] = []
        cache: Any = None
        logits: torch.Tensor | None = None
        while True:
            with self._cv:
                while not self._stop and not active and not self._pending:
                    self._cv.wait()
                if self._stop:
                    for group in self._pending:
                        for s in group:
                            s.emit(Event("error", s.index, error=Overloaded("the server is shutting down")))
                    for s in active:
                        s.emit(Event("error", s.index, error=Overloaded("the server is shutting down")))
                    self._flush()
                    return
                new = self._take(_live(active), cache)
            try:
                with cpu_inference(self.model), torch.inference_mode():
                    cache, logits, active = self._work(active, new, cache, logits)
            except Exception as e:  # a bug or OOM: fail the requests in flight, keep serving
                log.exception("scheduler step failed; failing %d sequences", len(active) + len(new))
                for s in active + new:
                    if s.finish is None:
                        s.finish = "error"
                        s.emit(Event("error", s.index, error=e))
                active, cache, logits = [], None, None
            finally:
                self.stats.active = _live(active)
                self._flush()

    def _work(self, active: list[Sequence], new: list[Sequence], cache: Any, logits: torch.Tensor | None
              ) -> tuple[Any, torch.Tensor | None, list[Sequence]]:
        """One scheduler iteration: admit ``new`` (one batched prefill), choose, advance one step.

        A finished row of a KV-cache batch stays in the batch as a ghost (computed, ignored) for a
        while: the next request takes its slot by copying only its own keys and values in, instead of
        compacting and re-merging the whole cache (two copies of every row's cache per request).
        Ghosts are compacted away when they reach a quarter of the batch.
        """
        if new:
            new_logits, new_cache = self._prefill(new)
            slots = [i for i, s in enumerate(active) if s is GHOST][:len(new)]
            if active and len(slots) == len(new) and place_rows(cache, new_cache, slots):
                logits[slots] = new_logits  # type: ignore[index]
                self.stats.reused += len(new)
                for slot, seq in zip(slots, new, strict=True):
                    active[slot] = seq
            elif active:
                cache, logits, active = self._compact(active, cache, logits)  # type: ignore[arg-type]
                merged = merge_caches(cache, new_cache, self.limit)
                assert merged is not None  # _take admits only into mergeable batches
                cache, logits = merged, torch.cat([logits, new_logits])  # type: ignore[list-item]
                active = active + new
            else:
                cache, logits, active = new_cache, new_logits, list(new)
            # counted before this step's tokens are handed out (below): a client that has its
            # first token must never see its request missing from ``active``
            self.stats.active = _live(active)
            self.stats.max_active = max(self.stats.max_active, self.stats.active)
        if not active:
            return cache, logits, active
        nxt = self._choose(active, logits)  # type: ignore[arg-type]
        keep = self._advance_text(active, nxt)
        self._flush()  # the event loops stream these tokens while this thread runs the next step
        if len(keep) < len(active):
            if not keep:
                return None, None, []
            ghosts = len(active) - len(keep)
            if self.continuous and isinstance(cache, _kv_cache()) and 4 * ghosts <= len(active):
                kept = set(keep)
                gone = [i for i, s in enumerate(active) if i not in kept and s is not GHOST]
                active = [s if i in kept else GHOST for i, s in enumerate(active)]
                if gone:  # all padding so far: attention starts after the live rows' padding (GPT._decode)
                    cache.set_padding(gone, cache.length)
            else:
                active = [active[i] for i in keep]
                sel = torch.tensor(keep, device=self.device)
                cache = cache.select(sel)
                nxt = nxt[sel]
        room = getattr(cache, "max_len", None)  # a preallocated KV cache; others grow
        live = [i for i, s in enumerate(active) if s is not GHOST]
        if room is not None and cache.length + 1 > room and not trim_cache(cache, live):
            for s in active:  # context full for every row (cannot happen within the caps)
                self._finish(s, "length")
            return None, None, []
        logits, cache = self.model.step(nxt[:, None], cache)
        self.stats.steps += 1
        return cache, logits, active

    def _compact(self, active: list[Sequence], cache: Any, logits: torch.Tensor
                 ) -> tuple[Any, torch.Tensor, list[Sequence]]:
        """Drop the ghost rows."""
        keep = [i for i, s in enumerate(active) if s is not GHOST]
        if len(keep) == len(active):
            return cache, logits, active
        sel = torch.tensor(keep, device=self.device)
        return cache.select(sel), logits[sel], [active[i] for i in keep]

    def _take(self, n_active: int, cache: Any) -> list[Sequence]:
        """Requests to admit now (called under the lock)."""
        if n_active and (not self.continuous or not merge_caches_possible(cache)):
            return []
        out: list[Sequence] = []
        now = time.monotonic()
        room = self.max_batch - n_active if self.continuous else 1
        while self._pending and room > 0:
            group = self._pending[0]
            if len(group) > room and (out or n_active):
                break
            self._pending.popleft()
            self.stats.queued -= len(group)
            live = [s for s in group if not s.cancelled]
            if not live:
                continue
            if now - group[0].submitted > self.queue_timeout:
                for s in live:
                    s.finish = "error"
                    s.emit(Event("error", s.index, error=Overloaded(
                        f"the server is overloaded: the request waited over {self.queue_timeout:g} s in the queue; "
                        "retry later")))
                continue
            out.extend(live)
            room -= len(live)
            if not self.continuous:
                break
        return out

    def _prefill(self, seqs: list[Sequence]) -> tuple[torch.Tensor, Any]:
        """Prefill new sequences together (left-padded); set up their per-sequence state."""
        rows = [s.prompt_ids for s in seqs]
        P = max(len(r) for r in rows)
        ids = torch.full((len(rows), P), -1, dtype=torch.long, device=self.device)
        for i, r in enumerate(rows):
            ids[i, P - len(r):] = torch.tensor(r, dtype=torch.long)
        n_pad = (ids < 0).sum(1)
        with torch.inference_mode():
            cache = self.model.new_cache(len(rows), max_len=self.limit)
            if bool(n_pad.any()):
                cache.left_pad(n_pad)
            logits, cache = self.model.step(ids.clamp(min=0), cache)
        self.stats.prefills += 1
        for s in seqs:
            cfg = s.cfg
            s.tracker = TextTracker(self.table, list(cfg.stop))
            s.logprobs = [] if (cfg.logprobs or cfg.top_logprobs) else None
            if cfg.temperature > 0:
                s.gen = torch.Generator(device=self.device).manual_seed(s.seed)
        return logits, cache

    def _choose(self, active: list[Sequence], logits: torch.Tensor) -> torch.Tensor:
        """The next token of every active sequence: each row with its own processors and seed, but the
        softmax, the draw and the argmax batched over all rows."""
        with torch.inference_mode():
            raw = logits.float()
            scores = raw
            if any(s.bias is not None for s in active):
                zero = None
                rows = []
                for s in active:
                    if s.bias is None:
                        zero = torch.zeros_like(raw[0]) if zero is None else zero
                    rows.append(s.bias if s.bias is not None else zero)
                scores = raw + torch.stack(rows)
            if any(s.temperature != 1.0 for s in active):
                temps = torch.tensor([s.temperature for s in active], dtype=raw.dtype, device=self.device)
                scores = scores / temps[:, None]
            for b, s in enumerate(active):
                if s.procs:  # processors see this row's prompt + generated ids (no padding)
                    if scores is raw:
                        scores = raw.clone()
                    hist = torch.tensor([s.prompt_ids + s.tokens], dtype=torch.long, device=self.device)
                    scores[b:b + 1] = apply(s.procs, hist, scores[b:b + 1].clone())
            sampled = [b for b, s in enumerate(active) if s.gen is not None]
            nxt = greedy(scores)
            if sampled:
                rows = torch.tensor(sampled, device=self.device) if len(sampled) < len(active) else None
                probs = (scores if rows is None else scores[rows]).softmax(-1)
                # the engine's inverse-CDF draw, one uniform number from each row's own generator
                u = torch.cat([torch.rand(1, generator=active[b].gen, device=self.device, dtype=torch.float64)
                               for b in sampled])
                picked = draw(probs, u)
                if rows is None:
                    nxt = picked
                else:
                    nxt[rows] = picked
            for b, s in enumerate(active):
                if s.logprobs is not None:
                    s.pending_lp = [self._logprob(raw[b], int(nxt[b]), s.cfg.top_logprobs)]
        return nxt

    def _logprob(self, logits: torch.Tensor, tid: int, k: int) -> TokenLogprob:
        lp = logits.log_softmax(-1)
        top = []
        if k:
            v, i = lp.topk(k)
            top = [(self._text(t), t, float(x)) for t, x in zip(i.tolist(), v.tolist(), strict=True)]
        return TokenLogprob(self._text(tid), tid, float(lp[tid]), top)

    def _text(self, tid: int) -> str:
        return self.table[tid].decode("utf-8", errors="replace") if tid < len(self.table) else ""

    def _advance_text(self, active: list[Sequence], nxt: torch.Tensor) -> list[int]:
        """Record each sequence's token, emit deltas, finish what ended; returns batch rows to keep."""
        keep = []
        now = time.monotonic()
        eos = self.tokenizer.eos_id
        n_tok = 0
        for b, (s, tid) in enumerate(zip(active, nxt.tolist(), strict=True)):
            if s is GHOST:
                continue
            if s.cancelled:
                s.finish = "cancelled"
                self.stats.cancelled += 1
                continue
            if s.first_token is None:
                s.first_token = now
            if tid == eos and s.cfg.stop_at_eos:
                self._finish(s, "eos")
                continue
            s.tokens.append(tid)
            n_tok += 1
            lp = s.pending_lp if s.logprobs is not None else []
            if s.logprobs is not None:
                s.logprobs.extend(lp)
            stopped = s.tracker.push(tid)
            delta = s.tracker.delta()
            if delta or lp:
                s.emit(Event("delta", s.index, delta, list(lp)))
            if stopped:
                self._finish(s, "stop")
            elif len(s.tokens) >= s.cfg.max_new_tokens:
                self._finish(s, "length")
            elif s.deadline is not None and now > s.deadline:
                self._finish(s, "time")
            elif self.limit is not None and len(s.prompt_ids) + len(s.tokens) >= self.limit:
                self._finish(s, "length")
            else:
                keep.append(b)
        self.stats.tokens += n_tok
        if self.on_tokens is not None and n_tok:
            self.on_tokens(n_tok)
        return keep

    def _finish(self, s: Sequence, reason: str) -> None:
        s.finish = reason
        s.tracker.finish()
        tail = s.tracker.delta(final=True)
        if tail:
            s.emit(Event("delta", s.index, tail))
        s.emit(Event("done", s.index, result=s.result()))


def _deliver(items: list[tuple[asyncio.Queue, list[Sequence], Event]]) -> None:
    for queue, _, ev in items:
        queue.put_nowait(ev)


def merge_caches_possible(cache: Any) -> bool:
    """Whether a running batch with this cache can take new rows (GPT and LSTM caches can)."""
    from gencraft.models.gpt import KVCache
    from gencraft.models.lstm import LSTMState

    return isinstance(cache, KVCache | LSTMState)


def _vocab_size(model: Any, tokenizer: Any) -> int:
    v = getattr(model, "vocab_size", None) or getattr(getattr(model, "config", None), "vocab_size", None)
    return int(v or tokenizer.vocab_size)


def check_prompt(prompt_ids: list[int], max_tokens: int, limit: int | None, cap: int | None,
                 param: str) -> None:
    """Refuse a prompt that cannot fit: longer than the model's context (or the server's cap)."""
    n = len(prompt_ids)
    if cap is not None and n > cap:
        raise UsageError(f"{param}: {n} tokens is over this server's prompt limit of {cap}; shorten it",
                         param=param)
    if limit is not None and n >= limit:
        raise UsageError(f"{param}: {n} tokens does not fit the model's context of {limit} tokens "
                         "(leave room for at least one new token); shorten it", param=param)
    if limit is not None and n + max_tokens > limit:
        raise UsageError(f"max_tokens: {n} prompt tokens + {max_tokens} new tokens is over the model's "
                         f"context of {limit}; ask for at most {limit - n}", param="max_tokens")


__all__ = ["Event", "Scheduler", "Sequence", "Stats", "Ticket", "check_prompt", "merge_caches", "trim_cache"]
