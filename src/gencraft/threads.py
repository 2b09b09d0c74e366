"""Thread-pool wait policies, asked for by the process that runs -- never set by importing gencraft.

OpenMP (torch's thread pool) and OpenBLAS (numpy's) read their policies from the environment once,
when torch and numpy load, and the right one depends on what the process does (docs/performance.md
has the measurements):

- ``"train"``: ``OMP_WAIT_POLICY=PASSIVE``. Idle OpenMP threads sleep instead of spinning; spinning
  waiters slow training down badly when another process holds a core.
- ``"decode"``: ``OPENBLAS_THREAD_TIMEOUT=16``, and OpenMP keeps libgomp's default (spin a while, then
  sleep). OpenBLAS's idle worker otherwise keeps spinning long after a prompt's products, on the core
  the decode step needs; waking a sleeping OpenMP thread costs more than the small parallel regions of
  a decode step.

``gencraft generate`` and ``gencraft serve`` ask for ``"decode"``, ``gencraft train`` and
``gencraft quickstart`` for ``"train"``; so do the bench scripts, and so should a script of yours, as
its first lines: ``import gencraft; gencraft.use_thread_policy("decode")``, before torch (and, for
"decode", numpy) is imported. A variable the user set is never overridden.
"""

from __future__ import annotations

import os
import sys

from gencraft.errors import UsageError

POLICIES: dict[str, dict[str, str]] = {
    "train": {"OMP_WAIT_POLICY": "PASSIVE"},
    "decode": {"OPENBLAS_THREAD_TIMEOUT": "16"},
}

# The Python module whose import loads the library that reads each variable, once: libgomp comes
# with torch, the OpenBLAS with numpy. numpy alone does not start OpenMP, so a command that has
# loaded numpy (the CLI does, through the music synthesizer) can still choose torch's wait policy.
READ_WHEN_LOADED = {"OMP_WAIT_POLICY": "torch", "OPENBLAS_THREAD_TIMEOUT": "numpy"}


def use_thread_policy(kind: str) -> bool:
    """Set the environment for a process that will mostly ``kind`` ("train" or "decode"), leaving
    anything the user set. Each variable is set only while the library that reads it is not loaded
    yet (later it would not matter); True if every variable of the policy was applied."""
    if kind not in POLICIES:
        raise UsageError(f"thread policy kind {kind!r}: expected one of {', '.join(POLICIES)}", param="kind")
    applied = True
    for name, value in POLICIES[kind].items():
        if READ_WHEN_LOADED.get(name, "torch") in sys.modules:
            applied = False
            continue
        os.environ.setdefault(name, value)
    return applied


__all__ = ["POLICIES", "use_thread_policy"]
