"""Logits processors: small callables ``(ids, logits) -> logits``, composed in a list.

``ids`` is ``LongTensor[B, T]``: each row's prompt left-padded with ``-1`` (negative ids are
padding: ignore them), then the tokens generated so far. ``logits`` is ``FloatTensor[B, V]``;
a processor may change it in place and returns it. Filters set dropped tokens to ``-inf`` and
always keep at least one token. :func:`build_processors` puts the built-in ones in the
documented order (docs/architecture.md, "Logits processors").

Batching across rows: a processor class whose instances only need their own parameters (no
``ids``) says so with a classmethod ``batched(procs) -> processor``: one processor over a batch
whose row ``i`` comes out exactly as ``procs[i]`` would make it. The server's scheduler runs every
request in one batch, each with its own options; it calls ``batched`` to apply, say, every row's
temperature in one divide (:func:`gencraft.generate.core.choose_rows`). A class that reads
``ids`` (or keeps state) has no ``batched`` and runs row by row there.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch

from gencraft.errors import UsageError

NEG_INF = float("-inf")


def token_counts(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """How often each token id occurs in each row of ``ids`` (padding ignored): ``[B, V]`` float."""
    valid = ids >= 0
    counts = torch.zeros(ids.shape[0], vocab_size, dtype=torch.float32, device=ids.device)
    return counts.scatter_add_(1, ids.clamp(min=0), valid.to(torch.float32))


class Temperature:
    """Divide logits by ``t`` (> 0): below 1 sharpens the distribution, above 1 flattens it."""

    def __init__(self, t: float) -> None:
        self.t = float(t)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return logits.div_(self.t)

    @classmethod
    def batched(cls, procs: Sequence[Temperature]) -> Any:
        return _PerRow(lambda logits, t: logits.div_(t), [p.t for p in procs])


class TopK:
    """Keep the ``k`` most likely tokens (ties at the k-th value are kept)."""

    def __init__(self, k: int) -> None:
        self.k = int(k)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        k = min(self.k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]
        return logits.masked_fill_(logits < kth, NEG_INF)

    @classmethod
    def batched(cls, procs: Sequence[TopK]) -> Any:
        def top_k(logits: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            k = k.long().clamp_(max=logits.shape[-1])  # the k-th largest is the same in a longer top list
            kth = torch.topk(logits, int(k.max()), dim=-1).values.gather(1, k - 1)
            return logits.masked_fill_(logits < kth, NEG_INF)
        return _PerRow(top_k, [p.k for p in procs])


class _Filter:
    """A filter ``rule(logits, p)`` with one parameter ``p``: called with its own, or batched with one
    ``p`` per row (the same arithmetic: ``p`` broadcasts per row)."""

    rule: Any = None

    def __init__(self, p: float) -> None:
        self.p = float(p)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return type(self).rule(logits, self.p)

    @classmethod
    def batched(cls, procs: Sequence[_Filter]) -> Any:
        return _PerRow(cls.rule, [p.p for p in procs])


def _top_p(logits: torch.Tensor, p: float | torch.Tensor) -> torch.Tensor:
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    before = probs.cumsum(-1) - probs  # probability mass of the tokens ranked above this one
    drop_sorted = before >= p
    drop_sorted[:, 0] = False
    drop = torch.zeros_like(drop_sorted).scatter_(1, order, drop_sorted)
    return logits.masked_fill_(drop, NEG_INF)


def _min_p(logits: torch.Tensor, p: float | torch.Tensor) -> torch.Tensor:
    probs = logits.softmax(-1)
    threshold = probs.max(-1, keepdim=True).values * p
    return logits.masked_fill_(probs < threshold, NEG_INF)


def _typical_p(logits: torch.Tensor, mass: float | torch.Tensor) -> torch.Tensor:
    logp = logits.log_softmax(-1)
    p = logp.exp()
    entropy = -(p * logp).nan_to_num().sum(-1, keepdim=True)
    distance = (-logp - entropy).abs()
    sorted_dist, order = torch.sort(distance, dim=-1)
    sorted_p = p.gather(1, order)
    before = sorted_p.cumsum(-1) - sorted_p
    drop_sorted = before >= mass
    drop_sorted[:, 0] = False
    drop = torch.zeros_like(drop_sorted).scatter_(1, order, drop_sorted)
    return logits.masked_fill_(drop, NEG_INF)


class TopP(_Filter):
    """Nucleus sampling: keep the smallest set of most likely tokens whose probability reaches ``p``."""

    rule = staticmethod(_top_p)


class MinP(_Filter):
    """Keep tokens whose probability is at least ``p`` times the most likely token's."""

    rule = staticmethod(_min_p)


