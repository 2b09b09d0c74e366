"""Reading sources: files and folders -> raw documents, one small reader per format.

Every reader takes the decoded text of one file and returns its documents (strings). The
encoding is detected once, in :func:`decode_bytes`: UTF-8, UTF-8 with BOM, UTF-16 LE/BE with
BOM, and GB18030 when the result is plausibly Chinese text. Binary files and anything else are a
:class:`~gencraft.errors.DataError` that names the file.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from gencraft.errors import DataError, NotFoundError

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".text"}
HTML_SUFFIXES = {".html", ".htm"}
JSON_SUFFIXES = {".json", ".jsonl", ".ndjson"}
CSV_SUFFIXES = {".csv"}
SUPPORTED = TEXT_SUFFIXES | HTML_SUFFIXES | JSON_SUFFIXES | CSV_SUFFIXES
BIG_TEXT_BYTES = 64 * 1024  # unit="auto": plain-text files larger than this are split into paragraphs
UNITS = ("auto", "file", "paragraph", "line")

# Control bytes that never occur in text (everything below 0x20 except \t \n \v \f \r, plus DEL).
_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 11, 12, 13)) + b"\x7f"
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")


@dataclass
class SourceFile:
    """One file read from a source: where it came from and its raw documents."""

    path: Path
    sha256: str
    size: int
    encoding: str
    documents: list[str] = field(default_factory=list)


def _looks_binary(data: bytes) -> bool:
    if b"\x00" in data:
        return True
    sample = data[: 1 << 16]
    if not sample:
        return False
    ctrl = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    return ctrl / len(sample) > 0.05


def _chinese_counts(text: str) -> tuple[int, int, int]:
    """(characters that fit Chinese text, CJK characters, characters) of ``text``."""
    good = 0
    cjk = 0
    for ch in text:
        o = ord(ch)
        if o < 0x80 or ch.isspace():
            good += 1
        elif 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x3000 <= o <= 0x30FF or 0xFF00 <= o <= 0xFFEF:
            good += 1
            cjk += 1
        elif 0x2000 <= o <= 0x206F or 0xB7 == o:  # general punctuation: “ ” — … ·
            good += 1
    return good, cjk, len(text)


def _plausible_chinese(text: str) -> bool:
    """True when ``text`` is mostly CJK, kana, CJK/fullwidth punctuation, ASCII or whitespace."""
    if not text:
        return True
    good, cjk, n = _chinese_counts(text)
    return cjk > 0 and good / n >= 0.95


def decode_bytes(data: bytes, path: Path | str) -> tuple[str, str]:
    """Decode a file's bytes; returns ``(text, encoding name)`` or raises ``DataError`` naming ``path``."""
    if data.startswith(codecs.BOM_UTF8):
        try:
            return data[3:].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: starts with a UTF-8 BOM but byte {e.start + 3} is not UTF-8; "
                            "re-save the file as UTF-8") from None
    for bom, name in ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
        if data.startswith(bom):
            try:
                return data[2:].decode(name), name
            except UnicodeDecodeError:
                raise DataError(f"{path}: starts with a UTF-16 BOM but is not valid UTF-16; "
                                "re-save the file as UTF-8") from None
    if _looks_binary(data):
        raise DataError(f"{path}: looks like a binary file (NUL or control bytes), not text; "
                        "remove it or convert it to UTF-8 text")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as e:
        utf8_error = e
    try:
        text = data.decode("gb18030")
    except UnicodeDecodeError:
        text = None
    if text is not None and _plausible_chinese(text):
        return text, "gb18030"
    raise DataError(f"{path}: undecodable bytes (byte {utf8_error.start} is not UTF-8; not UTF-16 with a BOM "
                    "or GB18030 Chinese either); re-save the file as UTF-8")


# ---------------------------------------------------------------- per-format readers


def read_text(text: str, path: Path) -> list[str]:
    """``.txt``/``.md``: the whole file is one document (markup kept)."""
    return [text]


