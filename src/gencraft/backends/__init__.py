"""Text models behind one interface: gencraft runs (GPT, LSTM) and local Hugging Face models.

``load(spec)`` returns a :class:`TextModel`: ``spec`` is a run name or path, or ``hf:PATH`` for a
local Hugging Face causal-LM folder. Every model goes through the same decoding engine
(:mod:`gencraft.generate`), so every option, processor and streaming works with every model.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import torch

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


def load(spec: str | os.PathLike[str], device: str | torch.device | None = None,
         dtype: torch.dtype | None = None) -> TextModel:
    """Load a run (name or path) or ``hf:PATH`` (a local Hugging Face causal LM) as a :class:`TextModel`.

    ``device`` defaults to the CPU; ``dtype`` (e.g. ``torch.bfloat16``) casts the weights.
    """
    s = os.fspath(spec)
    dev = torch.device(device or "cpu")
    if s.startswith("hf:"):
        from gencraft.backends.hf import load_hf
        return load_hf(s[3:], dev, dtype)
    from gencraft.errors import RunError
    from gencraft.tokenize import load_tokenizer
    from gencraft.train.rundir import load_text_model

    model, info, path = load_text_model(s, device=dev)
    if dtype is not None:
        model = model.to(dtype)
    if not (path / "tokenizer.json").is_file():
        raise RunError(f"{path / 'tokenizer.json'}: missing; the run is incomplete (train it again)")
    tok = load_tokenizer(path / "tokenizer.json")
    vocab = getattr(model.config, "vocab_size", tok.vocab_size)
    if tok.vocab_size > vocab:
        raise RunError(f"{path}: tokenizer has {tok.vocab_size} tokens but the model only {vocab}")
    return TextModel(model, tok, info, str(path))


__all__ = ["TextModel", "load"]
