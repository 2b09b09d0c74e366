"""gencraft: a local-first generative content studio.

The public API mirrors the CLI::

    import gencraft
    ds = gencraft.prepare(["stories/"], out="stories", tokenizer="bpe")
    run = gencraft.train(ds, model="gpt", preset="tiny", out="stories-gpt")
    model = gencraft.load(run)
    print(model.generate("Once upon a time", max_new_tokens=100).text)

Names are imported lazily so that ``gencraft --help`` starts fast.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# OpenMP worker threads that spin while waiting slow training down when the CPU is shared
# (measured: a 2-thread training step 315 -> 487 ms with libgomp's default spinning while another
# process held a core). Sleeping waiters cost a wake-up per parallel region instead (~45 us on the
# development VM), which is what holds 2-thread bf16 decoding back (124M: 61-66 tok/s passive vs
# 98-128 with the default bounded spin). Only takes effect before torch is imported; a user's own
# OMP_WAIT_POLICY or GOMP_SPINCOUNT (bounded spinning, e.g. 300000 for a decode-only process) wins.
if "GOMP_SPINCOUNT" not in os.environ:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

# public name -> "module:attribute"
_API = {
    "GencraftError": "gencraft.errors:GencraftError",
    "prepare": "gencraft.data.prepare:prepare",
    "train": "gencraft.train.loop:train",
    "evaluate": "gencraft.train.evaluate:evaluate",
    "load": "gencraft.backends:load",
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
