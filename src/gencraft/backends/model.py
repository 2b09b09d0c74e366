"""The loaded text model every backend returns: the step model, its tokenizer, its info, and
generation through the one decoding engine (:mod:`gencraft.generate`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from gencraft.generate import astream, generate, stream
from gencraft.generate.config import GenerationConfig, GenerationResult
from gencraft.generate.engine import Prompt


class TextModel:
    """A loaded text model: ``.model`` (step interface), ``.tokenizer``, ``.info``, and generation."""

    def __init__(self, model: Any, tokenizer: Any, info: dict[str, Any], path: str | None = None) -> None:
        self.model, self.tokenizer, self.info, self.path = model, tokenizer, info, path

    def __repr__(self) -> str:
        return f"TextModel(kind={self.info.get('kind')!r}, path={self.path!r})"

    def generate(self, prompt: Prompt | Sequence[Prompt], config: GenerationConfig | None = None,
                 **options: Any) -> Any:
        """Generate from one prompt or a list of prompts (strings, or lists of token ids).

        One prompt -> a :class:`GenerationResult` (a list of ``n`` when ``n > 1``); a list of
        prompts -> one entry per prompt. Options are :class:`GenerationConfig` fields.
        """
        cfg = GenerationConfig.from_options(config, **options)
        single = isinstance(prompt, str) or bool(isinstance(prompt, Sequence) and prompt and
                                                 all(isinstance(t, int) for t in prompt))
        prompts = [prompt] if single else list(prompt)  # type: ignore[arg-type]
        out = generate(self.model, self.tokenizer, prompts, cfg)
        per_prompt: list[Any] = [r[0] if cfg.n == 1 else r for r in out]
        return per_prompt[0] if single else per_prompt

    def stream(self, prompt: Prompt, config: GenerationConfig | None = None,
               results: list[GenerationResult] | None = None, **options: Any) -> Iterator[str]:
        """Text deltas of one generation as they come (see :func:`gencraft.generate.stream`)."""
        return stream(self.model, self.tokenizer, prompt, GenerationConfig.from_options(config, **options), results)

    def astream(self, prompt: Prompt, config: GenerationConfig | None = None,
                results: list[GenerationResult] | None = None, **options: Any) -> AsyncIterator[str]:
        """The async version of :meth:`stream`."""
        return astream(self.model, self.tokenizer, prompt, GenerationConfig.from_options(config, **options),
                       results)
