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


# Words after which a period does not end a sentence (lowercase, without the period).
ABBREVIATIONS = frozenset("""
    mr mrs ms dr prof sr jr st vs etc e.g i.e cf al approx fig figs no nos vol vols p pp ch sec
    inc ltd co corp dept est misc jan feb mar apr jun jul aug sep sept oct nov dec mt ft
    """.split())
# Top-level domains that make "word.word" a host name ("example.com"), not two sentences.
_TLDS = frozenset("com org net edu gov io co uk de fr cn jp ru info biz ai dev app me us ca au nl html htm "
                  "txt md py js json csv pdf png jpg gif".split())
# A URL or e-mail address, without the punctuation that ends the sentence around it.
_URLISH = re.compile(r"(?:(?:[a-z][a-z0-9+.-]*://|www\.)\S+?|[\w.+-]+@[\w-]+(?:\.[\w-]+)+)(?=[.,;:!?)\]]*(?:\s|$))",
                     re.IGNORECASE)


def _glued_sentence(m: re.Match[str]) -> str:
    """ "test.it works" -> "test. it works" unless the dot belongs to an abbreviation, a host name
    or a file name (``example.com``, ``e.g.``, ``notes.txt``)."""
    left, right = m.group(1), m.group(2)
    if left.lower() in ABBREVIATIONS or right.lower() in _TLDS or len(right) == 1 and right != "a":
        return m.group(0)
    return f"{left}. {right}"


def _abbreviation_before(text: str, end: int) -> bool:
    """True when the period at ``end - 1`` closes an abbreviation, an initial or an ellipsis."""
    before = text[:end - 1]
    if before.endswith(".."):
        return True
    word = re.search(r"([A-Za-z][A-Za-z.]*)$", before)
    if word is None:
        return False
    w = word.group(1).lower()
    initialism = "." in w and all(len(part) <= 2 for part in w.split("."))  # "u.s.", "p.m."
    return w in ABBREVIATIONS or initialism or len(w) == 1 and w not in ("a", "i")  # "J. Smith"


def capitalize_sentences(text: str) -> str:
    """Upper-case the first letter of every English sentence and the pronoun "i".

    A sentence starts the text, a paragraph (after a blank line) or follows ``.``, ``!`` or ``?``
    and white space -- not after an abbreviation (``e.g.``, ``Mr.``), an initial or an ellipsis.
    URLs and e-mail addresses are left as they are.
    """
    keep = [(m.start(), m.end()) for m in _URLISH.finditer(text)]

    def protected(i: int) -> bool:
        return any(a <= i < b for a, b in keep)

    chars = list(text)
    starts = [m.start(1) for m in re.finditer(r"(?:\A|\n[ \t]*\n)[ \t\n]*([\"'“‘(]*[a-z])", text)]
    for m in re.finditer(r"[.!?]([\"'”’)\]]*)\s+([\"'“‘(]*)([a-z])", text):
        if m.group(1) and text[m.start()] in "!?":  # '"Go!" she said': the quoted speech goes on
            continue
        if text[m.start()] == "." and _abbreviation_before(text, m.start() + 1):
            continue
        starts.append(m.start(3))
    for i in starts:
        i = next((j for j in range(i, len(text)) if text[j].isalpha()), i)
        if not protected(i):
            chars[i] = chars[i].upper()
    out = "".join(chars)
    return re.sub(r"(?<![\w'.])i(?=(?:'[a-z]+)?(?![\w'])(?!\.\w))", "I", out)


def normalize_english(text: str) -> str:
    """Single spaces; no space before ``,.;:!?``; one space after them before a letter; sentences
    glued by a period split (``test.it`` -> ``test. It``) and capitalized; abbreviations, decimals,
    URLs, e-mail addresses and file names kept."""
    text = re.sub(r"[ \t]+", " ", text)
    urls = [(m.start(), m.end()) for m in _URLISH.finditer(text)]
    text = "".join(piece if any(a <= pos < b for a, b in urls) else _english_spacing(piece)
                   for pos, piece in _pieces(text, urls))
    text = capitalize_sentences(text)
    return "\n".join(line.strip() for line in text.split("\n"))


def _english_spacing(text: str) -> str:
    text = re.sub(r" +([,.;:!?%)\]])", r"\1", text)
    text = re.sub(r"([(\[]) +", r"\1", text)
    text = re.sub(r"([,;:!?])(?=[A-Za-z])", r"\1 ", text)
    text = re.sub(r"(?<![\w.])([A-Za-z]{2,})\.([A-Za-z]+)\b(?!\.\w)", _glued_sentence, text)
    text = re.sub(r"([,.;:!?])\1{3,}", r"\1", text)  # "!!!!" -> "!" (an ellipsis "..." stays)
    return re.sub(r"([,;:!?])\1+", r"\1", text)


def _pieces(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, str]]:
    """``text`` cut at the edges of ``spans``: ``(start, piece)`` in order."""
    cuts = sorted({0, len(text), *(x for span in spans for x in span)})
    return [(a, text[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]


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
