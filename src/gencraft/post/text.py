"""Text post-processing for English and Chinese: small functions of ``str -> str``, one job each.

:func:`clean` chains them in the order a writer wants: normalize spacing and punctuation, drop
repeated sentences, trim to the last complete sentence. Chinese text gets full-width punctuation
and no stray spaces between CJK characters; English text gets single spaces, no space before
``,.;:!?`` and one after. :func:`spell_suggestions` proposes corrections for English words from
``pyspellchecker``'s bundled (offline) word-frequency dictionary.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

# CJK ideographs, kana, hangul and the CJK punctuation block
_CJK = (r"\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u3190-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
        r"\uac00-\ud7af\uf900-\ufaff")
_CJK_RE = re.compile(f"[{_CJK}]")
_FULL_PUNCT = "，。！？；：（）「」『』、《》〈〉…—“”‘’"
_HALF_TO_FULL = {",": "，", ".": "。", "!": "！", "?": "？", ";": "；", ":": "：", "(": "（", ")": "）"}

_EN_END = ".!?"
_ZH_END = "。！？…"
_CLOSERS = "\"'”’」』)）]】"


def is_cjk(ch: str) -> bool:
    """True for a CJK ideograph, kana or hangul character."""
    return bool(_CJK_RE.match(ch))


def detect_language(text: str) -> str:
    """``"zh"`` when at least a fifth of the letters are CJK, else ``"en"``."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return "en"
    cjk = sum(1 for c in letters if is_cjk(c))
    return "zh" if cjk / len(letters) >= 0.2 else "en"


def split_sentences(text: str, lang: str | None = None) -> list[str]:
    """Sentences with their end punctuation and closing quotes (the rest of the text last)."""
    lang = lang or detect_language(text)
    if lang == "zh":
        pattern = rf"[^{_ZH_END}{_EN_END}]*[{_ZH_END}{_EN_END}]+[{re.escape(_CLOSERS)}]*"
    else:
        # an end mark followed by space/end (so "3.5" and "e.g.x" stay whole)
        pattern = rf".*?[{_EN_END}]+[{re.escape(_CLOSERS)}]*(?=\s+[^a-z\s]|\s*$)"
    out, pos = [], 0
    for m in re.finditer(pattern, text, flags=re.DOTALL):
        if m.end() <= pos:
            continue
        piece = text[pos:m.end()]
        if piece.strip():
            out.append(piece.strip())
        pos = m.end()
    rest = text[pos:].strip()
    if rest:
        out.append(rest)
    return out


def _ends_sentence(s: str) -> bool:
    s = s.rstrip().rstrip(_CLOSERS)
    return bool(s) and s[-1] in _EN_END + _ZH_END


def trim_to_sentence(text: str, lang: str | None = None) -> str:
    """Cut an unfinished last sentence off (kept when it is the only one)."""
    lang = lang or detect_language(text)
    sents = split_sentences(text, lang)
    if len(sents) > 1 and not _ends_sentence(sents[-1]):
        sents = sents[:-1]
    return _join(sents, lang)


def _join(sents: Sequence[str], lang: str) -> str:
    return ("" if lang == "zh" else " ").join(sents)


def _sentence_key(s: str) -> str:
    return re.sub(r"\W+", "", unicodedata.normalize("NFKC", s).lower())


def remove_repeated_sentences(text: str, lang: str | None = None) -> str:
    """Drop every sentence that repeats an earlier one (ignoring case, spacing and punctuation).

    Paragraph breaks are kept: each paragraph is split on its own.
    """
    lang = lang or detect_language(text)
    seen: set[str] = set()
    paras = []
    for para in re.split(r"\n\s*\n", text):
        kept = []
        for s in split_sentences(para, lang):
            key = _sentence_key(s)
            if key and key in seen:
                continue
            seen.add(key)
            kept.append(s)
        if kept:
            paras.append(_join(kept, lang))
    return "\n\n".join(paras)


