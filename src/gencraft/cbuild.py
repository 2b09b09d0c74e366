"""Building gencraft's small C libraries (``models/gpt_decode.c``, ``models/kernels.c``, ``data/minhash.c``) on first use.

Each is compiled once per machine with the system C compiler (``cc``, or ``$CC``) into
``GENCRAFT_HOME/cache/native`` (:func:`gencraft.paths.home`), named by a digest of the source, the
compiler flags and the CPU's feature flags, and written atomically. ``GENCRAFT_NATIVE=0`` turns
them off (callers then take their numpy/PyTorch path). :func:`load` is the one way a caller gets its
library: built, loaded and its functions' signatures set once per process. This module imports neither torch nor
numpy: data-preparation workers load it too.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from gencraft.paths import home

log = logging.getLogger(__name__)

CFLAGS = ["-O3", "-march=native", "-fPIC", "-shared", "-fno-math-errno"]


def enabled() -> bool:
    return os.environ.get("GENCRAFT_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    return home() / "cache" / "native"


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def build(source: Path, cache: Path | None = None, cflags: list[str] = CFLAGS) -> Path:
    """Compile ``source`` into a shared library in ``cache`` (default :func:`cache_dir`), once per
    source (with the ``*.h`` headers beside it), flags and CPU; returns its path. RuntimeError when there is no compiler or it fails."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
    # the headers beside the source count as the source: a change to one rebuilds what includes it
    src = source.read_bytes() + b"".join(h.read_bytes() for h in sorted(source.parent.glob("*.h")))
    digest = hashlib.sha256(src + " ".join([cc, *cflags]).encode() + cpu_flags().encode()
                            + platform.machine().encode()).hexdigest()[:16]
    out = (cache or cache_dir()) / f"{source.stem}-{digest}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cc, *cflags, "-o", tmp, str(source), "-lm", "-lpthread"],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{cc} failed: {(proc.stderr or proc.stdout).strip().splitlines()[:1]}")
        os.replace(tmp, out)  # atomic: a concurrent build of the same digest writes the same bytes
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


# source -> the loaded library, or None where it could not be built (a process resource: tried once)
_loaded: dict[Path, Any] = {}
_load_lock = threading.Lock()

Signatures = dict[str, tuple[Any, list[Any]]]  # function name -> (restype, argtypes)


def load(source: Path, signatures: Signatures, fallback: str, cache: Path | None = None,
         cflags: list[str] = CFLAGS) -> Any:
    """The library built from ``source`` (:func:`build`), loaded once per process with ``signatures``
    set, or None: switched off (``GENCRAFT_NATIVE=0``) or not buildable here, which logs one line
    ending in ``fallback`` (what the caller does instead)."""
    if not enabled():
        return None
    if source not in _loaded:
        with _load_lock:  # threads reaching a first call together build once
            if source not in _loaded:
                lib = None
                try:
                    lib = ctypes.CDLL(str(build(source, cache, cflags)))
                    for name, (restype, argtypes) in signatures.items():
                        fn = getattr(lib, name)
                        fn.restype, fn.argtypes = restype, argtypes
                except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as e:
                    log.info("%s not available (%s): %s", source.name, e, fallback)
                    lib = None
                _loaded[source] = lib
    return _loaded[source]
