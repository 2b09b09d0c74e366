"""Copy checks: how much of an output was copied verbatim from the training data, and from where.

The index: hashed n-grams, not a suffix array. Why:

* it builds in a few linear numpy passes plus one sort (a suffix array needs O(n log n) rank
  doubling passes whose count grows with the longest repeat in the corpus: slow and memory-hungry
  in numpy on the large, repetitive corpora people bring);
* every window of ``n`` units (characters, or tokens of the run's tokenizer) is stored as one
  ``uint64`` key ``hash32 << 32 | position`` in a sorted array: a lookup is a binary search, and
  the position points into the stored corpus, so every hash hit is *verified* against the real
  text and extended to the exact length of the verbatim match — hash collisions never produce a
  false match, and spans of any length (≥ n) are measured exactly;
* the same code works on characters (Chinese needs no word boundaries) and on token ids, and the
  thresholds of the deduplication literature (50 tokens; Lee et al. 2022) sit far above ``n``.

Reformatting does not hide a copy: characters are matched on a *folded* form of both the corpus
and the output (:func:`fold`): Unicode NFKC (full-width forms become half-width), case folded,
traditional Chinese converted to simplified (``zhconv``, character by character), and whitespace,
punctuation and control characters dropped. Spans found on the folded text are mapped back to the
output's own characters, so offsets, lengths and excerpts are the user's text. Token-level matches
stay verbatim (on the run's tokenizer). An output is a copy risk when a span reaches the length
limit or when a large share of its character n-grams come from the training data (many short copies
stitched together: a text with its line breaks joined or its punctuation changed).

Windows never cross a document boundary. ``stride`` > 1 stores every stride-th window only (a
smaller index): a copied span of at least ``n + stride - 1`` units is then still always found,
shorter ones may be missed and the n-gram fraction becomes a lower bound.

Stored in a run as ``copy_index/`` (``meta.json`` + ``.npy`` arrays, loaded with
``allow_pickle=False`` and memory-mapped). Only the train split is indexed: that is what the
model saw.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from gencraft.data import load_dataset
from gencraft.errors import DataError, GencraftError, GuardError, NotFoundError
from gencraft.io import atomic_dir
from gencraft.paths import existing_run
from gencraft.tokenize import load_tokenizer

FORMAT = 2  # 2: the character index holds the folded corpus
BASE = np.uint64(0x100000001B3)  # FNV prime: the polynomial base of the rolling hash
LOW32 = np.uint64(0xFFFFFFFF)
CHUNK = 1 << 22
WINDOW = 1 << 16  # query units matched at a time, and how far ahead (and back) one match is measured


_DROP = ("P", "Z", "C")  # punctuation, separators, controls: formatting, not content


@lru_cache(maxsize=1 << 16)
def _fold_char(c: str) -> str:
    """What one character becomes in the folded form (``""`` when dropped)."""
    import zhconv

    out = []
    for ch in unicodedata.normalize("NFKC", c).casefold():
        if ch.isspace() or unicodedata.category(ch)[0] in _DROP:
            continue
        out.append(zhconv.convert(ch, "zh-hans") if ord(ch) >= 0x2E80 else ch)
    return "".join(out)


def _weight(text: str) -> int:
    """Folded length with CJK characters counted double (they carry about twice a letter's content)."""
    return sum(2 if ord(c) >= 0x2E80 else 1 for c in fold(text))


def fold(text: str) -> str:
    """The folded form of ``text`` that copies are matched on (see the module docstring)."""
    return text.translate({ord(c): _fold_char(c) for c in set(text)})


def fold_with_offsets(text: str) -> tuple[str, np.ndarray]:
    """:func:`fold` plus, for every folded character, the offset of the character of ``text`` it
    came from (``int64``), so spans on the folded text map back to the original."""
    if not text:
        return "", np.zeros(0, dtype=np.int64)
    table = {ord(c): _fold_char(c) for c in set(text)}
    chars = np.fromiter(table, dtype=np.int64, count=len(table))
    widths = np.fromiter((len(f) for f in table.values()), dtype=np.int64, count=len(table))
    order = np.argsort(chars)
    cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    per_char = widths[order][np.searchsorted(chars[order], cps)]  # what each character folds to: 0, 1, 2.. chars
    return text.translate(table), np.repeat(np.arange(len(text), dtype=np.int64), per_char)


def window_hashes(x: np.ndarray, n: int) -> np.ndarray:
    """Polynomial hash (mod 2^64) of every length-``n`` window of ``x``: ``uint64[len(x) - n + 1]``."""
    w = len(x) - n + 1
    if w <= 0:
        return np.zeros(0, dtype=np.uint64)
    h = np.zeros(w, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h *= BASE
            h += x[j:j + w].astype(np.uint64)
        # finalise: mix the high bits (we keep the top 32)
        h ^= h >> np.uint64(29)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(32)
    return h


def _build_keys(x: np.ndarray, sep: int, n: int, stride: int) -> np.ndarray:
    """Sorted ``hash32 << 32 | position`` keys of every stride-th window not containing ``sep``."""
    parts = []
    bad = np.concatenate([[0], np.cumsum(x == sep, dtype=np.int64)])
    total = len(x) - n + 1
    for start in range(0, max(total, 0), CHUNK):
        stop = min(start + CHUNK, total)
        h = window_hashes(x[start:stop + n - 1], n)
        pos = np.arange(start, stop, dtype=np.uint64)
        ok = (bad[start + n:stop + n] - bad[start:stop]) == 0
        if stride > 1:
            ok &= (pos % np.uint64(stride)) == 0
        parts.append(((h[ok] >> np.uint64(32)) << np.uint64(32)) | pos[ok])
    keys = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
    keys.sort()
    return keys


def _extend(q: np.ndarray, i: int, corpus: np.ndarray, p: int) -> int:
    """Length of the common prefix of ``q[i:]`` and ``corpus[p:]``."""
    length, step = 0, 64
    while True:
        a = q[i + length:i + length + step]
        b = corpus[p + length:p + length + step]
        m = min(len(a), len(b))
        if m == 0:
            return length
        eq = a[:m] == b[:m]
        if not eq.all():
            return length + int(np.argmin(eq))
        length += m
        if m < step:
            return length
        step *= 2


def _extend_back(q: np.ndarray, i: int, corpus: np.ndarray, p: int) -> int:
    """Length of the common suffix of ``q[:i]`` and ``corpus[:p]``."""
    length, step = 0, 64
    while True:
        m = min(step, i - length, p - length)
        if m <= 0:
            return length
        a = q[i - length - m:i - length][::-1]
        b = corpus[p - length - m:p - length][::-1]
        eq = a == b
        if not eq.all():
            return length + int(np.argmin(eq))
        length += m
        step *= 2


def match_blocks(blocks: Iterable[np.ndarray], corpus: np.ndarray, keys: np.ndarray, n: int,
                 max_candidates: int = 32, window: int = WINDOW) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Match statistics of a query that arrives in consecutive ``blocks`` (folded characters or token
    ids; ``-1`` matches nothing), in bounded memory: yields ``(first, lengths, where)`` for
    consecutive runs of window starts: for each, the verified verbatim match length (0 if < n) and its
    corpus position.

    A match found at ``i`` is extended backwards (strided indexes) and carries to ``i + 1`` (one
    shorter) while it stays >= n. A match is measured up to ``window`` units ahead (and back): a longer
    one is found again where its measured part ends, and the span walk joins the pieces. Only
    ``window`` units behind and ``2 x window`` ahead of the position being matched are kept, and the
    values do not depend on how the query is cut into blocks: one block gives what many give.
    """
    window = max(int(window), n)
    buf = np.zeros(0, dtype=np.int64)  # query units from `base` on
    lengths = np.zeros(0, dtype=np.int64)  # match lengths and positions of the window starts base..cur-1
    where = np.zeros(0, dtype=np.int64)
    base = cur = 0
    state = (0, -1, False)  # the match at cur - 1: (length, corpus position, measured up to the window)
    source, done = iter(blocks), False
    while True:
        while not done and base + len(buf) < cur + 2 * window:
            b = next(source, None)
            if b is None:
                done = True
            elif len(b):
                buf = np.concatenate([buf, np.asarray(b, dtype=np.int64)])
        end = base + len(buf)
        last = end - n + 1 if done else end - window + 1  # starts whose window ahead is all read
        stop = max(cur, min(last, cur + window))
        if stop > cur:
            lengths = np.concatenate([lengths, np.zeros(stop - cur, dtype=np.int64)])
            where = np.concatenate([where, np.full(stop - cur, -1, dtype=np.int64)])
            state = _match_range(buf, cur - base, stop - base, corpus, keys, n, max_candidates, window, lengths,
                                 where, state)
            cur = stop
        finished = done and cur >= end - n + 1
        fin = cur if finished else cur - window  # starts no backward extension can reach any more
        if fin > base:
            yield base, lengths[:fin - base], where[:fin - base]
            buf, lengths, where, base = buf[fin - base:], lengths[fin - base:], where[fin - base:], fin
        if finished:
            return


def _match_range(q: np.ndarray, a: int, b: int, corpus: np.ndarray, keys: np.ndarray, n: int, max_candidates: int,
                 window: int, lengths: np.ndarray, where: np.ndarray, state: tuple[int, int, bool]
                 ) -> tuple[int, int, bool]:
    """Fill ``lengths``/``where`` for the window starts ``a..b-1`` of ``q`` (local indices) from the
    match ``state`` at ``a - 1``; returns the state at ``b - 1``."""
    part = q[a:b + n - 1]
    bad = np.concatenate([[0], np.cumsum(part < 0, dtype=np.int64)])
    ok = (bad[n:] - bad[:-n]) == 0
    h = window_hashes(np.where(part < 0, 0, part), n) >> np.uint64(32) << np.uint64(32)
    lo = np.searchsorted(keys, h, side="left")
    hi = np.searchsorted(keys, h | LOW32, side="right")
    cands = np.flatnonzero(ok & (hi > lo)) + a  # starts with a hash hit: the only ones a search can match
    prev_len, prev_pos, capped = state
    i = a
    while i < b:
        if prev_len - 1 >= n:  # the match of the start before carries on, one shorter
            m = min(prev_len - n, b - i)
            steps = np.arange(1, m + 1)
            lengths[i:i + m], where[i:i + m] = prev_len - steps, prev_pos + steps
            prev_len, prev_pos, i = prev_len - m, prev_pos + m, i + m
            continue
        ahead = q[:i + window]
        if capped:  # a match measured up to the window: measure on where it goes on
            length = _extend(ahead, i, corpus, prev_pos + 1)
            if length >= n:
                lengths[i], where[i] = length, prev_pos + 1
                prev_len, prev_pos, capped, i = length, prev_pos + 1, length >= window, i + 1
                continue
            capped = False
        k = int(np.searchsorted(cands, i))
        if k == len(cands):
            return 0, -1, False
        if cands[k] > i:  # no hit in between: no match there
            i, prev_len, prev_pos = int(cands[k]), 0, -1
            continue
        best, best_pos = 0, -1
        for j in range(int(lo[i - a]), min(int(hi[i - a]), int(lo[i - a]) + max_candidates)):
            p = int(keys[j] & LOW32)
            length = _extend(ahead, i, corpus, p)
            if length > best:
                best, best_pos = length, p
        if best >= n:
            lengths[i], where[i] = best, best_pos
            # with stride > 1 the match may start before the first indexed window: extend it back
            first = max(i - window, 0)
            back = _extend_back(q[first:], i - first, corpus, best_pos)
            if back:
                steps = np.arange(1, back + 1)
                longer = best + steps > lengths[i - steps]
                lengths[i - steps[longer]], where[i - steps[longer]] = best + steps[longer], best_pos - steps[longer]
        else:
            best, best_pos = 0, -1
        prev_len, prev_pos, capped, i = best, best_pos, best >= window, i + 1
    return prev_len, prev_pos, capped


def match_statistics(q: np.ndarray, corpus: np.ndarray, keys: np.ndarray, n: int, max_candidates: int = 32,
                     window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """:func:`match_blocks` of a query held whole: ``(lengths, where)`` of its ``len(q) - n + 1`` window starts."""
    parts = list(match_blocks([q], corpus, keys, n, max_candidates, window))
    w = max(len(q) - n + 1, 0)
    if not parts:
        return np.zeros(w, dtype=np.int64), np.full(w, -1, dtype=np.int64)
    return np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


class _Units:
    """The query units read so far that a span may still need (by position: the unit, and for
    characters the offset in the text it came from), dropped once the span walk has passed them."""

    def __init__(self) -> None:
        self.firsts: list[int] = []
        self.units: list[np.ndarray] = []
        self.offsets: list[np.ndarray | None] = []
        self.end = 0

    def add(self, units: np.ndarray, offsets: np.ndarray | None = None) -> None:
        if len(units):
            self.firsts.append(self.end)
            self.units.append(units)
            self.offsets.append(offsets)
            self.end += len(units)

    def offset(self, pos: int) -> int:
        k = bisect.bisect_right(self.firsts, pos) - 1
        return int(self.offsets[k][pos - self.firsts[k]])  # type: ignore[index]

    def take(self, a: int, b: int) -> np.ndarray:
        k = bisect.bisect_right(self.firsts, a) - 1
        out = []
        while a < b and k < len(self.firsts):
            piece = self.units[k][a - self.firsts[k]:b - self.firsts[k]]
            out.append(piece)
            a += len(piece)
            k += 1
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def drop_before(self, pos: int) -> None:
        while len(self.firsts) > 1 and self.firsts[1] <= pos:
            del self.firsts[0], self.units[0], self.offsets[0]


def _pieces(text: str, size: int) -> Iterator[str]:
    """``text`` in pieces of about ``size`` characters, each cut before a space that starts a word
    (where byte-level, SentencePiece-style and character tokenizers split anyway, so encoding the
    pieces gives the ids of encoding the whole); a stretch with no space is cut where it reaches
    ``2 x size``."""
    a = 0
    while a < len(text):
        b = a + size
        if b < len(text):
            m = _WORD_START.search(text, b, a + 2 * size)
            b = m.start() if m else a + 2 * size
        yield text[a:b]
        a = b


_WORD_START = re.compile(r" (?=\S)")


@dataclass
class CopySpan:
    """One verbatim span of the output found in a training document."""

    start: int  # offsets into the output (characters, or tokens for unit="token")
    end: int
    length: int  # characters of the output it covers (tokens for unit="token")
    unit: str  # "char" | "token"
    doc_id: int
    source: int
    path: str | None
    license: str
    excerpt: str
    whole_document: int = 0  # the (folded) length of the training document when the span copies all of it


@dataclass
class CopyReport:
    """Copy check of one output. ``copy_risk``: a span reached ``max_tokens`` or ``max_chars``, or
    at least ``max_fraction`` of the output's (folded) character n-grams come from the training data
    (outputs with at least ``min_windows`` of them), or the output holds a whole training document
    (of at least ``min_document`` folded characters, CJK counting double). ``reason`` says which."""

    copy_risk: bool
    longest_chars: int
    longest_tokens: int | None
    char_ngram_fraction: float
    token_ngram_fraction: float | None
    char_n: int
    token_n: int | None
    max_chars: int
    max_tokens: int
    max_fraction: float = 0.5
    reason: str = ""
    spans: list[CopySpan] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CopyIndex:
    """A loaded copy index (see the module docstring). Build one with :func:`build_copy_index`."""

    def __init__(self, folder: str | os.PathLike[str], tokenizer: Any = None) -> None:
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.is_file():
            raise NotFoundError(f"no copy index at {self.folder} (meta.json missing); build it with "
                                "`gencraft guard index RUN`", param="copy_index")
        self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if self.meta.get("format") != FORMAT:
            raise NotFoundError(f"copy index at {self.folder} was made by an older gencraft (format "
                                f"{self.meta.get('format')}); rebuild it with `gencraft guard index RUN`",
                                param="copy_index")

        def arr(name: str) -> np.ndarray:
            return np.load(self.folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)

        self.chars, self.char_keys, self.char_starts = arr("chars"), arr("char_keys"), arr("char_starts")
        self.doc_ids, self.doc_sources = arr("doc_ids"), arr("doc_sources")
        self.has_tokens = bool(self.meta.get("token_n"))
        if self.has_tokens:
            self.tokens, self.token_keys, self.token_starts = arr("tokens"), arr("token_keys"), arr("token_starts")
        self.tokenizer = tokenizer
        self.sources: list[dict[str, Any]] = self.meta.get("sources", [])

    def _doc(self, pos: int, starts: np.ndarray) -> int:
        return int(np.searchsorted(starts, pos, side="right") - 1)

    def _source(self, doc: int) -> tuple[int, int, str | None, str]:
        src = int(self.doc_sources[doc])
        info = self.sources[src] if 0 <= src < len(self.sources) else {}
        return int(self.doc_ids[doc]), src, info.get("path"), info.get("license", "unknown")

    def check(self, text: str, *, max_tokens: int = 50, max_chars: int = 100, max_fraction: float = 0.5,
              min_windows: int = 24, min_document: int = 40, top: int = 5, window: int = WINDOW) -> CopyReport:
        """Longest copied spans (on the folded text, in the output's characters), the share of
        copied n-grams, and the source documents of ``text``. A copy of a whole training document
        of at least ``min_document`` folded characters, CJK ones counting double (a 20-character
        quatrain, a slogan; not a 30-letter line of dialogue), is a copy risk too.

        Long texts stream: ``window`` characters are folded, and ``window`` tokens encoded, at a
        time, and matched with :func:`match_blocks`, so the memory the check needs beyond ``text``
        itself does not grow with it."""
        n = int(self.meta["char_n"])
        sep = int(self.meta["char_sep"])
        units = _Units()

        def folded_blocks() -> Iterator[np.ndarray]:
            for lo in range(0, len(text), window):
                folded, offsets = fold_with_offsets(text[lo:lo + window])
                q = np.frombuffer(folded.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
                q[q >= sep] = -1  # characters the corpus never holds cannot match
                units.add(q, offsets + lo)
                yield q

        chars = _SpanWalk(self, "char", units, top, text)
        for first, lengths, where in match_blocks(folded_blocks(), self.chars, self.char_keys, n, window=window):
            chars.feed(first, lengths, where)
        spans = chars.finish()
        longest_chars = max((s.length for s in spans), default=0)
        char_frac = chars.found / chars.starts if chars.starts else 0.0

        longest_tokens = token_frac = token_n = None
        if self.has_tokens and self.tokenizer is not None:
            token_n = int(self.meta["token_n"])
            eos = int(self.meta["eos_id"])
            tok_units = _Units()

            def token_blocks() -> Iterator[np.ndarray]:
                for piece in _pieces(text, max(window, WINDOW)):  # pieces a window or more long
                    ids = np.asarray(self.tokenizer.encode(piece), dtype=np.int64)
                    ids[ids == eos] = -1
                    tok_units.add(ids)
                    yield ids

            toks = _SpanWalk(self, "token", tok_units, top)
            for first, lengths, where in match_blocks(token_blocks(), self.tokens, self.token_keys, token_n,
                                                      window=window):
                toks.feed(first, lengths, where)
            spans = sorted(spans + toks.finish(), key=lambda s: -s.length)
            longest_tokens = toks.longest
            token_frac = toks.found / toks.starts if toks.starts else 0.0
        reasons = []
        if longest_chars >= max_chars:
            reasons.append(f"a {longest_chars}-character span")
        if longest_tokens is not None and longest_tokens >= max_tokens:
            reasons.append(f"a {longest_tokens}-token span")
        if chars.starts >= min_windows and char_frac >= max_fraction:
            reasons.append(f"{char_frac:.0%} of its {n}-character n-grams")
        whole = max((_weight(s.excerpt) for s in spans if s.unit == "char" and s.whole_document), default=0)
        if whole >= min_document:
            reasons.append(f"a whole training document ({whole} weighted characters)")
        seen: dict[int, dict[str, Any]] = {}
        for s in spans:
            seen.setdefault(s.doc_id, {"doc_id": s.doc_id, "source": s.source, "path": s.path,
                                       "license": s.license})
        return CopyReport(bool(reasons), longest_chars, longest_tokens, char_frac, token_frac, n, token_n,
                          max_chars, max_tokens, max_fraction, "; ".join(reasons), spans, list(seen.values()))


EXCERPT = 200  # characters of a span shown in a report
EXCERPT_TOKENS = 4 * (EXCERPT + 2)  # tokens decoded for an excerpt: each gives a byte or more, a character 4 at most


class _SpanWalk:
    """The maximal copied spans of a stream of match statistics (a match and the starts it carries
    to; pieces of one match longer than the window joined), the ``top`` longest kept as
    :class:`CopySpan` s, with the count of starts that matched and the longest match."""

    def __init__(self, index: CopyIndex, unit: str, units: _Units, top: int, text: str | None = None) -> None:
        self.index, self.unit, self.units, self.top, self.text = index, unit, units, top, text
        self.table = index.char_starts if unit == "char" else index.token_starts
        self.size = len(index.chars if unit == "char" else index.tokens)
        self.found = self.starts = self.longest = 0
        self.open: list[Any] | None = None  # the last span: [start, length, corpus position, offsets, excerpt ids]
        self.spans: list[CopySpan] = []

    def feed(self, first: int, lengths: np.ndarray, where: np.ndarray) -> None:
        hit = np.flatnonzero(lengths)
        self.found += len(hit)
        self.starts += len(lengths)
        if len(hit):
            self.longest = max(self.longest, int(lengths.max()))
        k = 0
        while k < len(hit):
            i = first + int(hit[k])
            o = self.open
            if o is not None and i < o[0] + o[1]:
                # inside the last span: only a match on its diagonal (measured on past the window) extends it
                end = o[0] + o[1]
                j = int(np.searchsorted(hit, end - first))
                seg = hit[k:j]
                same = (where[seg] - seg) == o[2] - o[0] + first
                reach = int((seg[same] + lengths[seg[same]]).max()) + first if same.any() else 0
                if reach > end:
                    self._extend(reach)
                k = j
                continue
            length, pos = int(lengths[hit[k]]), int(where[hit[k]])
            if o is not None and i == o[0] + o[1] and pos == o[2] + o[1]:  # the same match, measured on
                self._extend(i + length)
            else:
                self._close()
                self.open = [i, length, pos, None, None]
                if self.unit == "char":
                    self.open[3] = (self.units.offset(i), self.units.offset(i + length - 1) + 1)
                else:
                    self.open[4] = self.units.take(i, i + min(length, EXCERPT_TOKENS))
            k += 1
        if self.open is not None and self.open[0] + self.open[1] < first + len(lengths):
            self._close()  # no later start can join it
        self.units.drop_before(first + len(lengths))

    def _extend(self, end: int) -> None:
        """Extend the last span to ``end`` (a position past its end, on its diagonal)."""
        o = self.open
        assert o is not None
        old = o[0] + o[1]
        o[1] = end - o[0]
        if self.unit == "char":
            o[3] = (o[3][0], self.units.offset(end - 1) + 1)
        elif len(o[4]) < EXCERPT_TOKENS:
            o[4] = np.concatenate([o[4], self.units.take(old, min(end, o[0] + EXCERPT_TOKENS))])

    def _close(self) -> None:
        if self.open is None:
            return
        i, length, pos, offsets, ids = self.open
        self.open = None
        self.longest = max(self.longest, length)
        d = self.index._doc(pos, self.table)
        doc, src, path, lic = self.index._source(d)
        doc_end = (int(self.table[d + 1]) if d + 1 < len(self.table) else self.size) - 1
        whole = doc_end - pos if self.unit == "char" and pos == int(self.table[d]) and pos + length == doc_end else 0
        if offsets is not None:  # folded positions -> the output's characters
            start, end = offsets
            excerpt = self.text[start:min(end, start + EXCERPT + 1)]  # type: ignore[index]
        else:
            start, end = i, i + length
            excerpt = self.index.tokenizer.decode([int(t) for t in ids])
        excerpt = excerpt if len(excerpt) <= EXCERPT else excerpt[:EXCERPT - 3] + "..."
        self.spans.append(CopySpan(start, end, end - start, self.unit, doc, src, path, lic, excerpt, whole))
        if len(self.spans) > 4 * self.top + 16:  # keep the longest (a stable sort: the earlier of equal ones)
            self.spans = sorted(self.spans, key=lambda s: -s.length)[:self.top]

    def finish(self) -> list[CopySpan]:
        """The ``top`` longest spans, longest first (the earlier of equal ones first)."""
        self._close()
        self.spans.sort(key=lambda s: -s.length)
        return self.spans[:self.top]


def _codepoints(texts: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """Concatenate texts as code points, each followed by a separator; returns (array, starts, sep)."""
    arrays = [np.frombuffer(t.encode("utf-32-le"), dtype=np.uint32) for t in texts]
    top = max((int(a.max()) for a in arrays if len(a)), default=0)
    dtype = np.uint8 if top < 255 else np.uint16 if top < 65535 else np.uint32
    sep = int(np.iinfo(dtype).max)
    lengths = np.array([len(a) + 1 for a in arrays], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    out = np.full(int(lengths.sum()), sep, dtype=dtype)
    for a, s in zip(arrays, starts, strict=True):
        out[s:s + len(a)] = a
    return out, starts, sep


def build_copy_index(out: str | os.PathLike[str], documents: list[dict[str, Any]], sources: list[dict[str, Any]],
                     *, tokens: np.ndarray | None = None, eos_id: int | None = None, char_n: int = 12,
                     token_n: int = 8, stride: int = 1, extra_meta: dict | None = None) -> Path:
    """Build an index from ``documents`` (``{"id", "source", "text"}``, train split, in order) and
    optionally their token ids (``tokens``: the documents' ids each followed by ``eos_id``, as in
    ``train.bin``). Written atomically to ``out``; returns it."""
    if not documents:
        raise DataError("no training documents to index; prepare a dataset with a train split", param="dataset")
    chars, char_starts, sep = _codepoints([fold(d["text"]) for d in documents])
    with atomic_dir(out) as tmp:
        np.save(tmp / "chars.npy", chars, allow_pickle=False)
        np.save(tmp / "char_keys.npy", _build_keys(chars, sep, char_n, stride), allow_pickle=False)
        np.save(tmp / "char_starts.npy", char_starts, allow_pickle=False)
        np.save(tmp / "doc_ids.npy", np.array([int(d["id"]) for d in documents], dtype=np.int64), allow_pickle=False)
        np.save(tmp / "doc_sources.npy", np.array([int(d.get("source", 0)) for d in documents], dtype=np.int64),
                allow_pickle=False)
        meta: dict[str, Any] = {"format": FORMAT, "folded": True, "char_n": char_n, "char_sep": sep, "stride": stride,
                                "documents": len(documents), "chars": int(len(chars) - len(documents)),
                                "sources": [{"path": s.get("path"), "sha256": s.get("sha256"),
                                             "license": s.get("license", "unknown")} for s in sources]}
        if tokens is not None and eos_id is not None:
            tokens = np.ascontiguousarray(tokens)
            ends = np.flatnonzero(tokens == eos_id)
            if len(ends) != len(documents):
                raise DataError(f"train.bin holds {len(ends)} documents but documents.jsonl {len(documents)} "
                                "train documents; prepare the dataset again", param="dataset")
            token_starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
            np.save(tmp / "tokens.npy", tokens, allow_pickle=False)
            np.save(tmp / "token_keys.npy", _build_keys(tokens, eos_id, token_n, stride), allow_pickle=False)
            np.save(tmp / "token_starts.npy", token_starts, allow_pickle=False)
            meta.update(token_n=token_n, eos_id=int(eos_id), tokens=int(len(tokens) - len(documents)))
        meta.update(extra_meta or {})
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return Path(out)


def build_dataset_index(dataset: str | os.PathLike[str], out: str | os.PathLike[str], **kw: Any) -> Path:
    """Index the train split of a prepared dataset (``gencraft.data.load_dataset``) into ``out``."""
    ds = load_dataset(dataset)
    docs = list(ds.documents("train"))
    return build_copy_index(out, docs, ds.sources(), tokens=np.asarray(ds.train_ids()),
                            eos_id=ds.tokenizer.eos_id, extra_meta={"dataset": str(ds.path), "digest": ds.digest},
                            **kw)


def run_dataset(run_dir: Path, info: dict[str, Any]) -> str:
    ds = (info.get("data") or {}).get("dataset")
    if not ds:
        raise NotFoundError(f"{run_dir / 'gencraft.json'} names no dataset (data.dataset); pass --dataset",
                            param="dataset")
    return str(ds)


def build_run_index(run: str | os.PathLike[str], *, dataset: str | None = None, **kw: Any) -> Path:
    """Build ``RUN/copy_index/`` from the run's training dataset (or ``dataset``)."""
    run_dir = existing_run(run)
    info = json.loads((run_dir / "gencraft.json").read_text(encoding="utf-8"))
    return build_dataset_index(dataset or run_dataset(run_dir, info), run_dir / "copy_index", **kw)


def index_run(run_dir: str | os.PathLike[str], log: Any = print) -> None:
    """Index a freshly trained run's corpus into ``RUN/copy_index/`` so every generation can be
    checked for verbatim copies; skipped when already built (a resumed run). The callers of
    training (the ``train`` command, quickstart) call it: training itself knows nothing of the guard.
    A failure is logged, not raised: the run stays usable and :func:`load_run_index` builds the
    index on first use."""
    if (Path(run_dir) / "copy_index" / "meta.json").is_file():
        return
    try:
        build_run_index(run_dir)
    except GencraftError as e:
        log(f"copy index not built: {e}")


def load_run_index(run: str | os.PathLike[str], *, build: bool = True) -> CopyIndex:
    """The run's copy index with its tokenizer, built on first use when ``build`` (and the dataset exists)."""
    run_dir = existing_run(run)
    folder = run_dir / "copy_index"
    if not (folder / "meta.json").is_file() or _format(folder) != FORMAT:  # missing, or made by an older gencraft
        if not build:
            raise NotFoundError(f"run {run_dir} has no copy_index/; build it with `gencraft guard index {run}`",
                                param="copy_index")
        build_run_index(run_dir)
    tok_path = run_dir / "tokenizer.json"
    tokenizer = load_tokenizer(tok_path) if tok_path.is_file() else None
    return CopyIndex(folder, tokenizer)


def _format(folder: Path) -> int | None:
    try:
        return json.loads((folder / "meta.json").read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError):
        return None


def enforce(report: CopyReport, action: str = "flag") -> None:
    """Raise :class:`GuardError` for a copy-risk output when ``action == "block"``."""
    if report.copy_risk and action == "block":
        raise GuardError(f"output copies the training data ({report.reason}; limits {report.max_chars} characters, "
                         f"{report.max_tokens} tokens, {report.max_fraction:.0%} of n-grams); regenerate or raise "
                         "the copy thresholds", param="copy")
