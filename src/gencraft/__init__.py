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
# process held a core), so gencraft makes them sleep (PASSIVE). Sleeping waiters cost a wake-up per
# parallel region instead (~45 us on the development VM), which holds 2-thread bf16 decoding back
# (124M: 61-66 tok/s passive vs 98-128 spinning), so a process that only decodes switches back to
# libgomp's bounded spinning (:func:`prefer_spinning_threads`). Only takes effect before torch is
# imported; a user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
_OMP_USER_SET = "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ
if not _OMP_USER_SET:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
# numpy's OpenBLAS (prompt processing) keeps an idle worker spinning long after a product (its
# default timeout, 2^28 cycles): the C decode step that follows a prompt then shared a core with it
# (measured at 13.8M: every second or third of the first ~35 steps stalled 5.5 ms, 50-100 ms of
# the worker's CPU time per 128 tokens; as bad at 20 and 22, gone at 16 and below). 2^16 costs
# prompt processing ~2% (64 tokens, 13.8M: 5,950 vs 6,109 tok/s). Only effective before numpy
# loads; the user's own setting wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")


def prefer_spinning_threads() -> bool:
    """For a process that decodes and does not train (``gencraft generate``): let idle OpenMP threads
    spin for libgomp's default bound before sleeping, instead of sleeping at once. True if applied;
    False when torch is already imported (too late) or the user set the policy.

    Measured with another process busy on one core, the bounded spin cost decoding nothing (13.8M
    f32 374 vs 319 tok/s, 124M bf16 85 vs 86): the thread tuner keeps the matmuls on one thread
    there, and a one-thread region has no worker to spin.
    """
    import sys

    if _OMP_USER_SET or "torch" in sys.modules:
        return False
    os.environ.pop("OMP_WAIT_POLICY", None)
    os.environ["GOMP_SPINCOUNT"] = "300000"  # libgomp's own default when no policy is set
    return True

__version__ = "0.1.0"

# public name -> "module:attribute"
_API = {
    "GencraftError": "gencraft.errors:GencraftError",
    "prepare": "gencraft.data.prepare:prepare",
    "train": "gencraft.train.loop:train",
    "evaluate": "gencraft.train.evaluate:evaluate",
    "load": "gencraft.backends:load",
    "speak": "gencraft.generate.speech:speak",
}

__all__ = ["__version__", "prefer_spinning_threads", *_API]


def __getattr__(name: str) -> Any:
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'gencraft' has no attribute {name!r}")
    module, attr = target.split(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
