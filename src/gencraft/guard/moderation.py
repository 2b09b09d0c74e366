"""Moderation: lexicons, PII patterns and an offline classifier behind one policy.

A :class:`Policy` says what to do per category (``allow`` < ``flag`` < ``mask`` < ``block``).
:func:`moderate` checks one text and returns a :class:`ModerationReport`: the categories hit,
each hit's span as character offsets into the *original* text, scores, the action taken and
the masked text.

Matching runs on a normalized copy of the text that keeps a map back to the original
offsets, so evasions are folded without losing where a hit lies:

* NFKC per character (full-width ``ｆｕｃｋ`` -> ``fuck``, ligatures), lower case;
* traditional -> simplified Chinese per character with ``zhconv`` (its MediaWiki tables);
* leetspeak digits and symbols (``5h1t`` -> ``shit``, ``@`` -> ``a``);
* English terms are compiled to patterns that allow separators between letters
  (``f u c k``, ``f.u.c.k``) and any repetition of a letter (``fuuuck``), with a word
  boundary at both ends so ``class`` or ``Scunthorpe`` never match;
* Chinese terms match anywhere (no word boundaries) with separators allowed between characters.

PII (e-mail addresses, phone numbers, credit-card numbers with a Luhn check, Chinese resident
ID numbers with their check digit) is found with patterns on the NFKC-folded text.
``alt-profanity-check`` (a linear model that ships inside the package; nothing is downloaded)
scores English sentences for profanity beside the lexicon when it is installed. Note: that package
loads its own model with joblib (pickle) from its installed files — never from user data; a
classifier hit only flags (it never masks words), and ``Policy(classifier_threshold=None)`` turns
it off.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from gencraft.errors import UsageError

CATEGORIES = ("profanity", "hate", "sexual", "violence", "self_harm", "pii")
ACTIONS = ("allow", "flag", "mask", "block")
DEFAULT_ACTIONS = {
    "profanity": "mask",
    "hate": "block",
    "sexual": "flag",
    "violence": "flag",
    "self_harm": "flag",
    "pii": "mask",
}

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b",
                       "@": "a", "$": "s", "!": "i", "|": "i", "+": "t", "€": "e"})
_SEP = r"[\W_]*"  # what may sit between two letters of a term (spaces, dots, dashes...)


def _is_han(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff"


@cache
def _to_simplified(ch: str) -> str:
    try:
        import zhconv
    except ImportError:  # degrade: no folding of traditional forms
        return ch
    out = zhconv.convert(ch, "zh-hans")
    return out if len(out) == 1 else ch


WINDOW = 1 << 16  # characters checked at a time: memory stays bounded whatever the input's length
OVERLAP = 1024  # context each window carries from its neighbours; a match longer than this may be cut


def windows(n: int, window: int = WINDOW, overlap: int = OVERLAP):
    """``(lo, hi, core_lo, core_hi)`` covering ``range(n)``: check ``text[lo:hi]`` and keep the matches
    that start in ``[core_lo, core_hi)``. Every start position falls in exactly one core, and each core
    has ``overlap`` characters of context on both sides (lookarounds and matches that cross a core's
    end see the same text as in one pass over the whole input)."""
    core_lo = 0
    while core_lo < n or (n == 0 and core_lo == 0):
        core_hi = min(core_lo + window, n)
        yield max(core_lo - overlap, 0), min(core_hi + overlap, n), core_lo, core_hi
        if core_hi >= n:
            return
        core_lo = core_hi


def _fold_ascii(text: str) -> str:
    return text.lower().translate(_LEET)


def normalize(text: str) -> tuple[str, list[int]]:
    """Fold ``text`` for matching; returns ``(folded, origin)`` with ``origin[i]`` the index in
    ``text`` of the character that produced ``folded[i]`` (``origin`` has one extra end entry)."""
    out: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text):
        folded = unicodedata.normalize("NFKC", ch).lower()
        for c in folded:
            if _is_han(c):
                c = _to_simplified(c)
            else:
                c = c.translate(_LEET)
            out.append(c)
            origin.append(i)
    origin.append(len(text))
    return "".join(out), origin


@dataclass(frozen=True)
class Term:
    """One lexicon entry: ``category``, the ``term`` as written, and its compiled pattern."""

    category: str
    term: str
    pattern: re.Pattern[str]


def compile_term(category: str, term: str) -> Term:
    """Compile a lexicon term (``*`` at the end: any continuation of the word)."""
    if category not in CATEGORIES:
        raise UsageError(f"lexicon category {category!r} is unknown; use one of {', '.join(CATEGORIES)}",
                         param="lexicon")
    raw = term.strip()
    prefix = raw.endswith("*")
    body, _ = normalize(raw.rstrip("*").strip())
    if not body:
        raise UsageError(f"lexicon term {term!r} is empty", param="lexicon")
    if any(_is_han(c) for c in body):
        chars = [c for c in body if not c.isspace()]
        pattern = _SEP.join(re.escape(c) for c in chars)
        return Term(category, raw, re.compile(pattern))
    parts: list[str] = []
    first = ""
    for run in re.finditer(r"(.)\1*", body):
        c, n = run.group(1), len(run.group(0))
        if c.isspace():
            continue
        one = re.escape(c)
        first = first or one
        parts.append(f"{one}(?:{_SEP}{one}){{{n - 1},}}")  # n or more, separators allowed
    tail = r"[a-z]*" if prefix else r"(?:s|es|ed|ing|er|ers)?"
    # The word boundary is checked after the first letter ((?<![a-z]X) once X matched), so the pattern
    # starts with a literal and the regex engine skips ahead to it instead of trying every position
    # (5 MB of digits, which fold to letters: 6 s -> well under 1 s).
    pattern = parts[0][:len(first)] + rf"(?<![a-z]{first})" + parts[0][len(first):] + "".join(
        _SEP + p for p in parts[1:]) + tail + r"(?![a-z])"
    return Term(category, raw, re.compile(pattern))


def parse_lexicon(text: str, *, source: str = "lexicon") -> list[Term]:
    """Parse lexicon lines ``CATEGORY TERM`` (``#`` comments, blank lines skipped)."""
    terms = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cat, _, term = re.sub(r"\s", " ", line, count=1).partition(" ")
        if not term.strip():
            raise UsageError(f"{source} line {n}: expected 'CATEGORY TERM', got {line!r}", param="lexicon")
        terms.append(compile_term(cat.strip(), term.strip()))
    return terms


@cache
def builtin_terms() -> tuple[Term, ...]:
    """The built-in English and Chinese lexicons (``guard/lexicons/*.txt``)."""
    terms: list[Term] = []
    folder = resources.files("gencraft.guard") / "lexicons"
    for name in ("en.txt", "zh.txt"):
        terms += parse_lexicon((folder / name).read_text(encoding="utf-8"), source=name)
    return tuple(terms)


def load_lexicon(path: str | Path) -> list[Term]:
    """Read a user lexicon file (same format as the built-in ones)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read lexicon {p}: {e}; pass a UTF-8 text file of 'CATEGORY TERM' lines",
                         param="lexicon") from e
    return parse_lexicon(text, source=str(p))


@dataclass
class Policy:
    """What to do per category, extra lexicon terms, and the classifier's use.

    ``actions`` maps category -> ``allow|flag|mask|block`` (missing categories use the
    defaults); ``terms`` are user lexicon entries added to the built-in ones (or replacing
    them with ``builtin=False``); ``classifier_threshold`` is the probability above which
    ``alt-profanity-check`` marks an English sentence as profanity (``None`` turns it off).
    """

    actions: dict[str, str] = field(default_factory=dict)
    terms: list[Term] = field(default_factory=list)
    builtin: bool = True
    classifier_threshold: float | None = 0.95

    def __post_init__(self) -> None:
        for cat, act in self.actions.items():
            if cat not in CATEGORIES:
                raise UsageError(f"policy category {cat!r} is unknown; use one of {', '.join(CATEGORIES)}",
                                 param="policy")
            if act not in ACTIONS:
                raise UsageError(f"policy action {act!r} for {cat} is unknown; use one of {', '.join(ACTIONS)}",
                                 param="policy")

    def action(self, category: str) -> str:
        return self.actions.get(category, DEFAULT_ACTIONS[category])

    def all_terms(self) -> list[Term]:
        return (list(builtin_terms()) if self.builtin else []) + list(self.terms)


@dataclass
class Hit:
    """One match: category, what matched (term or pattern name), span in the original text."""

    category: str
    rule: str
    start: int
    end: int
    text: str
    source: str  # "lexicon" | "pattern" | "classifier"
    score: float = 1.0


@dataclass
class ModerationReport:
    """Result of one check. ``action`` is the strongest action over the categories hit."""

    action: str
    categories: dict[str, float]
    hits: list[Hit]
    masked_text: str
    classifier: str | None

    @property
    def blocked(self) -> bool:
        return self.action == "block"

    def to_dict(self) -> dict:
        return {"action": self.action, "categories": self.categories,
                "hits": [asdict(h) for h in self.hits], "masked_text": self.masked_text,
                "classifier": self.classifier}


# --- PII -----------------------------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_CN_ID = re.compile(r"(?<!\d)\d{17}[\dXx](?![\dA-Za-z])")
_PHONE = re.compile(
    r"(?<![A-Za-z0-9_+])(?<!\d[ .-])(?:"
    r"(?:\+?86[ -]?)?1[3-9]\d[ -]?\d{4}[ -]?\d{4}"  # Chinese mobile
    r"|\+?\d{1,3}[ .-]?\(?\d{2,4}\)?[ .-]?\d{3,4}[ .-]?\d{3,4}"  # international
    r"|\(?\d{3}\)?[ .-]?\d{3}[ .-]?\d{4}"  # North American
    r")(?![A-Za-z0-9_])(?![ .-]?\d)"
)


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every payment card number carries."""
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def cn_id_ok(s: str) -> bool:
    """ISO 7064 MOD 11-2 check digit of an 18-character Chinese resident ID number."""
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    total = sum(int(c) * w for c, w in zip(s[:17], weights, strict=True))
    return "10X98765432"[total % 11] == s[17].upper()


def _fold_width(text: str) -> str:
    """NFKC per character where it keeps the length (full-width digits and letters), so offsets stay exact."""
    folded = unicodedata.normalize("NFKC", text)
    if len(folded) == len(text):
        return folded
    return "".join(unicodedata.normalize("NFKC", c) if len(unicodedata.normalize("NFKC", c)) == 1 else c
                   for c in text)


def find_pii(text: str) -> list[Hit]:
    """E-mail addresses, phone numbers, card numbers (Luhn) and Chinese ID numbers in ``text``,
    checked window by window (bounded memory)."""
    hits: list[Hit] = []
    taken: list[tuple[int, int]] = []

    def add(rule: str, m: re.Match[str], lo: int, core: tuple[int, int]) -> None:
        s, e = m.start() + lo, m.end() + lo
        if not core[0] <= s < core[1] or any(s < b and a < e for a, b in taken):
            return
        taken.append((s, e))
        hits.append(Hit("pii", rule, s, e, text[s:e], "pattern"))

    for lo, hi, core_lo, core_hi in windows(len(text)):
        taken[:] = [(a, b) for a, b in taken if b > lo]  # only hits reaching into this window can overlap
        part = text[lo:hi]
        folded = part if part.isascii() else _fold_width(part)
        core = (core_lo, core_hi)
        found: list[tuple[str, re.Match[str]]] = []
        found += [("email", m) for m in _EMAIL.finditer(folded)]
        found += [("cn_id_number", m) for m in _CN_ID.finditer(folded) if cn_id_ok(m.group(0))]
        found += [("credit_card", m) for m in _CARD.finditer(folded)
                  if 13 <= len(d := re.sub(r"\D", "", m.group(0))) <= 19 and luhn_ok(d)]
        found += [("phone", m) for m in _PHONE.finditer(folded) if sum(c.isdigit() for c in m.group(0)) >= 10]
        for rule, m in found:  # the order of the rules decides overlaps, as in one pass
            add(rule, m, lo, core)
    hits.sort(key=lambda h: h.start)
    return hits


# --- classifier ----------------------------------------------------------------------------------


@cache
def _classifier():
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from profanity_check import predict_prob
        return predict_prob
    except Exception:  # not installed or incompatible with this scikit-learn: lexicons only
        return None


def classifier_name() -> str | None:
    """``"alt-profanity-check"`` when the offline classifier is usable, else ``None``."""
    return "alt-profanity-check" if _classifier() is not None else None


_SENTENCE = re.compile(r"[^.!?\n。！？]+[.!?。！？]*")


def _classify(text: str, threshold: float) -> list[Hit]:
    predict = _classifier()
    if predict is None:
        return []
    import warnings

    hits = []
    batch: list[tuple[int, int]] = []

    def score() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probs = predict([text[s:e] for s, e in batch])
        for (s, e), p in zip(batch, probs, strict=True):
            while s < e and text[s].isspace():
                s += 1
            if p >= threshold:
                hits.append(Hit("profanity", "alt-profanity-check", s, e, text[s:e], "classifier", float(p)))
        batch.clear()

    for s, e in _sentences(text):
        if _LETTERS.search(text, s, e):
            batch.append((s, e))
            if len(batch) == 512:  # scored in batches: memory stays bounded on long inputs
                score()
    if batch:
        score()
    return hits


_LETTERS = re.compile(r"[A-Za-z]{2}")
MAX_SENTENCE = 2000  # characters the classifier scores at once; a longer "sentence" (no punctuation) is cut


def _sentences(text: str):
    """Sentence spans of ``text``, each at most MAX_SENTENCE characters (cut at a space when there is one)."""
    for m in _SENTENCE.finditer(text):
        s, e = m.span()
        while e - s > MAX_SENTENCE:
            cut = text.rfind(" ", s + MAX_SENTENCE // 2, s + MAX_SENTENCE)
            cut = cut if cut > s else s + MAX_SENTENCE
            yield s, cut
            s = cut
        yield s, e


# --- the check -----------------------------------------------------------------------------------


def find_terms(text: str, terms: list[Term]) -> list[Hit]:
    """Lexicon hits in ``text`` (spans in the original text), checked window by window (bounded
    memory; ASCII windows fold with two string operations instead of a per-character pass)."""
    hits = []
    for lo, hi, core_lo, core_hi in windows(len(text)):
        part = text[lo:hi]
        if part.isascii():  # NFKC and zhconv leave ASCII alone: offsets map one to one
            folded, origin = _fold_ascii(part), None
        else:
            folded, origin = normalize(part)
        for t in terms:
            for m in t.pattern.finditer(folded):
                if m.end() == m.start():
                    continue
                s, e = (m.start(), m.end()) if origin is None else (origin[m.start()], origin[m.end() - 1] + 1)
                s, e = s + lo, e + lo
                if core_lo <= s < core_hi:
                    hits.append(Hit(t.category, t.term, s, e, text[s:e], "lexicon"))
    return hits


def _mask(text: str, spans: list[tuple[int, int]]) -> str:
    if not spans:
        return text
    out, pos = [], 0
    for s, e in sorted(spans):
        s = max(s, pos)
        if e <= s:
            continue
        out.append(text[pos:s])
        out.append(re.sub(r"\S", "*", text[s:e]))
        pos = e
    out.append(text[pos:])
    return "".join(out)


def _effective(action: str, hit: Hit) -> str:
    return "flag" if hit.source == "classifier" and action == "mask" else action


def moderate(text: str, policy: Policy | None = None) -> ModerationReport:
    """Check ``text`` against ``policy`` (default: built-in lexicons, default actions)."""
    policy = policy or Policy()
    hits = find_terms(text, policy.all_terms()) + find_pii(text)
    lexicon_profanity = any(h.category == "profanity" for h in hits)
    if policy.classifier_threshold is not None:
        for h in _classify(text, policy.classifier_threshold):
            # the lexicon already spans the words; the classifier adds sentences it alone caught
            if not lexicon_profanity:
                hits.append(h)
    hits.sort(key=lambda h: (h.start, h.end))
    categories: dict[str, float] = {}
    for h in hits:
        categories[h.category] = max(categories.get(h.category, 0.0), h.score)
    acts = [_effective(policy.action(h.category), h) for h in hits]
    action = max(acts, key=ACTIONS.index) if acts else "allow"
    # a classifier hit scores a whole sentence: it flags (or blocks) but never masks words
    masked = _mask(text, [(h.start, h.end) for h in hits
                          if h.source != "classifier" and policy.action(h.category) in ("mask", "block")])
    return ModerationReport(action, categories, hits, masked, classifier_name()
                            if policy.classifier_threshold is not None else None)
