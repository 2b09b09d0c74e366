"""Generation options and results.

:class:`GenerationConfig` holds every decoding option with its validation: a bad value raises
:class:`~gencraft.errors.UsageError` naming the parameter (``param=`` is the field name, so the
server can answer a 400 that points at it). :class:`GenerationResult` is what a generation returns.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gencraft.errors import UsageError

Processor = Callable[..., Any]  # (ids LongTensor[B, T], logits FloatTensor[B, V]) -> logits


def _bad(name: str, msg: str) -> UsageError:
    return UsageError(f"{name}: {msg}", param=name)


@dataclass
class GenerationConfig:
    """Every decoding option. ``temperature=0`` is greedy decoding; ``num_beams>1`` is beam search."""

    max_new_tokens: int = 128
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    no_repeat_ngram_size: int = 0
    bad_words: list[str] = field(default_factory=list)
    logit_bias: dict[int, float] = field(default_factory=dict)
    num_beams: int = 1
    num_beam_groups: int = 1
    diversity_penalty: float = 0.0
    length_penalty: float = 1.0
    early_stopping: bool = False
    n: int = 1
    stop: list[str] = field(default_factory=list)
    max_time: float | None = None
    seed: int | None = None
    # the index of the first sequence: row ``r`` samples with ``sample_seed(seed, first_index + r)``, so a
    # batch made in parts (a server request's later prompts, a job's later chunks) samples as one request
    first_index: int = 0
    logprobs: bool = False
    top_logprobs: int = 0
    processors: list[Processor] = field(default_factory=list)
    stop_at_eos: bool = True
    # the draw of a sampled token: ``sampler(seed)`` makes each sequence's sampler (None: the seeded
    # inverse-CDF draw, gencraft.generate.core.SeededDraw; a keyed watermark fills this slot)
    sampler: Callable[[int], Any] | None = None

    @classmethod
    def from_options(cls, config: GenerationConfig | None = None, **options: Any) -> GenerationConfig:
        """A validated config from ``config`` (or the defaults) with ``options`` applied on top.

        ``num_return_sequences`` is accepted as an alias of ``n``; an unknown option is a UsageError.
        """
        if "num_return_sequences" in options:
            options["n"] = options.pop("num_return_sequences")
        names = {f.name for f in dataclasses.fields(cls)}
        for key in options:
            if key not in names:
                raise UsageError(f"unknown generation option {key!r}; known: {', '.join(sorted(names))}",
                                 param=key)
        base = config if config is not None else cls()
        cfg = dataclasses.replace(base, **options)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Check every field; raise UsageError naming the first bad one."""
        def num(name: str, v: Any, integer: bool = False) -> float:
            ok = isinstance(v, int) if integer else isinstance(v, int | float)
            if isinstance(v, bool) or not ok or (not integer and not math.isfinite(v)):
                raise _bad(name, f"expected {'an integer' if integer else 'a finite number'}, got {v!r}")
            return v

        if num("max_new_tokens", self.max_new_tokens, True) < 0:
            raise _bad("max_new_tokens", "must be >= 0")
        if num("temperature", self.temperature) < 0:
            raise _bad("temperature", f"must be >= 0 (0 = greedy), got {self.temperature}")
        if num("top_k", self.top_k, True) < 0:
            raise _bad("top_k", f"must be >= 0 (0 = off), got {self.top_k}")
        for name in ("top_p", "typical_p"):
            v = num(name, getattr(self, name))
            if not 0 < v <= 1:
                raise _bad(name, f"must be in (0, 1], got {v}")
        if not 0 <= num("min_p", self.min_p) < 1:
            raise _bad("min_p", f"must be in [0, 1), got {self.min_p}")
        if num("repetition_penalty", self.repetition_penalty) <= 0:
            raise _bad("repetition_penalty", f"must be > 0 (1 = off), got {self.repetition_penalty}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2 <= num(name, getattr(self, name)) <= 2:
                raise _bad(name, f"must be in [-2, 2] (OpenAI's range), got {getattr(self, name)}")
        if num("no_repeat_ngram_size", self.no_repeat_ngram_size, True) < 0:
            raise _bad("no_repeat_ngram_size", "must be >= 0 (0 = off)")
        if not isinstance(self.bad_words, list | tuple) or not all(isinstance(w, str) and w for w in self.bad_words):
            raise _bad("bad_words", "expected a list of non-empty strings")
        if not isinstance(self.logit_bias, Mapping):
            raise _bad("logit_bias", "expected a map token_id -> bias")
        for k, v in self.logit_bias.items():
            if isinstance(k, bool) or not isinstance(k, int) or k < 0:
                raise _bad("logit_bias", f"token id {k!r} is not a non-negative integer")
            num("logit_bias", v)
        if num("num_beams", self.num_beams, True) < 1:
            raise _bad("num_beams", f"must be >= 1, got {self.num_beams}")
        if num("num_beam_groups", self.num_beam_groups, True) < 1 or self.num_beams % self.num_beam_groups:
            raise _bad("num_beam_groups", f"must be >= 1 and divide num_beams ({self.num_beams})")
        if num("diversity_penalty", self.diversity_penalty) < 0:
            raise _bad("diversity_penalty", "must be >= 0")
        num("length_penalty", self.length_penalty)
        if num("first_index", self.first_index, True) < 0:
            raise _bad("first_index", "expected an integer >= 0")
        if num("n", self.n, True) < 1:
            raise _bad("n", f"must be >= 1, got {self.n}")
        if self.num_beams > 1 and self.n > self.num_beams:
            raise _bad("n", f"beam search returns at most num_beams ({self.num_beams}) sequences, asked for {self.n}")
        if not isinstance(self.stop, list | tuple) or not all(isinstance(s, str) and s for s in self.stop):
            raise _bad("stop", "expected a list of non-empty strings")
        if self.max_time is not None and num("max_time", self.max_time) <= 0:
            raise _bad("max_time", "must be > 0 seconds")
        if self.seed is not None:
            num("seed", self.seed, True)
        if not 0 <= num("top_logprobs", self.top_logprobs, True) <= 20:
            raise _bad("top_logprobs", "must be in [0, 20]")
        if not all(callable(p) for p in self.processors):
            raise _bad("processors", "every processor must be callable (ids, logits) -> logits")
        if self.sampler is not None and not callable(self.sampler):
            raise _bad("sampler", "expected a callable seed -> sampler (see gencraft.generate.core)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 and self.num_beams == 1

    def public_dict(self) -> dict[str, Any]:
        """The options as JSON-able data (for provenance); hook processors by class name."""
        d = dataclasses.asdict(dataclasses.replace(self, processors=[], sampler=None))
        d["processors"] = [type(p).__name__ for p in self.processors]
        d["sampler"] = None if self.sampler is None else getattr(self.sampler, "__qualname__", type(self.sampler).__name__)
        d["logit_bias"] = {str(k): v for k, v in self.logit_bias.items()}
        return d


@dataclass
class TokenLogprob:
    """One generated token: its text, id, log-probability and the top alternatives ``(text, id, logprob)``."""

    token: str
    token_id: int
    logprob: float
    top: list[tuple[str, int, float]] = field(default_factory=list)


@dataclass
class GenerationResult:
    """One generated sequence."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "eos" | "length" | "time"
    logprobs: list[TokenLogprob] | None = None
    score: float | None = None
    index: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
