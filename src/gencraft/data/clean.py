"""Cleaning steps, each a small function of one document's text.

The pipeline in :mod:`gencraft.data.prepare` applies them in order and counts documents and
characters after each: Unicode normalization, control characters, whitespace.
"""

from __future__ import annotations

import re
import unicodedata

from gencraft.errors import UsageError

NORMALIZATIONS = ("NFC", "NFKC")

# C0 and C1 control characters except \t and \n (\r is handled by normalize_whitespace first),
# plus stray byte-order marks inside the text.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff]")
_TRAILING = re.compile(r"[ \t\u3000]+$", re.MULTILINE)
_BLANK_RUNS = re.compile(r"\n{3,}")


def check_normalization(form: str) -> str:
    """``"nfc"``/``"NFKC"``... -> the canonical name, or a ``UsageError`` naming the option."""
    up = (form or "").upper()
    if up not in NORMALIZATIONS:
        raise UsageError(f"--normalize {form!r} must be one of nfc, nfkc", param="normalization")
    return up


def normalize_unicode(text: str, form: str = "NFC") -> str:
    """Unicode normalization (NFC keeps the text as written; NFKC also folds compatibility forms)."""
    return unicodedata.normalize(form, text)


# The checks before each rewrite only skip work that would change nothing (most text has no \r and
# no trailing spaces): the streaming prepare cleans gigabytes with these.
def remove_control(text: str) -> str:
    """Drop control characters, keeping newlines and tabs (``\\r`` becomes a newline first)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", text)


def normalize_whitespace(text: str) -> str:
    """CRLF -> LF, no trailing spaces on a line, at most one blank line in a row, no blank edges."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\u2028" in text or "\u2029" in text:
        text = text.replace("\u2028", "\n").replace("\u2029", "\n\n")
    if " \n" in text or "\t\n" in text or "\u3000\n" in text:  # where a run of trailing blanks ends
        text = _TRAILING.sub("", text)
    if "\n\n\n" in text:
        text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip("\n").rstrip()
