"""Files a person uploads to the studio, staged under ``GENCRAFT_HOME/uploads/ID/files/`` for a data job.

An upload is a folder that grows one file at a time (``PUT /v1/gencraft/uploads/ID/files/PATH``,
the body is the file). Every file is checked before it is kept, and a rejected one leaves nothing:

- its path is relative, plain and short (no ``..``, no absolute or hidden parts, no backslashes);
- its bytes stay under the configured limit (``ServerConfig.max_upload_bytes``): counted while they
  arrive, so a body without a Content-Length cannot run past it either;
- its content is what its name says: text files decode as text (the readers' own check: a binary
  named ``.txt`` is refused), pictures open with Pillow, recordings with libsndfile, MIDI files start
  with ``MThd``;
- archives (``.zip``, ``.tar``, ``.tar.gz``, ``.tgz``) are unpacked into the upload, each member
  checked like a file; an archive whose members would unpack past the limit, or one compressed more
  than :data:`MAX_RATIO` times (a zip bomb), a member that escapes the folder (path traversal) or is a
  link, is refused whole. Members of unknown types (``__MACOSX/``, ``.DS_Store``...) are skipped.

Files are written under a temporary name and renamed into place; an archive is unpacked into a
temporary folder renamed into place once every member passed.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from gencraft.data.images import IMAGE_SUFFIXES
from gencraft.data.readers import SUPPORTED, decode_bytes
from gencraft.errors import DataError, GencraftError, NotFoundError, UsageError
from gencraft.music.midi import MIDI_SUFFIXES, SCORE_SUFFIXES


class PayloadTooLarge(GencraftError):
    """An upload over the configured limit (the server's 413)."""

    status = 413
    code = "request_too_large"


UPLOAD_ID = re.compile(r"^up-[0-9a-f]{16}$")
MAX_RATIO = 200  # uncompressed/compressed of one archive member; text compresses 3-10x, a bomb 1000x+
MAX_MEMBERS = 20000
MAX_DEPTH = 16
CHUNK = 1 << 20

ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz")


def _suffixes() -> dict[str, str]:
    from gencraft.data.speech import AUDIO_SUFFIXES

    out = {s: "text" for s in SUPPORTED}
    out.update({s: "audio" for s in AUDIO_SUFFIXES})
    out.update({s: "image" for s in IMAGE_SUFFIXES})
    out.update({s: "midi" for s in MIDI_SUFFIXES})
    out.update({s: "score" for s in SCORE_SUFFIXES})
    out[".mxl"] = "score-zip"
    return out


def file_type(name: str) -> str | None:
    """``text``, ``image``, ``audio``, ``midi``, ``score``, ``archive``, ``license`` or None (not accepted)."""
    low = name.lower()
    if low.endswith(ARCHIVES):
        return "archive"
    base = PurePosixPath(low).name
    if base in ("license", "licence", "license.txt", "licence.txt", "license.md", "copying"):
        return "license"
    return _suffixes().get(PurePosixPath(low).suffix)


def safe_relpath(path: str, param: str = "path") -> PurePosixPath:
    """A relative path that stays inside its folder, or a UsageError naming it."""
    if not path or "\\" in path or "\x00" in path or path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise UsageError(f"{param}: {path!r} is not a relative file path inside the upload", param=param)
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > MAX_DEPTH or any(p in (".", "..") or p.startswith(".") or len(p) > 255
                                                   for p in parts):
        raise UsageError(f"{param}: {path!r} is not allowed (no '..', hidden or empty parts, at most "
                         f"{MAX_DEPTH} folders deep)", param=param)
    return PurePosixPath(*parts)


# ---------------------------------------------------------------- the upload folder


def uploads_root(home: Path) -> Path:
    return Path(home) / "uploads"


def upload_dir(home: Path, upload_id: str | None) -> Path:
    if not isinstance(upload_id, str) or not UPLOAD_ID.match(upload_id):
        raise NotFoundError(f"upload {upload_id!r} not found (ids look like up-0123456789abcdef)", param="upload")
    d = uploads_root(home) / upload_id
    if not (d / "files").is_dir():
        raise NotFoundError(f"upload {upload_id!r} not found (deleted?); POST /v1/gencraft/uploads starts one",
                            param="upload")
    return d


def upload_files_dir(home: Path, upload_id: str | None) -> Path:
    """The folder of an upload's files (a data job's source)."""
    return upload_dir(home, upload_id) / "files"


def new_upload(home: Path) -> str:
    upload_id = "up-" + secrets.token_hex(8)
    (uploads_root(home) / upload_id / "files").mkdir(parents=True)
    return upload_id


def describe(home: Path, upload_id: str) -> dict[str, Any]:
    files_dir = upload_files_dir(home, upload_id)
    files = []
    for p in sorted(files_dir.rglob("*")):
        if p.is_file():
            files.append({"path": p.relative_to(files_dir).as_posix(), "bytes": p.stat().st_size,
                          "type": file_type(p.name)})
    return {"id": upload_id, "object": "gencraft.upload", "files": files, "bytes": sum(f["bytes"] for f in files)}


def delete_upload(home: Path, upload_id: str) -> None:
    shutil.rmtree(upload_dir(home, upload_id))


def touch_upload(home: Path, upload_id: str) -> None:
    """Mark an upload as used now (a data job read it): its retention counts from here."""
    try:
        os.utime(uploads_root(home) / upload_id)
    except OSError:
        pass


STRAY_S = 3600.0  # a temporary file or folder this old belongs to no upload in progress (a crash left it)


def prune_uploads(home: Path, max_age_s: float, keep: set[str] = frozenset(), now: float | None = None) -> list[str]:
    """Delete the uploads not used for ``max_age_s`` seconds (the last file added, or the last data job
    that read it) except ``keep`` (those a live job will read), and, in the others, temporary files a
    crash left behind. Returns the ids deleted. ``max_age_s <= 0`` keeps every upload."""
    root = uploads_root(home)
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    gone = []
    for d in sorted(root.iterdir()):
        if not (d.is_dir() and UPLOAD_ID.match(d.name)):
            continue
        try:
            age = now - d.stat().st_mtime
            if max_age_s > 0 and age > max_age_s and d.name not in keep:
                shutil.rmtree(d)
                gone.append(d.name)
                continue
            for tmp in [*d.glob(".part-*"), *d.glob(".unpack-*")]:
                if now - tmp.stat().st_mtime > STRAY_S:
                    shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        except OSError:  # being written or removed right now: the next pass sees it
            continue
    return gone


# ---------------------------------------------------------------- content checks


def check_content(name: str, data: bytes, kind: str | None) -> None:
    """Is ``data`` what a file called ``name`` claims to be? DataError (400) naming it when not."""
    if kind is None:
        raise DataError(f"{name}: unsupported file type; upload text (.txt .md .html .json .jsonl .csv), pictures "
                        "(.png .jpg .webp .bmp .gif), music (.mid .musicxml .abc .krn), recordings (.wav .flac .ogg) or a "
                        ".zip/.tar.gz of them",
                        param="file")
    if kind in ("text", "license", "score") and not name.lower().endswith(".mxl"):
        decode_bytes(data, name)  # DataError: "looks like a binary file..." or undecodable
    elif kind == "image":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as im:
                im.verify()
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
            raise DataError(f"{name}: not a readable picture ({type(e).__name__}); upload PNG, JPEG, WebP, BMP "
                            "or GIF files", param="file") from None
    elif kind == "audio":
        import soundfile

        try:
            soundfile.info(io.BytesIO(data))
        except (RuntimeError, TypeError, ValueError) as e:  # soundfile's LibsndfileError is a RuntimeError
            raise DataError(f"{name}: not a readable recording ({str(e).splitlines()[0][:120]}); upload WAV, FLAC "
                            "or Ogg files", param="file") from None
    elif kind == "midi" and not data.startswith(b"MThd"):
        raise DataError(f"{name}: not a MIDI file (no MThd header)", param="file")
    elif kind == "score-zip" and not data.startswith(b"PK"):
        raise DataError(f"{name}: not a compressed MusicXML (.mxl) file", param="file")


# ---------------------------------------------------------------- receiving one file


async def receive(home: Path, upload_id: str, path: str, body: AsyncIterator[bytes], limit: int) -> dict[str, Any]:
    """Store one uploaded file (or unpack one archive) into the upload; returns what was added."""
    root = upload_dir(home, upload_id)
    rel = safe_relpath(path)
    kind = file_type(rel.name)
    if kind is None:
        check_content(rel.as_posix(), b"", None)
    fd, tmp_name = tempfile.mkstemp(prefix=".part-", dir=root)
    tmp = Path(tmp_name)
    try:
        size = 0
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as f:
            async for chunk in body:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"{rel}: over the upload limit of {limit:,} bytes (gencraft serve "
                                          "--max-upload-mb); split it or raise the limit", param="file")
                h.update(chunk)
                f.write(chunk)
        if kind == "archive":
            added, skipped = unpack_archive(tmp, rel, root / "files", limit)
            return {"path": rel.as_posix(), "type": "archive", "bytes": size, "files": added, "skipped": skipped}
        dest = root / "files" / rel
        if dest.exists():
            raise UsageError(f"{rel}: already uploaded; delete the upload or use another name", param="path")
        check_content(rel.as_posix(), tmp.read_bytes(), kind)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        return {"path": rel.as_posix(), "type": kind, "bytes": size, "sha256": h.hexdigest()}
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------- archives


