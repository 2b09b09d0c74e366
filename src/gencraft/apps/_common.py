"""What the three kits share: loading a model, the guard step with provenance, JSON/CSV export."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gencraft.errors import GuardError, UsageError
from gencraft.io import write_json, write_text


def load_model(model: Any) -> Any:
    """A ``TextModel``: passed through, or loaded from a run name/path or ``hf:PATH``."""
    if hasattr(model, "model") and hasattr(model, "tokenizer"):
        return model
    from gencraft.backends import load

    return load(os.fspath(model))


def model_info(model: Any) -> dict[str, Any]:
    """The run's ``gencraft.json`` (or what an HF model reports) for provenance."""
    return dict(getattr(model, "info", None) or {})


def guard_text(text: str, *, policy: Any = None) -> tuple[str, dict[str, Any]]:
    """Moderate ``text`` with the guard; return the (possibly masked) text and the guard record.

    A blocked text raises :class:`GuardError`.
    """
    from gencraft.guard.moderation import Policy, moderate

    report = moderate(text, policy or Policy(classifier_threshold=None))
    if report.blocked:
        cats = ", ".join(sorted(report.categories)) or "policy"
        raise GuardError(f"generated text blocked by the guard ({cats}); change the prompt or the seed",
                         param="guard")
    record = {"moderation": {"action": report.action, "categories": report.categories}}
    return (report.masked_text if report.action == "mask" else text), record


def manifest_for(content: str, *, kind: str, model: Any, parameters: dict[str, Any], seed: int | None,
                 guard: dict[str, Any] | None = None, media_type: str = "text/plain") -> dict[str, Any]:
    """A provenance manifest for one artifact, signed when this machine has gencraft keys."""
    from gencraft.guard.keys import load_keys
    from gencraft.guard.provenance import build_manifest, sign_manifest, text_sha256

    manifest = build_manifest(content_sha256=text_sha256(content), kind=kind, run_info=model_info(model),
                              parameters=parameters, seed=seed, guard=guard or {}, media_type=media_type)
    keys = load_keys(required=False)
    return sign_manifest(manifest, keys) if keys is not None else manifest


def write_artifact(path: str | os.PathLike[str], text: str, manifest: dict[str, Any], *,
                   front_matter: bool = False) -> Path:
    """Write text plus its manifest (sidecar ``PATH.manifest.json``, or Markdown front matter)."""
    from gencraft.guard.provenance import write_text_artifact

    return write_text_artifact(path, text, manifest, front_matter=front_matter)


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


def export(records: Sequence[dict[str, Any]], path: str | os.PathLike[str], *,
           columns: Sequence[str] | None = None) -> Path:
    """Write ``records`` as ``.json`` (a list) or ``.csv`` (by the file's suffix), atomically."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".json":
        write_json(p, list(records))
    elif suffix == ".csv":
        write_text(p, to_csv(records, columns))
    elif suffix == ".jsonl":
        write_text(p, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    else:
        raise UsageError(f"--out {p}: unknown format {suffix or '(none)'}; use .json, .jsonl or .csv",
                         param="out")
    return p


def read_json_file(path: str | os.PathLike[str], what: str) -> Any:
    """Parse a JSON file the user named; errors name the file and the option."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what} file {p} not found", param=what)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{what} file {p} is not valid JSON: {e}", param=what) from None


def unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