class TypicalP(_Filter):
    """Locally typical sampling (Meister et al., 2022): keep the tokens whose surprise is closest to
    the distribution's entropy, smallest set first, until their probability reaches ``p``."""

    rule = staticmethod(_typical_p)


class RepetitionPenalty:
    """CTRL's repetition penalty (Keskar et al., 2019): every token already in ``ids`` (prompt
    included) has its logit divided by ``penalty`` when positive, multiplied when negative."""

    def __init__(self, penalty: float) -> None:
        self.penalty = float(penalty)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        seen = token_counts(ids, logits.shape[-1]) > 0
        penalised = torch.where(logits > 0, logits / self.penalty, logits * self.penalty)
        return torch.where(seen, penalised, logits, out=logits)


class PresenceFrequencyPenalty:
    """OpenAI's penalties: ``logit -= frequency * count + presence * (count > 0)``, where ``count``
    is how often the token was generated so far (the prompt, ``ids[:, :prompt_len]``, is not counted)."""

    def __init__(self, presence: float, frequency: float, prompt_len: int) -> None:
        self.presence, self.frequency, self.prompt_len = float(presence), float(frequency), int(prompt_len)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        counts = token_counts(ids[:, self.prompt_len:], logits.shape[-1])
        return logits.sub_(counts * self.frequency + (counts > 0).to(logits.dtype) * self.presence)


class NoRepeatNGram:
    """Ban every token that would complete an n-gram already present in the row (prompt included)."""

    def __init__(self, n: int) -> None:
        self.n = int(n)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        n = self.n
        for row, seq in enumerate(ids.tolist()):
            seq = [t for t in seq if t >= 0]
            if len(seq) < n:
                continue
            prefix = tuple(seq[len(seq) - n + 1:]) if n > 1 else ()
            banned = {seq[i + n - 1] for i in range(len(seq) - n + 1) if tuple(seq[i:i + n - 1]) == prefix}
            if banned:
                logits[row, list(banned)] = NEG_INF
        return logits


@functools.lru_cache(maxsize=8)
def vocab_bytes(tokenizer: Any, vocab_size: int) -> tuple[bytes, ...]:
    """The bytes each token id adds to the text (ids past the tokenizer's vocabulary add none)."""
    n = min(vocab_size, tokenizer.vocab_size)
    if hasattr(tokenizer, "token_bytes_table"):
        table = tuple(tokenizer.token_bytes_table()[:n])
    else:
        table = tuple(tokenizer.token_bytes(i) for i in range(n))
    return table + (b"",) * (vocab_size - n)


@functools.lru_cache(maxsize=64)
def _completers(tokenizer: Any, vocab_size: int, word: bytes) -> tuple[list[int], dict[int, list[int]]]:
    """For a banned byte string: the tokens that contain it whole, and for each k in 1..len-1 the
    tokens that start with ``word[k:]`` (they complete the word when the text ends with ``word[:k]``)."""
    always: list[int] = []
    after: dict[int, list[int]] = {k: [] for k in range(1, len(word))}
    for tid, b in enumerate(vocab_bytes(tokenizer, vocab_size)):
        if not b:
            continue
        if word in b:
            always.append(tid)
        for k in range(1, len(word)):
            if b.startswith(word[k:]):
                after[k].append(tid)
    return always, {k: v for k, v in after.items() if v}