def _members_zip(zf: zipfile.ZipFile, name: str) -> Iterator[tuple[str, int, int, bool]]:
    """(member name, uncompressed size, compressed size, is a link) of every file member."""
    for info in zf.infolist():
        if info.is_dir():
            continue
        mode = info.external_attr >> 16
        yield info.filename, info.file_size, info.compress_size, stat.S_ISLNK(mode)


def unpack_archive(archive: Path, rel: PurePosixPath, files_dir: Path, limit: int
                   ) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Check every member of ``archive`` (a .zip or .tar[.gz]), then unpack it into
    ``files_dir/<archive stem>/`` in one rename. Refuses the whole archive on any bad member."""
    stem = rel.name
    for s in ARCHIVES:
        if stem.lower().endswith(s):
            stem = stem[: -len(s)]
            break
    where = rel.parent / (stem or "archive")
    dest = files_dir / where
    if dest.exists():
        raise UsageError(f"{rel}: a folder {where} is already in the upload; rename the archive", param="path")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".unpack-", dir=files_dir.parent))
    try:
        if rel.name.lower().endswith(".zip"):
            added, skipped = _unpack_zip(archive, rel, work, limit)
        else:
            added, skipped = _unpack_tar(archive, rel, work, limit)
        if not added:
            raise DataError(f"{rel}: no usable files inside (skipped {len(skipped)})", param="file")
        os.replace(work, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for a in added:
        a["path"] = (where / a["path"]).as_posix()
    return added, skipped


def _plan(rel: PurePosixPath, members: list[tuple[str, int, int, bool]], limit: int
          ) -> tuple[list[tuple[str, PurePosixPath]], list[dict[str, str]]]:
    """Which members to unpack (and where); raises on traversal, links, bombs and sizes."""
    if len(members) > MAX_MEMBERS:
        raise DataError(f"{rel}: {len(members):,} files inside, more than {MAX_MEMBERS:,}", param="file")
    total = sum(m[1] for m in members)
    if total > limit:
        raise PayloadTooLarge(f"{rel}: unpacks to {total:,} bytes, over the upload limit of {limit:,}", param="file")
    keep, skipped = [], []
    for name, size, packed, link in members:
        clean = name
        while clean.startswith("./"):
            clean = clean[2:]
        parts = clean.split("/")
        if name.startswith(("/", "\\")) or "\\" in name or ".." in parts or re.match(r"^[A-Za-z]:", name):
            raise DataError(f"{rel}: member {name!r} would be written outside the upload (path traversal); "
                            "the archive is refused", param="file")
        if parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts):
            skipped.append({"path": name, "reason": "hidden or system file"})
            continue
        try:
            target = safe_relpath(clean, "member")
        except UsageError as e:
            raise DataError(f"{rel}: {e}", param="file") from None
        if link:
            raise DataError(f"{rel}: member {name!r} is a link; archives of plain files only", param="file")
        if size > 1 << 20 and packed and size / packed > MAX_RATIO:
            raise DataError(f"{rel}: member {name!r} is compressed {size / packed:,.0f}x ({size:,} bytes from "
                            f"{packed:,}): refused as a likely zip bomb", param="file")
        if file_type(target.name) in (None, "archive"):
            skipped.append({"path": name, "reason": "unsupported type"})
            continue
        keep.append((name, target))
    return keep, skipped


def _copy_checked(src: BinaryIO, dest: Path, name: str, kind: str | None, budget: list[int], rel: PurePosixPath) -> int:
    data = bytearray()
    while chunk := src.read(CHUNK):
        data += chunk
        budget[0] -= len(chunk)
        if budget[0] < 0:  # sizes in the archive's directory lied
            raise PayloadTooLarge(f"{rel}: unpacks past the upload limit", param="file")
    check_content(f"{rel}:{name}", bytes(data), kind)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return len(data)


def _unpack_members(keep: list[tuple[str, PurePosixPath]], open_member: Any, errors: tuple[type[BaseException], ...],
                    rel: PurePosixPath, work: Path, limit: int) -> list[dict[str, Any]]:
    """Copy the planned members out of an open archive, checking each one and the running total."""
    budget = [limit]
    added = []
    for name, target in keep:
        try:
            src = open_member(name)
            if src is None:
                continue
            with src:
                n = _copy_checked(src, work / target, name, file_type(target.name), budget, rel)
        except errors as e:
            raise DataError(f"{rel}: member {name!r} cannot be read ({e})", param="file") from None
        added.append({"path": target.as_posix(), "bytes": n, "type": file_type(target.name)})
    return added


def _unpack_zip(archive: Path, rel: PurePosixPath, work: Path, limit: int):
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{rel}: not a readable zip archive ({e})", param="file") from None
    with zf:
        keep, skipped = _plan(rel, list(_members_zip(zf, str(rel))), limit)
        added = _unpack_members(keep, zf.open, (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError,
                                                NotImplementedError), rel, work, limit)
    return added, skipped


def _unpack_tar(archive: Path, rel: PurePosixPath, work: Path, limit: int):
    try:
        tf = tarfile.open(archive)
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"{rel}: not a readable tar archive ({e})", param="file") from None
    with tf:
        try:
            infos = tf.getmembers()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"{rel}: not a readable tar archive ({e})", param="file") from None
        for m in infos:
            if not (m.isfile() or m.isdir()):
                raise DataError(f"{rel}: member {m.name!r} is a link or device; archives of plain files only",
                                param="file")
        members = [(m.name, m.size, 0, False) for m in infos if m.isfile()]
        keep, skipped = _plan(rel, members, limit)
        added = _unpack_members(keep, tf.extractfile, (tarfile.TarError, OSError, EOFError), rel, work, limit)
    return added, skipped


__all__ = ["check_content", "delete_upload", "describe", "file_type", "new_upload", "prune_uploads", "receive",
           "safe_relpath", "touch_upload",
           "upload_dir", "upload_files_dir"]
