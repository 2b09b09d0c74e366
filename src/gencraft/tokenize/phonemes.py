"""Text -> phonemes for speech: normalization (English and Chinese) and the phoneme tokenizer.

Why these tools: English goes through espeak-ng's pronunciation rules and dictionaries (the
``phonemizer`` package's espeak backend, IPA with stress marks). The espeak-ng library comes from the
``espeakng-loader`` wheel, which ships ``libespeak-ng`` and its data: ``pip install`` is all a new
machine needs (no apt, no system library whose version differs between machines, and the same
phonemes on a laptop and in CI). Chinese goes through ``pypinyin`` (initials and finals with tone
numbers, tone sandhi applied), which reads Mandarin far better than espeak-ng's ``cmn`` voice; Latin
words inside Chinese text still go through espeak-ng.

Numbers, dates, times, currency, percentages and common abbreviations are written out as words first
(``num2words`` for English, ``cn2an`` for Chinese), so "On 3/5/2024 it cost $3.50" is said the way a
person says it and the model never sees a digit.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from gencraft.errors import DataError, UsageError
from gencraft.io import write_json

LANGUAGES = ("en", "zh")
PAD = "<pad>"
PUNCTUATION = ",.!?;:-…"  # kept as symbols: pauses and intonation
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


def detect_language(text: str) -> str:
    """``zh`` when Chinese characters are at least a third of the letters, else ``en``."""
    cjk = len(_CJK.findall(text))
    latin = len(_LATIN.findall(text))
    return "zh" if cjk and cjk * 3 >= cjk + latin else "en"


# --- English normalization ------------------------------------------------------------------------

_ABBREVIATIONS = {
    "mr": "mister", "mrs": "missus", "ms": "miz", "dr": "doctor", "st": "saint", "jr": "junior",
    "sr": "senior", "prof": "professor", "capt": "captain", "gen": "general", "lt": "lieutenant",
    "col": "colonel", "sgt": "sergeant", "mt": "mount", "ft": "fort", "vs": "versus", "etc": "et cetera",
    "approx": "approximately", "dept": "department", "no": "number", "jan": "January", "feb": "February",
    "mar": "March", "apr": "April", "jun": "June", "jul": "July", "aug": "August", "sep": "September",
    "sept": "September", "oct": "October", "nov": "November", "dec": "December",
}
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]
_CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
             "€": ("euro", "euros", "cent", "cents"), "¥": ("yen", "yen", "sen", "sen")}
_UNITS = {"%": "percent", "km": "kilometers", "kg": "kilograms", "cm": "centimeters", "mm": "millimeters",
          "m": "meters", "g": "grams", "ml": "milliliters", "l": "liters", "h": "hours", "min": "minutes",
          "s": "seconds", "°c": "degrees Celsius", "°f": "degrees Fahrenheit", "mph": "miles per hour"}


def _words(n: int | float, **kw) -> str:
    from num2words import num2words

    return num2words(n, lang="en", **kw)


def _year(n: int) -> str:
    return _words(n, to="year") if 1100 <= n <= 2099 else _words(n)


def _money(m: re.Match) -> str:
    one, many, sub1, subn = _CURRENCY[m.group("cur")]
    whole = int(m.group("whole").replace(",", ""))
    frac = m.group("frac")
    parts = [f"{_words(whole)} {one if whole == 1 else many}"] if whole or not frac else []
    if frac:
        cents = int((frac + "0")[:2])
        if cents:
            parts.append(f"{_words(cents)} {sub1 if cents == 1 else subn}")
    scale = m.group("scale")
    if scale:  # "$3.5 million" -> three point five million dollars
        amount = m.group("whole").replace(",", "") + (f".{frac}" if frac else "")
        return f"{_number(amount)} {scale} {many}"
    return " and ".join(parts) if parts else f"zero {many}"


def _number(s: str) -> str:
    s = s.replace(",", "")
    if "." in s:
        whole, frac = s.split(".", 1)
        return f"{_words(int(whole or 0))} point {' '.join(_words(int(d)) for d in frac)}"
    return _words(int(s))


def _date_iso(m: re.Match) -> str:
    y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not (1 <= mo <= 12 and 1 <= d <= 31):
        return m.group(0)
    return f"{_MONTHS[mo - 1]} {_words(d, to='ordinal')}, {_year(y)}"


def _date_us(m: re.Match) -> str:
    mo, d, y = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not (1 <= mo <= 12 and 1 <= d <= 31):
        return m.group(0)
    y = y + 2000 if y < 100 else y
    return f"{_MONTHS[mo - 1]} {_words(d, to='ordinal')}, {_year(y)}"


def _time(m: re.Match) -> str:
    h, mi = int(m.group(1)), int(m.group(2))
    suffix = f" {m.group(3).replace('.', '').lower()}" if m.group(3) else ""
    suffix = suffix.replace("am", "a m").replace("pm", "p m")
    if mi == 0:
        return f"{_words(h)} o'clock{suffix}" if not suffix else f"{_words(h)}{suffix}"
    return f"{_words(h)} {'oh ' + _words(mi) if mi < 10 else _words(mi)}{suffix}"


def _plain_number(m: re.Match) -> str:
    s = m.group(0)
    digits = s.replace(",", "")
    if re.fullmatch(r"\d{4}", digits) and "," not in s and 1100 <= int(digits) <= 2099:
        return _year(int(digits))
    if len(digits.split(".")[0]) > 15:  # phone-number-like: read digit by digit
        return " ".join(_words(int(c)) if c.isdigit() else "point" for c in digits)
    return _number(digits)


def normalize_en(text: str) -> str:
    """Write out numbers, dates, times, currency, units and abbreviations in English words."""
    t = text.replace("&", " and ").replace("\u2019", "'").replace("\u2018", "'")
    t = re.sub(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b", _date_iso, t)
    t = re.sub(r"\b(\d{1,2})/(\d{1,2})/(\d{2}|\d{4})\b", _date_us, t)
    t = re.sub(r"\b(\d{1,2}):(\d{2})\s*([AaPp]\.?[Mm]\.?)?(?=\W|$)", _time, t)
    t = re.sub(r"(?P<cur>[$£€¥])\s?(?P<whole>\d[\d,]*)(?:\.(?P<frac>\d+))?(?:\s(?P<scale>thousand|million|billion))?",
               _money, t)
    t = re.sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: _words(int(m.group(1)), to="ordinal"), t)
    t = re.sub(r"(\d[\d,]*(?:\.\d+)?)\s?(%|°[CcFf])", lambda m: f"{m.group(1)} {_UNITS[m.group(2).lower()]}", t)
    t = re.sub(r"\b(\d[\d,]*(?:\.\d+)?)\s?(km|kg|cm|mm|ml|mph)\b",
               lambda m: f"{m.group(1)} {_UNITS[m.group(2).lower()]}", t)
    t = re.sub(r"(?<![\w.])-(?=\d)", "minus ", t)
    t = re.sub(r"\d[\d,]*(?:\.\d+)?", _plain_number, t)

    def abbrev(m: re.Match) -> str:
        word = m.group(1)
        full = _ABBREVIATIONS.get(word.lower())
        if full is None or (word.lower() == "no" and not m.group(2)):
            return m.group(0)
        return full + (m.group(2) or "")

    t = re.sub(r"\b([A-Za-z]+)\.(\s\d)?", lambda m: abbrev(m) if m.group(1).lower() in _ABBREVIATIONS
               and (m.group(1)[0].isupper() or m.group(1).lower() in ("vs", "etc", "approx")) else m.group(0), t)
    t = re.sub(r"\be\.g\.", "for example", t)
    t = re.sub(r"\bi\.e\.", "that is", t)
    return " ".join(t.split())


# --- Chinese normalization ------------------------------------------------------------------------

_ZH_CURRENCY = {"¥": "元", "￥": "元", "$": "美元", "€": "欧元", "£": "英镑"}
_ZH_DIGITS = "零一二三四五六七八九"


def normalize_zh(text: str) -> str:
    """Write out numbers, dates, percentages and currency in Chinese characters (``cn2an``)."""
    import cn2an

    t = re.sub(r"([¥￥$€£])\s?(\d[\d,]*(?:\.\d+)?)", lambda m: m.group(2).replace(",", "") + _ZH_CURRENCY[m.group(1)],
               text)
    t = re.sub(r"(?<!\d)-(?=\d)", "负", t)
    t = re.sub(r"(\d+(?:\.\d+)?)\s?[°℃]C?", r"\1摄氏度", t)
    t = re.sub(r"(\d),(\d{3})", r"\1\2", t)
    try:
        t = cn2an.transform(t, "an2cn")
    except Exception:  # noqa: BLE001 - cn2an raises plain ValueErrors on shapes it does not know
        pass
    # whatever digits remain (very long numbers, odd shapes) are read one by one
    t = re.sub(r"\d", lambda m: _ZH_DIGITS[int(m.group(0))], t)
    return t.replace("%", "百分之")


def normalize(text: str, language: str) -> str:
    """Unicode-normalize, collapse whitespace and write out numbers etc. for ``language``."""
    import unicodedata

    t = unicodedata.normalize("NFKC", text) if language == "en" else unicodedata.normalize("NFC", text)
    t = "".join(c for c in t if unicodedata.category(c)[0] != "C" or c in "\n\t")
    return normalize_en(t) if language == "en" else normalize_zh(t)


# --- phonemization --------------------------------------------------------------------------------

_lock = threading.Lock()
_backends: dict[str, object] = {}
_ZH_PUNCT = {"，": ",", "。": ".", "！": "!", "？": "?", "；": ";", "：": ":", "、": ",", "…": "…",
             "—": "-", "（": ",", "）": ",", "《": "", "》": "", "“": "", "”": "", "‘": "", "’": ""}


def espeak_paths() -> tuple[str, str]:
    """The ``libespeak-ng`` shared library and data folder shipped in the ``espeakng-loader`` wheel."""
    import espeakng_loader

    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


def _english_backend():
    b = _backends.get("en")
    if b is None:
        from phonemizer.backend import EspeakBackend
        from phonemizer.backend.espeak.wrapper import EspeakWrapper

        lib, data = espeak_paths()
        EspeakWrapper.set_library(lib)
        EspeakWrapper.set_data_path(data)
        quiet = logging.getLogger("gencraft.phonemizer")
        quiet.setLevel(logging.ERROR)
        b = EspeakBackend("en-us", preserve_punctuation=True, with_stress=True, language_switch="remove-flags",
                          punctuation_marks=';:,.!?¡¿—…"«»“”()', logger=quiet)
        _backends["en"] = b
    return b


def _ipa_symbols(ipa: str) -> list[str]:
    """Split espeak's IPA into symbols: one per character, a space between words, punctuation kept."""
    out: list[str] = []
    for c in ipa:
        if c.isspace():
            if out and out[-1] != " ":
                out.append(" ")
        elif c in "\"«»“”()¡¿":
            continue
        elif c == "—":
            out.append("-")
        else:
            out.append(c)
    while out and out[-1] == " ":
        out.pop()
    return out


