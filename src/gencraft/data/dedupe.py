"""Deduplication: exact (hash of the cleaned text) and near-duplicate (MinHash + LSH), in bounded memory.

Both ``gencraft data prepare`` paths (in memory and streaming, :mod:`gencraft.data.stream`) decide
with the same :class:`Deduper`, so they keep the same documents.

- **Exact**: the first 8 bytes of the blake2b digest of the cleaned text; the first of a group of
  identical texts is kept.
- **Near**: character shingles (5 code points, 3 for mostly-CJK text, so Chinese needs no word
  segmentation) -> a one-permutation MinHash signature of 128 bins (``minhash.c``: one pass over
  the text instead of 128 permutations, ~100x less work than ``datasketch``'s, which we used
  before) -> banded LSH: ``b`` bands of ``r`` bins, ``(b, r)`` chosen as datasketch chooses them for
  a threshold 0.1 below the requested one (fewer missed pairs). Every candidate a band finds is
  confirmed with the *exact* Jaccard similarity of the two shingle sets before a document is
  dropped, so LSH false positives never remove text; a document similar to an earlier kept one
  (``>= threshold``) is dropped.

Memory: the band keys and digests live in numpy hash tables (open addressing), two generations
that share ``memory``; when the newer fills, the older is forgotten. So memory is
bounded: a document held costs 32 * (1 + b) bytes (480 at the default threshold, b = 14), so
``memory`` M holds the last M / 960 to M / 480 documents; the cost is recall: a duplicate whose
original lies further back is missed (``bench/data_prepare.py`` measures it on planted
duplicates). ``memory=None`` (the in-memory path) never forgets.
"""

from __future__ import annotations

import ctypes
import hashlib
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from gencraft import cbuild

MINHASH_C = Path(__file__).with_name("minhash.c")

BINS = 128  # signature length
VBITS = 25  # a bin's value bits (the other 7 of a 32-bit shingle hash pick the bin)
EMPTY = np.uint32(0xFFFFFFFF)
SLOT_BYTES = 8  # a table slot: 32-bit fingerprint + 32-bit document number
# Candidates confirmed per document, the most recent first: bounds the work on text where many
# documents share band keys without being near duplicates (short lines of a small vocabulary)
MAX_CANDIDATES = 64


def exact_key(text: str) -> int:
    """The 64-bit digest exact deduplication compares (nonzero: 0 marks an empty table slot)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") or 1


_CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
_PRIME = np.uint64(0x100000001B3)  # FNV-1a's 64-bit prime: the polynomial base of the rolling hash


def shingle_size(text: str) -> int:
    """3 for mostly-CJK text, 5 otherwise."""
    letters = len("".join(text.split()))
    if not letters:
        return 5
    return 3 if len(_CJK.findall(text)) / letters > 0.5 else 5


def _positions_hash(cp: np.ndarray, k: int) -> np.ndarray:
    """32-bit hashes of every character k-gram of code points ``cp`` (one for a text shorter than k)."""
    n = max(1, len(cp) - k + 1)
    k = min(k, len(cp))
    h = np.full(n, np.uint64(k))
    for j in range(k):
        h = h * _PRIME + cp[j:j + n]  # uint64 arithmetic wraps, as a hash should
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return (h >> np.uint64(32)).astype(np.uint32)


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(" ".join(text.split()).encode("utf-32-le"), dtype="<u4").astype(np.uint64)


def shingle_hashes(text: str, k: int | None = None) -> np.ndarray:
    """Sorted unique 32-bit hashes of the character k-grams of ``text`` (whitespace runs collapsed).

    A polynomial hash of the k code points, finished with a 64-bit mixer (splitmix64), computed
    for all positions at once with numpy.
    """
    return np.unique(_positions_hash(_code_points(text), k or shingle_size(text)))


def _densify(s: np.ndarray) -> np.ndarray:
    """Rotation densification (see minhash.c): empty bins take the next full bin's value + distance."""
    full = np.flatnonzero(s != EMPTY)
    if len(full) == BINS or not len(full):
        return s
    ring = np.concatenate([full, full + BINS])
    nxt = ring[np.searchsorted(ring, np.arange(BINS))]
    return (s[nxt % BINS].astype(np.uint64) + ((nxt - np.arange(BINS)).astype(np.uint64) << np.uint64(VBITS))
            ).astype(np.uint32)