class _HTMLText(HTMLParser):
    """Collects the visible text of an HTML page; block elements become line breaks."""

    SKIP = {"script", "style", "noscript", "template", "head"}
    BLOCK = {"p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "table",
             "section", "article", "blockquote", "pre", "hr", "title", "header", "footer", "dd", "dt"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip_depth = 0
        self.pre_depth = 0  # inside <pre>: whitespace is kept as written

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skip_depth += 1
        elif tag == "pre":
            self.pre_depth += 1
        if tag in self.BLOCK:
            self.parts.append("\n\n" if tag in {"p", "h1", "h2", "h3", "h4", "h5", "h6", "pre"} else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag == "pre":
            self.pre_depth = max(0, self.pre_depth - 1)
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.skip_depth:
            return
        # Outside <pre>, HTML collapses runs of whitespace into one space.
        self.parts.append(data if self.pre_depth else re.sub(r"\s+", " ", data))

    def text(self) -> str:
        joined = "".join(self.parts)
        # A single leading space is what collapsing left behind; deeper indentation is <pre> text.
        lines = [ln.rstrip() for ln in joined.split("\n")]
        lines = [ln[1:] if ln.startswith(" ") and not ln.startswith("  ") else ln for ln in lines]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def read_html(text: str, path: Path) -> list[str]:
    """``.html``/``.htm``: the visible text only (no tags, scripts or styles)."""
    parser = _HTMLText()
    parser.feed(text)
    parser.close()
    return [parser.text()]


def _lookup(record: Any, field_path: str) -> Any:
    """Follow a dotted path (``a.b.0.c``) through dicts and lists; raises KeyError if absent."""
    value = record
    for part in field_path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(part)
    return value


def _as_text(value: Any) -> str | None:
    """A string, or a list of lines (strings, possibly nested) joined with newlines; else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str | list) for v in value):
        parts = [_as_text(v) for v in value]
        if all(p is not None for p in parts):
            return "\n".join(p for p in parts if p is not None)
    return None


def _record_text(record: Any, field_path: str | None, path: Path, where: str) -> str:
    if field_path is None:
        text = _as_text(record)
        if text is not None:
            return text
        if isinstance(record, dict):
            keys = ", ".join(list(record)[:8])
            raise DataError(f"{path}: {where} is an object; pass --field NAME to pick its text (keys: {keys})",
                            param="field")
        raise DataError(f"{path}: {where} is a {type(record).__name__}, not text; pass --field NAME", param="field")
    try:
        value = _lookup(record, field_path)
    except KeyError:
        keys = ", ".join(list(record)[:8]) if isinstance(record, dict) else type(record).__name__
        raise DataError(f"{path}: {where} has no field {field_path!r} (it has: {keys}); check --field",
                        param="field") from None
    if value is None:
        return ""
    text = _as_text(value)
    if text is None:
        raise DataError(f"{path}: {where} field {field_path!r} is a {type(value).__name__}, "
                        "not text or a list of lines; check --field", param="field")
    return text


def read_json(text: str, path: Path, field_path: str | None) -> list[str]:
    """``.json``: a list of records, one record, or a string; ``field_path`` picks the text."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno} column {e.colno} ({e.msg}); fix the file "
                        "(JSON lines files need the .jsonl extension)") from None
    records = data if isinstance(data, list) else [data]
    return [_record_text(r, field_path, path, f"record {i}") for i, r in enumerate(records, 1)]


def read_jsonl(text: str, path: Path, field_path: str | None) -> list[str]:
    """``.jsonl``: one JSON record a line; blank lines are skipped."""
    docs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {n} is not valid JSON ({e.msg}); fix or remove that line") from None
        docs.append(_record_text(record, field_path, path, f"record on line {n}"))
    return docs


def read_csv(text: str, path: Path, column: str | None) -> list[str]:
    """``.csv`` with a header row: ``column`` picks the text column (optional if there is only one)."""
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise DataError(f"{path}: not valid CSV ({e})") from None
    if not rows:
        return []
    header, body = rows[0], rows[1:]
    if column is None:
        if len(header) != 1:
            raise DataError(f"{path}: has {len(header)} columns ({', '.join(header[:8])}); "
                            "pass --column NAME to pick the text column", param="column")
        index = 0
    elif column in header:
        index = header.index(column)
    else:
        raise DataError(f"{path}: no column {column!r} (it has: {', '.join(header[:8])}); check --column",
                        param="column")
    return [row[index] for row in body if index < len(row)]


# ---------------------------------------------------------------- units and files


def split_units(docs: list[str], unit: str) -> list[str]:
    """Split documents into paragraphs (blank-line separated) or lines; empty pieces are dropped."""
    if unit == "paragraph":
        return [p for d in docs for p in _PARAGRAPH_BREAK.split(d.replace("\r\n", "\n")) if p.strip()]
    if unit == "line":
        return [ln for d in docs for ln in d.splitlines() if ln.strip()]
    return docs


def read_file(path: Path, *, field: str | None = None, column: str | None = None,
              unit: str = "auto") -> SourceFile:
    """Read one file into a :class:`SourceFile` with its raw documents (before cleaning)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    text, encoding = decode_bytes(data, path)
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        docs = read_text(text, path)
    elif suffix in HTML_SUFFIXES:
        docs = read_html(text, path)
    elif suffix == ".json":
        docs = read_json(text, path, field)
    elif suffix in JSON_SUFFIXES:
        docs = read_jsonl(text, path, field)
    elif suffix in CSV_SUFFIXES:
        docs = read_csv(text, path, column)
    else:
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'!r}; "
                        f"supported: {', '.join(sorted(SUPPORTED))}")
    if unit == "auto":
        if suffix in TEXT_SUFFIXES and len(data) > BIG_TEXT_BYTES:
            # a big single text (a novel, tinyshakespeare): paragraphs, or lines if it has no blank lines
            docs = split_units(docs, "paragraph")
            if len(docs) < 2:
                docs = split_units(docs, "line")
    elif unit == "file":
        docs = ["\n\n".join(docs)] if len(docs) > 1 else docs
    else:
        docs = split_units(docs, unit)
    return SourceFile(path, hashlib.sha256(data).hexdigest(), len(data), encoding, docs)


def iter_source_files(source: Path) -> Iterator[tuple[Path, str | None]]:
    """Files under a source in sorted order: ``(path, None)`` to read, ``(path, reason)`` to skip.

    Hidden files and folders (``.git``, ``.DS_Store``) are passed over silently.
    """
    if not source.exists():
        why = "a broken symlink or a symlink loop" if source.is_symlink() else "source not found"
        raise NotFoundError(f"{source}: {why}; check the path", param="sources")
    if source.is_file():
        yield source, None
        return
    for p in sorted(source.rglob("*")):
        rel = p.relative_to(source)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.is_symlink() and not p.exists():  # resolving it would raise (a loop) or find nothing
            yield p, "broken symlink or symlink loop"
            continue
        if not p.is_file():
            continue
        if p.suffix.lower() in SUPPORTED:
            yield p, None
        else:
            yield p, f"unsupported file type {p.suffix.lower() or '(none)'!r}"


# ---------------------------------------------------------------- streaming (corpora larger than memory)

STREAMABLE = TEXT_SUFFIXES | {".jsonl", ".ndjson"}  # read in blocks; other formats are read whole


@dataclass
class StreamedFile:
    """What :func:`stream_documents` has learnt about a file once it has read all of it."""

    path: Path
    sha256: str = ""
    size: int = 0
    encoding: str = ""


def _blocks(path: Path, size: int) -> Iterator[bytes]:
    try:
        with open(path, "rb") as f:
            while chunk := f.read(size):
                yield chunk
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def _check_blocks(path: Path, codec: str, skip: int, nul_check: bool, block: int,
                  sha: Any = None) -> tuple[int | None, int, list[int]]:
    """One pass over ``path``: (byte of the first decoding error or None, size, [good, cjk, chars]
    counts of :func:`_plausible_chinese`), hashing into ``sha``; a NUL byte is a DataError."""
    dec = codecs.getincrementaldecoder(codec)()
    pos, size, bad, counts = 0, 0, None, [0, 0, 0]
    for i, chunk in enumerate(_blocks(path, block)):
        size += len(chunk)
        if sha is not None:
            sha.update(chunk)
        if nul_check and b"\x00" in chunk:
            raise DataError(f"{path}: looks like a binary file (NUL or control bytes), not text; "
                            "remove it or convert it to UTF-8 text")
        if bad is not None:
            continue  # hashing the rest
        body = chunk[skip:] if i == 0 else chunk
        try:
            text = dec.decode(body)
        except UnicodeDecodeError as e:
            bad = pos + max(e.start, 0)
            continue
        if codec == "gb18030":
            for k, v in enumerate(_chinese_counts(text)):
                counts[k] += v
        pos += len(body)
    if bad is None:
        try:
            dec.decode(b"", final=True)
        except UnicodeDecodeError:
            bad = pos
    return bad, size, counts


def decoded_blocks(path: Path, info: StreamedFile, block: int = 1 << 22) -> Iterator[str]:
    """The text of ``path`` in blocks, decoded as :func:`decode_bytes` decodes a whole file (BOM,
    binary check, UTF-8, else GB18030 when plausibly Chinese): a first pass hashes and checks the
    bytes, so no text is handed out of a file that turns out undecodable."""
    head = next(_blocks(path, 1 << 16), b"")
    boms = ((codecs.BOM_UTF8, "utf-8-sig", "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16-le"),
            (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16-be"))
    skip, name, codec = 0, None, "utf-8"
    for bom, label, c in boms:
        if head.startswith(bom):
            skip, name, codec = len(bom), label, c
            break
    if name is None and _looks_binary(head):
        raise DataError(f"{path}: looks like a binary file (NUL or control bytes), not text; "
                        "remove it or convert it to UTF-8 text")
    sha = hashlib.sha256()
    bad, size, _ = _check_blocks(path, codec, skip, name is None, block, sha)
    if bad is not None and name == "utf-8-sig":
        raise DataError(f"{path}: starts with a UTF-8 BOM but byte {bad + 3} is not UTF-8; "
                        "re-save the file as UTF-8")
    if bad is not None and name is not None:
        raise DataError(f"{path}: starts with a UTF-16 BOM but is not valid UTF-16; re-save the file as UTF-8")
    if bad is not None:
        bad_gb, _, (good, cjk, n) = _check_blocks(path, "gb18030", 0, False, block)
        if bad_gb is not None or not (n == 0 or (cjk > 0 and good / n >= 0.95)):
            raise DataError(f"{path}: undecodable bytes (byte {bad} is not UTF-8; not UTF-16 with a BOM "
                            "or GB18030 Chinese either); re-save the file as UTF-8")
        name, codec = "gb18030", "gb18030"
    info.sha256, info.size, info.encoding = sha.hexdigest(), size, name or "utf-8"
    dec = codecs.getincrementaldecoder(codec)()
    for i, chunk in enumerate(_blocks(path, block)):
        yield dec.decode(chunk[skip:] if i == 0 else chunk)
    yield dec.decode(b"", final=True)


def _paragraphs(blocks: Iterator[str]) -> Iterator[str]:
    """``split_units([text], "paragraph")`` of the text the blocks make up, piece by piece."""
    carry, cr = "", False
    for blk in blocks:
        if cr:
            blk, cr = "\r" + blk, False
        if blk.endswith("\r"):  # it may be half of a \r\n
            blk, cr = blk[:-1], True
        buf = carry + blk.replace("\r\n", "\n")
        start = 0
        for m in _PARAGRAPH_BREAK.finditer(buf):
            if m.end() >= len(buf):  # the break may go on in the next block
                break
            if buf[start:m.start()].strip():
                yield buf[start:m.start()]
            start = m.end()
        carry = buf[start:]
    for p in _PARAGRAPH_BREAK.split(carry + ("\r" if cr else "")):
        if p.strip():
            yield p


def _lines(blocks: Iterator[str], keep_blank: bool = False) -> Iterator[str]:
    """``text.splitlines()`` of the text the blocks make up, line by line (blank ones dropped
    unless ``keep_blank``)."""
    carry = ""
    for blk in blocks:
        parts = (carry + blk).splitlines(keepends=True)
        carry = ""
        if parts and (parts[-1] == parts[-1].splitlines()[0] or parts[-1].endswith("\r")):
            carry = parts.pop()  # no line break yet, or a \r that a \n may follow
        for p in parts:
            line = p.splitlines()[0] if p.splitlines() else ""
            if keep_blank or line.strip():
                yield line
    for line in carry.splitlines():
        if keep_blank or line.strip():
            yield line


def stream_documents(path: Path, info: StreamedFile, *, field: str | None = None, unit: str = "auto",
                     block: int = 1 << 22) -> Iterator[str]:
    """The raw documents :func:`read_file` would return for ``path`` (a ``.txt``/``.md`` or
    ``.jsonl`` file, ``unit`` not ``file``), one at a time, holding a block and one document in
    memory. ``unit="auto"`` on a text file: paragraphs, or lines when the file has fewer than two."""
    suffix = path.suffix.lower()
    blocks = decoded_blocks(path, info, block)
    if suffix in TEXT_SUFFIXES:
        if unit == "auto" and path.stat().st_size <= BIG_TEXT_BYTES:  # a small text is one document
            yield "".join(blocks)
            return
        if unit == "line":
            yield from _lines(blocks)
            return
        held: str | None = None  # unit="auto" reads a file of one paragraph as lines
        for i, p in enumerate(_paragraphs(blocks)):
            if i == 0 and unit == "auto":
                held = p
                continue
            if held is not None:
                yield held
                held = None
            yield p
        if held is not None:
            yield from _lines(iter([held]))
        return
    for n, line in enumerate(_lines(blocks, keep_blank=True), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {n} is not valid JSON ({e.msg}); fix or remove that line") from None
        yield from split_units([_record_text(record, field, path, f"record on line {n}")], unit)
