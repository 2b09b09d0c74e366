"""Where gencraft keeps things: ``GENCRAFT_HOME`` (default ``~/.gencraft``).

Wherever a command takes a dataset or a run, a bare name means the one under
``GENCRAFT_HOME`` (``datasets/NAME``, ``runs/NAME``) and anything with a path
separator (or starting with ``.``/``~``) is a path.
"""

from __future__ import annotations

import os
from pathlib import Path

from gencraft.errors import NotFoundError, UsageError


def home() -> Path:
    """The gencraft home folder, created on first use."""
    p = Path(os.environ.get("GENCRAFT_HOME") or Path.home() / ".gencraft").expanduser()
    if not p.is_dir():  # owner-only, like the keys: it holds the user's data, runs, outputs and library
        p.mkdir(parents=True, exist_ok=True, mode=0o700)
    return p


def _is_path(name: str) -> bool:
    return os.sep in name or "/" in name or name.startswith((".", "~"))


def _resolve(name: str | os.PathLike[str], folder: str) -> Path:
    s = os.fspath(name)
    if _is_path(s):
        return Path(s).expanduser()
    return home() / folder / s


def resolved(path: str | os.PathLike[str], what: str = "path", param: str | None = None) -> Path:
    """``path`` made absolute with symlinks resolved; a symlink loop is a UsageError naming it
    (``Path.resolve`` raises a bare RuntimeError for one)."""
    try:
        return Path(os.path.expanduser(os.fspath(path))).resolve()
    except (RuntimeError, OSError) as e:
        raise UsageError(f"{what} {os.fspath(path)}: cannot be resolved ({e}); check the path",
                         param=param or what.lstrip("-")) from None


def dataset_path(name: str | os.PathLike[str]) -> Path:
    """Resolve a dataset name or path (it may not exist yet)."""
    return _resolve(name, "datasets")


def run_path(name: str | os.PathLike[str]) -> Path:
    """Resolve a run name or path (it may not exist yet)."""
    return _resolve(name, "runs")


def existing_dataset(name: str | os.PathLike[str]) -> Path:
    p = dataset_path(name)
    if not (p / "manifest.json").is_file():
        raise NotFoundError(
            f"dataset {os.fspath(name)!r} not found at {p} (no manifest.json); "
            "create it with `gencraft data prepare SOURCES --out NAME`",
            param="dataset",
        )
    return p


def existing_run(name: str | os.PathLike[str]) -> Path:
    p = run_path(name)
    if not (p / "gencraft.json").is_file():
        raise NotFoundError(
            f"run {os.fspath(name)!r} not found at {p} (no gencraft.json); "
            "train one with `gencraft train DATASET --out NAME`",
            param="model",
        )
    return p