def oph_numpy(texts: Sequence[str]) -> np.ndarray:
    """One-permutation MinHash signatures ``[n, 128]`` (uint32) in numpy: what ``minhash.c`` computes."""
    out = np.empty((len(texts), BINS), dtype=np.uint32)
    for i, t in enumerate(texts):
        h = _positions_hash(_code_points(t), shingle_size(t))
        s = np.full(BINS, EMPTY)
        np.minimum.at(s, h >> np.uint32(VBITS), h & np.uint32((1 << VBITS) - 1))
        out[i] = _densify(s)
    return out


def _lib():
    return cbuild.load(MINHASH_C, {"gc_oph": (None, [ctypes.c_void_p] * 3 + [ctypes.c_int64, ctypes.c_void_p])},
                       "signatures in numpy")


def signatures(texts: Sequence[str]) -> np.ndarray:
    """One-permutation MinHash signatures ``[n, 128]`` (uint32) of ``texts``, in C when it builds."""
    lib = _lib()
    if lib is None:
        return oph_numpy(texts)
    flat = [" ".join(t.split()) for t in texts]
    ks = np.array([shingle_size(t) for t in texts], dtype=np.int32)
    off = np.zeros(len(flat) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in flat], out=off[1:])
    cp = np.frombuffer("".join(flat).encode("utf-32-le"), dtype=np.uint32)
    sig = np.empty((len(flat), BINS), dtype=np.uint32)
    if len(flat):
        lib.gc_oph(cp.ctypes.data if len(cp) else None, off.ctypes.data, ks.ctypes.data, len(flat), sig.ctypes.data)
    return sig


