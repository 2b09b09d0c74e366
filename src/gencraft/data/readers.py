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


def _plausible_chinese(text: str) -> bool:
    """True when ``text`` is mostly CJK, kana, CJK/fullwidth punctuation, ASCII or whitespace."""
    if not text:
        return True
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
    return cjk > 0 and good / len(text) >= 0.95


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
        raise NotFoundError(f"{source}: source not found; check the path", param="sources")
    if source.is_file():
        yield source, None
        return
    for p in sorted(source.rglob("*")):
        rel = p.relative_to(source)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        if p.suffix.lower() in SUPPORTED:
            yield p, None
        else:
            yield p, f"unsupported file type {p.suffix.lower() or '(none)'!r}"
