"""The license rule: outputs of a model trained on sources of unknown license warn (or are refused)."""

from __future__ import annotations

import warnings
from typing import Any

from gencraft.errors import GuardError

_warned_runs: set[str] = set()


def check_licenses(info: dict[str, Any] | None, *, strict: bool = False) -> list[str]:
    """Sources whose license is ``unknown`` in a run's gencraft.json or a dataset manifest.

    Warns once per run (``UserWarning``) and returns the paths; ``strict`` raises
    :class:`GuardError` instead (``--strict-licenses``).
    """
    info = info or {}
    sources = (info.get("data") or {}).get("sources") if "data" in info else info.get("sources")
    unknown = [str(s.get("path")) for s in sources or [] if str(s.get("license", "unknown")).lower() in
               ("", "unknown", "none")]
    if not unknown:
        return []
    names = ", ".join(unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
    if strict:
        raise GuardError(f"training source license unknown: {names}; set licenses with `gencraft data prepare "
                         "--license` or drop --strict-licenses", param="strict_licenses")
    key = str(info.get("run_id") or info.get("digest") or id(info))
    if key not in _warned_runs:
        _warned_runs.add(key)
        warnings.warn(f"training data of this model has sources with unknown license: {names}; "
                      "check you may use what it generates", UserWarning, stacklevel=3)
    return unknown
