"""The decoding engine: one loop for every text model, every strategy, streaming and batching.

``generate(model, tokenizer, prompts, config)`` -> results per prompt; ``stream(...)`` yields
text deltas; ``astream(...)`` is the async version. ``model`` is anything with the step interface
(docs/architecture.md): a gencraft GPT or LSTM, or a Hugging Face model wrapped by
:mod:`gencraft.backends.hf`. Most callers use :func:`gencraft.backends.load` instead, whose
``TextModel`` has these as methods.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from gencraft.errors import UsageError
from gencraft.generate.beam import beam_search
from gencraft.generate.config import GenerationConfig, GenerationResult, TokenLogprob
from gencraft.generate.engine import Decoder, Prompt, encode_prompts
from gencraft.limits import check_generation
from gencraft.models import decode


def check_size(model: Any, tokenizer: Any, prompts: Sequence[Prompt], cfg: GenerationConfig) -> None:
    """Refuse, before decoding, a request whose sequences cannot fit in memory (:func:`limits.check_generation`)."""
    c = getattr(model, "config", None)
    per_token = 2 * getattr(c, "n_layer", 0) * getattr(c, "n_embd", 0) * 4  # a GPT's keys and values, float32
    longest = max((len(p) if not isinstance(p, str) else len(p.encode("utf-8")) for p in prompts), default=0)
    check_generation(rows=len(prompts) * max(cfg.n, cfg.num_beams), prompt_tokens=longest,
                     max_new_tokens=cfg.max_new_tokens, vocab=int(getattr(tokenizer, "vocab_size", 0) or 0),
                     context=getattr(model, "max_context", None), state_bytes_per_token=per_token)


def generate(model: Any, tokenizer: Any, prompts: Sequence[Prompt], config: GenerationConfig | None = None
             ) -> list[list[GenerationResult]]:
    """Generate for every prompt (strings or token-id lists); returns ``config.n`` results per prompt.

    Sampling and greedy decoding run all prompts and samples in one batch; beam search runs
    prompt by prompt (its beams are the batch).
    """
    cfg = config or GenerationConfig()
    cfg.validate()
    check_size(model, tokenizer, prompts, cfg)
    if cfg.num_beams > 1:
        with decode.session(model):
            return [beam_search(model, tokenizer, ids, cfg) for ids in encode_prompts(tokenizer, prompts)]
    return Decoder(model, tokenizer, prompts, cfg).run()


def stream(model: Any, tokenizer: Any, prompt: Prompt, config: GenerationConfig | None = None,
           results: list[GenerationResult] | None = None) -> Iterator[str]:
    """Yield the text of one generation as it comes (``n`` must be 1).

    Deltas never split a character or a byte-level token sequence, and never show a stop string
    or text that could still become one; ``"".join(stream(...)) == generate(...)[0][0].text`` for
    the same seed. Pass a list as ``results`` to receive the final :class:`GenerationResult`.
    """
    cfg = config or GenerationConfig()
    cfg.validate()
    if cfg.n != 1:
        raise UsageError("streaming returns one sequence: use n=1 (or generate() for several)", param="n")
    check_size(model, tokenizer, [prompt], cfg)
    if cfg.num_beams > 1:  # beams change their past until the end: the text comes at once
        res = generate(model, tokenizer, [prompt], cfg)[0][0]
        if results is not None:
            results.append(res)
        if res.text:
            yield res.text
        return
    dec = Decoder(model, tokenizer, [prompt], cfg, stream=True)
    for _, delta in dec.deltas():
        yield delta
    if results is not None:
        results.append(dec.results()[0][0])


async def astream(model: Any, tokenizer: Any, prompt: Prompt, config: GenerationConfig | None = None,
                  results: list[GenerationResult] | None = None) -> AsyncIterator[str]:
    """:func:`stream` as an async iterator: decoding runs in a worker thread, the event loop stays free."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    done = object()
    cancel = threading.Event()

    def work() -> None:
        try:
            for delta in stream(model, tokenizer, prompt, config, results):
                if cancel.is_set():
                    break
                loop.call_soon_threadsafe(queue.put_nowait, delta)
            loop.call_soon_threadsafe(queue.put_nowait, done)
        except BaseException as e:  # handed to the consumer, raised there
            loop.call_soon_threadsafe(queue.put_nowait, e)

    worker = threading.Thread(target=work, daemon=True, name="gencraft-astream")
    worker.start()
    try:
        while True:
            item = await queue.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancel.set()


__all__ = ["Decoder", "GenerationConfig", "GenerationResult", "TokenLogprob", "astream", "generate", "stream"]