def lsh_params(threshold: float, bins: int = BINS) -> tuple[int, int]:
    """``(bands, rows)`` minimizing the false-positive plus false-negative mass around ``threshold``
    (equal weights; what datasketch's MinHashLSH picks for the same threshold and length)."""
    x = np.linspace(0.0, 1.0, 1001)

    def area(y: np.ndarray, lo: float, hi: float) -> float:
        m = (x >= lo) & (x <= hi)
        return float(np.trapezoid(y[m], x[m])) if m.sum() > 1 else 0.0

    best, best_err = (1, 1), np.inf
    for b in range(1, bins + 1):
        for r in range(1, bins // b + 1):
            p = 1 - (1 - x ** r) ** b
            err = area(p, 0.0, threshold) + area(1 - p, threshold, 1.0)
            if err < best_err:
                best, best_err = (b, r), err
    return best


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """``[n, bands]`` 64-bit keys, one per band of ``rows`` bins (equal bands, equal keys; the band's
    number is mixed in, so one table holds every band)."""
    n = sig.shape[0]
    v = sig[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)
    mult = np.random.default_rng(20241).integers(1, 2**63, size=rows, dtype=np.uint64) | np.uint64(1)
    h = (v * mult).sum(axis=2, dtype=np.uint64) + np.arange(bands, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    h ^= h >> np.uint64(31)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(29)
    h[h == 0] = 1
    return h


class _Table:
    """A multimap from 64-bit keys to 32-bit values in numpy arrays: open addressing with linear
    probing from ``key % slots``, each slot a 32-bit fingerprint of its key (the key's high half;
    0 = empty) and a value; batch inserts and lookups; a key may map to many values. Two keys that
    share a fingerprint and a probe run read as one: only ever an extra candidate, which the exact
    check turns down. ``growable``: doubles when half full; else fixed (the caller keeps it half empty)."""

    def __init__(self, slots: int, growable: bool) -> None:
        self.keys = np.zeros(slots, dtype=np.uint32)
        self.vals = np.zeros(slots, dtype=np.uint32)
        self.homes = np.zeros(slots, dtype=np.uint64) if growable else None  # the full keys, to rehash
        self.n = 0

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.vals.nbytes + (self.homes.nbytes if self.homes is not None else 0)

    @staticmethod
    def _fingerprint(keys: np.ndarray) -> np.ndarray:
        f = (keys >> np.uint64(32)).astype(np.uint32)
        f[f == 0] = 1
        return f

    def _place(self, keys: np.ndarray, vals: np.ndarray) -> None:
        size = len(self.keys)
        pos = (keys % np.uint64(size)).astype(np.int64)
        fp = self._fingerprint(keys)
        todo = np.arange(len(keys))
        while todo.size:
            p = pos[todo]
            free = self.keys[p] == 0
            _, first = np.unique(p[free], return_index=True)  # one winner per free slot
            win = todo[free][first]
            self.keys[pos[win]], self.vals[pos[win]] = fp[win], vals[win]
            if self.homes is not None:
                self.homes[pos[win]] = keys[win]
            todo = np.setdiff1d(todo, win, assume_unique=True)
            pos[todo] = (pos[todo] + 1) % size
        self.n += len(keys)

    def insert(self, keys: np.ndarray, vals: np.ndarray) -> None:
        if self.homes is not None and (self.n + len(keys)) * 2 > len(self.keys):
            held = self.keys != 0
            old_k, old_v = self.homes[held], self.vals[held]
            size = len(self.keys)
            while (self.n + len(keys)) * 2 > size:
                size *= 2
            self.keys, self.vals = np.zeros(size, np.uint32), np.zeros(size, np.uint32)
            self.homes, self.n = np.zeros(size, np.uint64), 0
            self._place(old_k, old_v)
        self._place(keys, vals)

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every ``(query index, value)`` pair whose key (fingerprint) matches."""
        size = len(self.keys)
        pos = (keys % np.uint64(size)).astype(np.int64)
        fp = self._fingerprint(keys)
        active = np.arange(len(keys))
        qs, vs = [np.zeros(0, np.int64)], [np.zeros(0, np.uint32)]
        while active.size:
            p = pos[active]
            k = self.keys[p]
            hit = k == fp[active]
            qs.append(active[hit])
            vs.append(self.vals[p[hit]])
            active = active[k != 0]
            pos[active] = (pos[active] + 1) % size
        return np.concatenate(qs), np.concatenate(vs)


class _Generation:
    """Documents held together: their digests, band keys and references (a table value is the
    document's number in the generation; ``refs`` turns it back into the caller's reference)."""

    def __init__(self, capacity: int | None, bands: int) -> None:
        grow = capacity is None
        self.exact = _Table(1 << 12 if grow else 2 * capacity, grow)
        self.bands = _Table(1 << 12 if grow else max(1, 2 * capacity * bands), grow)
        self.refs = np.zeros(1 << 12 if grow else capacity, dtype=np.int64)
        self.held = 0

    @property
    def nbytes(self) -> int:
        return self.exact.nbytes + self.bands.nbytes + self.refs.nbytes

    def add(self, refs: np.ndarray) -> np.ndarray:
        """Number the documents ``refs`` in this generation."""
        while self.held + len(refs) > len(self.refs):
            self.refs = np.concatenate([self.refs, np.zeros_like(self.refs)])
        self.refs[self.held:self.held + len(refs)] = refs
        self.held += len(refs)
        return np.arange(self.held - len(refs), self.held, dtype=np.uint32)


class Deduper:
    """Exact and near-duplicate decisions for documents that arrive in batches, in order.

    ``fetch(ref)`` returns the text of a document by the reference it was given with (for the
    exact Jaccard check of a candidate). ``memory``: bytes for the tables (two generations; each
    holds as many documents as its half allows, then the older is forgotten); ``None`` =
    unbounded, nothing forgotten. ``threshold=None``: exact duplicates only.
    """

    def __init__(self, threshold: float | None, fetch: Callable[[int], str], memory: int | None = None) -> None:
        self.threshold = threshold
        self.bands, self.rows = lsh_params(max(0.05, threshold - 0.1)) if threshold is not None else (0, 0)
        self.fetch = fetch
        self.memory = memory
        # per generation: half the memory, tables at most half full (see bytes_per_document)
        self.capacity = None if memory is None else max(1, memory // 2 // self.bytes_per_document(threshold))
        self._gens = [_Generation(self.capacity, self.bands)]
        self.exact_removed = 0
        self.near_removed = 0
        self.forgotten = 0  # documents dropped from the tables (their later duplicates go unseen)
        self._cache: dict[int, np.ndarray] = {}  # shingle sets of recent documents, by reference

    @staticmethod
    def bytes_per_document(threshold: float | None) -> int:
        """Table memory a held document takes: two 8-byte slots for its digest and two per band
        (tables at most half full), and its 8-byte reference."""
        bands = lsh_params(max(0.05, threshold - 0.1))[0] if threshold is not None else 0
        return 2 * SLOT_BYTES * (1 + bands) + 8

    @property
    def nbytes(self) -> int:
        return sum(g.nbytes for g in self._gens)

    def _shingles(self, ref: int) -> np.ndarray:
        got = self._cache.get(ref)
        if got is None:
            got = self._cache[ref] = shingle_hashes(self.fetch(ref))
            if len(self._cache) > 4096:
                self._cache.pop(next(iter(self._cache)))
        return got

    def _similar(self, a: int, b: int) -> bool:
        return _jaccard(self._shingles(a), self._shingles(b)) >= self.threshold

    def _lookup(self, which: str, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(query index, reference)`` of every held document with a matching key."""
        qs, rs = [], []
        for g in self._gens:
            q, v = getattr(g, which).lookup(keys)
            qs.append(q)
            rs.append(g.refs[v.astype(np.int64)])
        return np.concatenate(qs), np.concatenate(rs)

    def _insert(self, exact: np.ndarray, exact_refs: np.ndarray, bands: np.ndarray, band_refs: np.ndarray) -> None:
        """Hold documents (digests of every exact survivor; band keys of the kept ones), in slices
        that fit the current generation, starting a new one when it is full."""
        at = 0
        while at < len(exact_refs):
            g = self._gens[-1]
            room = len(exact_refs) - at if self.capacity is None else self.capacity - g.held
            if room <= 0:
                self.forgotten += self._gens[0].held if len(self._gens) == 2 else 0
                self._gens = [self._gens[-1], _Generation(self.capacity, self.bands)]
                continue
            sl = slice(at, at + room)
            numbers = g.add(exact_refs[sl])
            g.exact.insert(exact[sl], numbers)
            pick = np.isin(band_refs, exact_refs[sl])
            if self.bands and pick.any():
                mine = numbers[np.searchsorted(exact_refs[sl], band_refs[pick])]
                g.bands.insert(bands[pick].ravel(), np.repeat(mine, self.bands))
            at += room

    def keys(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The exact digests ``[n]`` and band keys ``[n, bands]`` of ``texts`` (zeros for empty ones)."""
        exact = np.array([exact_key(t) for t in texts], dtype=np.uint64)
        bands = np.zeros((len(texts), self.bands), dtype=np.uint64)
        live = [i for i, t in enumerate(texts) if t]
        if self.bands and live:
            bands[live] = band_keys(signatures([texts[i] for i in live]), self.bands, self.rows)
        return exact, bands

    def keep(self, texts: Sequence[str], refs: np.ndarray) -> np.ndarray:
        """Which of ``texts`` (the next documents, in order) to keep; ``refs`` ascending."""
        exact, bands = self.keys(texts)
        return self.decide(refs, exact, bands, np.array([not t for t in texts], dtype=bool))

    def decide(self, refs: np.ndarray, exact: np.ndarray, bands: np.ndarray, empty: np.ndarray) -> np.ndarray:
        """:meth:`keep` from keys computed elsewhere (:meth:`keys`, in worker processes): which of the
        next documents (references ``refs``, ascending) to keep. ``empty``: the documents of no text."""
        n = len(refs)
        refs = np.asarray(refs, dtype=np.int64)
        # exact: not held already, and the first of its digest in this batch
        seen = np.zeros(n, dtype=bool)
        seen[self._lookup("exact", exact)[0]] = True
        _, first = np.unique(exact, return_index=True)
        survive = np.zeros(n, dtype=bool)
        survive[first] = True
        survive &= ~seen
        self.exact_removed += int(n - survive.sum())
        self.survivors = survive  # the last batch's documents that are no exact duplicate
        keep = survive.copy()
        if self.threshold is None:
            self._insert(exact[keep], refs[keep], np.zeros((0, 0), np.uint64), np.zeros(0, np.int64))
            return keep
        # near, among the exact survivors; empty texts are kept and never indexed (the length
        # filter's business)
        live = np.flatnonzero(survive & ~empty)
        keys = bands[live]  # [m, bands]
        m = len(live)
        found: dict[int, set[int]] = {}  # live position -> references of held documents sharing a band
        q, r = self._lookup("bands", keys.ravel())
        for qi, ri in zip((q // self.bands).tolist(), r.tolist(), strict=True):
            found.setdefault(qi, set()).add(ri)
        # band keys that more than one document of this batch has: their kept documents, in order
        flat = keys.ravel()
        uniq, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
        shared = (counts[inverse] > 1).reshape(m, self.bands)
        groups: dict[int, list[int]] = {}
        kept_live = np.ones(m, dtype=bool)
        live_refs = refs[live]
        for i in sorted(set(found) | set(np.flatnonzero(shared.any(axis=1)).tolist())):
            mine = keys[i][shared[i]].tolist()
            cands = found.get(i, set()) | {int(live_refs[j]) for k in mine for j in groups.get(k, ())}
            # the most recent candidates (references ascend with document order, in both paths)
            dup = any(self._similar(int(live_refs[i]), ref) for ref in sorted(cands, reverse=True)[:MAX_CANDIDATES])
            kept_live[i] = not dup
            if not dup:
                for k in mine:
                    groups.setdefault(k, []).append(i)
        self.near_removed += int(m - kept_live.sum())
        keep[live[~kept_live]] = False
        self._insert(exact[survive], refs[survive], keys[kept_live], refs[live[kept_live]])
        return keep


def exact_dedupe(texts: Sequence[str]) -> list[int]:
    """Indices of the documents to keep: the first of each group of identical texts."""
    d = Deduper(None, texts.__getitem__)
    return np.flatnonzero(d.keep(texts, np.arange(len(texts)))).tolist()


def near_dedupe(texts: Sequence[str], threshold: float = 0.8) -> list[int]:
    """Indices of documents to keep: a document whose Jaccard similarity (character shingles) with
    an earlier kept one is ``>= threshold`` is dropped (exact copies too)."""
    d = Deduper(threshold, texts.__getitem__)
    return np.flatnonzero(d.keep(texts, np.arange(len(texts)))).tolist()


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / max(1, len(a) + len(b) - inter)


def jaccard(a: str, b: str) -> float:
    """Jaccard similarity of two texts' shingle sets (the measure near-duplicate removal uses)."""
    k = shingle_size(a + b)
    return _jaccard(shingle_hashes(a, k), shingle_hashes(b, k))
