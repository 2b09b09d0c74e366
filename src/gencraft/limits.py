"""Bounds on what a user can ask for, checked before any work starts.

Sizes (images, upscale factors, tokens, beams x samples, model shapes) are bounded by the memory
the machine has: :func:`require_memory` compares an estimate of what a request needs with what is
available and refuses, in one line naming the setting, what could only end in ``MemoryError`` or
the kernel's OOM killer. Recursive inputs (JSON Schemas, nested JSON) get a depth limit
(:func:`check_depth`), so that no input can exhaust Python's recursion limit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gencraft.errors import UsageError

MAX_JSON_DEPTH = 64  # deeper than any schema or record a person writes; far below Python's recursion limit


def available_memory() -> int:
    """Bytes this process can still use: the smaller of the system's available memory and the
    room left under a cgroup (container) limit. ``GENCRAFT_MEMORY_LIMIT`` (bytes) overrides."""
    env = os.environ.get("GENCRAFT_MEMORY_LIMIT")
    if env:
        try:
            return max(int(float(env)), 0)
        except ValueError:
            raise UsageError(f"GENCRAFT_MEMORY_LIMIT={env!r}: expected a number of bytes",
                             param="GENCRAFT_MEMORY_LIMIT") from None
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = 1 << 34  # unknown platform: assume 16 GiB
    try:  # cgroup v2: room left under memory.max
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            avail = min(avail, max(int(limit) - used, 0))
    except (OSError, ValueError):
        pass
    return avail


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def require_memory(needed: float, what: str, param: str, *, fraction: float = 0.8) -> None:
    """Refuse ``what`` when it needs more than ``fraction`` of the available memory.

    ``what`` names the request and its setting (``"--upscale 100000 (16 images of 1600000x1600000)"``);
    the message says what it needs, what there is, and to lower ``param``.
    """
    avail = available_memory()
    if needed > fraction * avail:
        raise UsageError(f"{what} needs about {fmt_bytes(needed)} of memory and {fmt_bytes(avail)} is "
                         f"available; lower {param}", param=param.lstrip("-").replace("-", "_"))


def json_depth(value: Any, stop_at: int = MAX_JSON_DEPTH + 1) -> int:
    """Nesting depth of a JSON value (a scalar is 0; ``[[1]]`` is 2), counted without recursion and
    giving up once it passes ``stop_at``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            children = v.values()
        elif isinstance(v, list | tuple):
            children = v
        else:
            continue
        d += 1
        deepest = max(deepest, d)
        if deepest > stop_at:
            return deepest
        stack.extend((c, d) for c in children)
    return deepest


def check_depth(value: Any, what: str, param: str, limit: int = MAX_JSON_DEPTH) -> Any:
    """Raise a UsageError naming ``what`` when ``value`` nests deeper than ``limit``; returns ``value``."""
    if json_depth(value, limit + 1) > limit:
        raise UsageError(f"{what}: nested more than {limit} levels deep; flatten it", param=param)
    return value


def parse_json(text: str | bytes, what: str, param: str, limit: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` for input from a user: invalid JSON, or JSON nested deeper than ``limit``
    (which would otherwise exhaust the recursion limit, here or in whatever walks it next), is a
    UsageError naming ``what``."""
    import json

    try:
        value = json.loads(text)
    except RecursionError:
        raise UsageError(f"{what}: nested more than {limit} levels deep; flatten it", param=param) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{what}: not valid JSON ({e})", param=param) from None
    return check_depth(value, what, param, limit)


def check_image_output(count: int, side: int, channels: int, upscale: int = 1, *, param: str = "--upscale") -> None:
    """Bound a request for ``count`` images of ``side`` pixels, enlarged ``upscale`` times: the pixels
    (RGBA, with the copies resizing and encoding make) and the sampling activations must fit in memory."""
    out_side = side * upscale
    needed = count * out_side * out_side * 4 * 3 + count * side * side * max(channels, 1) * 4 * 512
    what = f"{count} image{'s' if count != 1 else ''} of {out_side}x{out_side} pixels"
    require_memory(needed, f"{param} {upscale if param == '--upscale' else count} ({what})", param)


def check_generation(*, rows: int, prompt_tokens: int, max_new_tokens: int, vocab: int, context: int | None,
                     state_bytes_per_token: int) -> None:
    """Bound a generation before it starts: ``rows`` sequences (prompts x ``n``, or x beams) of
    ``prompt_tokens + max_new_tokens`` ids each (kept as int64, copied a few times by the processors),
    a model state of ``state_bytes_per_token`` for each position the model attends to (its ``context``,
    or every position when it has none) and a float32 row of logits per sequence (three copies)."""
    total = prompt_tokens + max_new_tokens
    attended = total if context is None else min(total, context)
    needed = rows * (total * 8 * 4 + attended * state_bytes_per_token + vocab * 4 * 3)
    require_memory(needed, f"max_new_tokens={max_new_tokens} for {rows} sequence{'s' if rows != 1 else ''} "
                   "(prompts x n, or x num_beams)", "max_new_tokens (or n, num_beams)")
