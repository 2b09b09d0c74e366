"""Atomic writes (and the timestamps records carry): every artifact goes to a temporary path in the same folder, then is renamed.

A process killed at any moment leaves either the previous file or the new one, never
half of one. Directories are built under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gencraft.errors import UsageError


def _make_parent(path: Path) -> None:
    """Create ``path``'s folder; a file standing where a folder must be is a UsageError naming it."""
    for parent in (path.parent, *path.parent.parents):
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{path}: {parent} is a file, not a folder; choose another path", param="out")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{path}: cannot create its folder ({e.strerror}); choose another path", param="out") from None


def now_iso() -> str:
    """The current UTC time to the second, ISO 8601: the ``created`` field of every record."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    Use for writers that want a filename (safetensors, numpy, Pillow)::

        with atomic_path(run / "model.safetensors") as tmp:
            save_file(tensors, tmp)
    """
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise UsageError(f"{str(path)!r}: give the file a name", param="out")
    if path.is_dir():
        raise UsageError(f"{path}: is a folder; give a file name (e.g. {path / 'out.txt'})", param="out")
    _make_parent(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one JSON line (a single ``write`` of a full line; readers skip a torn last line)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSON-lines file, skipping a last line torn by a kill mid-write."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


@contextmanager
def atomic_dir(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Build a directory under a temporary name beside ``path`` and rename it into place.

    On any exception the temporary directory is removed and ``path`` is untouched, so no
    half-written dataset or run is ever left behind.
    """
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise UsageError(f"{str(path)!r}: give the new folder a name (e.g. ./my-folder)", param="out")
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path}: is a file, not a folder; choose another path", param="out")
    _make_parent(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            if not overwrite:
                raise FileExistsError(path)
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_dir(path: str | os.PathLike[str]) -> Path:
    """Make ``path`` (written by :func:`atomic_dir`) whole again after a kill at any moment.

    Replacing a directory takes two renames (old out of the way, new into place); a process killed
    between them leaves ``.NAME.old`` and no ``NAME``: it is renamed back. Temporary directories of
    writes that never finished (``.NAME.*.tmp``) are removed. Call it before reading ``path`` when
    nothing else is writing it (a resume). Returns ``path``.
    """
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if not path.exists() and old.is_dir():
        os.replace(old, path)
    for tmp in path.parent.glob(f".{path.name}.*.tmp") if path.parent.is_dir() else []:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    return path
