"""The loaded text model every backend returns: the step model, its tokenizer, its info, and
generation through the one decoding engine (:mod:`gencraft.generate`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from gencraft.generate import astream, generate, stream
from gencraft.generate.config import GenerationConfig, GenerationResult
from gencraft.generate.engine import Prompt

UNSEEN_BIAS = -100.0  # OpenAI's "ban in practice": a grammar that needs such a token can still have it


class TextModel:
    """A loaded text model: ``.model`` (step interface), ``.tokenizer``, ``.info``, and generation.

    ``unseen``: the token ids the training data never holds (a char tokenizer's byte-fallback
    pieces, byte-level BPE bytes of scripts the corpus lacks). An undertrained model still gives
    them some probability and prints stray characters, so generation biases them by -100 unless
    ``allow_unseen_tokens=True`` (see :meth:`generation_config`)."""

    def __init__(self, model: Any, tokenizer: Any, info: dict[str, Any], path: str | None = None,
                 unseen: Sequence[int] = ()) -> None:
        self.model, self.tokenizer, self.info, self.path = model, tokenizer, info, path
        self.unseen = tuple(int(t) for t in unseen)

    def __repr__(self) -> str:
        return f"TextModel(kind={self.info.get('kind')!r}, path={self.path!r})"

    def generation_config(self, config: GenerationConfig | None = None, *, allow_unseen_tokens: bool = False,
                          **options: Any) -> GenerationConfig:
        """``config`` with ``options`` on top and, unless ``allow_unseen_tokens``, the unseen tokens
        biased away (the caller's own ``logit_bias`` for a token wins)."""
        cfg = GenerationConfig.from_options(config, **options)
        if allow_unseen_tokens or not self.unseen:
            return cfg
        return GenerationConfig.from_options(cfg, logit_bias={**dict.fromkeys(self.unseen, UNSEEN_BIAS),
                                                              **cfg.logit_bias})

    def generate(self, prompt: Prompt | Sequence[Prompt], config: GenerationConfig | None = None,
                 **options: Any) -> Any:
        """Generate from one prompt or a list of prompts (strings, or lists of token ids).

        One prompt -> a :class:`GenerationResult` (a list of ``n`` when ``n > 1``); a list of
        prompts -> one entry per prompt. Options are :class:`GenerationConfig` fields and
        ``allow_unseen_tokens``.
        """
        cfg = self.generation_config(config, **options)
        single = isinstance(prompt, str) or bool(isinstance(prompt, Sequence) and prompt and
                                                 all(isinstance(t, int) for t in prompt))
        prompts = [prompt] if single else list(prompt)  # type: ignore[arg-type]
        out = generate(self.model, self.tokenizer, prompts, cfg)
        per_prompt: list[Any] = [r[0] if cfg.n == 1 else r for r in out]
        return per_prompt[0] if single else per_prompt

    def stream(self, prompt: Prompt, config: GenerationConfig | None = None,
               results: list[GenerationResult] | None = None, **options: Any) -> Iterator[str]:
        """Text deltas of one generation as they come (see :func:`gencraft.generate.stream`)."""
        return stream(self.model, self.tokenizer, prompt, self.generation_config(config, **options), results)

    def astream(self, prompt: Prompt, config: GenerationConfig | None = None,
                results: list[GenerationResult] | None = None, **options: Any) -> AsyncIterator[str]:
        """The async version of :meth:`stream`."""
        return astream(self.model, self.tokenizer, prompt, self.generation_config(config, **options), results)