def normalize_english(text: str) -> str:
    """Single spaces; no space before ``,.;:!?``; one space after them before a letter."""
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" +([,.;:!?%)\]])", r"\1", text)
    text = re.sub(r"([(\[]) +", r"\1", text)
    text = re.sub(r"([,;:!?])(?=[A-Za-z])", r"\1 ", text)
    text = re.sub(r"(?<=[a-z])\.(?=[A-Z][a-z])", ". ", text)  # "end.Next" -> "end. Next"
    text = re.sub(r"([,.;:!?])\1{2,}", r"\1", text)  # "!!!!" -> "!"
    return "\n".join(line.strip() for line in text.split("\n"))


def normalize_chinese(text: str) -> str:
    """Full-width punctuation next to CJK text; no spaces between CJK characters or around
    full-width punctuation; ASCII quotes around CJK text become “”."""
    cjk = f"[{_CJK}]"
    full = f"[{re.escape(_FULL_PUNCT)}]"
    # half-width punctuation touching a CJK character (before or after) becomes full-width
    def to_full(m: re.Match[str]) -> str:
        return _HALF_TO_FULL[m.group(0)]

    text = re.sub(rf"(?<={cjk})[ \t]*([,.!?;:])", lambda m: _HALF_TO_FULL[m.group(1)], text)
    text = re.sub(rf"[,!?;:](?=\s*{cjk})", to_full, text)
    text = re.sub(rf"\((?=[^()]*{cjk})([^()]*)\)", r"（\1）", text)
    text = re.sub(rf"\"({cjk}[^\"]*)\"", r"“\1”", text)
    # no stray spaces between CJK characters or around full-width punctuation
    for _ in range(2):
        text = re.sub(rf"({cjk}|{full})[ \t\u3000]+(?={cjk}|{full})", r"\1", text)
        text = re.sub(rf"[ \t\u3000]+(?={full})", "", text)
        text = re.sub(rf"(?<={full})[ \t\u3000]+", "", text)
    text = re.sub(r"。{2,}", "。", text)
    text = re.sub(r"[ \t]+", " ", text)
    return "\n".join(line.strip() for line in text.split("\n"))


def normalize(text: str, lang: str | None = None) -> str:
    """Unicode NFC plus the language's spacing and punctuation rules."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n")
    # control characters (other than newline and tab) and U+FFFD never belong in prose
    text = "".join(c for c in text if c in "\n\t" or (unicodedata.category(c) != "Cc" and c != "\ufffd"))
    lang = lang or detect_language(text)
    return normalize_chinese(text) if lang == "zh" else normalize_english(text)


Step = Callable[[str], str]


def clean(text: str, lang: str | None = None, *, trim: bool = True, dedupe: bool = True) -> str:
    """The writing assistant's chain: normalize, drop repeated sentences, trim the last one."""
    lang = lang or detect_language(text)
    steps: list[Step] = [lambda t: normalize(t, lang)]
    if dedupe:
        steps.append(lambda t: remove_repeated_sentences(t, lang))
    if trim:
        steps.append(lambda t: "\n\n".join(trim_to_sentence(p, lang) for p in t.split("\n\n")))
    for step in steps:
        text = step(text)
    return text.strip()


# ---------------------------------------------------------------- spelling


@dataclass(frozen=True)
class Suggestion:
    """A word not in the dictionary, where it is, and the likeliest corrections."""

    word: str
    start: int
    candidates: tuple[str, ...]


@lru_cache(maxsize=1)
def _speller():
    from spellchecker import SpellChecker  # pyspellchecker: ships its English dictionary

    return SpellChecker(language="en", distance=2)


def spell_suggestions(text: str, *, known: Sequence[str] = (), limit: int = 3) -> list[Suggestion]:
    """Suggestions for misspelled English words (offline). ``known`` adds words to accept
    (character names, brand names). Capitalised words inside a sentence are taken as names."""
    sp = _speller()
    extra = {w.lower() for w in known}
    out = []
    for m in re.finditer(r"[A-Za-z][A-Za-z']*[A-Za-z]|[A-Za-z]", text):
        word = m.group(0)
        low = word.lower()
        if len(word) < 3 or low in extra or (word[0].isupper() and m.start() > 0
                                             and text[:m.start()].rstrip()[-1:] not in ".!?"):
            continue
        if sp.known([low]):
            continue
        cands = sp.candidates(low) or set()
        ranked = sorted(cands - {low}, key=lambda w: (-sp.word_usage_frequency(w), w))[:limit]
        out.append(Suggestion(word, m.start(), tuple(ranked)))
    return out
