"""Plain text generation, released: what ``gencraft generate`` and ``gencraft.generate_text()`` run.

The engine (:meth:`gencraft.backends.TextModel.generate`) returns raw model output; this is the
path that hands every sample to :func:`gencraft.guard.release` (watermarked while it is sampled,
moderated, copy-checked, signed, written and stored by one :class:`~gencraft.guard.ReleasePolicy`)::

    import gencraft
    [rel] = gencraft.generate_text("shakespeare", "ROMEO:", max_new_tokens=200, seed=1, out="romeo.txt")
    rel.text, rel.manifest["signature"], rel.result.finish_reason
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gencraft import guard
from gencraft.apps._common import load_model, release_policy
from gencraft.errors import GuardError, UsageError
from gencraft.generate import GenerationConfig


def sample_path(out: str | os.PathLike[str] | None, index: int, count: int) -> Path | None:
    """Where sample ``index`` of ``count`` goes: ``out`` itself for one, ``STEM-1.SUF``... for several."""
    if out is None:
        return None
    p = Path(out)
    return p if count == 1 else p.with_name(f"{p.stem}-{index + 1}{p.suffix}")


def generate(model: Any, prompt: str = "", config: GenerationConfig | None = None, *,
             policy: guard.ReleasePolicy | None = None, out: str | os.PathLike[str] | None = None,
             front_matter: bool = False, on_delta: Callable[[str], None] | None = None, retries: int = 0,
             name: str | None = None, allow_unseen_tokens: bool = False, **options: Any) -> list[guard.Released]:
    """Generate ``n`` samples of ``prompt`` with ``model`` (TextModel, run or ``hf:PATH``) and release each.

    ``options`` are :class:`GenerationConfig` fields; ``allow_unseen_tokens`` lets the model sample
    tokens its training data never holds (see :class:`gencraft.backends.TextModel`). ``on_delta`` receives the text as it is
    sampled (one sample, no beams). ``retries``: when the policy refuses a sample (moderation
    block, or a copy with ``copy_action="block"``), sample it again with the next seed, up to this
    many times (one sample). Each :class:`~gencraft.guard.Released` carries the engine's
    :class:`~gencraft.generate.GenerationResult` as ``.result``.
    """
    tm = load_model(model)
    cfg = GenerationConfig.from_options(config, **options)
    if retries < 0:
        raise UsageError(f"retries={retries}: must be >= 0", param="retries")
    if retries and cfg.n > 1:
        raise UsageError("retries regenerate one sample; use n=1", param="retries")
    own = policy is None
    policy = policy if policy is not None else release_policy()
    try:
        wm = policy.text_watermark(tm.tokenizer.vocab_size)
        if wm is not None:
            cfg = GenerationConfig.from_options(cfg, **guard.watermark_options(wm, {"processors": cfg.processors}))
        name = name if name is not None else str(tm.path or "")
        last: GuardError | None = None
        for attempt in range(retries + 1):
            seed = cfg.seed if (cfg.seed is None or not attempt) else cfg.seed + attempt
            run_cfg = GenerationConfig.from_options(cfg, seed=seed) if attempt else cfg
            results = _sample(tm, prompt, run_cfg, on_delta if not attempt else None, allow_unseen_tokens)
            try:
                return [_release(tm, r, i, len(results), policy, run_cfg, prompt, wm, out, front_matter, name,
                                 attempt if retries else None) for i, r in enumerate(results)]
            except GuardError as e:
                if e.param in ("prompt", "strict_licenses") or not retries:
                    raise
                last = e
        raise GuardError(f"no acceptable output in {retries + 1} attempts; last: {last}", param="retries")
    finally:
        if own:
            policy.close()


def _sample(tm: Any, prompt: str, cfg: GenerationConfig, on_delta: Callable[[str], None] | None,
            allow_unseen_tokens: bool) -> list[Any]:
    if on_delta is not None and cfg.n == 1 and cfg.num_beams == 1:
        results: list[Any] = []
        for delta in tm.stream(prompt, cfg, results=results, allow_unseen_tokens=allow_unseen_tokens):
            on_delta(delta)
        return results
    res = tm.generate(prompt, cfg, allow_unseen_tokens=allow_unseen_tokens)
    return res if isinstance(res, list) else [res]


def _release(tm: Any, r: Any, i: int, count: int, policy: guard.ReleasePolicy, cfg: GenerationConfig,
             prompt: str, wm: Any, out: Any, front_matter: bool, name: str, attempt: int | None) -> guard.Released:
    params = {"model": name, **cfg.public_dict(), "index": r.index, "finish_reason": r.finish_reason}
    if attempt is not None:
        params["attempt"] = attempt
    rel = guard.release(r.text, kind="text", label="completion", policy=policy, model=tm, params=params,
                        seed=cfg.seed, prompt=prompt, watermark=guard.watermark_in(wm, cfg),
                        out=sample_path(out, i, count),
                        front_matter=front_matter, model_name=name)
    rel.result = r
    return rel
