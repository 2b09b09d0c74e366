"""Continuous batching: one scheduler thread per model decodes every active request in one batch.

At each step boundary the scheduler

1. admits waiting requests: their prompts are prefilled together (left-padded) and their cache
   rows are merged into the running batch's cache (:func:`~gencraft.generate.core.merge_caches`);
2. picks the next token of every active sequence from the batch's logits with the sampling core
   (:func:`~gencraft.generate.core.choose_rows`: each sequence with its own processors, sampler,
   seed and stop strings -- requests never share sampling state -- batched where they allow it);
3. hands each sequence's text delta to its request (an ``asyncio`` queue on the server's loop);
4. drops finished, cancelled (client gone) and timed-out sequences (``cache.select``);
5. advances every row that remains in one batched step (:func:`~gencraft.generate.core.advance`:
   a row at the context limit shifts its window first, as in the engine).

A sequence gets the tokens the engine gives the same request: same prefill window, same rule,
same sampler seed (``sample_seed(seed, choice index)``), same window shifts.

So a new request waits at most one decode step before its prefill, and a long request never
holds up a short one.

A model holding a bank of LoRA adapters (:func:`~gencraft.models.lora.load_bank`: the adapters of
one base, ``gencraft.server.adapters``) serves them all in one batch: each sequence carries its
adapter's index (``submit(..., adapter=i)``), and every prefill and step runs each row through its
own adapter (``set_rows``), the rows following the batch's rows as they join, finish and shift. Models whose cache cannot be merged (Hugging Face ``past_key_values``) are
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
from gencraft.generate import core
from gencraft.generate.config import GenerationConfig, GenerationResult, TokenLogprob
from gencraft.generate.engine import pad_left
from gencraft.generate.processors import vocab_bytes
from gencraft.generate.text import TextTracker
from gencraft.models import decode
from gencraft.models.gpt import KVCache
from gencraft.models.lora import set_rows
from gencraft.server.errors import Overloaded, QueueFull

log = logging.getLogger("gencraft.server")

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
    adapter: int = 0  # the LoRA adapter of the model's bank this sequence runs through (0 = the base)
    rule: core.Rule = field(default_factory=lambda: core.Rule([], False))  # how it chooses (core.Rule.build)
    sampler: Any = None  # its sampler (sampling only)
    history: torch.Tensor | None = None  # [1, prompt + max_new_tokens]: the prompt, then the tokens so far
    tracker: TextTracker | None = None
    tokens: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    pending_lp: list[TokenLogprob] = field(default_factory=list)
    finish: str | None = None
    cancelled: bool = False
    submitted: float = field(default_factory=time.monotonic)
    first_token: float | None = None

    def context(self) -> torch.Tensor:
        """``[1, T]``: the prompt and the tokens generated so far."""
        return self.history[:, :len(self.prompt_ids) + len(self.tokens)]  # type: ignore[index]

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
        self.device = core.model_device(self.model)
        self.session = decode.session(self.model)  # CPU decode tuning, entered around each step
        self.limit: int | None = getattr(self.model, "max_context", None)
        self.vocab = _vocab_size(self.model, self.tokenizer)
        self.table = vocab_bytes(self.tokenizer, self.vocab)
        self.stats = Stats()
        self._pending: collections.deque[list[Sequence]] = collections.deque()
        self._outbox: list[tuple[Any, asyncio.Queue, list[Sequence], Event]] = []
        self._cv = threading.Condition()
        # held by the scheduler thread for each step: whoever changes the model (a new adapter in its
        # bank) holds it too, so no step sees a half-changed model
        self.lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True, name="gencraft-scheduler")
        self._thread.start()

    # -- called on the event loop

    def submit(self, prompt_ids: list[int], cfg: GenerationConfig, *, timeout: float | None = None,
               make_processors: Callable[[], list] | None = None, adapter: int = 0) -> Ticket:
        """Queue one request (``cfg.n`` sequences); raise QueueFull when the queue is at its bound.

        ``make_processors`` builds extra (stateful) processors, a fresh set per sequence -- e.g. a
        JSON-schema constraint; they run after ``cfg.processors``. Sequence ``i`` samples with seed
        ``sample_seed(seed, cfg.first_index + i)``, as the engine's row ``i`` (a request of several
        prompts gives prompt ``p`` ``first_index = p * n``).
        ``adapter``: the index of the LoRA adapter (in the model's bank) the request runs through.
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
        seqs = [Sequence(list(prompt_ids), cfg, i, emit, deadline, core.sample_seed(seed, cfg.first_index + i), adapter)
                for i in range(cfg.n)]
        for s in seqs:  # processors are per sequence (constraints keep per-row state); errors surface now
            c = cfg
            if make_processors is not None:
                c = dataclasses.replace(cfg, processors=[*cfg.processors, *make_processors()])
            s.rule = core.Rule.build(c, self.tokenizer, len(prompt_ids), self.vocab)
            if s.rule.sampling:
                s.sampler = core.samplers_for(cfg, [s.seed], self.device)[0]
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
                with self.lock, self.session, torch.inference_mode():
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
            if active and len(slots) == len(new) and core.place_rows(cache, new_cache, slots):
                logits[slots] = new_logits  # type: ignore[index]
                self.stats.reused += len(new)
                for slot, seq in zip(slots, new, strict=True):
                    active[slot] = seq
            elif active:
                cache, logits, active = self._compact(active, cache, logits)  # type: ignore[arg-type]
                merged = core.merge_caches(cache, new_cache, self.limit)
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
            if self.continuous and isinstance(cache, KVCache) and 4 * ghosts <= len(active):
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
        if isinstance(cache, KVCache) and self.limit is not None:
            self._refresh_ghosts(active, cache)
        logits, cache = core.advance(self.model, nxt, cache, self.limit,
                                     lambda rows: core.stack_contexts([active[b].context() for b in rows]),
                                     self._adapters(active))
        self.stats.steps += 1
        return cache, logits, active

    def _adapters(self, seqs: list[Sequence]) -> torch.Tensor | None:
        """Each row's adapter index, or None when every row is on the base (no low-rank products)."""
        ids = [s.adapter for s in seqs]
        return torch.tensor(ids, dtype=torch.long, device=self.device) if any(ids) else None

    def _refresh_ghosts(self, active: list[Sequence], cache: KVCache) -> None:
        """Ghost rows are all padding again before their own positions would reach the context
        limit (a ghost has no context to shift; its slot just has to stay usable)."""
        ghosts = [i for i, s in enumerate(active) if s is GHOST]
        if ghosts and cache.offset is not None and \
                int((cache.length - cache.offset[ghosts]).max()) >= self.limit - 1:  # type: ignore[operator]
            cache.set_padding(ghosts, cache.length)

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
        if n_active and (not self.continuous or not core.mergeable(cache)):
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
        with torch.inference_mode():
            ids = pad_left([s.prompt_ids for s in seqs], self.device)
            with set_rows(self._adapters(seqs)):
                logits, cache = core.prefill(self.model, ids, self.limit, self.limit)
        self.stats.prefills += 1
        for s in seqs:
            cfg = s.cfg
            s.tracker = TextTracker(self.table, list(cfg.stop))
            s.logprobs = [] if (cfg.logprobs or cfg.top_logprobs) else None
            P = len(s.prompt_ids)
            s.history = torch.empty((1, P + cfg.max_new_tokens), dtype=torch.long, device=self.device)
            s.history[0, :P] = torch.tensor(s.prompt_ids, dtype=torch.long)
        return logits, cache

    def _choose(self, active: list[Sequence], logits: torch.Tensor) -> torch.Tensor:
        """The next token of every active sequence, each with its own rule and sampler
        (:func:`~gencraft.generate.core.choose_rows`: batched where the processors allow)."""
        with torch.inference_mode():
            nxt = core.choose_rows(logits, [s.rule for s in active], [s.sampler for s in active],
                                   lambda b: active[b].context())
            for b, s in enumerate(active):
                if s.logprobs is not None:
                    s.pending_lp = core.token_logprobs(logits[b:b + 1], nxt[b:b + 1], s.cfg.top_logprobs, self.table)
        return nxt

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
            s.history[0, len(s.prompt_ids) + len(s.tokens)] = tid  # type: ignore[index]
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


def _vocab_size(model: Any, tokenizer: Any) -> int:
    v = getattr(model, "vocab_size", None) or getattr(getattr(model, "config", None), "vocab_size", None)
    return int(v or tokenizer.vocab_size)


def check_prompt(prompt_ids: list[int], max_tokens: int, cap: int | None, max_tokens_cap: int, param: str) -> None:
    """Refuse a request over the server's caps (prompt tokens, new tokens). A prompt longer than the
    model's context is fine: it keeps its newest tokens, and the window shifts as the output grows
    (as in the engine)."""
    n = len(prompt_ids)
    if cap is not None and n > cap:
        raise UsageError(f"{param}: {n} tokens is over this server's prompt limit of {cap}; shorten it",
                         param=param)
    if max_tokens > max_tokens_cap:
        raise UsageError(f"max_tokens: {max_tokens} is over this server's limit of {max_tokens_cap} new tokens "
                         "a request; ask for fewer", param="max_tokens")


__all__ = ["Event", "Scheduler", "Sequence", "Stats", "Ticket", "check_prompt"]
