"""gencraft: a local-first generative content studio.

The public API mirrors the CLI::

    import gencraft
    ds = gencraft.prepare(["stories/"], out="stories", tokenizer="bpe")
    run = gencraft.train(ds, model="gpt", preset="tiny", out="stories-gpt")
    model = gencraft.load(run)
    print(model.generate("Once upon a time", max_new_tokens=100).text)   # raw model output
    [out] = gencraft.generate_text(model, "Once upon a time", max_new_tokens=100, out="story.txt")
    out.text, out.manifest                                              # released: guarded, signed, stored

Names are imported lazily so that ``gencraft --help`` starts fast. Importing gencraft changes
nothing in the process (no environment variable, no thread setting): a process that wants a
thread-pool wait policy asks for it, before torch loads (:func:`use_thread_policy`).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> "module:attribute"
_API = {
    "GencraftError": "gencraft.errors:GencraftError",
    "prepare": "gencraft.data.prepare:prepare",
    "train": "gencraft.train.loop:train",
    "evaluate": "gencraft.train.evaluate:evaluate",
    "load": "gencraft.backends:load",
    "speak": "gencraft.apps.speech:speak",
    "use_thread_policy": "gencraft.threads:use_thread_policy",
    "generate_text": "gencraft.apps.text:generate",
    "release": "gencraft.guard.release:release",
    "ReleasePolicy": "gencraft.guard.release:ReleasePolicy",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'gencraft' has no attribute {name!r}")
    module, attr = target.split(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