class BadWords:
    """Never let the text contain any of ``words``, however they are split into tokens.

    Matched on the text's bytes: a token is banned when appending it would complete a banned
    string, whether the string fits inside the token or began in the tokens before it.
    """

    def __init__(self, words: Sequence[str], tokenizer: Any) -> None:
        self.words = [w.encode("utf-8") for w in words if w]
        self.tokenizer = tokenizer

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        V = logits.shape[-1]
        table = vocab_bytes(self.tokenizer, V)
        longest = max(len(w) for w in self.words)
        rows = ids.tolist()
        for word in self.words:
            always, after = _completers(self.tokenizer, V, word)
            if always:
                logits[:, always] = NEG_INF
            if not after:
                continue
            for r, seq in enumerate(rows):
                tail = b""
                for t in reversed(seq):  # the last len(word) bytes of the text so far
                    if t < 0 or len(tail) >= longest:
                        break
                    tail = table[t] + tail
                for k, toks in after.items():
                    if tail.endswith(word[:k]):
                        logits[r, toks] = NEG_INF
        return logits


class LogitBias:
    """Add a bias to given token ids (OpenAI's ``logit_bias``; -100 effectively bans, +100 forces)."""

    def __init__(self, bias: dict[int, float]) -> None:
        self.ids = torch.tensor(list(bias.keys()), dtype=torch.long)
        self.values = torch.tensor(list(bias.values()), dtype=torch.float32)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        logits[:, self.ids.to(logits.device)] += self.values.to(logits.device)
        return logits

    @classmethod
    def batched(cls, procs: Sequence[LogitBias]) -> Any:
        rows = torch.cat([torch.full_like(p.ids, i) for i, p in enumerate(procs)])
        cols, vals = torch.cat([p.ids for p in procs]), torch.cat([p.values for p in procs])

        def bias(ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
            dev = logits.device
            index = (rows.to(dev), cols.to(dev))
            return logits.index_put_(index, logits[index] + vals.to(dev))  # ids are unique within a row
        return bias


class _PerRow:
    """What ``batched`` returns for a parameter-only processor: ``fn(logits, values)`` with one value
    per row (``values[:, None]`` broadcasts as the scalar does for one row: the same arithmetic)."""

    def __init__(self, fn: Any, values: list[float]) -> None:
        self.fn, self.values = fn, torch.tensor(values, dtype=torch.float32)[:, None]

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return self.fn(logits, self.values.to(logits.device))


def build_processors(config: Any, tokenizer: Any, prompt_len: int, vocab_size: int,
                     sampling: bool, *, top_k: bool = True) -> list:
    """The processors ``config`` asks for, in the documented order.

    Penalties, bans, bias and the hook first (they shape the model's distribution, so greedy and
    beam search use them too); temperature and the filters last, and only when ``sampling``.
    ``top_k=False`` leaves the top-k filter out (the sampling core draws among the k best itself
    when it is the last filter).
    """
    procs: list = []
    if config.repetition_penalty != 1.0:
        procs.append(RepetitionPenalty(config.repetition_penalty))
    if config.presence_penalty or config.frequency_penalty:
        procs.append(PresenceFrequencyPenalty(config.presence_penalty, config.frequency_penalty, prompt_len))
    if config.no_repeat_ngram_size:
        procs.append(NoRepeatNGram(config.no_repeat_ngram_size))
    if config.bad_words:
        procs.append(BadWords(config.bad_words, tokenizer))
    if config.logit_bias:
        bad = [k for k in config.logit_bias if k >= vocab_size]
        if bad:
            raise UsageError(f"logit_bias: token id {bad[0]} is outside the vocabulary (size {vocab_size})",
                             param="logit_bias")
        procs.append(LogitBias(dict(config.logit_bias)))
    procs.extend(config.processors)
    if sampling:
        if config.temperature != 1.0:
            procs.append(Temperature(config.temperature))
        if config.top_k and top_k:
            procs.append(TopK(config.top_k))
        if config.top_p < 1.0:
            procs.append(TopP(config.top_p))
        if config.min_p > 0.0:
            procs.append(MinP(config.min_p))
        if config.typical_p < 1.0:
            procs.append(TypicalP(config.typical_p))
    return procs


def apply(processors: list, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Run ``processors`` in order."""
    for p in processors:
        logits = p(ids, logits)
    return logits


__all__ = [
    "BadWords", "LogitBias", "MinP", "NoRepeatNGram", "PresenceFrequencyPenalty", "RepetitionPenalty",
    "Temperature", "TopK", "TopP", "TypicalP", "apply", "build_processors", "token_counts", "vocab_bytes",
]
