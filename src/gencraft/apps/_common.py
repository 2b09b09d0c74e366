"""What the three kits share: loading a model, the guard step with provenance, JSON/CSV export."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gencraft.errors import UsageError
from gencraft.io import write_text
from gencraft.library import Library
from gencraft.limits import parse_json


def release_policy(**options: Any) -> Any:
    """A :class:`gencraft.guard.ReleasePolicy` that stores in the default content library (opened on
    first use): what the commands and the Python API release under. ``options`` are its fields."""
    from gencraft.guard import ReleasePolicy

    return ReleasePolicy(**{"library": Library.open, **options})


def load_model(model: Any) -> Any:
    """A ``TextModel``: passed through, or loaded from a run name/path or ``hf:PATH``."""
    if hasattr(model, "model") and hasattr(model, "tokenizer"):
        return model
    from gencraft.backends import load

    return load(os.fspath(model))


def _cell(v: Any) -> str:
    if isinstance(v, list):
        return "; ".join(_cell(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, ensure_ascii=False, sort_keys=True)
    if v is None:
        return ""
    return str(v)


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested objects become ``a.b`` columns; lists of scalars are joined with ``; ``."""
    out: dict[str, str] = {}
    for k, v in record.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = _cell(v)
    return out


def to_csv(records: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """CSV text of ``records`` (flattened); ``columns`` fixes the header order."""
    rows = [flatten(r) for r in records]
    if columns is None:
        seen: dict[str, None] = {}
        for r in rows:
            seen.update(dict.fromkeys(r))
        columns = list(seen)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: r.get(c, "") for c in columns})
    return buf.getvalue()


def render(records: Sequence[dict[str, Any]], suffix: str, *, columns: Sequence[str] | None = None) -> str:
    """``records`` as the text of a ``.json`` (a list), ``.jsonl`` or ``.csv`` file."""
    suffix = suffix.lower()
    if suffix == ".json":
        return json.dumps(list(records), indent=2, ensure_ascii=False) + "\n"
    if suffix == ".csv":
        return to_csv(records, columns)
    if suffix == ".jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    raise UsageError(f"--out: unknown format {suffix or '(none)'}; use .json, .jsonl or .csv", param="out")


def export(records: Sequence[dict[str, Any]], path: str | os.PathLike[str], *,
           columns: Sequence[str] | None = None, model: Any = None, kind: str | None = None,
           parameters: dict[str, Any] | None = None, seed: int | None = None, policy: Any = None,
           watermark: Any = None) -> Path:
    """Write ``records`` as ``.json``, ``.jsonl`` or ``.csv`` (by the suffix), atomically.

    With ``kind`` (the release label, e.g. ``game.npc``) the file is released
    (:func:`gencraft.guard.release` under ``policy``: guard check, signed provenance manifest beside
    it as ``PATH.manifest.json``); it is not stored in the library again (its records are, one by
    one). ``watermark``: the one the records were sampled with.
    """
    p = Path(path)
    text = render(records, p.suffix, columns=columns)
    if kind is None:
        write_text(p, text)
        return p
    from gencraft import guard

    own = policy is None
    policy = policy if policy is not None else release_policy(store=False)
    try:
        guard.release(text, kind="text", label=kind, policy=policy, model=model, params=parameters, seed=seed,
                      watermark=watermark, out=p, store=False)
    finally:
        if own:
            policy.close()
    return p


def read_json_file(path: str | os.PathLike[str], what: str) -> Any:
    """Parse a JSON file the user named; errors name the file and the option."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what} file {p} not found", param=what)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{what} file {p} is not UTF-8 text", param=what) from None
    except OSError as e:
        raise UsageError(f"{what} file {p} cannot be read ({e.strerror})", param=what) from None
    return parse_json(text, f"{what} file {p}", what)


def unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