def phonemize_en(texts: list[str]) -> list[list[str]]:
    """English texts (already normalized) -> IPA symbol lists via espeak-ng."""
    keep = [i for i, t in enumerate(texts) if t.strip()]  # phonemizer drops empty lines from its output
    out: list[list[str]] = [[] for _ in texts]
    if not keep:
        return out
    with _lock:
        ipa = _english_backend().phonemize([" ".join(texts[i].split()) for i in keep], strip=True, njobs=1)
    for i, s in zip(keep, ipa, strict=True):
        out[i] = _ipa_symbols(s)
    return out


def phonemize_zh(text: str) -> list[str]:
    """Chinese text (already normalized) -> pinyin initials and tone-numbered finals; Latin words via
    espeak-ng; punctuation mapped to the shared pause symbols."""
    from pypinyin import Style, lazy_pinyin

    out: list[str] = []
    for chunk in re.findall(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[A-Za-z][A-Za-z' ]*|.", text):
        if _CJK.match(chunk):
            initials = lazy_pinyin(chunk, style=Style.INITIALS, strict=True)
            finals = lazy_pinyin(chunk, style=Style.FINALS_TONE3, strict=True, neutral_tone_with_five=True,
                                 tone_sandhi=True)
            for ini, fin in zip(initials, finals, strict=True):
                if ini:
                    out.append(ini)
                if fin:
                    out.append(fin)
        elif _LATIN.match(chunk):
            if out and out[-1] != " ":
                out.append(" ")
            out += phonemize_en([chunk.strip()])[0]
            out.append(" ")
        elif chunk in _ZH_PUNCT or chunk in PUNCTUATION:
            p = _ZH_PUNCT.get(chunk, chunk)
            if p:
                out.append(p)
        elif chunk.isspace() and out and out[-1] != " ":
            out.append(" ")
    while out and out[-1] == " ":
        out.pop()
    return out


def phonemize(texts: list[str], language: str) -> list[list[str]]:
    """Normalized texts -> symbol lists (``language`` ``en`` or ``zh``). An empty list means the text
    holds nothing that can be said."""
    if language == "en":
        syms = phonemize_en(texts)
    elif language == "zh":
        syms = [phonemize_zh(t) for t in texts]
    else:
        raise UsageError(f"--language {language}: expected one of {', '.join(LANGUAGES)}", param="language")
    return [s if any(c not in PUNCTUATION and c != " " for c in s) else [] for s in syms]


def text_to_symbols(text: str, language: str | None = None) -> tuple[str, list[str]]:
    """One text -> (normalized text, symbols); ``language`` None detects it."""
    lang = language or detect_language(text)
    norm = normalize(text, lang)
    return norm, phonemize([norm], lang)[0]


# --- the phoneme tokenizer ------------------------------------------------------------------------


@dataclass
class PhonemeTokenizer:
    """Symbols <-> ids. Id 0 is padding; the inventory is the dataset's symbols plus pauses and space.

    Saved as ``phonemes.json`` (``{"kind": "phonemes", "languages": [...], "symbols": [...]}``).
    """

    symbols: list[str]
    languages: list[str]

    kind = "phonemes"

    def __post_init__(self) -> None:
        self._ids = {s: i for i, s in enumerate(self.symbols)}

    @classmethod
    def build(cls, sequences: list[list[str]], languages: list[str]) -> PhonemeTokenizer:
        seen = sorted({s for seq in sequences for s in seq} - set(PUNCTUATION) - {" "})
        return cls([PAD, " ", *PUNCTUATION, *seen], sorted(set(languages)))

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def encode(self, symbols: list[str]) -> tuple[list[int], list[str]]:
        """Ids of the known symbols, and the symbols this inventory does not have (skipped)."""
        ids, unknown = [], []
        for s in symbols:
            i = self._ids.get(s)
            if i is None:
                unknown.append(s)
            else:
                ids.append(i)
        return ids, unknown

    def decode(self, ids: list[int]) -> list[str]:
        return [self.symbols[i] for i in ids if 0 < i < len(self.symbols)]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "languages": self.languages, "symbols": self.symbols}

    def save(self, path: str | os.PathLike[str]) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PhonemeTokenizer:
        p = Path(path)
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
            if d.get("kind") != "phonemes" or not isinstance(d.get("symbols"), list):
                raise ValueError("not a phoneme inventory")
            return cls([str(s) for s in d["symbols"]], list(d.get("languages", [])))
        except (OSError, ValueError, UnicodeDecodeError, AttributeError) as e:
            raise DataError(f"{p}: cannot read the phoneme inventory ({e})", param="phonemes") from None
